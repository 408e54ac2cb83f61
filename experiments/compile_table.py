r"""The README's TPU compile table: every pretraining preset on v5e-8 / v5p-8 / v5p-64 / v6e-16, compiled here.

  python -m experiments.compile_table              # compiles every row, rewrites README.md between the markers
  python -m experiments.compile_table --dry_run    # prints the table instead
  python -m experiments.compile_table --presets=tiny,llama_tiny --dry_run

Each row is `python -m experiments.compile --config=configs/pretrain.py:PRESET --topology=SLICE` with the row's mesh
(and, where named, batch / microbatch) overrides: the preset's own dtype, remat, scan, sequence length and global
batch. Needs libtpu (`pip install -e '.[tpu]'`).
"""

from __future__ import annotations

from experiments import compile as compile_lib  # first: it sets JAX_PLATFORMS before jax is imported

# pylint: disable=g-import-not-at-top,wrong-import-position
from concurrent import futures
import datetime
import importlib.metadata
import multiprocessing
import re
import time
from typing import Any

from absl import app
from absl import flags
import jax

from configs import pretrain as pretrain_configs

BEGIN, END = "<!-- compile-table:begin -->", "<!-- compile-table:end -->"
SLICES = ("v5e-8", "v5p-8", "v5p-64", "v6e-16")
PRESETS = ("tiny", "llama_tiny", "gpt2_124m", "gpt2_350m", "gpt2_1.5b", "llama_1b", "llama_8b")
FSDP = {"data": 1, "fsdp": -1, "tensor": 1}


def rows() -> list[tuple[str, str, dict[str, int], dict[str, int]]]:
  """(preset, slice, mesh, train overrides): every preset on every slice with its own mesh, then some variants."""
  out = []
  for preset in PRESETS:
    for s in SLICES:
      train = {"batch_size": 32} if preset.endswith("tiny") and s == "v5p-64" else {}  # 16 rows over 32 chips
      out.append((preset, s, {}, train))
  out += [
      ("gpt2_124m", "v5e-8", FSDP, {"microbatches": 8}),
      ("gpt2_350m", "v5p-64", FSDP, {}),
      ("llama_1b", "v6e-16", FSDP, {"microbatches": 4}),
      ("llama_8b", "v5p-64", {"data": 1, "fsdp": 8, "tensor": 4}, {}),
      ("llama_8b", "v5p-64", FSDP, {"microbatches": 2}),
      ("llama_8b", "v6e-16", {"data": 1, "fsdp": 4, "tensor": 4}, {"batch_size": 64, "microbatches": 4}),
  ]
  return out


_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the table instead of rewriting the README.")
_README = flags.DEFINE_string("readme", "README.md", "The file whose marked section is replaced.")
_PRESETS = flags.DEFINE_list("presets", list(PRESETS), "Only rows of these presets.")
_JOBS = flags.DEFINE_integer(
    "jobs", 1, "Rows compiled at once (separate processes; the TPU compiler is mostly serial)."
)


def _gib(x: float) -> str:
  x /= compile_lib.GiB
  return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _ms(s: float) -> str:
  return f"{s * 1e3:.0f} ms" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def _oom(msg: str) -> str:
  m = re.search(r"required for HLO temporaries \(([\d.]+\w?)\) exceeds available HBM \(([\d.]+\w?)\)", msg)
  if m:
    return f"temporaries alone need {m.group(1)} of {m.group(2)} (compiler)"
  m = re.search(r"Used ([\d.]+\w?) of ([\d.]+\w?) hbm", msg)
  return f"needs {m.group(1)} of {m.group(2)} (compiler)" if m else msg[:80]


