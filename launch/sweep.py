r"""Run a sweep: one base config plus a list of dotted overrides, each a separate run folder.

  python -m launch.sweep --sweep=configs/sweeps/lr_tiny.py                      # locally, one after another
  python -m launch.sweep --sweep=configs/sweeps/lr_tiny.py --dry_run            # print the commands
  python -m launch.sweep --sweep=configs/sweeps/gpt2_124m_lr.py --target=tpu --name=nano --zone=us-east5-a \
      --workdir_root=gs://BUCKET/sweeps

Every override is checked against the base config before anything runs (an unknown key names itself). Runs whose
folder already finished are resumed (= skipped quickly) by the trainer itself, so a rerun of a sweep continues it.
"""

import importlib.util
import os
import shlex
import subprocess
import sys
from typing import Any

from absl import app
from absl import flags

_SWEEP = flags.DEFINE_string("sweep", None, "Python file with get_sweep() -> (base 'file.py:preset', [overrides]).")
_TARGET = flags.DEFINE_enum("target", "local", ["local", "tpu"], "Run here, or on a Cloud TPU VM (launch.tpu_vm).")
_ENTRY = flags.DEFINE_string("entrypoint", "experiments.pretrain", "Module to run for each point.")
_ROOT = flags.DEFINE_string("workdir_root", "runs/sweeps", "Each run goes to <root>/<sweep>/<point name>.")
_NAME = flags.DEFINE_string("name", "", "TPU VM name (target=tpu).")
_ZONE = flags.DEFINE_string("zone", "", "TPU VM zone (target=tpu).")
_DRY = flags.DEFINE_bool("dry_run", False, "Print the commands only.")


def load_sweep(path: str) -> tuple[str, list[dict[str, Any]]]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path} does not exist")
  spec = importlib.util.spec_from_file_location("sweep", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  base, overrides = mod.get_sweep()
  return base, list(overrides)


def check_overrides(base: str, overrides: list[dict[str, Any]]) -> None:
  """Every dotted key must exist in the base config; KeyError names the first that does not."""
  path, _, preset = base.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_base", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(preset) if preset else mod.get_config()
  for point in overrides:
    for key in point:
      node = cfg
      for part in key.split("."):
        if part not in node:
          raise KeyError(f"sweep override {key!r}: {part!r} is not a key of {base}")
        node = node[part]


def point_name(point: dict[str, Any]) -> str:
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "base"


def commands(base: str, overrides: list[dict[str, Any]], sweep_name: str) -> list[list[str]]:
  out = []
  for point in overrides:
    workdir = f"{_ROOT.value.rstrip('/')}/{sweep_name}/{point_name(point)}"
    args = ["python", "-m", _ENTRY.value, f"--config={base}", f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in point.items()]
    if _TARGET.value == "tpu":
      # Detached on every worker with logs in <workdir>/logs; --wait blocks until it ends, so points run in turn.
      tpu = ["python", "-m", "launch.tpu_vm", "run", f"--name={_NAME.value}", f"--zone={_ZONE.value}"]
      args = [*tpu, f"--run_name={sweep_name}-{len(out)}", "--wait", "--", *args]
    out.append(args)
  return out


def main(argv):
  del argv
  if not _SWEEP.value:
    sys.exit("error: --sweep is required")
  if _TARGET.value == "tpu" and not (_NAME.value and _ZONE.value):
    sys.exit("error: --target=tpu needs --name and --zone")
  if _TARGET.value == "tpu" and not _ROOT.value.startswith("gs://"):
    sys.exit("error: --target=tpu needs a shared --workdir_root (gs://...): every host writes the same checkpoints")
  try:
    base, overrides = load_sweep(_SWEEP.value)
    check_overrides(base, overrides)
  except (FileNotFoundError, KeyError) as e:
    sys.exit(f"error: {e}")
  name = os.path.splitext(os.path.basename(_SWEEP.value))[0]
  failed = 0
  for i, cmd in enumerate(commands(base, overrides, name)):
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"[{i + 1}/{len(overrides)}] {line}", flush=True)
    if _DRY.value:
      continue
    if cmd[0] == "python":
      cmd[0] = sys.executable
    failed += subprocess.run(cmd, check=False).returncode != 0
  if failed:
    sys.exit(f"{failed} of {len(overrides)} runs failed")


if __name__ == "__main__":
  app.run(main)
