r"""Evaluate a chat model: identity, facts (known accuracy, unknown hallucination / "I don't know"), arithmetic
answer-last vs answer-first, search-tool success. Prints a table and writes eval.json in the run folder.

  python -m experiments.eval_chat --workdir=runs/sft_tiny
"""

import os
import sys

import ml_collections
from absl import app
from absl import flags

from configs import sft as sft_configs
from nanolm_jax import metrics
from nanolm_jax import runs
from nanolm_jax.stages import base
from nanolm_jax.stages import sft
from nanolm_jax.posttrain import chat_eval

_WORKDIR = flags.DEFINE_string("workdir", base.default_workdir(sft.STAGE), "Run folder to evaluate.")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  try:
    run = runs.load_run(_WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  cfg = sft_configs.get_config()
  saved = run.cfg
  for key in ("sft", "eval"):  # a run trained by experiments.sft carries its own world / difficulty / eval sizes
    if key in saved:
      cfg[key] = ml_collections.ConfigDict(saved[key].to_dict())
  result = sft.evaluate_run(cfg, run.model, run.params, run.tokenizer)
  print(chat_eval.format_table({os.path.basename(os.path.normpath(run.workdir)): result}))
  for kind, pairs in result["examples"].items():
    for q, a in pairs[:2]:
      print(f"[{kind}] {q!r} -> {a!r}")
  runs.write_eval(run.workdir, result)
  metrics.MetricsWriter(run.workdir).write(
      run.step or 0, {k: v for k, v in result.items() if k in chat_eval.METRIC_KEYS}
  )


if __name__ == "__main__":
  app.run(main)
