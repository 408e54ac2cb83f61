r"""Cloud TPU VMs for nanolm_jax: get a slice, pin the code on every worker, run detached, read logs, stop, delete.

  python -m launch.tpu_vm create --name=nano --zone=us-east5-a --type=v5p-32 --queued --provisioning=spot
  python -m launch.tpu_vm wait   --name=nano --zone=us-east5-a --queued     # until the queued resource is ACTIVE
  python -m launch.tpu_vm setup  --name=nano --zone=us-east5-a [--repo=URL] [--ref=COMMIT|BRANCH|TAG]
  python -m launch.tpu_vm run    --name=nano --zone=us-east5-a -- python -m experiments.pretrain \
      --config=configs/pretrain.py:gpt2_124m --config.mesh.data=1 --config.mesh.fsdp=-1 --workdir=gs://BUCKET/gpt2
  python -m launch.tpu_vm logs   --name=nano --zone=us-east5-a --run_name=gpt2 [--worker=all] [--follow]
  python -m launch.tpu_vm status --name=nano --zone=us-east5-a [--queued] [--run_name=gpt2]
  python -m launch.tpu_vm stop   --name=nano --zone=us-east5-a --run_name=gpt2      # SIGTERM: the trainer saves
  python -m launch.tpu_vm delete --name=nano --zone=us-east5-a [--queued]

Every command takes --dry_run: it prints each gcloud command (shell-quoted, one per line) instead of running it;
the scripts sent to the workers with `tpu-vm ssh --command` are one line of bash each for that reason.

- create: `tpu-vm create`, or with --queued a queued resource (`queued-resources create QR --node-id=NAME`), the way
  v5p / v6e capacity is usually obtained; the runtime image follows the TPU generation unless --version is given.
- setup: on every worker, clone if absent, then fetch ONE commit (--ref resolved here, once, to a SHA) and check it
  out detached with --force, so every worker ends on the same commit whatever was there before; prints the commit per
  worker. The images ship Python 3.10 and nanolm_jax needs >= 3.11, so setup makes a uv venv with Python 3.12
  (~/nanolm_venv) and installs `-e '.[tpu]'` into it, then checks that libtpu is importable.
- run: detached on every worker (setsid nohup), stdout+stderr appended to ~/nanolm_logs/RUN.log there; a loop copies
  the log to gs:// every --sync_s seconds and once more at exit (a preempted VM loses at most that much of it; a
  streamed `gcloud storage cp -` would lose it all, since the object only appears when the stream closes).
  --workdir=gs://X in the command puts the copies at gs://X/logs/worker-N.log and names the run after X.
- stop: SIGTERM to each worker's runner, which passes it to the trainer (it checkpoints and exits); --kill: SIGKILL.
"""

import os
import re
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

COMMANDS = ("create", "wait", "setup", "run", "logs", "status", "stop", "delete")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QUEUED = ["gcloud", "compute", "tpus", "queued-resources"]
CODE_DIR = "~/nanolm_jax"
VENV = "~/nanolm_venv"
LOG_DIR = "~/nanolm_logs"
_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"

# Runtime image per generation, from https://cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX").
RUNTIME_VERSIONS = {"v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite"}
OLDER_RUNTIME = "tpu-ubuntu2204-base"  # v4 and older
_ACCEL = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,=+-]*$")
_DURATION = re.compile(r"^(\d+[smhd])+$")

# Provisioning models and the create flag for each: tpu-vm create documents --spot/--preemptible/--reserved;
# queued-resources create (GA) documents --spot/--guaranteed/--reserved (--best-effort is alpha-only: left out).
PROVISIONING = {
    "on_demand": ({}, ""),
    "spot": ({"tpu_vm": "--spot", "queued": "--spot"}, ""),
    "preemptible": ({"tpu_vm": "--preemptible"}, "preemptible is a tpu-vm create option; queued: use spot"),
    "reserved": ({"tpu_vm": "--reserved", "queued": "--reserved"}, ""),
    "guaranteed": ({"queued": "--guaranteed"}, "guaranteed needs --queued"),
}

