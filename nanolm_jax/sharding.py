"""Device mesh from config, logical -> mesh sharding, batch placement, multi-host initialisation."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

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


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM (TPU chips on the PCI bus), where JAX finds the slice's hosts itself."""
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top  # the probe jax itself uses

    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except  # a jax without the probe: not knowable, so not a TPU VM
    return False


def distributed_init_args(env: Mapping[str, str], on_cloud_tpu: bool) -> dict[str, Any] | None:
  """The `jax.distributed.initialize` arguments for this process; None when it is the only one.

  - JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID: an explicit cluster (several processes on one
    machine, or hosts JAX cannot discover); all three are needed, or ValueError names the missing ones.
  - A Cloud TPU VM, SLURM (SLURM_NTASKS > 1) or Open MPI (OMPI_COMM_WORLD_SIZE > 1): no arguments, JAX's own
    cluster detection finds the coordinator and this process's id (on a one-host TPU VM it finds one process).
  """
  explicit = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  given = [k for k in explicit if env.get(k)]
  if given:
    missing = [k for k in explicit if not env.get(k)]
    if missing:
      raise ValueError(f"{', '.join(given)} set but {', '.join(missing)} missing: an explicit cluster needs all three")
    n, i = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    if not 0 <= i < n:
      raise ValueError(f"JAX_PROCESS_ID={i} must be in [0, JAX_NUM_PROCESSES={n})")
    return dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=n, process_id=i)
  if on_cloud_tpu or int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return {}
  return None


def maybe_initialize_distributed() -> None:
  """Joins this process to its cluster (see distributed_init_args); a lone process does nothing.

  Must run before any other JAX call touches the backend. CPU processes exchange collectives over gloo.
  """
  args = distributed_init_args(os.environ, on_cloud_tpu_vm())
  if args is None:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only read by the CPU client
  jax.distributed.initialize(**args)
  logging.info("jax.distributed initialised: process %d of %d", jax.process_index(), jax.process_count())


def is_main_process() -> bool:
  """Process 0 writes the run folder's shared files (config, metrics, samples); every process computes."""
  return jax.process_index() == 0


def sync_processes(name: str) -> None:
  """A barrier across processes (a no-op in a lone one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def max_over_processes(value: int) -> int:
  """The largest of each process's `value` (e.g. how many eval batches each has)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return int(np.max(multihost_utils.process_allgather(np.int64(value))))


def main_first(name: str, fn: Callable[[], Any]) -> Any:
  """fn() on process 0, then on the others: for steps that write a shared file the rest then read (a tokenizer
  trained into the run folder, generated SFT data), so no two hosts write it at once."""
  if jax.process_count() == 1:
    return fn()
  if is_main_process():
    out = fn()
    sync_processes(name)
    return out
  sync_processes(name)
  return fn()


def host_local_copy(tree: Any) -> Any:
  """Every array of a (globally sharded) pytree as a whole numpy array on this host, for host-side work (sampling
  at the end of a run) that each process does alone; a lone process's arrays are all addressable already."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return multihost_utils.process_allgather(tree, tiled=True)


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
