"""The stage runner: init_from resolution, model inheritance with overrides honoured or refused by name (through the
real entrypoints too), GRPO's batch shape, and the default-run chain."""

import subprocess
import sys

import pytest

from configs import grpo as grpo_configs
from configs import pretrain as pretrain_configs
from configs import sft as sft_configs
from nanolm_jax import runs
from nanolm_jax.stages import base
from nanolm_jax.stages import grpo
from nanolm_jax.stages import pretrain
from nanolm_jax.stages import sft
from tests.conftest import REPO


@pytest.fixture
def start_run(tmp_path):
  """A folder that reads as a finished pretraining run (config only: resolving never touches the weights)."""
  folder = tmp_path / "start"
  cfg = pretrain_configs.get_config("tiny")
  runs.write_config(str(folder), cfg)
  return str(folder)


def test_stage_chain_and_shape():
  assert (grpo.STAGE.requires, sft.STAGE.requires, pretrain.STAGE.requires) == (sft.STAGE, pretrain.STAGE, None)
  for stage in (pretrain.STAGE, sft.STAGE, grpo.STAGE):
    assert callable(stage.build) and stage.name in ("pretrain", "sft", "grpo")
  assert base.default_workdir(sft.STAGE) == "runs/sft_tiny"


def test_model_comes_from_init_run(start_run, tmp_path):
  cfg = base.resolve_config(sft.STAGE, sft_configs.get_config(), str(tmp_path / "run"), init_from=start_run)
  assert cfg.init_from == start_run
  assert cfg.model.to_dict() == pretrain_configs.get_config("tiny").model.to_dict()


def test_runtime_model_keys_take_effect(start_run, tmp_path):
  s = sft_configs.get_config()
  s.model.dtype = "float32"
  s.model.remat = "full"
  cfg = base.resolve_config(sft.STAGE, s, str(tmp_path / "run"), init_from=start_run)
  assert (cfg.model.dtype, cfg.model.remat, cfg.model.num_layers) == ("float32", "full", 4)


@pytest.mark.parametrize("stage,config", [(sft.STAGE, sft_configs.get_config), (grpo.STAGE, grpo_configs.get_config)])
def test_architecture_override_is_an_error_naming_the_key(stage, config, start_run, tmp_path):
  c = config()
  c.model.num_layers = 2
  with pytest.raises(ValueError, match=r"model\.num_layers=2 cannot take effect"):
    base.resolve_config(stage, c, str(tmp_path / "run"), init_from=start_run)
  c.model.num_layers = 4  # the same value as the run's is no change
  assert base.resolve_config(stage, c, str(tmp_path / "run"), init_from=start_run).model.num_layers == 4


def test_resumed_run_keeps_its_own_init_from(start_run, tmp_path):
  other = tmp_path / "other"
  runs.write_config(str(other), pretrain_configs.get_config("tiny"))
  workdir = tmp_path / "run"
  runs.write_config(str(workdir), {"init_from": start_run})
  cfg = base.resolve_config(sft.STAGE, sft_configs.get_config(), str(workdir))
  assert cfg.init_from == start_run
  assert base.resolve_config(sft.STAGE, sft_configs.get_config(), str(workdir), init_from=str(other)).init_from == str(
      other
  )  # the flag wins


def test_init_from_must_be_a_run_and_pretraining_takes_none(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    base.resolve_config(sft.STAGE, sft_configs.get_config(), str(tmp_path / "run"), init_from=str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="from scratch"):
    base.resolve_config(pretrain.STAGE, pretrain_configs.get_config(), str(tmp_path / "run"), init_from="x")


def test_grpo_batch_is_prompts_times_group(start_run, tmp_path):
  c = grpo_configs.get_config()
  cfg = grpo.prepare(base.resolve_config(grpo.STAGE, c, str(tmp_path), init_from=start_run), str(tmp_path))
  assert cfg.train.batch_size == c.rl.prompts_per_step * c.rl.group_size
  for key, value in (("batch_size", 64), ("eval_batches", 4), ("z_loss", 1e-4)):
    bad = grpo_configs.get_config()
    bad.train[key] = value
    with pytest.raises(ValueError, match=rf"train\.{key}={value} cannot take effect"):
      grpo.prepare(base.resolve_config(grpo.STAGE, bad, str(tmp_path), init_from=start_run), str(tmp_path))


@pytest.mark.slow
def test_entrypoints_refuse_what_they_cannot_honour(start_run, tmp_path):
  """Through the real mains: exit non-zero naming the key, before any folder is made."""
  for entrypoint, override, message in (
      ("sft", "--config.model.num_layers=2", "model.num_layers=2 cannot take effect"),
      ("grpo", "--config.train.batch_size=64", "train.batch_size=64 cannot take effect"),
  ):
    workdir = tmp_path / entrypoint
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            f"experiments.{entrypoint}",
            f"--init_from={start_run}",
            f"--workdir={workdir}",
            override,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0 and message in p.stderr, (entrypoint, p.stderr[-2000:])
    assert not workdir.exists()


def test_sft_config_has_no_blocks_it_would_ignore():
  """SFT's data is `sft.*`, its tokenizer the starting run's: a `--config.data...` flag has nothing to set."""
  c = sft_configs.get_config()
  assert not {"data", "tokenizer", "sample"} & set(c)
  assert all(v is None for v in c.model.values())  # every model key comes from the starting run unless set