_NAME = flags.DEFINE_string("name", "", "TPU VM (node) name.")
_ZONE = flags.DEFINE_string("zone", "", "Zone, e.g. us-east5-a.")
_PROJECT = flags.DEFINE_string("project", "", "GCP project (default: gcloud's configured project).")
_TYPE = flags.DEFINE_string("type", "v5litepod-8", "Accelerator type: v4-8, v5litepod-16, v5p-32, v6e-8, ...")
_VERSION = flags.DEFINE_string("version", "", "Runtime version (default: the documented one for --type).")
_QUEUED = flags.DEFINE_bool("queued", False, "create/wait/status/delete through a queued resource.")
_QR_ID = flags.DEFINE_string("qr_id", "", "Queued resource id (default: --name).")
_PROV = flags.DEFINE_enum("provisioning", "on_demand", list(PROVISIONING), "Provisioning model for create.")
_VALID_UNTIL = flags.DEFINE_string("valid_until", "", "Queued: give up if not provisioned within this (e.g. 6h).")
_REPO = flags.DEFINE_string("repo", "", "Git URL the workers clone (default: this checkout's origin).")
_REF = flags.DEFINE_string(
    "ref",
    "",
    "Commit, branch or tag to pin (default: this checkout's HEAD); a name is resolved here, once, with "
    "`git ls-remote REPO REF` (also under --dry_run), so every worker gets the same commit.",
)
_PYTHON = flags.DEFINE_string("python", "3.12", "Python version of the workers' uv venv (nanolm_jax needs >= 3.11).")
_RUN_NAME_FLAG = flags.DEFINE_string("run_name", "", "Run name (default for run: the basename of --workdir).")
_LOG_DIR = flags.DEFINE_string("gcs_logs", "", "gs:// folder for log copies (default: <workdir>/logs).")
_SYNC_S = flags.DEFINE_integer("sync_s", 60, "Seconds between copies of each worker's log to gs://.")
_WAIT = flags.DEFINE_bool("wait", False, "run: block until the run ends on every worker (launch.sweep uses it).")
_WORKER = flags.DEFINE_string("worker", "0", "logs: worker index, or 'all'.")
_LINES = flags.DEFINE_integer("lines", 50, "logs: how many last lines.")
_FOLLOW = flags.DEFINE_bool("follow", False, "logs: keep printing until the run ends.")
_KILL = flags.DEFINE_bool("kill", False, "stop: SIGKILL the whole run (no checkpoint) instead of SIGTERM.")
_TIMEOUT_S = flags.DEFINE_integer("timeout_s", 6 * 3600, "wait: give up after this many seconds.")
_POLL_S = flags.DEFINE_integer("poll_s", 60, "wait: seconds between queued-resource checks.")
_DRY = flags.DEFINE_bool("dry_run", False, "Print the gcloud commands instead of running them.")


class LaunchError(ValueError):
  """Bad usage, named before anything runs."""


# ---------------------------------------------------------------------------------------------- gcloud commands


def _scope(zone: str, project: str) -> list[str]:
  return [f"--zone={zone}"] + ([f"--project={project}"] if project else [])


def check_target(name: str, zone: str) -> None:
  if not name:
    raise LaunchError("--name is required (the TPU VM's name)")
  if not zone:
    raise LaunchError("--zone is required (e.g. --zone=us-east5-a)")


def runtime_version(accel_type: str) -> str:
  """The documented runtime image for a TPU generation; LaunchError names a malformed accelerator type."""
  m = _ACCEL.match(accel_type)
  if not m:
    raise LaunchError(
        f"unknown accelerator type {accel_type!r}: expected GENERATION-SIZE with GENERATION one of v2, v3, v4, "
        "v5p, v5litepod (= v5e), v6e, e.g. v4-8, v5litepod-16, v5p-32, v6e-8"
    )
  return RUNTIME_VERSIONS.get(m.group(1), OLDER_RUNTIME)


