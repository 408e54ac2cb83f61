r"""One command from nothing to a chat model and its report card.

  python -m experiments.speedrun                                  # the cpu preset into runs/speedrun (~30 min, 2 cores)
  python -m experiments.speedrun --config=configs/speedrun.py:gpu --input='/data/warc/*.warc.gz' --workdir=/ckpt/sr
  python -m experiments.speedrun --config.sft.train.steps=500      # any stage's config, nested under its name

The chain, in one process: demo crawl (or --input) -> tokenizer trained on the crawl + the embedded corpus (inside
the pretraining stage) -> pretraining -> evaluation -> SFT -> evaluation -> GRPO -> evaluation -> reward model -> RLHF
-> evaluation -> report (report.md, report.json and their plots in the folder). Every stage's run is a normal run
folder under --workdir (crawl/, pretrain/, sft/, grpo/, reward_model/, rlhf/), so the chat CLI, the server and
`experiments.evaluate` read them as they read any run. speedrun.json records each finished stage and its wall time:
a rerun skips finished stages, and a training stage that was killed resumes from its last checkpoint.
"""

import importlib
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

import configs
from configs import crawl as crawl_configs
from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import runs
from nanolm_jax import speedrun

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "speedrun.py") + ":cpu", "Speedrun config[:preset]."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/speedrun", "The speedrun folder (every stage's run lives inside).")
_INPUT = flags.DEFINE_string(
    "input", None, "WARC files (a local glob) for the crawl; default: the generated demo crawl."
)


def stage_configs() -> speedrun.StageConfigs:
  """The configs package's stage configs, crawl presets and (when installed) the report card."""
  try:
    from nanolm_jax import report_card  # pylint: disable=g-import-not-at-top

    report = report_card.write_report
  except ImportError:
    report = None
  return speedrun.StageConfigs(
      stage=lambda name, preset: importlib.import_module(f"configs.{name}").get_config(preset),
      default=configs.default_config,
      crawl=crawl_configs.get_config,
      report=report,
  )


def main(argv):
  del argv
  metrics.quiet_library_logs()
  t0 = time.perf_counter()
  try:
    chain = speedrun.Chain(_CONFIG.value, _WORKDIR.value, stage_configs(), _INPUT.value)
    state = chain.run()
  except (ValueError, FileNotFoundError, speedrun.Preempted) as e:
    sys.exit(f"speedrun: {e}")
  total = sum(s.get("wall_s", 0) for s in state["stages"].values())
  print(
      f"speedrun {state['preset']} in {fs.abspath(_WORKDIR.value)}: stages {total / 60:.1f} min in all, this call "
      f"{(time.perf_counter() - t0) / 60:.1f} min"
  )
  if runs.is_run(chain.run_dir("rlhf")):
    print(f"chat with it: python -m experiments.chat --workdir={chain.run_dir('rlhf')}")


if __name__ == "__main__":
  app.run(main)
