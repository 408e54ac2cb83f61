r"""Ahead-of-time compile plan of a TPU pod on this CPU (MaxText's train_compile.py idea): will it fit, how fast?

  python -m experiments.compile                                            # tiny on v5e-8
  python -m experiments.compile --config=configs/pretrain.py:gpt2_1.5b --topology=v5p-64
  python -m experiments.compile --config=configs/pretrain.py:llama_8b --topology=v5p-64 \
      --config.mesh.fsdp=8 --config.mesh.tensor=4
  python -m experiments.compile --config=configs/pretrain.py:gpt2_350m --topology=v6e-16 --find_max_batch

Needs libtpu (`pip install -e '.[tpu]'`), no TPU: `jax.experimental.topologies.get_topology_desc` describes the
slice's devices, and the REAL training step (trainer.make_sharded_step with the pretraining stage's loss, the
config's mesh, logical-axis rules, dtype, remat, scan, microbatches and optimizer) is lowered on
`jax.ShapeDtypeStruct`s carrying the run's shardings (no arrays exist, so an 8B model needs no host memory) and
compiled by the TPU compiler. Printed, per device (= per chip on v5e/v5p/v6e):

  memory      memory_analysis(): arguments (params + optimizer state + the batch shard), outputs, aliased (donated
              state reused for the new state, counted once), temporaries, generated code; their total vs the chip's
              HBM. When the program does not fit, the TPU compiler refuses it and its message (required vs
              available) is shown instead.
  FLOPs       our model FLOPs per step (nanolm_jax.model.flops_per_token, PaLM accounting, as the trainer's MFU) and
              XLA's cost_analysis() FLOPs (per device). XLA counts each while-loop body ONCE: scanned layers and the
              collective-matmul loops the TPU compiler builds for FSDP, so it undercounts sharded/scanned programs.
  est. time   XLA's cost-model 'optimal_seconds' (same loop caveat), scaled by model FLOPs / XLA FLOPs when XLA saw
              fewer FLOPs than the model does — i.e. the uncounted work is assumed to run at the rate the cost model
              gives the counted work. A cost-model estimate, not a measurement.
  MFU         model FLOPs per step / (chips * peak bf16 FLOP/s * est. time).

--find_max_batch searches (doubling, then bisection) the largest per-device batch (rows per device per microbatch)
whose step compiles within HBM; each probe is one full compile.
"""

from __future__ import annotations

import os

# Everything but the compile-only TPU devices stays on the CPU (also silences libtpu's "no TPU here" warnings for
# the backend); several processes may hold libtpu at once (it is only used to compile here).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import json
import math
import re
import sys
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

import configs
from nanolm_jax import model as model_lib
from nanolm_jax import sharding as shd
from nanolm_jax import trainer
from nanolm_jax.stages import pretrain

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation. hbm / peak are per chip; `-N` slice names count TensorCores on v4/v5p, chips on v5e/v6e."""

  hbm_bytes: float
  peak_flops: float  # dense bf16 FLOP/s
  cores_per_chip: int  # TensorCores per chip, for the `-N` names
  torus_dims: int  # 3D torus (v4, v5p) or 2D (v5e, v6e)


# Per chip, from Google Cloud's TPU pages (cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e}, key specifications): peak bf16
# 275 / 197 / 459 / 918 TFLOP/s; HBM 32 / 16 / 95 / 32 "GB", taken as GiB (HBM stacks come in binary sizes; the TPU
# compiler's own limit on v5p, in its out-of-memory message, is 95.74G, above 95 GiB).
CHIPS = {
    "v4": Chip(32 * GiB, 275e12, 2, 3),
    "v5e": Chip(16 * GiB, 197e12, 1, 2),
    "v5p": Chip(95 * GiB, 459e12, 2, 3),
    "v6e": Chip(32 * GiB, 918e12, 1, 2),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "trillium": "v6e"}

_TOPOLOGY = flags.DEFINE_string(
    "topology", "v5e-8", "A slice name (v5e-8, v5litepod-16, v5p-64, v6e-16, v4-32) or libtpu's own (v5p:2x4x4)."
)
_FIND_MAX_BATCH = flags.DEFINE_bool("find_max_batch", False, "Search the largest per-device batch that fits HBM.")
_MAX_BATCH_LIMIT = flags.DEFINE_integer("max_batch_limit", 1024, "--find_max_batch: largest per-device batch tried.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the plan(s) as JSON to this file.")


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as the user wrote it
  libtpu_name: str  # e.g. v5p:2x4x4
  generation: str
  chips: int

  @property
  def chip(self) -> Chip:
    return CHIPS[self.generation]


def torus_shape(chips: int, dims: int) -> tuple[int, ...]:
  """The slice's chip grid: v5p-64 (32 chips) -> (2, 4, 4), v5e-8 -> (2, 4); doubles the last smallest axis."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f"a slice has a power-of-two number of chips, got {chips}")
  shape = [1] * dims
  if dims == 3 and chips >= 4:
    shape = [2, 2, 1]
  while math.prod(shape) < chips:
    i = max(j for j in range(dims) if shape[j] == min(shape))
    shape[i] *= 2
  if math.prod(shape) != chips:
    raise ValueError(f"{chips} chips do not form a {dims}D slice (the smallest 3D slice has 4 chips)")
  return tuple(shape)