def create_cmd(
    name: str,
    zone: str,
    project: str,
    accel_type: str,
    version: str = "",
    provisioning: str = "on_demand",
    queued: bool = False,
    qr_id: str = "",
    valid_until: str = "",
) -> list[str]:
  """`tpu-vm create NAME`, or (queued) `queued-resources create QR --node-id=NAME`."""
  check_target(name, zone)
  documented = runtime_version(accel_type)  # checks the type even when --version is given
  version = version or documented
  kind = "queued" if queued else "tpu_vm"
  by_kind, why = PROVISIONING[provisioning]
  if by_kind and kind not in by_kind:
    raise LaunchError(f"--provisioning={provisioning}: {why}")
  extra = [by_kind[kind]] if by_kind else []
  if valid_until:
    if not queued:
      raise LaunchError("--valid_until needs --queued (it bounds how long the request waits in the queue)")
    if not _DURATION.match(valid_until):
      raise LaunchError(f"--valid_until={valid_until!r}: expected a duration like 6h, 2d or 1h30m")
    extra.append(f"--valid-until-duration={valid_until}")
  accel = f"--accelerator-type={accel_type}"
  if queued:
    return [*QUEUED, "create", qr_id or name, f"--node-id={name}", *_scope(zone, project), accel,
            f"--runtime-version={version}", *extra]  # fmt: skip
  return [*TPU_VM, "create", name, *_scope(zone, project), accel, f"--version={version}", *extra]


def describe_cmd(name, zone, project, queued=False, qr_id="") -> list[str]:
  """The queued resource's state (state.state), or the node's (state)."""
  check_target(name, zone)
  if queued:
    return [*QUEUED, "describe", qr_id or name, *_scope(zone, project), "--format=value(state.state)"]
  return [*TPU_VM, "describe", name, *_scope(zone, project), "--format=value(state)"]


def delete_cmd(name, zone, project, queued=False, qr_id="") -> list[str]:
  """--force deletes the queued resource's node first; --quiet skips gcloud's confirmation prompt."""
  check_target(name, zone)
  if queued:
    return [*QUEUED, "delete", qr_id or name, *_scope(zone, project), "--force", "--quiet"]
  return [*TPU_VM, "delete", name, *_scope(zone, project), "--quiet"]


def ssh_cmd(name, zone, project, script: str, worker: str = "all") -> list[str]:
  check_target(name, zone)
  if worker != "all" and not worker.isdigit():
    raise LaunchError(f"--worker={worker!r}: expected a worker index (0, 1, ...) or 'all'")
  return [*TPU_VM, "ssh", name, *_scope(zone, project), f"--worker={worker}", f"--command={script}"]


# ---------------------------------------------------------------------------------------------- remote scripts
# Every remote script is ONE line of bash statements (so a dry run prints one gcloud command per line): each list
# entry below is a complete statement, compound ones (if/for/while) written on a single line.

# Each worker's index in the slice (TPU VM metadata), or its hostname where that is missing.
_WORKER_ID = f"W=$(curl -sf -m 5 -H 'Metadata-Flavor: Google' {_METADATA} 2>/dev/null || hostname)"


def one_line(statements: list[str]) -> str:
  """Joins bash statements with '; ' (a background '&' already ends its statement)."""
  return " ".join(s if s.endswith("&") else s + ";" for s in statements)


