r"""The seed's claims as measured experiments: a number, a plot and a computed sentence each.

  python -m experiments.claims                                 # the default speedrun folder (runs/speedrun)
  python -m experiments.claims --workdir=runs --only=hallucination,tools
  python -m experiments.claims --only=vocab_size --vocab_sizes=384,1024,4096,16384 --vocab_steps=150

Reads a chain's runs (a speedrun folder, or runs/ with the default stage names) and writes claims.json and one
claim_*.png per claim into --out (default: the chain folder); prints each verdict. The vocabulary-size claim trains
its own equal-FLOP pretraining runs (one per size, in <out>/claims_vocab/, reused on a rerun; ~2 min each for the tiny
shape on 2 cores at the default budget). See nanolm_jax/claims.py and nanolm_jax/claims_vocab.py.
"""

import os
import sys

from absl import app
from absl import flags

from nanolm_jax import claims
from nanolm_jax import claims_vocab
from nanolm_jax import runs
from nanolm_jax.report import collect

_WORKDIR = flags.DEFINE_string("workdir", "runs/speedrun", "The chain folder.")
_ONLY = flags.DEFINE_list(
    "only",
    [],
    f"Claims to measure (default all): {', '.join([*claims.COMPUTED, *claims.READ_FROM_RUNS, 'vocab_size'])}.",
)
_OUT = flags.DEFINE_string("out", None, "Folder for claims.json and the plots (default: --workdir).")
_SIZES = flags.DEFINE_list("vocab_sizes", [str(v) for v in claims_vocab.DEFAULT_SIZES], "Vocabulary sizes.")
_STEPS = flags.DEFINE_integer("vocab_steps", 150, "The FLOP budget: this many steps of the chain's own vocabulary.")


def main(argv):
  del argv
  out = _OUT.value or _WORKDIR.value
  only = [n for n in _ONLY.value if n != "vocab_size"]
  extra = []
  try:
    if not _ONLY.value or "vocab_size" in _ONLY.value:
      base = collect.find_runs(_WORKDIR.value, collect.read_json(os.path.join(_WORKDIR.value, collect.SPEEDRUN_FILE)))
      if "pretrain" not in base:
        raise FileNotFoundError(f"vocab_size needs a pretraining run in {_WORKDIR.value}")
      cfg = runs.read_config(base["pretrain"])
      sizes = [int(v) for v in _SIZES.value]
      extra.append(claims_vocab.measure(cfg, os.path.join(out, "claims_vocab"), out, sizes, _STEPS.value))
      if not only and _ONLY.value:
        only = ["vocab_size"]
    measured = claims.measure(_WORKDIR.value, out, only, extra=extra)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"claims: {e}")
  for c in measured:
    verdict = {True: "SHOWN", False: "NOT SHOWN", None: "NOT MEASURED"}[c.shows]
    print(f"{c.name:24s} {verdict:12s} {c.sentence}")


if __name__ == "__main__":
  app.run(main)
