"""Launch tools: the Cloud TPU VM launcher's gcloud commands (dry run, against the documented syntax), its remote
scripts (valid bash; run for real on a fake worker: pinning, detached run, log copies, status, SIGTERM stop), and the
sweep runner. Nothing here calls gcloud's API: only the command syntax is checked (and, where gcloud is installed,
the flag table against its offline --help)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from launch import tpu_vm
from tests.conftest import REPO

# Flags the gcloud reference documents, per command (GA track); the launcher must emit no other. Synopses from
# https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/{create,ssh,describe,delete} and
# https://cloud.google.com/sdk/gcloud/reference/compute/tpus/queued-resources/{create,describe,delete}
# (subsets: only what a launcher could use). Every command also takes the gcloud-wide flags.
GCLOUD_WIDE = {"--project", "--quiet", "--format", "--account", "--verbosity"}
DOCUMENTED = {
    ("tpu-vm", "create"): {
        "--zone", "--version", "--accelerator-type", "--async", "--description", "--labels", "--network",
        "--preemptible", "--spot", "--reserved", "--service-account", "--scopes", "--subnetwork", "--internal-ips",
        "--metadata", "--tags", "--topology", "--type", "--data-disk",
    },
    ("tpu-vm", "ssh"): {
        "--zone", "--worker", "--command", "--internal-ip", "--ssh-flag", "--ssh-key-file", "--dry-run",
        "--strict-host-key-checking", "--output-directory", "--plain", "--force-key-file-overwrite",
    },
    ("tpu-vm", "describe"): {"--zone"},
    ("tpu-vm", "delete"): {"--zone", "--async"},
    ("queued-resources", "create"): {
        "--zone", "--runtime-version", "--accelerator-type", "--topology", "--type", "--node-id", "--node-count",
        "--node-prefix", "--async", "--description", "--guaranteed", "--spot", "--reserved", "--labels",
        "--network", "--subnetwork", "--internal-ips", "--metadata", "--service-account", "--scopes", "--tags",
        "--valid-after-duration", "--valid-after-time", "--valid-until-duration", "--valid-until-time", "--data-disk",
    },
    ("queued-resources", "describe"): {"--zone"},
    ("queued-resources", "delete"): {"--zone", "--async", "--force"},
    # https://cloud.google.com/sdk/gcloud/reference/storage/cp (used on the workers to copy logs)
    ("storage", "cp"): {"--no-clobber", "--recursive", "--content-type", "--cache-control"},
}  # fmt: skip
REQUIRED = {
    ("tpu-vm", "create"): {"--zone", "--version", "--accelerator-type"},
    ("tpu-vm", "ssh"): {"--zone", "--worker", "--command"},
    ("tpu-vm", "describe"): {"--zone"},
    ("tpu-vm", "delete"): {"--zone"},
    ("queued-resources", "create"): {"--zone", "--runtime-version", "--accelerator-type", "--node-id"},
    ("queued-resources", "describe"): {"--zone"},
    ("queued-resources", "delete"): {"--zone"},
}
# https://cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX"): v6e, v5p, v5e, v4 and older.
RUNTIMES = {"v6e-8": "v2-alpha-tpuv6e", "v5p-32": "v2-alpha-tpuv5", "v5litepod-16": "v2-alpha-tpuv5-lite",
            "v4-8": "tpu-ubuntu2204-base", "v3-8": "tpu-ubuntu2204-base"}  # fmt: skip
SHA = "0123456789abcdef0123456789abcdef01234567"


def parse_gcloud(argv: list[str]) -> tuple[tuple[str, str], list[str], dict[str, str]]:
  """(command path below `gcloud compute tpus`, positionals, {flag: value}) of one gcloud argv."""
  assert argv[:3] == ["gcloud", "compute", "tpus"], argv
  path, rest = tuple(argv[3:5]), argv[5:]
  pos = [a for a in rest if not a.startswith("--")]
  flags_ = dict((a.split("=", 1) + [""])[:2] for a in rest if a.startswith("--"))
  return path, pos, flags_


def check_documented(argv: list[str]) -> tuple[tuple[str, str], list[str], dict[str, str]]:
  path, pos, flags_ = parse_gcloud(argv)
  assert path in DOCUMENTED, f"undocumented command {path}"
  unknown = set(flags_) - DOCUMENTED[path] - GCLOUD_WIDE
  assert not unknown, f"{path}: flags not in the gcloud reference: {unknown}"
  assert REQUIRED[path] <= set(flags_), f"{path}: missing {REQUIRED[path] - set(flags_)}"
  assert len(pos) == 1, f"{path}: one resource name, got {pos}"
  return path, pos, flags_


def test_create_commands_follow_the_reference():
  for accel, runtime in RUNTIMES.items():
    for prov in ("on_demand", "spot", "preemptible", "reserved"):
      path, pos, f = check_documented(tpu_vm.create_cmd("n", "us-east5-a", "p", accel, provisioning=prov))
      assert path == ("tpu-vm", "create") and pos == ["n"] and f["--version"] == runtime
      assert f["--accelerator-type"] == accel and f["--project"] == "p"
      assert {"spot": "--spot", "preemptible": "--preemptible", "reserved": "--reserved"}.get(prov, "x") in f or (
          prov == "on_demand" and not {"--spot", "--preemptible", "--reserved"} & set(f)
      )
    for prov in ("on_demand", "spot", "guaranteed", "reserved"):
      argv = tpu_vm.create_cmd("n", "z", "", accel, provisioning=prov, queued=True, qr_id="q", valid_until="6h")
      path, pos, f = check_documented(argv)
      assert path == ("queued-resources", "create") and pos == ["q"] and f["--node-id"] == "n"
      assert f["--runtime-version"] == runtime and f["--valid-until-duration"] == "6h" and "--project" not in f
  # An explicit runtime wins; the queued resource's id defaults to the node's name.
  f = check_documented(tpu_vm.create_cmd("n", "z", "", "v5p-8", version="v2-alpha-tpuv5-custom", queued=True))[2]
  assert f["--runtime-version"] == "v2-alpha-tpuv5-custom"
  assert tpu_vm.create_cmd("n", "z", "", "v5p-8", queued=True)[5] == "n"


def test_other_commands_follow_the_reference():
  cmds = [
      tpu_vm.describe_cmd("n", "z", "p"),
      tpu_vm.describe_cmd("n", "z", "p", queued=True, qr_id="q"),
      tpu_vm.delete_cmd("n", "z", ""),
      tpu_vm.delete_cmd("n", "z", "", queued=True),
      tpu_vm.ssh_cmd("n", "z", "", "echo hi"),
      tpu_vm.ssh_cmd("n", "z", "", "echo hi", worker="3"),
  ]
  paths = [check_documented(c)[0] for c in cmds]
  assert paths == [("tpu-vm", "describe"), ("queued-resources", "describe"), ("tpu-vm", "delete"),
                   ("queued-resources", "delete"), ("tpu-vm", "ssh"), ("tpu-vm", "ssh")]  # fmt: skip
  assert "--force" in cmds[3] and "--quiet" in cmds[2]  # the node goes with the queued resource; no prompt
  assert parse_gcloud(cmds[1])[1] == ["q"] and "--format=value(state.state)" in cmds[1]
  assert parse_gcloud(cmds[4])[2]["--worker"] == "all" and parse_gcloud(cmds[5])[2]["--worker"] == "3"


def test_bad_usage_is_named():
  cases = [
      (lambda: tpu_vm.create_cmd("", "z", "", "v4-8"), "--name is required"),
      (lambda: tpu_vm.create_cmd("n", "", "", "v4-8"), "--zone is required"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v5e-8"), "unknown accelerator type 'v5e-8'"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v5p32"), "unknown accelerator type"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v4-8", provisioning="guaranteed"), "guaranteed needs --queued"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v4-8", provisioning="preemptible", queued=True), "use spot"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v4-8", valid_until="6h"), "--valid_until needs --queued"),
      (lambda: tpu_vm.create_cmd("n", "z", "", "v4-8", queued=True, valid_until="6 hours"), "a duration like"),
      (lambda: tpu_vm.ssh_cmd("n", "z", "", "x", worker="first"), "--worker='first'"),
      (lambda: tpu_vm.run_script("r", [], "gs://b/r"), "run needs the command after --"),
      (lambda: tpu_vm.run_script("a b", ["python"], "gs://b/r"), "--run_name='a b'"),
      (lambda: tpu_vm.run_plan(["python", "-m", "x", "--workdir=/tmp/w"]), "put --workdir=gs://"),
      (lambda: tpu_vm.run_plan(["python", "-m", "x"]), "run needs --run_name"),
      (lambda: tpu_vm.logs_script(""), "--run_name is required"),
      (lambda: tpu_vm.setup_script("r", "main"), "full commit SHA"),
  ]
  for fn, message in cases:
    with pytest.raises(tpu_vm.LaunchError, match=re.escape(message)):
      fn()
  assert tpu_vm.run_plan(["python", "--workdir", "gs://b/runs/x/"]) == ("x", "gs://b/runs/x/logs")
  assert tpu_vm.run_plan(["python"], "r", "gs://b/l/") == ("r", "gs://b/l/r")


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "launch.tpu_vm", *args], capture_output=True, text=True, cwd=REPO,
                        env=env)  # fmt: skip


def test_cli_dry_run_prints_one_documented_command_per_line():
  nz = ["--name=nano", "--zone=us-east5-a", "--dry_run"]
  runs = {
      "create": ["create", *nz, "--type=v6e-16", "--queued", "--provisioning=spot"],
      "wait": ["wait", *nz, "--queued"],
      "setup": ["setup", *nz, "--repo=https://example.invalid/nanolm_jax.git", f"--ref={SHA}"],
      "run": [
          "run",
          *nz,
          "--wait",
          "--",
          "python",
          "-m",
          "experiments.pretrain",
          "--workdir=gs://b/runs/gpt2",
          "--config.note=it's 2",
      ],
      "logs": ["logs", *nz, "--run_name=gpt2", "--worker=all", "--follow"],
      "status": ["status", *nz],
      "stop": ["stop", *nz, "--run_name=gpt2"],
      "delete": ["delete", *nz, "--queued"],
  }
  paths = {}
  for name, args in runs.items():
    p = _cli(*args)
    assert p.returncode == 0, (name, p.stderr)
    lines = p.stdout.splitlines()
    paths[name] = [check_documented(shlex.split(line))[0] for line in lines]
  assert paths == {
      "create": [("queued-resources", "create")],
      "wait": [("queued-resources", "describe")],
      "setup": [("tpu-vm", "ssh")],
      "run": [("tpu-vm", "ssh"), ("tpu-vm", "ssh")],  # start, then (--wait) block until it ends
      "logs": [("tpu-vm", "ssh")],
      "status": [("tpu-vm", "describe"), ("tpu-vm", "ssh")],
      "stop": [("tpu-vm", "ssh")],
      "delete": [("queued-resources", "delete")],
  }
  p = _cli("create", "--zone=z", "--dry_run")
  assert p.returncode == 2 and "--name is required" in p.stderr and not p.stdout
  p = _cli("run", "--name=n", "--zone=z", "--dry_run")
  assert p.returncode == 2 and "run needs the command after --" in p.stderr
  p = _cli("setup", "--name=n", "--zone=z", "--dry_run", "--", "python")
  assert p.returncode == 2 and "setup takes no command after --" in p.stderr
  p = _cli("frobnicate", "--name=n")
  assert p.returncode != 0 and "'frobnicate'" in p.stderr


def _payloads():
  cmd = ["python", "-m", "experiments.pretrain", "--workdir=gs://b/it's here", "--config.optim.lr=3e-4"]
  return {
      "setup": tpu_vm.setup_script("https://example.invalid/o'k.git", SHA),
      "run": tpu_vm.run_script("r1", cmd, "gs://b/logs"),
      "runner": tpu_vm.runner_script("r1", cmd, "gs://b/logs"),
      "logs": tpu_vm.logs_script("r1", follow=True),
      "status": tpu_vm.status_script(),
      "status_one": tpu_vm.status_script("r1"),
      "stop": tpu_vm.stop_script("r1"),
      "kill": tpu_vm.stop_script("r1", kill=True),
      "wait": tpu_vm.wait_run_script("r1"),
  }


def test_remote_scripts_are_valid_one_line_bash(tmp_path):
  for name, script in _payloads().items():
    assert "\n" not in script, name  # one gcloud command per dry-run line
    path = tmp_path / f"{name}.sh"
    path.write_text(script)
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, (name, p.stderr)
  # The runner's log copy uses only documented `gcloud storage cp` flags.
  for use in re.findall(r"gcloud storage cp ([^;|]*)", _payloads()["runner"]):
    assert {a for a in shlex.split(use) if a.startswith("--")} <= DOCUMENTED[("storage", "cp")] | GCLOUD_WIDE


def test_setup_pins_by_fetch_and_forced_detached_checkout():
  s = tpu_vm.setup_script("https://example.invalid/x.git", SHA)
  fetch, checkout = s.index('git fetch -q origin "$COMMIT"'), s.index('git checkout -q --force --detach "$COMMIT"')
  assert f"COMMIT={SHA}" in s and fetch < checkout and 'git rev-parse HEAD)" = "$COMMIT"' in s
  assert "uv venv -q --python 3.12" in s and "-e '.[tpu]'" in s and "libtpu" in s


def _git(cwd, *args):
  return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def _fake_bin(folder, scripts: dict[str, str]) -> str:
  folder.mkdir(parents=True, exist_ok=True)
  for name, body in scripts.items():
    (folder / name).write_text("#!/usr/bin/env bash\n" + body + "\n")
    (folder / name).chmod(0o755)
  return f"{folder}:{os.environ['PATH']}"


def _commit(repo, text):
  (repo / "f.txt").write_text(text)
  _git(repo, "add", "f.txt")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", text)
  return _git(repo, "rev-parse", "HEAD")


def test_setup_puts_every_worker_on_one_commit(tmp_path):
  """Two fake workers, one fresh and one with a stale checked-out branch plus local edits: both end on the SHA."""
  origin = tmp_path / "origin"
  origin.mkdir()
  _git(origin, "init", "-q", "-b", "main")
  old = _commit(origin, "old")
  _git(origin, "checkout", "-q", "-b", "topic/main")  # a branch whose name also ends in "main"
  side = _commit(origin, "side")
  _git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "v1", "-m", "v1")  # annotated: peeled
  _git(origin, "checkout", "-q", "main")
  new = _commit(origin, "new")
  assert tpu_vm.resolve_ref(str(origin), "main") == new and tpu_vm.resolve_ref(str(origin), old) == old
  assert tpu_vm.resolve_ref(str(origin), "v1") == side == tpu_vm.resolve_ref(str(origin), "topic/main")
  with pytest.raises(tpu_vm.LaunchError, match="not a branch or tag"):
    tpu_vm.resolve_ref(str(origin), "no-such-branch")
  # No network on the fake workers: pip/uv do nothing, the venv's python answers the setup's checks.
  path = _fake_bin(tmp_path / "bin", {"python3": "exit 0", "uv": "exit 0", "curl": "exit 1"})
  venv_python = 'case "$*" in *jax.__version__*) echo 0.0.test;; --version) echo Python 3.12.0;; *) exit 0;; esac'
  homes = [tmp_path / "w0", tmp_path / "w1"]
  stale = homes[1] / "nanolm_jax"
  subprocess.run(["git", "clone", "-q", str(origin), str(stale)], check=True)
  _git(stale, "reset", "-q", "--hard", old)  # worker 1 sits on a stale 'main' with an uncommitted edit
  (stale / "f.txt").write_text("local edit")
  for home in homes:
    _fake_bin(home / "nanolm_venv" / "bin", {"python": venv_python})
    p = subprocess.run(["bash", "-c", tpu_vm.setup_script(str(origin), new)], capture_output=True, text=True,
                       env=dict(os.environ, HOME=str(home), PATH=path))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert f"nanolm_jax at {new}" in p.stdout and "jax 0.0.test" in p.stdout
    assert _git(home / "nanolm_jax", "rev-parse", "HEAD") == new
    assert (home / "nanolm_jax" / "f.txt").read_text() == "new"
    assert _git(home / "nanolm_jax", "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
  p = subprocess.run(["bash", "-c", tpu_vm.setup_script(str(origin), SHA)], capture_output=True, text=True,
                     env=dict(os.environ, HOME=str(homes[0]), PATH=path))  # fmt: skip
  assert p.returncode == 1 and f"commit {SHA} is not in" in p.stderr


TRAINER = """
import signal, sys, time
def stop(*_):
  print("SIGTERM: checkpoint saved", flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("step 1", sys.argv[1:], flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout[:1] != "Z"


def _wait_for(pred, timeout=20.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if pred():
      return True
    time.sleep(0.1)
  return False


def test_run_status_logs_stop_on_a_fake_worker(tmp_path):
  """The remote scripts run for real with HOME as the worker: detached start, log copies, refusal, SIGTERM stop."""
  home, gcs = tmp_path / "home", tmp_path / "gcs"
  _fake_bin(home / "nanolm_venv" / "bin", {})
  (home / "nanolm_venv" / "bin" / "activate").write_text("")
  (home / "nanolm_jax").mkdir()
  _git(home / "nanolm_jax", "init", "-q")
  (home / "nanolm_jax" / "trainer.py").write_text(TRAINER)
  # gcloud storage cp SRC gs://X -> a local folder; the metadata server says this is worker 3.
  gcloud = f'[ "$1 $2" = "storage cp" ] || exit 9; d={gcs}/"${{@: -1}}"; mkdir -p "$(dirname "$d")"; cp "$4" "$d"'
  path = _fake_bin(tmp_path / "bin", {"gcloud": gcloud, "curl": "echo 3"})
  env = dict(os.environ, HOME=str(home), PATH=path)
  bash = lambda script: subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
  log, pidfile, copy = home / "nanolm_logs" / "r1.log", home / "nanolm_logs" / "r1.pid", gcs / "gs:" / "b" / "l"
  try:
    p = bash(tpu_vm.run_script("r1", [sys.executable, "trainer.py", "it's $HOME"], "gs://b/l", sync_s=1))
    assert p.returncode == 0 and "worker 3: started r1" in p.stdout, p.stderr
    assert _wait_for(lambda: log.exists() and "step 1" in log.read_text())
    assert 'step 1 ["it\'s $HOME"]' in log.read_text()  # the command's arguments arrive verbatim
    assert _wait_for(lambda: (copy / "worker-3.log").exists())  # the periodic copy, while it runs
    assert "r1 running (pid" in bash(tpu_vm.status_script()).stdout
    p = bash(tpu_vm.run_script("r2", ["true"], "gs://b/l"))
    assert p.returncode == 1 and "run r1 is still running; stop it first" in p.stderr
    assert "step 1" in bash(tpu_vm.logs_script("r1")).stdout
    assert "sent SIGTERM to r1" in bash(tpu_vm.stop_script("r1")).stdout
    assert _wait_for(lambda: (home / "nanolm_logs" / "r1.exit").exists())
    assert (home / "nanolm_logs" / "r1.exit").read_text().strip() == "0"  # the trainer's own exit code
    assert _wait_for(lambda: "exit code 0" in (copy / "worker-3.log").read_text())  # the final copy
    text = log.read_text()
    assert text.index("SIGTERM: passed to the command") < text.index("SIGTERM: checkpoint saved")
    assert "r1 finished, exit code 0" in bash(tpu_vm.status_script("r1")).stdout
    assert _wait_for(lambda: not _alive(int(pidfile.read_text())))  # the runner is gone after its last copy
    assert bash(tpu_vm.wait_run_script("r1")).returncode == 0
    p = bash(tpu_vm.run_script("r2", ["false"], "gs://b/l"))  # r1 is over: the next run may start
    assert p.returncode == 0 and _wait_for(lambda: (home / "nanolm_logs" / "r2.exit").exists())
    assert bash(tpu_vm.wait_run_script("r2")).returncode == 1  # --wait hands back the command's exit code
  finally:
    for pid in home.glob("nanolm_logs/*.pid"):  # only the runners this test started, by their process groups
      subprocess.run(["bash", "-c", f"kill -KILL -- -{pid.read_text().strip()} 2>/dev/null"], check=False)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud not installed")
def test_flag_table_matches_installed_gcloud_help(tmp_path):
  """Offline: each table flag appears in `gcloud ... --help` of the installed SDK (no API call, no credentials)."""
  env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path), CLOUDSDK_CORE_DISABLE_PROMPTS="1")
  for path, flags_ in DOCUMENTED.items():
    group = ["storage"] if path[0] == "storage" else ["compute", "tpus", path[0]]
    p = subprocess.run(["gcloud", *group, path[1], "--help"], capture_output=True, text=True, env=env, timeout=60)
    text = re.sub(r"\x1b\[[0-9;]*m", "", p.stdout)
    missing = {f for f in flags_ | GCLOUD_WIDE if f not in text}
    assert p.returncode == 0 and not missing, (path, missing, p.stderr[-300:])


def _sweep(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_sweep_dry_run_lists_every_point(tmp_path):
  p = _sweep("--sweep=configs/sweeps/lr_tiny.py", "--dry_run", f"--workdir_root={tmp_path}")
  assert p.returncode == 0, p.stderr
  lines = [l for l in p.stdout.splitlines() if l.startswith("[")]
  assert len(lines) == 6 and "--config.optim.lr=0.01" in lines[-1] and "--config.model.d_model=256" in lines[-1]
  assert not os.listdir(tmp_path)  # dry run made nothing


@pytest.mark.slow
def test_sweep_unknown_key_is_named(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_sweep():\n  return 'configs/pretrain.py:tiny', [{'optim.lrr': 1}]\n")
  p = _sweep(f"--sweep={bad}", "--dry_run")
  assert p.returncode != 0 and "'lrr'" in p.stderr


@pytest.mark.slow
def test_tpu_sweep_runs_points_in_turn_through_the_launcher():
  p = _sweep("--sweep=configs/sweeps/gpt2_124m_lr.py", "--dry_run", "--target=tpu", "--name=n", "--zone=z")
  assert p.returncode != 0 and "gs://" in p.stderr
  p = _sweep("--sweep=configs/sweeps/gpt2_124m_lr.py", "--dry_run", "--target=tpu", "--name=n", "--zone=z",
             "--workdir_root=gs://b/sweeps")  # fmt: skip
  lines = [shlex.split(l.split("] ", 1)[1]) for l in p.stdout.splitlines() if l.startswith("[")]
  assert p.returncode == 0 and lines, p.stderr
  for i, argv in enumerate(lines):
    sep = argv.index("--")
    assert argv[1:4] == ["-m", "launch.tpu_vm", "run"] and "--wait" in argv[:sep]
    assert f"--run_name=gpt2_124m_lr-{i}" in argv[:sep] and argv[sep + 1 : sep + 3] == ["python", "-m"]
    assert tpu_vm.run_plan(argv[sep + 1 :])[1].startswith("gs://b/sweeps/gpt2_124m_lr/")
