"""Orbax checkpoints of a run: train state, data-iterator state and config, with fallback past corrupt steps."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import grain.checkpoint as grain_ckpt
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from nanolm_jax import sharding as shd

# One iterator state per process (grain's handler writes process_<i>-of-<n>.json), so that on several hosts each
# resumes its own data position. Checkpoints before this held one JSON ("data", written by process 0).
DATA_ITEM, LEGACY_DATA_ITEM = "data_per_process", "data"
_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


# Replicas write a replicated array cooperatively (orbax's replica-parallel save) only where each one's slice is big
# enough to matter: below that, one replica writes the whole array, and saving a small model does not compile a
# slicing program per parameter shape (~70 compiles, 2-3 s on a CPU, for every run that saves).
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 1 << 20
ocp.type_handlers.register_type_handler(
    jax.Array,
    ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL),
    override=True,
)


class DataStateMismatchError(ValueError):
  """The checkpoint's data-iterator states were written by a different number of processes than are running."""


class _StateBox:
  """One process's iterator state as grain's checkpoint handler reads and writes it (JSON bytes), captured at save
  time so an async save never sees the iterator move on."""

  def __init__(self, state: Any = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:  # called by the handler after set_state; nothing to prefetch
    pass


class Checkpointer:
  """Wraps ocp.CheckpointManager at <workdir>/checkpoints.

  Items: "state" (sharded pytree, restored straight into the target shardings), "data_per_process" (each process's
  data-iterator state) and "config" (JSON). Saves can be async; `wait()` before exiting.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    # orbax (tensorstore) needs absolute local paths; remote ones (gs://...) are absolute already.
    workdir = workdir if "://" in workdir else os.path.abspath(workdir)
    self.directory = epath.Path(workdir) / "checkpoints"
    self._keep, self._async = keep, async_save
    self._mngr = self._make()

  def _make(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, enable_async_checkpointing=self._async, create=True)
    return ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", DATA_ITEM, LEGACY_DATA_ITEM, "config")
    )

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state: Any, data_state: Any, config: dict[str, Any]) -> None:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        **{DATA_ITEM: grain_ckpt.CheckpointSave(_StateBox(data_state if data_state is not None else {}))},
        config=ocp.args.JsonSave(config),
    )
    self._mngr.save(step, args=args, force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, Any] | None:
    """(step, state, data_state) of the newest checkpoint that restores; None when there is none.

    A checkpoint that fails to restore (truncated or corrupt files) on any process is moved aside to
    `corrupt.<step>` with a warning and the previous one is tried, so a crash during a save never bricks a run. Data
    states written by another number of processes raise DataStateMismatchError (the run's data order would change).
    """
    self.wait()
    for step in reversed(self.steps()):
      data_item = self._data_item(step)
      try:
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_item == DATA_ITEM:
          args[DATA_ITEM] = grain_ckpt.CheckpointRestore(_StateBox())
        elif data_item == LEGACY_DATA_ITEM:
          args[LEGACY_DATA_ITEM] = ocp.args.JsonRestore()
        out = self._mngr.restore(step, args=ocp.args.Composite(**args))
        data = out[DATA_ITEM].state if data_item == DATA_ITEM else out[data_item] if data_item else None
        error = None
      except Exception as e:  # pylint: disable=broad-except  # any failure means: not usable, try an older one
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      if shd.max_over_processes(int(error is not None)) == 0:  # all hosts must restore the same step
        return step, out["state"], (data or None)
      logging.warning("checkpoint at step %d is unreadable (%s); falling back to the previous one", step, error)
      self._quarantine(step)
    return None

  def _data_item(self, step: int) -> str | None:
    """Which data item the step holds; DataStateMismatchError when this process's own state is not among them."""
    step_dir = self.directory / str(step)
    per_process = step_dir / DATA_ITEM
    if per_process.exists():
      found = {int(m.group(2)) for p in per_process.iterdir() if (m := _PROCESS_FILE.fullmatch(p.name))}
      if found and found != {jax.process_count()}:
        raise DataStateMismatchError(
            f"checkpoint {step_dir} holds data-iterator states of {sorted(found)} processes but this run has "
            f"{jax.process_count()}: resume with the same number of processes (or start a new run folder)"
        )
      return DATA_ITEM
    if (step_dir / LEGACY_DATA_ITEM).exists():
      if jax.process_count() > 1:
        raise DataStateMismatchError(
            f"checkpoint {step_dir} holds one data-iterator state (written by a one-process run): resume it with "
            "one process"
        )
      return LEGACY_DATA_ITEM
    return None

  def _quarantine(self, step: int) -> None:
    if jax.process_index() == 0:  # one host moves it; the others wait, then see it gone
      src, dst = self.directory / str(step), self.directory / f"corrupt.{step}"
      if dst.exists():
        dst.rmtree()
      if src.exists():
        src.rename(dst)  # on an object store a copy + delete: slow but rare, and the step stays readable meanwhile
    shd.sync_processes(f"quarantine_{step}")
    self._mngr.close()
    self._mngr = self._make()  # the manager caches its step list

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster's preemption notice has reached this step (multi-host TPU); False elsewhere."""
    try:
      return bool(self._mngr.reached_preemption(step))
    except Exception:  # pylint: disable=broad-except  # no distributed preemption service in this process
      return False

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def read_config(workdir: str) -> dict[str, Any]:
  """The run's config.json as a dict (the contract every entrypoint loads a run by)."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} is not a nanolm_jax run folder: no config.json")
  return json.loads(path.read_text())


def restore_params(workdir: str, target: Any = None, step: int | None = None) -> tuple[int, Any]:
  """(step, params) from a run's checkpoint (latest by default), without reading the optimizer state.

  target: a pytree of jax.ShapeDtypeStruct with shardings (e.g. the new run's abstract params) to restore straight
  into; None restores every array onto the default device. Shapes must match the run's model config.
  """
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    steps = ckpt.steps()
    if not steps:
      raise FileNotFoundError(f"{workdir} has no checkpoints")
    step = steps[-1] if step is None else step
    if target is None:
      meta = ocp.PyTreeCheckpointer().metadata(os.fspath(ckpt.directory / str(step) / "state"))
      meta = getattr(meta, "item_metadata", meta)["params"]
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding, dtype=t.dtype), target)
    out = ckpt._mngr.restore(  # pylint: disable=protected-access
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": target}, restore_args={"params": restore_args}, partial_restore=True
            )
        ),
    )
    return step, out["state"]["params"]
  finally:
    ckpt.close()


def load_params(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of a run's checkpoint (latest by default), restored on the default device."""
  return ml_collections.ConfigDict(read_config(workdir)), restore_params(workdir, step=step)[1]