def parse_topology(name: str) -> Topology:
  """'v5p-64' / 'v5litepod-8' / 'v6e-16' / 'v5p:2x4x4' -> Topology; ValueError names what is wrong."""
  m = re.fullmatch(r"([a-z0-9]+)[:=_]((?:\d+x)*\d+)", name.lower())
  if m:
    gen, dims = _ALIASES.get(m.group(1), m.group(1)), [int(d) for d in m.group(2).split("x")]
    if gen not in CHIPS:
      raise ValueError(f"--topology={name!r}: unknown TPU generation {gen!r}; choose one of {sorted(CHIPS)}")
    return Topology(name, f"{gen}:{m.group(2)}", gen, math.prod(dims))
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.lower())
  if not m:
    raise ValueError(f"--topology={name!r}: expected e.g. v5e-8, v5p-64, v6e-16 or libtpu's form v5p:2x4x4")
  gen, n = _ALIASES.get(m.group(1), m.group(1)), int(m.group(2))
  if gen not in CHIPS:
    raise ValueError(f"--topology={name!r}: unknown TPU generation {gen!r}; choose one of {sorted(CHIPS)}")
  chip = CHIPS[gen]
  if n % chip.cores_per_chip:
    raise ValueError(f"--topology={name!r}: {gen}-N counts TensorCores ({chip.cores_per_chip} per chip)")
  chips = n // chip.cores_per_chip
  shape = torus_shape(chips, chip.torus_dims)
  return Topology(name, f"{gen}:{'x'.join(map(str, shape))}", gen, chips)


def topology_devices(topo: Topology) -> list[jax.Device]:
  """The slice's compile-only TPU devices (libtpu describes them; no TPU needed)."""
  try:
    from jax.experimental import topologies
  except ImportError as e:  # pragma: no cover - jax always ships it
    raise RuntimeError(f"jax.experimental.topologies is unavailable: {e}") from e
  try:
    return list(topologies.get_topology_desc(topology_name=topo.libtpu_name, platform="tpu").devices)
  except Exception as e:  # libtpu missing, or a shape it does not know
    hint = "" if _has_libtpu() else " (libtpu is not installed: pip install -e '.[tpu]')"
    raise RuntimeError(f"libtpu could not describe topology {topo.libtpu_name!r}{hint}: {e}") from e


def _has_libtpu() -> bool:
  try:
    import libtpu  # noqa: F401  # pylint: disable=unused-import
  except ImportError:
    return False
  return True