def setup_script(repo: str, commit: str, python: str = "3.12") -> str:
  """Clone if absent; pin `commit` detached and forced (a stale branch or local edits never win); uv venv; install.

  The commit is fetched by SHA (a server that refuses unadvertised SHAs: everything is fetched), then checked out
  by SHA, and HEAD is compared with it: every worker that succeeds is on exactly this commit.
  """
  if not _SHA.match(commit):
    raise LaunchError(f"setup pins a full commit SHA, got {commit!r}")
  q, code, py = shlex.quote, CODE_DIR, f"{VENV}/bin/python"
  fail = lambda msg: f'{{ echo "worker $W: {msg}" >&2; exit 1; }}'
  return one_line([
      "set -euo pipefail",
      _WORKER_ID,
      f"REPO={q(repo)}",
      f"COMMIT={commit}",
      f'if [ ! -d {code}/.git ]; then git clone -q "$REPO" {code}; fi',
      f"cd {code}",
      'git remote set-url origin "$REPO"',
      'git fetch -q origin "$COMMIT" 2>/dev/null || git fetch -q origin',
      'git checkout -q --force --detach "$COMMIT" 2>/dev/null || ' + fail("commit $COMMIT is not in $REPO (pushed?)"),
      '[ "$(git rev-parse HEAD)" = "$COMMIT" ] || ' + fail("HEAD is not $COMMIT"),
      "python3 -m pip install -q --user -U uv || python3 -m pip install -q --user -U --break-system-packages uv",
      'export PATH="$HOME/.local/bin:$PATH"',
      f"if ! {py} -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then "
      f"rm -rf {VENV}; uv venv -q --python {q(python)} {VENV}; fi",
      f"uv pip install -q --python {py} -e '.[tpu]'",
      f"{py} -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"libtpu\") is None)' || "
      + fail("libtpu missing after installing .[tpu] (has $COMMIT the tpu extra?)"),
      f"jax_version=$({py} -c 'import jax; print(jax.__version__)')",
      f'echo "worker $W: nanolm_jax at $(git rev-parse HEAD), $({py} --version), jax $jax_version"',
  ])  # fmt: skip


def runner_script(run: str, command: list[str], dest: str, sync_s: int = 60) -> str:
  """The per-worker runner (`bash -c RUNNER runner W`): the command, its log, the log's copies, SIGTERM relay.

  The log copy loop runs every sync_s and once at exit. On SIGTERM the runner passes the signal to the command and
  keeps waiting (the trainer saves a checkpoint, then exits); the exit code goes to RUN.exit.
  """
  log, pid, done = f"{LOG_DIR}/{run}.log", f"{LOG_DIR}/{run}.pid", f"{LOG_DIR}/{run}.exit"
  return one_line([
      f'W="$1"; LOG={log}; DEST={shlex.quote(dest)}/worker-$W.log',
      f"echo $$ > {pid}",
      'sync_log() { gcloud storage cp --quiet "$LOG" "$DEST" >/dev/null 2>&1 || true; }',
      f'cd {CODE_DIR} || {{ echo "no {CODE_DIR}: run setup first" >> "$LOG"; echo 1 > {done}; exit 1; }}',
      f"source {VENV}/bin/activate",
      "export PYTHONUNBUFFERED=1",
      f'echo "=== [launch] {run} on worker $W at $(date -u +%FT%TZ), commit $(git rev-parse HEAD)" >> "$LOG"',
      f"( while sleep {int(sync_s)}; do sync_log; done ) &",
      "syncer=$!",
      f'{shlex.join(command)} >> "$LOG" 2>&1 < /dev/null &',
      "child=$!",
      "relayed=0",
      'relay() { relayed=1; echo "=== [launch] SIGTERM: passed to the command" >> "$LOG"; kill -TERM "$child"; }',
      "trap relay TERM INT HUP",
      # wait returns early when the trap runs: wait again for the command's own exit code
      'while :; do wait "$child"; rc=$?; if [ "$relayed" = 1 ]; then relayed=0; continue; fi; break; done',
      f'echo "$rc" > {done}',
      'echo "=== [launch] exit code $rc at $(date -u +%FT%TZ)" >> "$LOG"',
      'kill "$syncer" 2>/dev/null || true',
      "sync_log",
  ])  # fmt: skip


