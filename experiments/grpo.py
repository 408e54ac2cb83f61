r"""GRPO entrypoint: RL on a verifiable task, from an SFT run, on the shared trainer.

  python -m experiments.grpo                                   # from runs/sft_tiny (created first when absent)
  python -m experiments.grpo --init_from=runs/sft_tiny --workdir=runs/grpo_tiny
  python -m experiments.grpo --config=configs/grpo.py:dapo --config.rl.group_size=4

Rerunning with the same --workdir resumes from its latest checkpoint (same reference: the init_from in its config).
Prints held-out accuracy before and after (same sampler settings and seed) and the rollout / update tokens per second.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax import metrics
from nanolm_jax import sharding
from nanolm_jax import trainer
from nanolm_jax.posttrain import rl

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "grpo.py") + ":tiny", "Config file[:preset]."
)
_INIT_FROM = flags.DEFINE_string("init_from", None, "Run folder to start from (default: the default SFT run).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/grpo_<preset>).")


def _init_from(cfg, workdir: str) -> str:
  """--init_from, else the resumed run's own reference, else the config's, else the default SFT run."""
  if _INIT_FROM.value:
    return _INIT_FROM.value
  saved = os.path.join(workdir, "config.json")
  if os.path.exists(saved):
    with open(saved) as f:
      prev = json.load(f).get("init_from")
    if prev:
      return prev
  if cfg.init_from:
    return cfg.init_from
  from nanolm_jax import sft  # pylint: disable=g-import-not-at-top

  return sft.ensure_default_run()


def main(argv):
  del argv
  t0 = time.perf_counter()
  cfg = _CONFIG.value
  metrics.quiet_library_logs()
  sharding.maybe_initialize_distributed()
  workdir = _WORKDIR.value or os.path.join("runs", f"grpo_{cfg.get('preset', 'custom')}")
  cfg.init_from = _init_from(cfg, workdir)
  try:
    cfg = rl.resolve_config(cfg)
    trainer.validate_config(cfg)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"config error: {e}")
  logging.info("workdir: %s  init_from: %s", os.path.abspath(workdir), cfg.init_from)
  t_train = time.perf_counter()
  out = trainer.train(cfg, workdir, rl.stage())
  wall = time.perf_counter() - t_train
  rows = metrics.read_metrics(workdir)
  evals = [r for r in rows if "eval_accuracy" in r]
  k = cfg.eval.samples
  for r in (evals[:1] + evals[-1:]) if len(evals) > 1 else evals:
    print(
        f"held-out accuracy at step {r['step']:>4}: pass@1 {100 * r['eval_accuracy']:.1f}%  "
        f"pass@{k} {100 * r.get(f'eval_pass@{k}', float('nan')):.1f}%  "
        f"({cfg.eval.num_problems} problems x {k} samples, temperature {cfg.eval.temperature})"
    )
  if len(evals) > 1:
    print(f"change: {100 * (evals[-1]['eval_accuracy'] - evals[0]['eval_accuracy']):+.1f} points")
  steps = [r for r in rows if "rollout_tokens_per_s" in r]
  if steps:

    def median(key):  # the median keeps the compile of step 1 and the evals (timed into the update) out
      vals = sorted(r[key] for r in steps if isinstance(r.get(key), (int, float)))
      return vals[len(vals) // 2] if vals else float("nan")

    print(
        f"benchmark: rollout {median('rollout_tokens_per_s'):.0f} generated tokens/s, update "
        f"{median('update_tokens_per_s'):.0f} tokens/s (median rollout {median('rollout_s'):.1f} s, update "
        f"{median('update_s'):.1f} s per step)"
    )
  print(
      f"run folder: {workdir}  step={out.get('step')}  train wall time {wall / 60:.1f} min "
      f"(total {(time.perf_counter() - t0) / 60:.1f} min)"
      + ("  (preempted: rerun to resume)" if out.get("preempted") else "")
  )


if __name__ == "__main__":
  app.run(main)
