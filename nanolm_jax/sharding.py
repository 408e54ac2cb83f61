"""Device mesh from config, logical -> mesh sharding, batch placement, multi-host initialisation."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]

# Logical axis -> mesh axis. Parameters use the bare names, activations the `act_` ones (MaxText's split), so that
# e.g. FSDP shards the weights' embed dim while activations stay batch-sharded.
DEFAULT_RULES = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("position", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_head_dim", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)


def default_mesh_config() -> ml_collections.ConfigDict:
  """The ``mesh`` config block: sizes of the data / fsdp / tensor axes (-1 = the rest of the devices)."""
  return ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))


def maybe_initialize_distributed() -> None:
  """Calls jax.distributed.initialize() when this process is one of several hosts.

  On Cloud TPU VMs (TPU_WORKER_HOSTNAMES with several entries) and SLURM / explicit coordinator setups JAX discovers
  the cluster itself; a single host needs nothing. Must run before any other JAX call touches the backend.
  """
  multi_tpu = len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
  explicit = "JAX_COORDINATOR_ADDRESS" in os.environ or "COORDINATOR_ADDRESS" in os.environ
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if multi_tpu or explicit or slurm:
    jax.distributed.initialize()
    logging.info("jax.distributed initialised: process %d of %d", jax.process_index(), jax.process_count())


def resolve_mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with at most one -1 meaning 'the rest of the devices'; ValueError names the mismatch."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  for a, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ValueError(f"mesh.{a}={s}: sizes are positive, or -1 for the remaining devices")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh {dict(zip(MESH_AXES, sizes))}: fixed axes ({known} devices) do not divide the "
          f"{num_devices} available devices"
      )
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
        f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {int(np.prod(sizes))} devices, "
        f"but {num_devices} are available"
    )
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) Mesh with Auto axes: shardings come from the rules and jit propagates the rest.

  Newer jax's make_mesh defaults to Explicit axes (sharding in types); we choose Auto deliberately so the same code
  runs on jax 0.10 and 0.11+ and so that GSPMD/Shardy places intermediates.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def normalize_rules(rules: Any) -> Rules:
  """Rules as hashable nested tuples (configs loaded from JSON carry lists)."""

  def axes(a):
    return tuple(a) if isinstance(a, (list, tuple)) else a

  return tuple((str(name), axes(a)) for name, a in rules)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
  """Pytree of logical PartitionSpecs -> pytree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a (possibly boxed, LogicallyPartitioned) abstract pytree; unannotated leaves are replicated."""
  specs = nn.get_partition_spec(abstract_state)
  return logical_to_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of a BxL batch array: batch over the axes that `act_batch` maps to."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("act_batch", "act_length"), list(rules)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's rows into one global jax.Array per key (the process loaded only its own part)."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def check_divisibility(mesh_shape: Mapping[str, int], rules: Any, sizes: Sequence[tuple[str, int, str]]) -> None:
  """Every (logical axis, size, what) must split evenly over the mesh axes the rules map it to.

  Checked from the config alone (before any device exists); ValueError names the config field and the mesh.
  """
  table = dict(rules)
  for logical, size, what in sizes:
    axes = table.get(logical)
    axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    n = int(np.prod([mesh_shape[a] for a in axes])) if axes else 1
    if size % n:
      mesh = ", ".join(f"{k}={v}" for k, v in mesh_shape.items())
      raise ValueError(f"{what}={size} does not divide over mesh axes {axes} of size {n} (mesh {mesh})")
