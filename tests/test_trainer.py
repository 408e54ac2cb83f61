"""Trainer in-process: a run end to end, corrupt-checkpoint fallback, non-finite loss stops before a bad save."""

import json
import logging
import os

import numpy as np
import pytest

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import trainer
from tests.conftest import make_config, tiny_overrides

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow


@pytest.fixture
def cfg(small_corpus, small_tokenizer):
  return make_config("tiny", **tiny_overrides(small_corpus, small_tokenizer))


def test_run_writes_everything_and_learns(cfg, tmp_path):
  cfg.train.steps, cfg.train.eval_every = 12, 6
  cfg.train.profile_start, cfg.train.profile_steps = 2, 2
  out = trainer.train(cfg, str(tmp_path), pretraining.build(None))
  rows = metrics_lib.read_metrics(str(tmp_path))
  evals = [r for r in rows if "val_bpb" in r]
  assert [r["step"] for r in evals] == [0, 6, 12]
  assert evals[-1]["val_bpb"] < evals[0]["val_bpb"]
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
  for name in ("config.json", "tokenizer.model", "loss.png", "samples.txt"):
    assert (tmp_path / name).exists(), name
  assert os.listdir(tmp_path / "tensorboard")
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 12
  assert ckpt_lib.Checkpointer(str(tmp_path)).steps() == [6, 9, 12]  # every 3, keep 3
  assert out["step"] == 12 and np.isfinite(out["val_bpb"])
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))  # XProf's layout: plugins/profile/<time>/<host>
  assert len(traces) == 1 and b"train_step" in traces[0].read_bytes()


def _corrupt(step_dir):
  n = 0
  for root, _, files in os.walk(step_dir / "state"):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"\x00garbage")
      n += 1
  assert n


def test_corrupt_latest_checkpoint_falls_back_to_previous(cfg, tmp_path, caplog):
  cfg.train.steps = 6
  trainer.train(cfg, str(tmp_path), pretraining.build(None))
  _corrupt(tmp_path / "checkpoints" / "6")
  cfg.train.steps = 8
  with caplog.at_level(logging.WARNING):
    out = trainer.train(cfg, str(tmp_path), pretraining.build(None))
  assert any("step 6 is unreadable" in r.getMessage() for r in caplog.records)
  assert out["step"] == 8
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))  # steps 4-6 redone, logged once
  assert ckpt_lib.Checkpointer(str(tmp_path)).steps() == [3, 6, 8]


def test_non_finite_loss_stops_without_a_bad_checkpoint(cfg, tmp_path):
  stage = pretraining.build(None)
  make_data = stage.make_train_data

  def poisoned(ctx):
    it = make_data(ctx)
    for i, batch in enumerate(it):
      if i == 4:  # step 5 sees a NaN weight
        batch = dict(batch, weights=np.full_like(batch["weights"], np.nan))
      yield batch

  stage.make_train_data = poisoned
  with pytest.raises(trainer.NonFiniteLossError, match="step 5"):
    trainer.train(cfg, str(tmp_path), stage)
  assert ckpt_lib.Checkpointer(str(tmp_path)).steps() == [3]


def test_relative_workdir_checkpoints_and_resumes(cfg, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # the default workdir is relative (runs/pretrain_tiny)
  cfg.train.steps, cfg.train.eval_every = 3, 0
  trainer.train(cfg, "runs/rel", pretraining.build(None))
  cfg.train.steps = 4
  out = trainer.train(cfg, "runs/rel", pretraining.build(None))
  assert out["step"] == 4 and ckpt_lib.Checkpointer("runs/rel").steps() == [3, 4]


def test_bad_config_fails_before_any_folder(cfg, tmp_path):
  cfg.model.num_heads = 3
  with pytest.raises(ValueError, match="num_heads=3"):
    trainer.train(cfg, str(tmp_path / "run"), pretraining.build(None))
  assert not (tmp_path / "run").exists()
