"""RLHF stage: the KL estimate by hand and on a toy distribution, the reward for advantages is the reward model's
score of the same text, KL 0 at the start, best-of-n rows, and a missing / wrong reward-model run refused."""

import json
import os
import types

import jax
import numpy as np
import pytest

from configs import rlhf as rlhf_configs
from configs import sft as sft_configs
from nanolm_jax import engine as engine_lib
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.posttrain import best_of_n
from nanolm_jax.posttrain import gold_judge
from nanolm_jax.posttrain import grpo
from nanolm_jax.posttrain import reward_model as rm_lib
from nanolm_jax.posttrain import rlhf
from nanolm_jax.posttrain import rollouts
from nanolm_jax.stages import base
from nanolm_jax.stages import rlhf as rlhf_stage
from tests.conftest import make_config, tiny_overrides


def test_sequence_kl_by_hand():
  logp = np.array([[-1.0, -2.0, -0.5, -9.0], [-0.1, -0.2, -0.3, -0.4]])
  ref = np.array([[-1.5, -1.0, -0.5, -1.0], [-0.1, -0.1, -0.1, -0.1]])
  w = np.array([[0, 1, 1, 0], [1, 1, 1, 1]], np.float32)  # prompt / padding / forced tokens weigh 0
  # row 0: (-2 + 1) + (-0.5 + 0.5) = -1; row 1: 0 - 0.1 - 0.2 - 0.3 = -0.6
  np.testing.assert_allclose(rollouts.sequence_kl(logp, ref, w), [-1.0, -0.6])
  np.testing.assert_array_equal(rollouts.sequence_kl(logp, logp, w), [0.0, 0.0])


def test_sequence_kl_estimates_the_kl_of_a_toy_distribution():
  # Two independent tokens from p; the estimate on p's own samples converges to 2 KL(p || q).
  p, q = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.3, 0.5])
  exact = 2 * float(np.sum(p * np.log(p / q)))  # 2 x 0.6390 nats
  tokens = np.random.default_rng(0).choice(3, size=(200_000, 2), p=p)
  kl_B = rollouts.sequence_kl(np.log(p)[tokens], np.log(q)[tokens], np.ones((len(tokens), 2)))
  assert abs(kl_B.mean() - exact) < 0.01
  assert kl_B.min() < 0  # one sample's estimate may be negative; the mean is not


def test_bon_rows_are_best_of_n_on_the_same_scores():
  rng = np.random.default_rng(1)
  proxy, gold = rng.normal(size=(5, 8)), rng.uniform(size=(5, 8))
  rows = rlhf.bon_table(proxy, gold)
  ref = best_of_n.best_of_n(proxy, gold)
  assert [r["bon_n"] for r in rows] == list(range(1, 9))
  np.testing.assert_allclose([r["bon_gold"] for r in rows], ref["gold"])
  np.testing.assert_allclose([r["bon_proxy"] for r in rows], ref["proxy"])
  np.testing.assert_allclose([r["bon_kl"] for r in rows], best_of_n.bon_kl(np.arange(1, 9)))
  assert rows[0]["bon_gold"] == pytest.approx(gold.mean())  # best-of-1 is the policy itself


# --- with tiny models ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(small_corpus, small_tokenizer):
  """A tiny random policy and reward model on the small tokenizer, the gold task on the default fact world."""
  pre = make_config("tiny", **tiny_overrides(small_corpus, small_tokenizer))
  cfg = rlhf_configs.get_config("tiny")
  cfg.model, cfg.mesh, cfg.sharding_rules = pre.model, pre.mesh, pre.sharding_rules
  cfg.train.update(seq_len=64)
  cfg.rl.update(group_size=4, prompts_per_step=2, max_new_tokens=8, length_bucket=8)
  cfg.eval.update(num_problems=4, samples=2, max_new_tokens=8, chunk_prompts=4)
  cfg.rlhf.update(train_prompts=16, log_samples=0)
  tok = tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)
  mesh = shd.make_mesh(cfg.mesh)
  model = model_lib.build_model(cfg, mesh)
  tokens = np.zeros((8, 8), np.int32)  # a batch the 8-device mesh divides
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  params = engine_lib.Engine(model, params, mesh=mesh).params  # sharded as the trainer's
  rm_model = rm_lib.RewardModel(model.cfg)
  rm_params = rm_model.init(jax.random.PRNGKey(1), tokens)["params"]
  scorer = rm_lib.Scorer(rm_model, rm_params, tok, chunk=8, bucket=16)
  gcfg = gold_judge.default_gold_config()
  task = rlhf.RewardModelTask(scorer, gold_judge.GoldJudge(gcfg), gcfg, int(cfg.rlhf.train_prompts))
  ctx = types.SimpleNamespace(cfg=cfg, workdir="", model=model, mesh=mesh, tokenizer=tok, current_params=lambda: params)
  shared = rollouts.Shared(ctx, task=task, reference="unused")
  shared._ref = params  # the reference is the policy itself (as at step 0)
  return types.SimpleNamespace(cfg=cfg, tok=tok, params=params, scorer=scorer, task=task, shared=shared)


