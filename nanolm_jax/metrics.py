"""Run logs: metrics.jsonl (one JSON object per logged step), TensorBoard events, loss-curve PNG; device peaks."""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
from typing import Any, Mapping, Sequence

from absl import logging as absl_logging
import jax
from matplotlib import figure
import tensorboardX

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


class MetricsWriter:
  """Appends metrics to <workdir>/metrics.jsonl and TensorBoard; only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if resume_step is not None and os.path.exists(self.path):
      # A killed run may have logged steps past its last checkpoint; they will be logged again.
      kept = [l for l in open(self.path) if l.strip() and json.loads(l)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)
      if math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return [json.loads(l) for l in open(path) if l.strip()]


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
  ax.set_title(os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  out = os.path.join(workdir, filename)
  fig.tight_layout()
  fig.savefig(out)
  return out


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
  out = os.path.join(workdir, filename)
  fig.savefig(out)
  return out


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