def table_row(p: dict[str, Any]) -> str:
  mesh = "×".join(str(p["mesh"][a]) for a in ("data", "fsdp", "tensor"))
  batch = f"{p['batch_size']} ({p['per_device_batch']}" + (
      f"×{p['microbatches']} mb)" if p["microbatches"] > 1 else ")"
  )
  n = p["params"]
  params = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e7 else f"{n / 1e6:.1f}M"
  head = f"| {p['preset']} | {params} | {p['topology']} ({p['chips']}) | {mesh} | {batch} |"
  if "oom" in p:
    return f"{head} **no** | {_oom(p['oom'])} | | | {p['compile_s']:.0f} |"
  fits = "yes" if p["fits"] else "**no**"
  mem = f"{_gib(p['total_bytes'])} / {_gib(p['hbm_bytes'])} (state {_gib(p['argument_bytes'])})"
  est = _ms(p["est_step_s"]) if "est_step_s" in p else "n/a"
  mfu = f"{p['mfu']:.0%}" if "mfu" in p else "n/a"
  return f"{head} {fits} | {mem} | {est} | {mfu} | {p['compile_s']:.0f} |"


def error_row(preset: str, topo: str, mesh: dict[str, int], err: Exception) -> str:
  mesh_s = "×".join(str(mesh.get(a, "")) for a in ("data", "fsdp", "tensor")) if mesh else "preset's"
  return f"| {preset} | | {topo} | {mesh_s} | | **no** | config error: {err} | | | |"


_DEVICES: dict[str, Any] = {}


def compile_row(preset: str, slice_name: str, mesh: dict[str, int], train: dict[str, int]) -> str:
  """One table row: the row's config compiled for the slice (in a worker process)."""
  cfg = pretrain_configs.get_config(preset)
  cfg.mesh.update(mesh)
  cfg.train.update(train)
  topo = compile_lib.parse_topology(slice_name)
  if slice_name not in _DEVICES:
    _DEVICES[slice_name] = compile_lib.topology_devices(topo)
  try:
    return table_row(compile_lib.compile_plan(cfg, topo, _DEVICES[slice_name]))
  except ValueError as e:
    return error_row(preset, slice_name, mesh, e)


def build_table(selected: list[str], jobs: int) -> tuple[str, float]:
  """The markdown table (with its provenance line) and the seconds it took."""
  t0 = time.perf_counter()
  lines = [
      "| preset | params | slice (chips) | mesh data×fsdp×tensor | global batch (rows/chip) | fits | memory/chip GiB "
      "(of HBM; state = params + AdamW + batch) | est. step | MFU | compile s |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  todo = [r for r in rows() if r[0] in selected]
  ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: libtpu does not survive fork
  with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
    for line in pool.map(compile_row, *zip(*todo)):
      lines.append(line)
      print(line, flush=True)
  seconds = time.perf_counter() - t0
  versions = f"jax {jax.__version__}, libtpu {importlib.metadata.version('libtpu')}"
  lines.append("")
  lines.append(
      f"Generated by `python -m experiments.compile_table` ({versions}, {datetime.date.today()}, "
      f"{seconds / 60:.1f} min on a 2-core CPU, --jobs={_JOBS.value})."
  )
  return "\n".join(lines), seconds


def replace_section(text: str, table: str) -> str:
  """The README text with the part between the markers replaced; ValueError when the markers are missing."""
  i, j = text.find(BEGIN), text.find(END)
  if i < 0 or j < i:
    raise ValueError(f"README has no {BEGIN} ... {END} section")
  return text[: i + len(BEGIN)] + "\n" + table + "\n" + text[j:]


def main(argv) -> None:
  del argv
  unknown = set(_PRESETS.value) - set(PRESETS)
  if unknown:
    raise app.UsageError(f"--presets: unknown {sorted(unknown)}; choose from {PRESETS}")
  table, seconds = build_table(_PRESETS.value, _JOBS.value)
  if _DRY_RUN.value:
    print(table)
    return
  with open(_README.value, encoding="utf-8") as f:
    text = f.read()
  with open(_README.value, "w", encoding="utf-8") as f:
    f.write(replace_section(text, table))
  print(f"wrote {_README.value} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
  app.run(main)
