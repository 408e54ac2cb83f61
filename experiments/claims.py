r"""The seed's claims as measured experiments: a number, a plot and a computed sentence each.

  python -m experiments.claims                                 # the default speedrun folder (runs/speedrun)
  python -m experiments.claims --workdir=runs --only=hallucination,tools

Reads a chain's runs (a speedrun folder, or runs/ with the default stage names) and writes claims.json and one
claim_*.png per claim into --out (default: the chain folder); prints each verdict. See nanolm_jax/claims.py.
"""

import sys

from absl import app
from absl import flags

from nanolm_jax import claims

_WORKDIR = flags.DEFINE_string("workdir", "runs/speedrun", "The chain folder.")
_ONLY = flags.DEFINE_list(
    "only", [], f"Claims to measure (default all): {', '.join([*claims.COMPUTED, *claims.READ_FROM_RUNS])}."
)
_OUT = flags.DEFINE_string("out", None, "Folder for claims.json and the plots (default: --workdir).")


def main(argv):
  del argv
  try:
    measured = claims.measure(_WORKDIR.value, _OUT.value, _ONLY.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"claims: {e}")
  for c in measured:
    verdict = {True: "SHOWN", False: "NOT SHOWN", None: "NOT MEASURED"}[c.shows]
    print(f"{c.name:24s} {verdict:12s} {c.sentence}")


if __name__ == "__main__":
  app.run(main)
