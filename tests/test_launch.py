"""Launch scripts: TPU VM lifecycle commands (dry run) and the sweep runner."""

import os
import pytest
import subprocess
import sys

from tests.conftest import REPO

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

SH = os.path.join(REPO, "launch", "tpu_vm.sh")


def _sh(*args):
  return subprocess.run([SH, *args], capture_output=True, text=True, cwd=REPO)


def test_tpu_vm_lifecycle_dry_run():
  p = _sh("create", "--name=n", "--zone=us-east5-a", "--type=v5p-32", "--spot", "--dry_run")
  assert p.returncode == 0
  assert "tpus tpu-vm create n --zone=us-east5-a --accelerator-type=v5p-32 --version=v2-alpha-tpuv5" in p.stdout
  assert "--spot" in p.stdout
  p = _sh(
      "run", "--name=n", "--zone=z", "--dry_run", "--", "python", "-m", "experiments.pretrain", "--workdir=gs://b/r"
  )
  assert "--worker=all" in p.stdout and "experiments.pretrain" in p.stdout and "gs://b/r" in p.stdout
  p = _sh("setup", "--name=n", "--zone=z", "--repo=https://example.invalid/x.git", "--dry_run")
  assert "jax\\[tpu\\]" in p.stdout and "--worker=all" in p.stdout
  assert "delete n" in _sh("delete", "--name=n", "--zone=z", "--dry_run").stdout


def test_tpu_vm_bad_usage_is_named():
  p = _sh("create", "--zone=z", "--dry_run")
  assert p.returncode == 2 and "--name is required" in p.stderr
  p = _sh("run", "--name=n", "--zone=z", "--dry_run")
  assert p.returncode == 2 and "give the command" in p.stderr


def _sweep(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], capture_output=True, text=True, cwd=REPO)


def test_sweep_dry_run_lists_every_point(tmp_path):
  p = _sweep("--sweep=configs/sweeps/lr_tiny.py", "--dry_run", f"--workdir_root={tmp_path}")
  assert p.returncode == 0, p.stderr
  lines = [l for l in p.stdout.splitlines() if l.startswith("[")]
  assert len(lines) == 6 and "--config.optim.lr=0.01" in lines[-1] and "--config.model.d_model=256" in lines[-1]
  assert not os.listdir(tmp_path)  # dry run made nothing


def test_sweep_unknown_key_is_named(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_sweep():\n  return 'configs/pretrain.py:tiny', [{'optim.lrr': 1}]\n")
  p = _sweep(f"--sweep={bad}", "--dry_run")
  assert p.returncode != 0 and "'lrr'" in p.stderr


def test_tpu_sweep_needs_shared_workdir():
  p = _sweep("--sweep=configs/sweeps/gpt2_124m_lr.py", "--dry_run", "--target=tpu", "--name=n", "--zone=z")
  assert p.returncode != 0 and "gs://" in p.stderr