def run_script(run: str, command: list[str], dest: str, sync_s: int = 60) -> str:
  """Refuse while any run is alive (one process owns the TPU chips), start the runner in its own session."""
  if not _RUN_NAME.match(run):
    raise LaunchError(f"--run_name={run!r}: use letters, digits and . _ , = + - (it names files)")
  if not command:
    raise LaunchError("run needs the command after --, e.g. -- python -m experiments.pretrain --workdir=gs://B/x")
  if not dest.startswith("gs://"):
    raise LaunchError(f"log copies go to gs:// (every worker's log, kept after the VM is gone), got {dest!r}")
  pid = f"{LOG_DIR}/{run}.pid"
  return one_line([
      "set -euo pipefail",
      _WORKER_ID,
      f"mkdir -p {LOG_DIR}",
      f'for p in {LOG_DIR}/*.pid; do [ -e "$p" ] && [ ! -e "${{p%.pid}}.exit" ] || continue; '
      'if kill -0 "$(cat "$p")" 2>/dev/null; then '
      'echo "worker $W: run $(basename "$p" .pid) is still running; stop it first" >&2; exit 1; fi; done',
      f"rm -f {LOG_DIR}/{run}.exit {pid}",
      # setsid: its own session, so the ssh session's end sends no SIGHUP and stop --kill reaches the whole group
      f'setsid nohup bash -c {shlex.quote(runner_script(run, command, dest, sync_s))} runner "$W" '
      "> /dev/null 2>&1 < /dev/null &",
      f"for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s {pid} ] && break; sleep 0.5; done",
      f'echo "worker $W: started {run} (pid $(cat {pid})), log {LOG_DIR}/{run}.log, copies {dest}/worker-$W.log"',
  ])  # fmt: skip


def _check_run(run: str) -> None:
  if not run:
    raise LaunchError("--run_name is required for this command")
  if not _RUN_NAME.match(run):
    raise LaunchError(f"--run_name={run!r}: use letters, digits and . _ , = + -")


def logs_script(run: str, lines: int = 50, follow: bool = False) -> str:
  _check_run(run)
  log, pid = f"{LOG_DIR}/{run}.log", f"{LOG_DIR}/{run}.pid"
  tail = f'tail -n {int(lines)} -f --pid="$(cat {pid})" {log}' if follow else f"tail -n {int(lines)} {log}"
  return one_line([
      _WORKER_ID,
      f'[ -e {log} ] || {{ echo "worker $W: no log for {run}" >&2; exit 1; }}',
      f'echo "=== worker $W: {log}"',
      tail,
  ])  # fmt: skip


def status_script(run: str = "") -> str:
  """Per worker and run: finished (exit code), running (pid, elapsed), or gone without an exit code (SIGKILL, VM
  restart). The exit file decides first: the runner lives a moment longer (its last log copy)."""
  if run:
    _check_run(run)
  pattern = f"{LOG_DIR}/{run}.pid" if run else f"{LOG_DIR}/*.pid"
  return one_line([
      _WORKER_ID,
      "found=0",
      f'for p in {pattern}; do [ -e "$p" ] || continue; found=1; r=$(basename "$p" .pid); pid=$(cat "$p"); '
      f'if [ -e {LOG_DIR}/"$r".exit ]; then s="finished, exit code $(cat {LOG_DIR}/"$r".exit)"; '
      'elif kill -0 "$pid" 2>/dev/null; then s="running (pid $pid, $(ps -o etime= -p "$pid" | tr -d \' \'))"; '
      'else s="not running and no exit code (killed, or the VM restarted)"; fi; '
      f'echo "worker $W: $r $s | $(tail -n 1 {LOG_DIR}/"$r".log 2>/dev/null)"; done',
      f'[ "$found" = 1 ] || echo "worker $W: no runs{" named " + run if run else ""}"',
  ])  # fmt: skip