def batch_specs(cfg: ml_collections.ConfigDict, sharding: jax.sharding.NamedSharding) -> dict[str, Any]:
  """The global batch the step takes (data/pipeline.py's features), as sharded abstract arrays."""
  shape = (cfg.train.batch_size, cfg.train.seq_len)
  ints = ("inputs", "targets", "segment_ids", "positions")
  out = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding) for k in ints}
  return {**out, "weights": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)}


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a pytree of sharded ShapeDtypeStructs (its shard of each leaf)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def compile_plan(cfg: ml_collections.ConfigDict, topo: Topology, devices: list[jax.Device]) -> dict[str, Any]:
  """Lowers and compiles the training step for the slice; returns the plan (memory, FLOPs, estimates) as a dict."""
  hosts = len({d.process_index for d in devices})
  trainer.validate_config(cfg, num_devices=len(devices), process_count=hosts)
  jax.config.update("jax_threefry_partitionable", True)  # as trainer.train
  mesh = shd.make_mesh(cfg.mesh, devices=devices)
  model = model_lib.build_model(cfg, mesh)
  ctx = trainer.RunContext(cfg=cfg, workdir="", model=model, mesh=mesh, tokenizer=None)
  loss_fn = pretrain.build(cfg).make_loss(ctx, trainer._apply_fn(model))  # pylint: disable=protected-access
  setup = trainer.make_sharded_step(cfg, model, mesh, loss_fn)
  batch = batch_specs(cfg, setup.batch_sharding)
  mc, t = model.cfg, cfg.train
  data, fsdp, tensor = (mesh.shape[a] for a in shd.MESH_AXES)
  plan: dict[str, Any] = {
      "preset": cfg.get("preset", ""),
      "topology": topo.name,
      "libtpu_topology": topo.libtpu_name,
      "chips": topo.chips,
      "devices": len(devices),
      "hosts": hosts,
      "mesh": {"data": data, "fsdp": fsdp, "tensor": tensor},
      "batch_size": t.batch_size,
      "per_device_batch": t.batch_size // t.microbatches // (data * fsdp),
      "microbatches": t.microbatches,
      "seq_len": t.seq_len,
      "dtype": mc.dtype,
      "param_dtype": mc.param_dtype,
      "remat": mc.remat,
      "scan_layers": mc.scan_layers,
      "params": model_lib.count_params(setup.abstract_state.params),
      "state_bytes_per_device": shard_bytes(setup.abstract_state),
      "batch_bytes_per_device": shard_bytes(batch),
      "hbm_bytes": topo.chip.hbm_bytes * topo.chips / len(devices),
      "peak_flops_per_device": topo.chip.peak_flops * topo.chips / len(devices),
      "model_flops_per_step": model_lib.flops_per_token(mc, t.seq_len) * t.batch_size * t.seq_len,
  }
  t0 = time.perf_counter()
  try:
    compiled = setup.step.lower(setup.abstract_state, batch).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    plan.update(fits=False, compile_s=time.perf_counter() - t0, oom=_oom_summary(str(e)))
    return plan
  plan["compile_s"] = time.perf_counter() - t0
  plan.update(_memory(compiled, plan["hbm_bytes"]))
  plan.update(_estimates(compiled, plan))
  return plan


def _oom_summary(msg: str) -> str:
  """The TPU compiler's "Ran out of memory..." sentence (required vs available HBM), without the stack."""
  m = re.search(r"RESOURCE_EXHAUSTED:\s*([^\n]*)", msg)
  return (m.group(1) if m else msg.splitlines()[0]).strip()[:300]


def _memory(compiled, hbm_bytes: float) -> dict[str, Any]:
  ma = compiled.memory_analysis()
  mem = {
      "argument_bytes": ma.argument_size_in_bytes,
      "output_bytes": ma.output_size_in_bytes,
      "alias_bytes": ma.alias_size_in_bytes,
      "temp_bytes": ma.temp_size_in_bytes,
      "code_bytes": ma.generated_code_size_in_bytes,
  }
  # Donated state buffers are reused for the new state: outputs aliased to arguments are counted once.
  total = mem["argument_bytes"] + mem["output_bytes"] - mem["alias_bytes"] + mem["temp_bytes"] + mem["code_bytes"]
  return {**mem, "total_bytes": total, "fits": total <= hbm_bytes}


def _estimates(compiled, plan: dict[str, Any]) -> dict[str, Any]:
  ca = compiled.cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  xla_flops = float(ca.get("flops", 0.0))
  seconds = float(ca.get("optimal_seconds", -1.0))
  model_per_device = plan["model_flops_per_step"] / plan["devices"]
  out: dict[str, Any] = {"xla_flops_per_device": xla_flops, "xla_optimal_seconds": seconds}
  if seconds > 0 and xla_flops > 0:
    est = seconds * max(1.0, model_per_device / xla_flops)
    out["est_step_s"] = est
    out["mfu"] = plan["model_flops_per_step"] / (plan["devices"] * plan["peak_flops_per_device"] * est)
  return out


