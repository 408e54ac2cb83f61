"""RL stage: rows by hand, overlong penalty, rollouts with the engine (shared prefill, π_old, masks, μ, resume,
dynamic sampling), a step's direction, and a run on the shared trainer (metrics, eval at step 0, curves, resume)."""

import glob
import json
import os

import jax
import numpy as np
import optax
import pytest

from configs import grpo as grpo_configs
from nanolm_jax import engine as engine_lib
from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import model as model_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import sharding as shd
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer
from nanolm_jax.posttrain import rollouts
from nanolm_jax.posttrain import tasks
from nanolm_jax.stages import base
from nanolm_jax.stages import grpo as grpo_stage
from tests.conftest import make_config, tiny_overrides

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow


def _completion(tokens, logprobs, mask, reason="stop"):
  return engine_lib.Completion(
      prompt_index=0,
      sample_index=0,
      tokens=tokens,
      logprobs=logprobs,
      sampling_logprobs=logprobs,
      generated_mask=mask,
      text="",
      finish_reason=reason,
  )


def test_build_rows_by_hand():
  prompts = [[1, 5, 6], [1, 7]]
  comps = [
      _completion([8, 9, 10], [-1.0, 0.0, -3.0], [True, False, True]),  # 9 is a forced tool token
      _completion([11], [-0.5], [True], reason="length"),
  ]
  rows = rollouts.build_rows(prompts, comps, seq_len=16, length_bucket=4)
  # Row 0: 1 5 6 | 8 9 10 -> 5 inputs, padded to 8 (next multiple of 4).
  np.testing.assert_array_equal(rows["inputs"][0], [1, 5, 6, 8, 9, 0, 0, 0])
  np.testing.assert_array_equal(rows["targets"][0], [5, 6, 8, 9, 10, 0, 0, 0])
  np.testing.assert_array_equal(rows["weights"][0], [0, 0, 1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(rows["old_logprobs"][0], [0, 0, -1, 0, -3, 0, 0, 0])
  np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(rows["positions"][0, :5], [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(rows["inputs"][1], [1, 7, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows["targets"][1, :2], [7, 11])
  np.testing.assert_array_equal(rows["weights"][1], [0, 1, 0, 0, 0, 0, 0, 0])
  assert rollouts.build_rows(prompts, comps, seq_len=16)["inputs"].shape == (2, 16)
  with pytest.raises(ValueError, match="does not fit"):
    rollouts.build_rows(prompts, comps, seq_len=4)


def test_overlong_penalty_by_hand():
  # max 20 tokens, the last 8 punished: <= 12 free, 16 -> (12 - 16) / 8 = -0.5, 20 -> -1, beyond -> -1.
  assert [rollouts.overlong_penalty(n, 20, 8) for n in (5, 12, 16, 20, 25)] == [0.0, 0.0, -0.5, -1.0, -1.0]
  assert rollouts.overlong_penalty(25, 20, 0) == 0.0


# --- with a model -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_run(small_corpus, small_tokenizer, tmp_path_factory):
  """A tiny pretrained run folder (1 step: a near-random policy is enough to exercise the machinery)."""
  cfg = make_config("tiny", **tiny_overrides(small_corpus, small_tokenizer))
  cfg.train.update(steps=1, eval_every=0, checkpoint_every=1)
  workdir = str(tmp_path_factory.mktemp("base_run"))
  trainer.train(
      cfg,
      workdir,
      trainer.Stage(
          name="pretrain",
          make_loss=pretraining.build(None).make_loss,
          make_train_data=pretraining.build(None).make_train_data,
          load_tokenizer=pretraining.build(None).load_tokenizer,
      ),
  )
  return workdir


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory):
  """Short GSM8K-format problems ('What is 2 + 3?' ... '#### 5') so prompts fit the tiny context."""
  path = tmp_path_factory.mktemp("gsm8k") / "train.jsonl"
  with open(path, "w") as f:
    for a in range(1, 9):
      for b in range(1, 9):
        f.write(json.dumps({"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}) + "\n")
  return str(path)


def _rl_config(run, path, **rl_overrides):
  cfg = grpo_configs.get_config("tiny")
  cfg.init_from = run
  cfg.task.update(name="gsm8k", train_path=path, eval_permille=100)
  cfg.train.update(steps=2, seq_len=32, eval_every=2, checkpoint_every=1, async_checkpointing=False)
  cfg.optim.update(lr=1e-3, warmup_steps=0)
  cfg.rl.update(group_size=4, prompts_per_step=2, max_new_tokens=8, length_bucket=8, **rl_overrides)
  cfg.eval.update(num_problems=4, samples=2, max_new_tokens=8, chunk_prompts=4)
  return base.prepare_config(grpo_stage.STAGE, cfg, "")


class _Ctx:
  """The pieces of a trainer.RunContext that the RL data needs, with fixed params."""

  def __init__(self, cfg):
    run_cfg, params = ckpt_lib.load_params(cfg.init_from)
    del run_cfg
    self.cfg, self.workdir = cfg, ""
    self.mesh = shd.make_mesh(cfg.mesh)
    self.model = model_lib.build_model(cfg, self.mesh)
    self.tokenizer = base.inherited_tokenizer(cfg, cfg.init_from)
    self.params = engine_lib.Engine(self.model, params, mesh=self.mesh).params  # sharded like the trainer's
    self.current_params = lambda: self.params


def _data(cfg, task=None):
  ctx = _Ctx(cfg)
  shared = rollouts.Shared(ctx)
  if task is not None:
    shared.task = task
  return ctx, shared, rollouts.RolloutData(shared)


def test_rollout_batch_groups_logprobs_mu_and_resume(base_run, gsm8k_file):
  cfg = _rl_config(base_run, gsm8k_file, inner_steps=2, dynamic_sampling=False)
  ctx, shared, data = _data(cfg)
  b1 = next(data)
  eng = shared.engine(ctx.params)
  assert eng.stats["prefill_calls"] == 1 and eng.stats["prefill_rows"] == 2  # G = 4 samples share one prefill
  n, width = b1["inputs"].shape
  assert n == 8 and width % 8 == 0 and width <= 32
  assert set(b1) == set(rollouts.ROW_KEYS) | {"advantages"}
  for g in range(2):  # one prompt per group, its rows start alike and carry no weight on the prompt
    rows = slice(4 * g, 4 * g + 4)
    first = np.argmax(b1["weights"][rows][0] > 0)
    assert (b1["inputs"][rows][:, : first + 1] == b1["inputs"][rows][0, : first + 1]).all()
    assert (b1["weights"][rows][:, :first] == 0).all()
  w = b1["weights"]
  assert ((w == 0) | (w == 1)).all() and w.sum() > 0
  # π_old from the engine's cached decoding = a full forward of the same params (the first inner step's ratio 1).
  logp = shared.forward_logprobs(ctx.params, b1)
  np.testing.assert_allclose(logp * w, b1["old_logprobs"], atol=2e-4)
  m = data.step_metrics()
  lengths = w.sum(1)
  assert m["response_len"] == pytest.approx(lengths.mean())
  assert m["truncated_frac"] == pytest.approx(np.mean(lengths == 8))  # a near-random model rarely stops in 8
  assert 0 <= m["accuracy"] <= 1 and m["rollout_tokens_per_s"] > 0

  b2 = next(data)  # μ = 2: the same batch again, same old_logprobs
  assert b2 is b1 and "update_tokens_per_s" in data.step_metrics()
  state = data.get_state()
  assert state == {"rollouts": 1, "cursor": 2, "inner": 0}
  b3 = next(data)
  assert b3 is not b1
  # Resume: a fresh iterator at the saved state draws the same prompts and samples.
  _, _, again = _data(cfg)
  again.set_state(state)
  b3_again = next(again)
  for k in b3:
    np.testing.assert_array_equal(b3[k], b3_again[k])
  assert again.get_state() == {"rollouts": 2, "cursor": 4, "inner": 1}


def _constant_on_even(path):
  """Reward 1 for every sample of an even-answer problem (no signal), the completion's length otherwise."""
  task = tasks.GSM8KTask(train_path=path, eval_permille=100)
  task.score = lambda text, problem: {"reward": 1.0 if problem.answer % 2 == 0 else float(len(text))}
  return task


def test_dynamic_sampling_drops_flat_groups_and_refills_bounded(base_run, gsm8k_file):
  cfg = _rl_config(base_run, gsm8k_file, max_sample_rounds=3)
  task = _constant_on_even(gsm8k_file)
  _, _, data = _data(cfg, task)
  batch = next(data)
  m = data.step_metrics()
  answers = [task.train_problem(i).answer for i in range(data.cursor)]
  kept_first = np.mean([a % 2 == 1 for a in answers[:2]])
  assert m["groups_kept_frac"] == pytest.approx(kept_first)
  kept_so_far, rounds, drawn = 0, 0, 0  # each round draws P - kept new prompts; odd-answer groups are kept
  while kept_so_far < 2 and rounds < 3:
    batch_answers = answers[drawn : drawn + 2 - kept_so_far]
    drawn += len(batch_answers)
    kept_so_far += sum(a % 2 == 1 for a in batch_answers)
    rounds += 1
  assert m["sample_rounds"] == rounds and drawn == data.cursor
  w_G = batch["weights"].reshape(2, 4, -1).sum(axis=(1, 2))
  adv_G = np.abs(batch["advantages"][:, 0]).reshape(2, 4).sum(1)
  kept = int(np.sum(w_G > 0))
  assert kept == min(2, sum(a % 2 == 1 for a in answers))  # odd-answer groups kept, refilled up to P
  assert (adv_G[w_G > 0] > 0).all() and (adv_G[w_G == 0] == 0).all()  # filler: zero advantage, zero weight

  cfg = _rl_config(base_run, gsm8k_file, max_sample_rounds=2)
  always = _constant_on_even(gsm8k_file)
  always.score = lambda text, problem: {"reward": 1.0}
  _, _, data = _data(cfg, always)
  batch = next(data)
  assert data.step_metrics()["sample_rounds"] == 2 and data.cursor == 4  # bounded: 2 rounds of 2 prompts
  assert batch["weights"].sum() == 0


def test_a_step_raises_the_logprob_of_better_samples(base_run, gsm8k_file):
  cfg = _rl_config(base_run, gsm8k_file, dynamic_sampling=False)
  ctx, shared, data = _data(cfg)
  batch = next(data)
  # Advantages of our choosing: +1 / -1 alternating within each group (rewards aside).
  batch["advantages"] = np.tile(np.array([1.0, -1.0], np.float32), 4)[:, None] * np.ones_like(batch["weights"])
  loss = grpo_stage.build(cfg).make_loss(ctx, trainer._apply_fn(ctx.model))  # pylint: disable=protected-access
  tx = optax.sgd(0.05)
  step = jax.jit(step_lib.make_train_step(loss, tx))
  state, m = step(step_lib.init_state(ctx.params, tx), {k: np.asarray(v) for k, v in batch.items()})
  assert float(m["ratio"]) == pytest.approx(1.0, abs=1e-4) and float(m["clip_frac"]) == 0.0
  before = (shared.forward_logprobs(ctx.params, batch) * batch["weights"]).sum(1)
  after = (shared.forward_logprobs(state.params, batch) * batch["weights"]).sum(1)
  delta = after - before
  assert (delta[0::2] > 0).all() and (delta[1::2] < 0).all()


def test_eval_kl_is_zero_at_the_start_and_positive_after_a_step(base_run, gsm8k_file):
  cfg = _rl_config(base_run, gsm8k_file, dynamic_sampling=False)
  ctx, shared, data = _data(cfg)
  start = rollouts.evaluate(shared, ctx.params)
  assert start["eval_kl"] == 0.0  # the policy is the reference (init_from): the same forward, the same numbers
  batch = next(data)
  batch["advantages"] = np.tile(np.array([1.0, -1.0], np.float32), 4)[:, None] * np.ones_like(batch["weights"])
  loss = grpo_stage.build(cfg).make_loss(ctx, trainer._apply_fn(ctx.model))  # pylint: disable=protected-access
  tx = optax.sgd(0.5)
  state, _ = jax.jit(step_lib.make_train_step(loss, tx))(
      step_lib.init_state(ctx.params, tx), {k: np.asarray(v) for k, v in batch.items()}
  )
  assert rollouts.evaluate(shared, state.params)["eval_kl"] > 0.0
  cfg.eval.temperature = 0.7  # not the policy's own samples: no KL estimate
  assert "eval_kl" not in rollouts.evaluate(shared, ctx.params)
  cfg.eval.update(temperature=1.0, samples=1)  # 4 rows on 8 data-parallel devices: padded, not an error
  kl = rollouts.evaluate(shared, state.params)["eval_kl"]  # 4 samples: the estimate may fall either side of 0
  assert np.isfinite(kl) and kl != 0.0


def _json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, OSError):
    return None


def test_run_on_the_shared_trainer_logs_evals_and_resumes(base_run, gsm8k_file, tmp_path):
  cfg = _rl_config(base_run, gsm8k_file, log_kl=True, dynamic_sampling=False)
  out = trainer.train(cfg, str(tmp_path), grpo_stage.build(cfg))
  rows = metrics_lib.read_metrics(str(tmp_path))
  evals = [r for r in rows if "eval_accuracy" in r]
  assert [r["step"] for r in evals] == [0, 2]  # step 0 is the starting model
  assert all("eval_pass@2" in r and r["eval_pass@2"] >= r["eval_accuracy"] for r in evals)
  assert evals[0]["eval_kl"] == 0.0  # KL to init_from: none before a step (the loss is 0 here: all rewards tie)
  steps = [r for r in rows if "loss" in r]
  assert [r["step"] for r in steps] == [1, 2]
  for key in ("reward", "accuracy", "clip_frac", "entropy", "response_len", "rollout_tokens_per_s", "rollout_kl"):
    assert all(np.isfinite(r[key]) for r in steps), key
  assert steps[0]["rollout_kl"] == pytest.approx(0.0, abs=1e-3)  # step 1 samples from the reference itself
  assert "update_tokens_per_s" in steps[1]
  for name in ("rl_curves.png", "tokenizer.model", "config.json"):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / "config.json").read_text())["init_from"] == base_run  # the reference pointer
  assert out["eval_accuracy_start"] == evals[0]["eval_accuracy"]

  cfg.train.steps = 3
  trainer.train(cfg, str(tmp_path), grpo_stage.build(cfg))
  state = [_json(f) for f in glob.glob(os.path.join(tmp_path, "checkpoints", "3", "data_per_process", "*.json"))]
  state = next(s for s in state if isinstance(s, dict) and "cursor" in s)
  assert state == {"rollouts": 3, "cursor": 6, "inner": 0}  # continued the prompt stream after step 2
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]


def test_rollouts_in_fewer_slots_are_the_engine_call_rows(base_run, gsm8k_file):
  # rl.rollout_slots: continuous batching, rows joining as others end; the same rows (same keys) as one engine call.
  want = next(_data(_rl_config(base_run, gsm8k_file, dynamic_sampling=False))[2])
  got = next(_data(_rl_config(base_run, gsm8k_file, dynamic_sampling=False, rollout_slots=2))[2])
  for k in ("inputs", "targets", "weights", "advantages"):
    np.testing.assert_array_equal(got[k], want[k])
  np.testing.assert_allclose(got["old_logprobs"], want["old_logprobs"], atol=1e-4)
