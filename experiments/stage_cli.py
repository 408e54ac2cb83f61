"""The one main of every training stage: `python -m experiments.{pretrain,sft,grpo} [--config=...] [--workdir=...]`.

Flags: --config (configs/<stage>.py[:PRESET], dotted overrides), --workdir (default runs/<stage>_<preset>) and,
for stages that start from another run, --init_from. Configs reach the core through `configs.default_config`
(the prerequisite stages' defaults), so nanolm_jax never imports configs.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import sharding
from nanolm_jax.stages import base


def run(stage: base.StageDef) -> None:
  """Defines the stage's flags and runs its main under absl."""
  config_flag = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(configs.__file__), f"{stage.name}.py") + ":tiny", "Config file[:preset]."
  )
  workdir_flag = flags.DEFINE_string("workdir", None, f"Run folder (default: runs/{stage.name}_<preset>).")
  init_flag = None
  if stage.requires is not None:
    init_flag = flags.DEFINE_string(
        "init_from", None, f"Run folder to start from (default: the default {stage.requires.name} run)."
    )

  def main(argv):
    del argv
    t0 = time.perf_counter()
    metrics.quiet_library_logs()
    sharding.maybe_initialize_distributed()
    cfg = config_flag.value
    workdir = workdir_flag.value or base.default_workdir(stage, cfg.get("preset", ""))
    logging.info("workdir: %s", fs.abspath(workdir))
    init_from = init_flag.value if init_flag is not None else None
    try:
      cfg = base.prepare_config(stage, cfg, workdir, init_from=init_from, default_config=configs.default_config)
    except (ValueError, FileNotFoundError) as e:
      sys.exit(f"config error: {e}")
    out = base.train(stage, cfg, workdir)
    for line in stage.summary(cfg, workdir, out) if stage.summary else []:
      print(line)
    print(
        f"run folder: {workdir}  step={out.get('step')}  wall time {(time.perf_counter() - t0) / 60:.1f} min"
        + ("  (preempted: rerun to resume)" if out.get("preempted") else "")
    )

  app.run(main)
