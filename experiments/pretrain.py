r"""Pretraining entrypoint.

  python -m experiments.pretrain                                   # tiny model, embedded corpus, CPU minutes
  python -m experiments.pretrain --config=configs/pretrain.py:gpt2_124m --config.mesh.fsdp=8 --workdir=gs://b/run
  python -m experiments.pretrain --config.model.num_layers=2 --config.train.steps=100

Rerunning with the same --workdir resumes from its latest checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax import metrics
from nanolm_jax import pretraining
from nanolm_jax import sharding
from nanolm_jax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "pretrain.py") + ":tiny", "Config file[:preset]."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/pretrain_<preset>).")


def main(argv):
  del argv
  cfg = _CONFIG.value
  metrics.quiet_library_logs()
  sharding.maybe_initialize_distributed()
  try:
    trainer.validate_config(cfg)
  except ValueError as e:
    sys.exit(f"config error: {e}")
  workdir = _WORKDIR.value or os.path.join("runs", f"pretrain_{cfg.get('preset', 'custom')}")
  logging.info("workdir: %s", os.path.abspath(workdir))
  out = trainer.train(cfg, workdir, pretraining.stage())
  print(
      f"run folder: {workdir}  step={out.get('step')}  val_bpb={out.get('val_bpb', float('nan')):.4f}"
      + ("  (preempted: rerun to resume)" if out.get("preempted") else "")
  )


if __name__ == "__main__":
  app.run(main)
