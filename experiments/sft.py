r"""Supervised fine-tuning into an assistant.

  python -m experiments.sft                                   # from runs/pretrain_tiny (trained first if absent)
  python -m experiments.sft --init_from=runs/my_base --workdir=runs/my_sft --config.train.steps=1000

Writes the usual run folder (checkpoints, metrics.jsonl, loss.png) plus sft_data/ (probe and answer-first
conversations), search_index/, eval.json, and ablation_no_probe/ (the control run).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax import metrics
from nanolm_jax import sft
from nanolm_jax import sharding

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "sft.py") + ":tiny", "Config file[:preset]."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/sft_<preset>).")
_INIT_FROM = flags.DEFINE_string("init_from", None, "Run folder to start from (default: runs/pretrain_tiny).")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  sharding.maybe_initialize_distributed()
  cfg = _CONFIG.value
  if _INIT_FROM.value is not None:
    cfg.init_from = _INIT_FROM.value
  workdir = _WORKDIR.value or os.path.join("runs", f"sft_{cfg.get('preset', 'custom')}")
  logging.info("workdir: %s", os.path.abspath(workdir))
  try:
    sft.run(cfg, workdir)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(f"run folder: {workdir}  (eval.json, metrics.jsonl; chat with: python -m experiments.chat --workdir={workdir})")


if __name__ == "__main__":
  app.run(main)
