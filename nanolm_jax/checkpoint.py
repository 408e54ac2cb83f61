"""Orbax checkpoints of a run: train state, data-iterator state and config, with fallback past corrupt steps."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class Checkpointer:
  """Wraps ocp.CheckpointManager at <workdir>/checkpoints.

  Items: "state" (sharded pytree, restored straight into the target shardings), "data" (the grain iterator state as
  JSON) and "config" (JSON). Saves can be async; `wait()` before exiting.
  """

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    # orbax (tensorstore) needs absolute local paths; remote ones (gs://...) are absolute already.
    workdir = workdir if "://" in workdir else os.path.abspath(workdir)
    self.directory = epath.Path(workdir) / "checkpoints"
    self._keep, self._async = keep, async_save
    self._mngr = self._make()

  def _make(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, enable_async_checkpointing=self._async, create=True)
    return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "config"))

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state: Any, data_state: Any, config: dict[str, Any]) -> None:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state if data_state is not None else {}),
        config=ocp.args.JsonSave(config),
    )
    self._mngr.save(step, args=args, force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, Any] | None:
    """(step, state, data_state) of the newest checkpoint that restores; None when there is none.

    A checkpoint that fails to restore (truncated or corrupt files) is moved aside to `corrupt.<step>` with a warning
    and the previous one is tried, so a crash during a save never bricks a run.
    """
    self.wait()
    for step in reversed(self.steps()):
      try:
        out = self._mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        )
        return step, out["state"], (out["data"] or None)
      except Exception as e:  # pylint: disable=broad-except  # any failure means: not usable, try an older one
        logging.warning(
            "checkpoint at step %d is unreadable (%s: %s); falling back to the previous one",
            step,
            type(e).__name__,
            str(e).splitlines()[0][:300] if str(e) else "",
        )
        self._quarantine(step)
    return None

  def _quarantine(self, step: int) -> None:
    src, dst = self.directory / str(step), self.directory / f"corrupt.{step}"
    if dst.exists():
      dst.rmtree()
    if src.exists():
      src.rename(dst)  # on an object store a copy + delete: slow but rare, and the step stays readable meanwhile
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
