"""The one-process pieces of multi-host runs: cluster detection, data shards, per-process data states.

The real two-process runs are in test_multihost.py.
"""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import sharding as shd
from nanolm_jax import trainer
from nanolm_jax.data import pipeline
from tests.conftest import REPO, make_config


def test_distributed_init_args():
  explicit = dict(JAX_COORDINATOR_ADDRESS="127.0.0.1:1234", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
  assert shd.distributed_init_args(explicit, on_cloud_tpu=False) == dict(
      coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1
  )
  with pytest.raises(ValueError, match="JAX_PROCESS_ID missing"):
    shd.distributed_init_args({**explicit, "JAX_PROCESS_ID": ""}, on_cloud_tpu=False)
  with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"):
    shd.distributed_init_args({**explicit, "JAX_PROCESS_ID": "2"}, on_cloud_tpu=False)
  # A TPU VM slice (one host or many), SLURM and Open MPI: JAX's own cluster detection, no arguments.
  assert shd.distributed_init_args({}, on_cloud_tpu=True) == {}
  assert shd.distributed_init_args({"SLURM_NTASKS": "4"}, on_cloud_tpu=False) == {}
  assert shd.distributed_init_args({"OMPI_COMM_WORLD_SIZE": "2"}, on_cloud_tpu=False) == {}
  # A lone process, including a one-task SLURM job and a stale TPU_WORKER_HOSTNAMES off a TPU VM.
  assert shd.distributed_init_args({}, on_cloud_tpu=False) is None
  assert shd.distributed_init_args({"SLURM_NTASKS": "1", "TPU_WORKER_HOSTNAMES": "a,b"}, on_cloud_tpu=False) is None
  assert not shd.on_cloud_tpu_vm()  # this CPU machine has no TPU chips on its PCI bus


def test_lone_process_helpers():
  assert shd.is_main_process() and shd.max_over_processes(3) == 3
  calls = []
  assert shd.main_first("x", lambda: calls.append(1) or 7) == 7 and calls == [1]
  tree = {"a": jnp.arange(3)}
  assert shd.host_local_copy(tree) is tree


def test_data_shards_are_validated():
  c = make_config()
  c.train.batch_size, c.train.data_shards = 8, 3
  with pytest.raises(ValueError, match="train.batch_size=8 does not split into 3 data shards"):
    trainer.validate_config(c, num_devices=1, process_count=1)
  c.train.data_shards = 4
  with pytest.raises(ValueError, match="train.data_shards=4 must be 0 or a multiple of the 3 processes"):
    trainer.validate_config(c, num_devices=3, process_count=3)
  assert trainer.data_shards(c, 2) == 4
  c.train.data_shards = 0
  assert trainer.data_shards(c, 2) == 2


class _Finite:
  """A finite stream of batches with get_state/set_state (a position)."""

  def __init__(self, rows, first, count):
    self.rows, self.first, self.count = rows, first, count

  def __iter__(self):
    return _FiniteIt(self)


class _FiniteIt:

  def __init__(self, ds):
    self.ds, self.i = ds, 0

  def __next__(self):
    if self.i >= self.ds.count:
      raise StopIteration
    v = self.ds.first + self.i
    self.i += 1
    return {"inputs": np.full((self.ds.rows, 2), v, np.int32), "weights": np.ones((self.ds.rows, 2), np.float32)}

  def get_state(self):
    return {"i": self.i}

  def set_state(self, s):
    self.i = s["i"]


def test_sharded_batches_concatenate_shards_and_pad_the_short_one():
  it = iter(pipeline.ShardedBatches([_Finite(2, 100, 3), _Finite(2, 200, 1)]))
  first = next(it)
  np.testing.assert_array_equal(first["inputs"][:, 0], [100, 100, 200, 200])
  state = it.get_state()
  rest = list(it)
  assert len(rest) == 2  # the longer shard sets the length; the short one is padding (weights 0)
  for b in rest:
    np.testing.assert_array_equal(b["weights"][2:], 0)
    np.testing.assert_array_equal(b["inputs"][2:], 0)
  np.testing.assert_array_equal([b["inputs"][0, 0] for b in rest], [101, 102])
  again = iter(pipeline.ShardedBatches([_Finite(2, 100, 3), _Finite(2, 200, 1)]))
  again.set_state(json.loads(json.dumps(state)))
  assert [b["inputs"].tolist() for b in again] == [b["inputs"].tolist() for b in rest]
  with pytest.raises(ValueError, match="holds 2 shards but this process reads 1"):
    iter(pipeline.ShardedBatches([_Finite(2, 0, 1)])).set_state(state)


def _state():
  return {"w": jnp.arange(4.0)}


def test_each_process_writes_its_own_data_state(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(3, _state(), {"pos": 17}, {"c": 1})
  ck.close()
  files = sorted(p.name for p in (tmp_path / "checkpoints" / "3" / "data_per_process").glob("*.json"))
  assert files == ["process_0-of-1.json"]
  step, state, data = ckpt_lib.Checkpointer(str(tmp_path)).restore_latest(jax.eval_shape(_state))
  assert step == 3 and data == {"pos": 17} and float(state["w"][3]) == 3.0


def test_data_states_of_another_process_count_are_refused_not_quarantined(tmp_path):
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(3, _state(), {"pos": 17}, {"c": 1})
  ck.close()
  d = tmp_path / "checkpoints" / "3" / "data_per_process"
  for i in range(2):
    (d / f"process_{i}-of-2.json").write_text("{}")
  (d / "process_0-of-1.json").unlink()
  with pytest.raises(ckpt_lib.DataStateMismatchError, match=r"states of \[2\] processes but this run has 1"):
    ckpt_lib.Checkpointer(str(tmp_path)).restore_latest(jax.eval_shape(_state))
  assert (tmp_path / "checkpoints" / "3").exists()  # a valid checkpoint is never moved aside for this


def test_checkpoints_with_one_data_json_still_restore(tmp_path):
  """Run folders from before per-process states: one JSON item "data"."""
  mngr = ocp.CheckpointManager(
      tmp_path / "checkpoints",
      options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True),
      item_names=("state", "data", "config"),
  )
  mngr.save(
      5,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(_state()), data=ocp.args.JsonSave({"pos": 9}), config=ocp.args.JsonSave({})
      ),
  )
  mngr.close()
  step, _, data = ckpt_lib.Checkpointer(str(tmp_path)).restore_latest(jax.eval_shape(_state))
  assert step == 5 and data == {"pos": 9}


def test_importing_the_entrypoints_starts_no_backend():
  """jax.distributed.initialize() must come before anything starts the XLA backend; an import that does (bm25s
  runs a JAX computation when imported) makes every multi-host run fail at its first line."""
  code = (
      "from jax._src import xla_bridge as xb\n"
      "import experiments.stage_cli, experiments.pretrain, experiments.sft, experiments.grpo\n"
      "import nanolm_jax.stages.pretrain, nanolm_jax.stages.sft, nanolm_jax.stages.grpo\n"
      "assert not xb._backends, 'an import started the XLA backend'\n"
  )
  p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
