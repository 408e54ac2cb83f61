"""The report's header facts: the code's git commit, the date, the hardware and the package versions."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "sentencepiece")


def git_commit(path: str | None = None) -> str:
  """`git rev-parse HEAD` of the repository holding ``path`` (default: this code), else "unknown"."""
  path = path or os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(
        ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
    )
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def hardware() -> dict[str, Any]:
  """The accelerators JAX sees (kind and count), and the host CPU (model and cores)."""
  out = {"cpu": cpu_model(), "cpu_cores": os.cpu_count()}
  try:
    import jax  # pylint: disable=g-import-not-at-top

    devices = jax.devices()
    out |= {"platform": devices[0].platform, "device_kind": devices[0].device_kind, "device_count": len(devices)}
  except Exception:  # pylint: disable=broad-except  # no backend is still a report
    out |= {"platform": "unknown", "device_kind": "unknown", "device_count": 0}
  return out


def describe_hardware(hw: dict[str, Any]) -> str:
  cpu = f"{hw.get('cpu')} ({hw.get('cpu_cores')} cores)"
  if hw.get("platform") in ("cpu", "unknown", None):
    return f"CPU only: {cpu}"
  return f"{hw.get('device_count')} x {hw.get('device_kind')} ({hw.get('platform')}); host {cpu}"


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def header() -> dict[str, Any]:
  return {
      "git_commit": git_commit(),
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
      "hardware": hardware(),
      "versions": versions(),
  }
