"""The pretraining entrypoint as a user runs it: config typos, mesh overrides, kill -9 + resume, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cli_args, tiny_overrides

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow


def _env(devices=8):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _cmd(workdir, overrides, extra=()):
  return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}", *cli_args(overrides), *extra]


def _run(workdir, overrides, extra=(), devices=8, timeout=300):
  return subprocess.run(
      _cmd(workdir, overrides, extra), cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=timeout
  )


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture
def over(small_corpus, small_tokenizer):
  o = tiny_overrides(small_corpus, small_tokenizer)
  o["sample.max_new_tokens"] = 4
  return o


def test_unknown_config_key_is_named(tmp_path, over):
  p = _run(tmp_path / "run", over, ["--config.model.num_layrs=2"])
  assert p.returncode != 0 and "num_layrs" in p.stderr
  assert not (tmp_path / "run").exists()


def test_bad_value_is_named_before_any_folder(tmp_path, over):
  p = _run(tmp_path / "run", {**over, "model.num_heads": 3})
  assert p.returncode != 0 and "num_heads=3" in p.stderr
  p = _run(tmp_path / "run", {**over, "mesh.data": 3})
  assert p.returncode != 0 and "mesh" in p.stderr and "8 are available" in p.stderr
  assert not (tmp_path / "run").exists()


def _wait_for(pred, timeout=240):
  t = time.time()
  while not pred():
    if time.time() - t > timeout:
      raise TimeoutError
    time.sleep(0.05)


D2F2T2 = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


@pytest.fixture(scope="module")
def straight(small_corpus, small_tokenizer, tmp_path_factory):
  """An uninterrupted run on a data x FSDP x tensor mesh of 8 devices: the reference of the tests below."""
  over = {**tiny_overrides(small_corpus, small_tokenizer), **D2F2T2, "sample.max_new_tokens": 4}
  over.update({"train.steps": 24, "train.checkpoint_every": 6, "train.eval_every": 0})
  workdir = tmp_path_factory.mktemp("straight") / "run"
  p = _run(workdir, over)
  assert p.returncode == 0, p.stderr[-3000:]
  return workdir, over


def test_mesh_overrides_give_single_device_losses(tmp_path, straight):
  workdir, over = straight
  ref = _run(tmp_path / "one", {**over, "mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1}, devices=1)
  assert ref.returncode == 0, ref.stderr[-3000:]
  a, b = _losses(tmp_path / "one"), _losses(workdir)
  assert a.keys() == b.keys() == set(range(1, 25))
  for s in a:
    assert abs(a[s] - b[s]) <= 1e-5 * abs(a[s]), (s, a[s], b[s])


def test_sigterm_then_kill_9_then_resume_is_bitwise_identical(tmp_path, straight):
  """A preemption notice (SIGTERM) saves the current step and exits 0; a crash (kill -9) loses only the steps after
  the last checkpoint; each restart resumes exactly: the losses equal the uninterrupted run's, bit for bit."""
  workdir, over = straight
  victim = tmp_path / "victim"
  proc = subprocess.Popen(
      _cmd(victim, over), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  metrics = victim / "metrics.jsonl"
  _wait_for(lambda: (metrics.exists() and len(metrics.read_text().splitlines()) >= 4) or proc.poll() is not None)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "preempted" in out
  saved = max(_losses(victim))
  assert saved < 24 and saved in [int(d) for d in os.listdir(victim / "checkpoints") if d.isdigit()]

  proc = subprocess.Popen(
      _cmd(victim, over), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  nxt = victim / "checkpoints" / str((saved // 6 + 1) * 6)
  _wait_for(lambda: nxt.exists() or proc.poll() is not None)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  resumed = _run(victim, over)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  a, b = _losses(workdir), _losses(victim)
  assert a.keys() == b.keys() == set(range(1, 25))
  assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}  # bitwise (fp32, CPU)