def stop_script(run: str, kill: bool = False) -> str:
  """SIGTERM the runner (it relays to the trainer, which checkpoints); --kill: SIGKILL the runner's process group."""
  _check_run(run)
  signal, word = ('kill -KILL -- "-$pid"', "SIGKILL") if kill else ('kill -TERM "$pid"', "SIGTERM")
  return one_line([
      _WORKER_ID,
      f'pid=$(cat {LOG_DIR}/{run}.pid 2>/dev/null) || {{ echo "worker $W: no run {run}"; exit 0; }}',
      f'if kill -0 "$pid" 2>/dev/null; then {signal} && echo "worker $W: sent {word} to {run}"; '
      f'else echo "worker $W: {run} is not running"; fi',
  ])  # fmt: skip


def wait_run_script(run: str) -> str:
  """Block until the run ends on this worker (a line every 10 min keeps ssh busy); exit with the run's exit code."""
  _check_run(run)
  return one_line([
      _WORKER_ID,
      f"pid=$(cat {LOG_DIR}/{run}.pid 2>/dev/null || echo 0)",
      "n=0",
      f'while [ ! -e {LOG_DIR}/{run}.exit ] && kill -0 "$pid" 2>/dev/null; do sleep 10; n=$((n + 1)); '
      f'if [ $((n % 60)) = 0 ]; then echo "worker $W: {run} still running"; fi; done',
      f"tail -n 5 {LOG_DIR}/{run}.log",
      f'exit "$(cat {LOG_DIR}/{run}.exit 2>/dev/null || echo 1)"',
  ])  # fmt: skip


# ---------------------------------------------------------------------------------------------- local side


def _git(*args: str) -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=False)
  return p.stdout.strip() if p.returncode == 0 else ""


def resolve_ref(repo: str, ref: str) -> str:
  """The one commit every worker gets: a SHA as is; else HEAD here (default) or `git ls-remote REPO REF`."""
  if _SHA.match(ref):
    return ref
  if not ref:
    sha = _git("rev-parse", "HEAD")
    if not sha:
      raise LaunchError("--ref is required (launch/ is not in a git checkout to take HEAD from)")
    if _git("status", "--porcelain", "--untracked-files=no"):
      print(f"warning: this checkout has uncommitted changes; the workers get {sha[:12]} without them", file=sys.stderr)
    return sha
  p = subprocess.run(["git", "ls-remote", repo, ref, f"{ref}^{{}}"], capture_output=True, text=True, check=False)
  refs = {name: sha for sha, name in (line.split("\t", 1) for line in p.stdout.splitlines() if "\t" in line)}
  # Patterns match any ref ending in /REF (refs/heads/feature/main for "main"): take exact names only; a tag's
  # peeled entry (^{}) is its commit, where the tag itself may be an annotated-tag object.
  for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", f"{ref}^{{}}", ref):
    if name in refs:
      return refs[name]
  raise LaunchError(f"--ref={ref!r} is not a branch or tag of {repo} ({p.stderr.strip() or 'no such ref'})")


def workdir_of(command: list[str]) -> str:
  for i, arg in enumerate(command):
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
    if arg == "--workdir" and i + 1 < len(command):
      return command[i + 1]
  return ""


def run_plan(command: list[str], run_name: str = "", log_dir: str = "") -> tuple[str, str]:
  """(run name, gs:// folder of the log copies) from the flags and the command's --workdir."""
  workdir = workdir_of(command).rstrip("/")
  run = run_name or os.path.basename(workdir)
  if not run:
    raise LaunchError("run needs --run_name (or a --workdir=... in the command to name the run after)")
  if log_dir:
    return run, f"{log_dir.rstrip('/')}/{run}"
  if not workdir.startswith("gs://"):
    raise LaunchError(
        "run copies each worker's log to gs://: put --workdir=gs://BUCKET/... in the command (every host of a slice "
        "must share the workdir anyway) or give --gcs_logs=gs://..."
    )
  return run, f"{workdir}/logs"