def test_reward_for_advantages_is_the_reward_models_score_of_the_text(setup, monkeypatch):
  seen = {}
  real = grpo.group_advantages

  def spy(rewards_PxG, estimator):
    seen["rewards"] = np.asarray(rewards_PxG)
    return real(rewards_PxG, estimator)

  monkeypatch.setattr(grpo, "group_advantages", spy)
  data = rollouts.RolloutData(setup.shared)
  rows, m = data._rollout(setup.params)
  del rows
  p, g = setup.cfg.rl.prompts_per_step, setup.cfg.rl.group_size
  assert seen["rewards"].shape == (p, g)
  # The same prompts and samples again (same seed), each text scored alone by the reward model.
  data2 = rollouts.RolloutData(setup.shared)
  problems = [prob for prob, _ in data2._problems(p)]
  outs = setup.shared.engine(setup.params).generate(
      [setup.shared.prompt(prob) for prob in problems],
      data2.sampling,
      n=g,
      seed=int(setup.cfg.seed) * 1_000_003 % (2**31 - 1),
      stop_tokens=setup.shared.stop_tokens,
  )
  alone = []
  for i, o in enumerate(outs):
    reply = rlhf.reply_text(o.tokens, setup.tok)
    conv = setup.task.messages(problems[i // g]) + [{"role": "assistant", "content": reply}]
    alone.append(float(setup.scorer([conv])[0]) if reply else np.nan)
  alone = np.array(alone).reshape(p, g)
  live = ~np.isnan(alone)
  assert live.any()
  np.testing.assert_allclose(seen["rewards"][live], alone[live], rtol=1e-4, atol=1e-4)
  assert {"proxy", "gold", "reward"} <= set(m) and "accuracy" not in m
  assert m["proxy"] == pytest.approx(m["reward"])


def test_eval_kl_is_zero_when_the_policy_is_the_reference(setup):
  m = rlhf.evaluate(setup.shared, setup.params)
  assert {"proxy_reward", "gold_reward", "kl"} <= set(m)
  assert m["kl"] == 0.0
  assert 0.0 <= m["gold_reward"] <= 1.0
  moved = jax.tree.map(lambda x: x * 1.5, setup.params)
  assert rlhf.evaluate(setup.shared, moved)["kl"] != 0.0


def test_kl_in_reward_subtracts_the_sequence_kl(setup, monkeypatch):
  seen = []
  real = grpo.group_advantages
  monkeypatch.setattr(grpo, "group_advantages", lambda r, e: (seen.append(np.asarray(r)), real(r, e))[1])
  rollouts.RolloutData(setup.shared)._rollout(setup.params)
  data = rollouts.RolloutData(setup.shared, kl_in_reward=0.5)
  rows, m = data._rollout(setup.params)
  kl_B = rollouts.sequence_kl(rows["old_logprobs"], setup.shared.forward_logprobs(setup.params, rows), rows["weights"])
  np.testing.assert_allclose(seen[1], seen[0] - 0.5 * kl_B.reshape(seen[0].shape), atol=1e-5)
  assert "kl_penalty" in m


# --- the stage refuses what it cannot start from ---------------------------------------------------------------------


def test_stage_refuses_a_missing_or_wrong_reward_model_run(tmp_path):
  cfg = rlhf_configs.get_config("tiny")
  w = str(tmp_path / "rlhf")
  with pytest.raises(FileNotFoundError, match="is not a run folder"):
    base.prepare_config(rlhf_stage.STAGE, cfg, w, init_from=str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="needs init_from: a reward_model run folder"):
    base.prepare_config(rlhf_stage.STAGE, cfg, w)
  sft = str(tmp_path / "sft")
  sft_cfg = sft_configs.get_config("tiny")
  sft_cfg.model = model_lib.default_model_config()
  runs.write_config(sft, sft_cfg)
  with pytest.raises(ValueError, match="rlhf starts from a reward_model run"):
    base.prepare_config(rlhf_stage.STAGE, cfg, w, init_from=sft)
  rm = str(tmp_path / "rm")
  sft_cfg.stage, sft_cfg.init_from = "reward_model", sft
  runs.write_config(rm, sft_cfg)
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    base.prepare_config(rlhf_stage.STAGE, cfg, w, init_from=rm)
  with pytest.raises(ValueError, match="unknown preset"):
    rlhf_configs.get_config("huge")


# --- on the shared trainer -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_runs_from_a_reward_model_run_and_logs_the_curves(one_step_run, one_step_reward_model, tmp_path):
  base_dir, rm_dir = one_step_run, one_step_reward_model["run"]  # a one-block proxy of the two-block policy
  c = rlhf_configs.get_config("kl")
  c.train.update(steps=2, seq_len=64, eval_every=1, checkpoint_every=2, async_checkpointing=False)
  c.rl.update(group_size=4, prompts_per_step=2, max_new_tokens=8, length_bucket=8)
  c.eval.update(num_problems=8, samples=1, max_new_tokens=8, chunk_prompts=8)
  c.rlhf.update(train_prompts=16, bon_samples=2)
  workdir = str(tmp_path / "rlhf")
  out = base.run(rlhf_stage.STAGE, c, workdir, init_from=rm_dir)
  assert out["step"] == 2
  saved = runs.read_config(workdir)
  assert saved.init_from == rm_dir and saved.rlhf.policy_from == base_dir
  assert saved.model.num_layers == 2  # the policy's, not the one-block proxy's
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in rows if "gold_reward" in r]
  assert [r["step"] for r in evals] == [0, 1, 2] and evals[0]["kl"] == 0.0
  assert [r["bon_n"] for r in rows if "bon_n" in r] == [1, 2]
  assert any("kl_penalty" in r for r in rows)
  assert os.path.exists(os.path.join(workdir, rlhf.SAMPLES_FILE))
  for name in ("rlhf_curves.png", "rlhf_fits.json"):  # the overoptimisation report of the run's own curves
    assert os.path.exists(os.path.join(workdir, name)), name
  assert runs.load_run(workdir).model.cfg.num_layers == 2  # the chat CLI's and server's loader reads the policy
  with pytest.raises(ValueError, match="scores replies and cannot generate"):
    runs.load_run(rm_dir)  # a reward model has no LM head: a clear error, not a missing-parameter one
