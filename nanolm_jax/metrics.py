"""Run logs: metrics.jsonl (one JSON object per logged step), TensorBoard events, loss-curve PNG; device peaks."""

from __future__ import annotations

import io
import json
import logging as std_logging
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

from absl import logging as absl_logging
import jax
from matplotlib import figure

from nanolm_jax import fs

# Dense bf16 peak FLOP/s per device (vendor figures), for MFU. CPUs have no useful figure: MFU is left out there and
# bench_train compares against a measured matmul instead.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "B200": 2250e12,
}


def device_peak_flops(device: jax.Device | None = None) -> float | None:
  kind = (device or jax.devices()[0]).device_kind
  for name, peak in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return peak
  return None


def _tensorboardx():
  """tensorboardX, imported without torch: its writer imports torch when it is installed (~2 s of CPU per process, for
  type hints of tensors we never pass); only a writing process pays for the rest."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # `import torch` raises ImportError, tensorboardX's own fallback
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if hide:
      del sys.modules["torch"]
  return tensorboardX


class MetricsWriter:
  """Appends metrics to <workdir>/metrics.jsonl and TensorBoard; only process 0 writes.

  Local files are appended line by line. Object stores (gs://) have no append: rows are buffered and the object is
  rewritten at most every `remote_flush_s` seconds and at close, so a preempted run loses at most that much log —
  never a checkpoint's worth, since the trainer flushes before each save.
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None, remote_flush_s: float = 30.0):
    self.path = fs.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._tb, self._tb_remote = None, None
    self._pending: list[str] = []
    self._remote, self._flush_s, self._last_flush = fs.is_remote(self.path), remote_flush_s, time.monotonic()
    if not enabled:
      return
    if resume_step is not None and fs.exists(self.path):
      # A killed run may have logged steps past its last checkpoint; they will be logged again.
      lines = fs.read_text(self.path).splitlines(keepends=True)
      fs.write_text(self.path, "".join(l for l in lines if l.strip() and json.loads(l)["step"] <= resume_step))
    # On an object store the events are written to a local folder and uploaded with the log (tensorboardX's own gs://
    # writer re-uploads from __del__ at exit, hanging for minutes when the store is gone, and knows only gs and s3).
    self._tb_remote = fs.join(workdir, "tensorboard") if self._remote else None
    self._tb_local = tempfile.mkdtemp(prefix="nanolm_tb_") if self._remote else fs.join(workdir, "tensorboard")
    self._tb = _tensorboardx().SummaryWriter(self._tb_local)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)
      if math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    self._pending.append(json.dumps(row) + "\n")
    if not self._remote or time.monotonic() - self._last_flush > self._flush_s:
      self.flush()

  def flush(self) -> None:
    if not self.enabled:
      return
    if self._pending:
      fs.append_text(self.path, "".join(self._pending))
      self._pending.clear()
    if self._tb_remote:
      self._tb.flush()
      for name in os.listdir(self._tb_local):
        fs.copy(os.path.join(self._tb_local, name), fs.join(self._tb_remote, name))
    self._last_flush = time.monotonic()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    self.flush()
    if self._tb_remote:
      shutil.rmtree(self._tb_local, ignore_errors=True)


class ProfileWindow:
  """Traces steps [start, start + steps) of a run with jax.profiler into `<workdir>/profile` (0 steps = off).

  The trace is XProf's (view it with `xprof --logdir=<workdir>/profile`, or TensorBoard's profile plugin): per-op
  device time on TPU / GPU, and on CPU the XLA thunks (dots, fusions, copies) by name. Start after the first steps so
  compilation is not in it; each process writes its own host's trace.
  """

  def __init__(self, workdir: str, start: int, steps: int):
    self.dir, self.start, self.stop = os.path.join(workdir, "profile"), start, start + steps
    self.active = False

  def before_step(self, step: int) -> None:
    """Call with the number of steps done so far, before the next one."""
    if step == self.start and self.stop > self.start and not self.active:
      jax.profiler.start_trace(self.dir)
      self.active = True

  def after_step(self, step: int, result: Any) -> None:
    """Call with the steps done and the step's output: blocks on it at the window's end, so the trace holds it."""
    if self.active and step >= self.stop:
      jax.block_until_ready(result)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      absl_logging.info("profile of steps %d-%d written to %s", self.start + 1, self.stop, self.dir)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = fs.join(workdir, "metrics.jsonl")
  if not fs.exists(path):
    return []
  return [json.loads(l) for l in fs.read_text(path).splitlines() if l.strip()]


def metric_series(workdir: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
  """{key: [(step, value), ...]} of the numeric values logged for each key (keys never logged are left out)."""
  rows = read_metrics(workdir)
  series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
  return {k: v for k, v in series.items() if v}


def plot_losses(workdir: str, keys: tuple[str, ...] = ("loss", "val_loss"), filename: str = "loss.png") -> str | None:
  """Loss curves from metrics.jsonl to a PNG; returns its path (None when there is nothing to plot)."""
  series = metric_series(workdir, keys)
  if not series:
    return None
  # matplotlib's object API (no pyplot): no global backend or figure state, safe beside other threads.
  fig = figure.Figure(figsize=(7, 4), dpi=110)
  ax = fig.subplots()
  for k, pts in series.items():
    ax.plot(*zip(*pts), label=k, marker="o" if k.startswith("val") else None, markersize=3)
  ax.set_xlabel("step")
  ax.set_ylabel("nats / token")
  ax.set_title(fs.basename(fs.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return _save_figure(fig, fs.join(workdir, filename))


def plot_panels(workdir: str, keys: Sequence[str], filename: str) -> str | None:
  """One small panel per logged metric (e.g. RL's reward, accuracy, KL) to a PNG; None when none was logged."""
  series = metric_series(workdir, keys)
  if not series:
    return None
  cols = min(3, len(series))
  nrows = -(-len(series) // cols)
  fig = figure.Figure(figsize=(4 * cols, 2.8 * nrows), dpi=100)
  axes = fig.subplots(nrows, cols, squeeze=False)
  for ax, (k, pts) in zip(axes.flat, series.items()):
    ax.plot(*zip(*pts), marker="o" if k.startswith("eval") else None, markersize=3)
    ax.set_title(k)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(series) :]:
    ax.axis("off")
  fig.tight_layout()
  return _save_figure(fig, fs.join(workdir, filename))


def _save_figure(fig: figure.Figure, path: str) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format=os.path.splitext(path)[1][1:] or "png")
  fs.write_bytes(path, buf.getvalue())
  return path


class _DropLibraryInfo:
  """logging filter: INFO chatter from orbax / grain / etils is dropped; their warnings and errors still show."""

  _NOISY = ("/orbax/", "/grain/", "/etils/", "/tensorflow_datasets/", "/jax/_src/")

  def filter(self, record) -> bool:
    if "Metadata file does not exist" in str(record.msg):  # orbax, reading params of a run: expected
      return False
    return record.levelno >= std_logging.WARNING or not any(n in record.pathname for n in self._NOISY)


def quiet_library_logs() -> None:
  """Keeps a run's log readable: call once at the start of an entrypoint."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