def plan(cmd: str, argv_tail: list[str]) -> list[list[str]]:
  """The gcloud commands for `cmd`, from the flags; LaunchError for bad usage."""
  target = (_NAME.value, _ZONE.value, _PROJECT.value)
  check_target(_NAME.value, _ZONE.value)
  if argv_tail and cmd != "run":
    raise LaunchError(f"{cmd} takes no command after --, got {shlex.join(argv_tail)}")
  queued = dict(queued=_QUEUED.value, qr_id=_QR_ID.value)
  if cmd == "create":
    return [create_cmd(*target, _TYPE.value, _VERSION.value, _PROV.value, valid_until=_VALID_UNTIL.value, **queued)]
  if cmd == "wait":
    if not _QUEUED.value:
      raise LaunchError("wait polls a queued resource: add --queued (a plain tpu-vm create returns when it is READY)")
    return [describe_cmd(*target, **queued)]
  if cmd == "status":
    return [describe_cmd(*target, **queued), ssh_cmd(*target, status_script(_RUN_NAME_FLAG.value))]
  if cmd == "delete":
    return [delete_cmd(*target, **queued)]
  if cmd == "setup":
    repo = _REPO.value or _git("config", "--get", "remote.origin.url")
    if not repo:
      raise LaunchError("--repo is required (this checkout has no origin remote to default to)")
    return [ssh_cmd(*target, setup_script(repo, resolve_ref(repo, _REF.value), _PYTHON.value))]
  if cmd == "run":
    if not argv_tail:
      raise LaunchError("run needs the command after --, e.g. -- python -m experiments.pretrain --workdir=gs://B/x")
    run, dest = run_plan(argv_tail, _RUN_NAME_FLAG.value, _LOG_DIR.value)
    cmds = [ssh_cmd(*target, run_script(run, argv_tail, dest, _SYNC_S.value))]
    return cmds + ([ssh_cmd(*target, wait_run_script(run))] if _WAIT.value else [])
  if cmd == "logs":
    return [ssh_cmd(*target, logs_script(_RUN_NAME_FLAG.value, _LINES.value, _FOLLOW.value), worker=_WORKER.value)]
  if cmd == "stop":
    return [ssh_cmd(*target, stop_script(_RUN_NAME_FLAG.value, _KILL.value))]
  raise LaunchError(f"unknown command {cmd!r}: one of {', '.join(COMMANDS)}")


def wait_active(describe: list[str], timeout_s: int, poll_s: int) -> None:
  """Polls a queued resource until ACTIVE; exits naming the state if it FAILED or was SUSPENDED."""
  deadline = time.monotonic() + timeout_s
  while True:
    p = subprocess.run(describe, capture_output=True, text=True, check=False)
    state = p.stdout.strip() or f"unknown ({p.stderr.strip()[-200:]})"
    print(f"{time.strftime('%H:%M:%S')} queued resource: {state}", flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED", "SUSPENDING", "DELETING"):
      sys.exit(f"error: the queued resource is {state}; see `{shlex.join(describe[:-1])}`")
    if time.monotonic() > deadline:
      sys.exit(f"error: not ACTIVE after {timeout_s} s (last state {state})")
    time.sleep(poll_s)


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = f" (got {argv[1]!r})" if len(argv) > 1 else ""
    sys.exit(f"error: give a command{got}: python -m launch.tpu_vm {{{'|'.join(COMMANDS)}}} --name=.. --zone=..")
  cmd, tail = argv[1], argv[2:]
  try:
    cmds = plan(cmd, tail)
  except LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if _DRY.value:
    for c in cmds:
      print(shlex.join(c))
    return
  if cmd == "wait":
    return wait_active(cmds[0], _TIMEOUT_S.value, _POLL_S.value)
  failed = 0
  for c in cmds:
    failed = failed or subprocess.run(c, check=False).returncode
    if failed and cmd != "status":  # status: the workers' part still runs when the describe fails
      break
  sys.exit(failed)


if __name__ == "__main__":
  app.run(main)