def max_batch_search(
    cfg: ml_collections.ConfigDict, topo: Topology, devices: list[jax.Device], limit: int, log=print
) -> tuple[int, dict[str, Any] | None]:
  """(largest per-device batch that fits, its plan): doubling from 1 until a compile fails, then bisection."""
  data, fsdp, _ = shd.resolve_mesh_shape(cfg.mesh, len(devices))
  rows_per_b = data * fsdp * cfg.train.microbatches

  def probe(b: int) -> dict[str, Any]:
    c = ml_collections.ConfigDict(cfg.to_dict())
    c.train.batch_size = b * rows_per_b
    p = compile_plan(c, topo, devices)
    log(f"  per-device batch {b:5d} (global {c.train.batch_size}): {'fits' if p['fits'] else 'does not fit'}")
    return p

  best, best_plan, hi = 0, None, None
  b = 1
  while b <= limit:
    p = probe(b)
    if not p["fits"]:
      hi = b
      break
    best, best_plan, b = b, p, b * 2
  if hi is None:
    return best, best_plan
  lo = best
  while hi - lo > 1:
    mid = (lo + hi) // 2
    p = probe(mid)
    if p["fits"]:
      lo, best_plan = mid, p
    else:
      hi = mid
  return lo, best_plan


def _gib(x: float) -> str:
  return f"{x / GiB:.2f} GiB" if x >= GiB / 10 else f"{x / 2**20:.1f} MiB"


def format_plan(p: dict[str, Any]) -> str:
  """The human-readable report of one plan."""
  mesh = " x ".join(f"{k}={v}" for k, v in p["mesh"].items())
  lines = [
      f"{p['preset']} on {p['topology']} ({p['libtpu_topology']}: {p['chips']} chips, {p['devices']} devices, "
      f"{p['hosts']} hosts), mesh {mesh}",
      f"  {p['params'] / 1e6:.1f}M params, batch {p['batch_size']} x {p['seq_len']} "
      f"({p['per_device_batch']} rows/device/microbatch, {p['microbatches']} microbatches), compute {p['dtype']}, "
      f"params {p['param_dtype']}, remat {p['remat']}, scan_layers {p['scan_layers']}",
      f"  per device: state {_gib(p['state_bytes_per_device'])} + batch {_gib(p['batch_bytes_per_device'])} "
      f"(from the shardings); HBM {_gib(p['hbm_bytes'])}; compile {p['compile_s']:.1f} s",
  ]
  if "oom" in p:
    lines.append(f"  DOES NOT FIT: the TPU compiler says: {p['oom']}")
    return "\n".join(lines)
  lines += [
      f"  memory_analysis per device: arguments {_gib(p['argument_bytes'])}, outputs {_gib(p['output_bytes'])} "
      f"(aliased to arguments {_gib(p['alias_bytes'])}), temporaries {_gib(p['temp_bytes'])}, "
      f"code {_gib(p['code_bytes'])}",
      f"  total {_gib(p['total_bytes'])} of {_gib(p['hbm_bytes'])} HBM "
      f"({100 * p['total_bytes'] / p['hbm_bytes']:.0f}%): {'fits' if p['fits'] else 'DOES NOT FIT'}",
      f"  FLOPs per step: model {p['model_flops_per_step']:.3e} ({p['model_flops_per_step'] / p['devices']:.3e} per "
      f"device); XLA cost_analysis {p['xla_flops_per_device']:.3e} per device "
      f"({p['xla_flops_per_device'] * p['devices'] / p['model_flops_per_step']:.0%} of the model's; XLA counts each "
      "loop body once)",
  ]
  if "est_step_s" in p:
    lines.append(
        f"  XLA optimal_seconds {p['xla_optimal_seconds'] * 1e3:.1f} ms -> est. step {p['est_step_s'] * 1e3:.1f} ms "
        f"(scaled to the model's FLOPs), implied MFU {p['mfu']:.1%} (cost-model estimate, not a measurement)"
    )
  else:
    lines.append(f"  XLA gives no usable time estimate (optimal_seconds={p['xla_optimal_seconds']:.3g})")
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  cfg = _CONFIG.value
  try:
    topo = parse_topology(_TOPOLOGY.value)
    devices = topology_devices(topo)
    if _FIND_MAX_BATCH.value:
      print(f"searching the largest per-device batch for {cfg.get('preset', '')} on {topo.name}:")
      best, plan = max_batch_search(cfg, topo, devices, _MAX_BATCH_LIMIT.value)
      print(format_plan(plan) if plan else "even a per-device batch of 1 does not fit")
      print(f"largest per-device batch that fits: {best}" + (f" (global {plan['batch_size']})" if plan else ""))
    else:
      plan = compile_plan(cfg, topo, devices)
      print(format_plan(plan))
  except (ValueError, RuntimeError) as e:
    sys.exit(f"error: {e}")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(plan, f, indent=1)


_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "pretrain.py") + ":tiny", "Config file[:preset]."
)

if __name__ == "__main__":
  app.run(main)
