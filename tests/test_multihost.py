"""Two real JAX processes on this machine (jax.distributed over 127.0.0.1, gloo collectives, 2 CPU devices each)
running the pretraining CLI, against one process holding all 4 devices:

(a) the losses equal the one-process run's on the same global mesh (same batches: train.data_shards=2);
(b) kill -9 both, restart: each process resumes its own data position (bitwise equal to an uninterrupted run);
(c) SIGTERM to one process only: both save the same step and exit 0;
(d) the evaluation and the end-of-run samples agree across the processes.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cli_args, tiny_overrides

pytestmark = pytest.mark.slow

STEPS = 24


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, over):
  return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}", *cli_args(over)]


def _env(devices, cluster=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  if cluster:
    env.update(cluster)
  return env


def _launch(workdir, over, tmp_path, tag):
  """Both processes of a 2-host run; their output goes to files (pipes could fill and stall a process)."""
  port = _free_port()
  procs = []
  for i in range(2):
    cluster = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    out, err = open(tmp_path / f"{tag}.{i}.out", "w"), open(tmp_path / f"{tag}.{i}.err", "w")
    procs.append(
        subprocess.Popen(_cmd(workdir, over), cwd=REPO, env=_env(2, cluster), stdout=out, stderr=err, text=True)
    )
  return procs


def _finish(procs, tmp_path, tag, timeout=300):
  for p in procs:
    p.wait(timeout=timeout)
  outs = [(tmp_path / f"{tag}.{i}.out").read_text() for i in range(2)]
  errs = [(tmp_path / f"{tag}.{i}.err").read_text() for i in range(2)]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  return outs, errs


def _wait_for(pred, procs, timeout=240):
  t = time.time()
  while not pred():
    if any(p.poll() is not None for p in procs) or time.time() - t > timeout:
      raise AssertionError("the run ended (or stalled) before the point the test waits for")
    time.sleep(0.02)


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in _rows(workdir) if "loss" in r}


def _samples(stdout):
  return stdout.split("--- samples ---", 1)[1].split("\nval_bpb=", 1)[0]  # up to the summary lines


@pytest.fixture(scope="module")
def over(small_corpus, small_tokenizer):
  o = tiny_overrides(small_corpus, small_tokenizer)
  o.update(
      {
          "train.steps": STEPS,
          "train.checkpoint_every": 4,
          "train.eval_every": 12,
          "train.data_shards": 2,
          "sample.max_new_tokens": 6,
      }
  )
  return o


@pytest.fixture(scope="module")
def straight(over, tmp_path_factory):
  """An uninterrupted two-process run, and the same config in one process on all 4 devices."""
  tmp = tmp_path_factory.mktemp("multihost")
  outs, errs = _finish(_launch(tmp / "two", over, tmp, "two"), tmp, "two")
  one = subprocess.run(_cmd(tmp / "one", over), cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-3000:]
  return dict(two=tmp / "two", one=tmp / "one", outs=outs, errs=errs, one_out=one.stdout)


def test_two_processes_match_one_process_on_the_same_mesh(straight):
  """(a) and (d)."""
  for err in straight["errs"]:
    assert "jax.distributed initialised" in err
  a, b = _losses(straight["one"]), _losses(straight["two"])
  assert a.keys() == b.keys() == set(range(1, STEPS + 1))
  for s in a:  # the same batches; only the reduction order of the gradients may differ
    assert abs(a[s] - b[s]) <= 1e-5 * abs(a[s]), (s, a[s], b[s])
  ev_one = {r["step"]: r["val_bpb"] for r in _rows(straight["one"]) if "val_bpb" in r}
  ev_two = {r["step"]: r["val_bpb"] for r in _rows(straight["two"]) if "val_bpb" in r}
  assert ev_one.keys() == ev_two.keys() == {0, 12, 24}
  for s in ev_one:
    assert abs(ev_one[s] - ev_two[s]) <= 1e-5 * ev_one[s], (s, ev_one[s], ev_two[s])
  # (d) Both processes report the same final evaluation and print the same samples; process 0 alone wrote them.
  finals = [re.findall(r"val_bpb=([0-9.]+)", out)[-1] for out in straight["outs"]]
  assert finals[0] == finals[1] == f"{ev_two[STEPS]:.4f}"
  samples = [_samples(out) for out in straight["outs"]]
  assert samples[0] == samples[1] and samples[0].strip()
  assert (straight["two"] / "samples.txt").read_text().split() == samples[0].split()
  # Each process checkpointed its own data position.
  data = straight["two"] / "checkpoints" / str(STEPS) / "data_per_process"
  states = sorted(n for n in os.listdir(data) if n.endswith(".json"))
  assert states == ["process_0-of-2.json", "process_1-of-2.json"]
  assert (data / states[0]).read_text() != (data / states[1]).read_text()


def test_sigterm_to_one_then_kill_both_then_resume_is_exact(straight, over, tmp_path):
  """(c), then (b): every restart resumes each process's own data position."""
  run = tmp_path / "victim"
  procs = _launch(run, over, tmp_path, "term")
  _wait_for(lambda: (run / "checkpoints" / "8").exists(), procs)
  procs[1].send_signal(signal.SIGTERM)  # one host gets the notice
  outs, errs = _finish(procs, tmp_path, "term", timeout=120)
  saved = [int(re.search(r"preempted at step (\d+)", err).group(1)) for err in errs]
  assert saved[0] == saved[1] < STEPS, saved
  assert all("preempted" in out for out in outs)
  assert saved[0] in [int(d) for d in os.listdir(run / "checkpoints") if d.isdigit()]

  procs = _launch(run, over, tmp_path, "kill")
  target = run / "checkpoints" / str((saved[0] // 4 + 1) * 4)  # the next periodic one
  _wait_for(target.exists, procs)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    assert p.wait() == -signal.SIGKILL

  outs, errs = _finish(_launch(run, over, tmp_path, "resume"), tmp_path, "resume")
  assert all("resumed from step" in err for err in errs)
  a, b = _losses(straight["two"]), _losses(run)
  assert a.keys() == b.keys() == set(range(1, STEPS + 1))
  assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}  # bitwise (fp32, CPU)
