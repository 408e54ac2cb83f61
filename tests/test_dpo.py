"""DPO in the RLHF stage: the loss against a hand computation from log-probs summed by hand, the batch's reference
log-probs, log 2 at the start, the resumable iterator, bad knobs refused, and a tiny run from a reward-model run."""

import json
import math
import os

import jax
import numpy as np
import pytest

from configs import rlhf as rlhf_configs
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax.posttrain import dpo
from nanolm_jax.posttrain import preferences
from nanolm_jax.stages import base
from nanolm_jax.stages import rlhf as rlhf_stage

VOCAB, SEQ_LEN, PAD = 64, 24, 0


@pytest.fixture(scope="module")
def tiny():
  """A tiny LM, two different param sets (policy, reference) and 4 pairs of random token ids."""
  mc = model_lib.default_model_config()
  mc.update(vocab_size=VOCAB, num_layers=1, num_heads=2, d_model=32, max_len=SEQ_LEN, dtype="float32")
  model = model_lib.Transformer(model_lib.ModelConfig.from_config(mc))
  dummy = np.zeros((1, SEQ_LEN), np.int32)
  policy = model.init(jax.random.PRNGKey(0), dummy)["params"]
  reference = model.init(jax.random.PRNGKey(1), dummy)["params"]
  rng = np.random.default_rng(0)
  ids = lambda n: [int(t) for t in rng.integers(1, VOCAB, n)]
  rendered = [{"prompt": ids(3 + i), "chosen": ids(2 + 2 * i), "rejected": ids(5 - i)} for i in range(4)]
  return model, policy, reference, rendered


def logp_by_hand(model, params, prompt, reply) -> float:
  """Σ over the reply's tokens of log softmax(logits one position earlier)[token]: the row alone, followed by pad
  tokens up to SEQ_LEN without segment ids (causal attention: they cannot change the earlier logits)."""
  n = len(prompt) + len(reply)
  row = np.full((1, SEQ_LEN), PAD, np.int32)
  row[0, :n] = prompt + reply
  logits = np.asarray(_forward(model)(params, row), np.float64)[0, :n]
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.sum(np.exp(logits - top), -1, keepdims=True))
  return float(sum(logp[t - 1, row[0, t]] for t in range(len(prompt), n)))


_FORWARDS = {}


def _forward(model):
  if model not in _FORWARDS:
    _FORWARDS[model] = jax.jit(lambda p, tokens: model.apply({"params": p}, tokens))
  return _FORWARDS[model]


def _apply(model):
  return jax.jit(lambda p, tokens, seg, pos: model.apply({"params": p}, tokens, seg, pos))


def _data(model, reference, rendered, pairs=4, groups=1):
  ref = dpo.reference_logprobs_fn(model, lambda: reference)
  return dpo.DpoBatches(rendered, ref, pairs, SEQ_LEN, PAD, seed=0, groups=groups)


def test_loss_and_ref_logp_equal_a_hand_computation(tiny):
  model, policy, reference, rendered = tiny
  data = _data(model, reference, rendered)
  batch = next(data)
  order = preferences.PairCursor(len(rendered), 0).upcoming(len(rendered))  # the first epoch: the batch's pairs
  sides = [(rendered[i]["prompt"], rendered[i]["chosen"]) for i in order]
  sides += [(rendered[i]["prompt"], rendered[i]["rejected"]) for i in order]
  ref_B = np.array([logp_by_hand(model, reference, p, r) for p, r in sides])
  pi_B = np.array([logp_by_hand(model, policy, p, r) for p, r in sides])
  np.testing.assert_allclose(batch["ref_logp"][:, 0], ref_B, rtol=1e-5, atol=1e-4)
  beta, eps = 0.3, 0.1
  z = beta * ((pi_B[:4] - ref_B[:4]) - (pi_B[4:] - ref_B[4:]))
  log_sig = lambda x: -np.log1p(np.exp(-x))
  want = np.mean(-(1 - eps) * log_sig(z) - eps * log_sig(-z))
  num, den, aux = dpo.make_loss(_apply(model), beta, eps)(policy, batch)
  assert float(den) == 4.0
  assert float(num / den) == pytest.approx(want, rel=1e-5)
  assert float(aux["dpo_reward_accuracy"] / den) == pytest.approx(np.mean(z > 0))
  assert float(aux["dpo_reward_margin"] / den) == pytest.approx(np.mean(z), rel=1e-4, abs=1e-5)
  assert float(aux["dpo_reward_chosen"] / den) == pytest.approx(beta * np.mean(pi_B[:4] - ref_B[:4]), rel=1e-4)


def test_loss_is_log_2_when_the_policy_is_the_reference(tiny):
  model, _, reference, rendered = tiny
  batch = next(_data(model, reference, rendered))
  for eps in (0.0, 0.2):
    num, den, aux = dpo.make_loss(_apply(model), 0.1, eps)(reference, batch)
    assert float(num / den) == pytest.approx(math.log(2), abs=1e-6)
    assert float(aux["dpo_reward_margin"]) == pytest.approx(0.0, abs=1e-6)


def test_microbatches_of_whole_pairs_sum_to_the_batch_loss(tiny):
  model, policy, reference, rendered = tiny
  loss = dpo.make_loss(_apply(model), 0.5)
  whole = next(_data(model, reference, rendered))
  split = next(_data(model, reference, rendered, groups=2))  # the same 4 pairs as two pair batches of 2
  parts = [loss(policy, {k: v[i * 4 : (i + 1) * 4] for k, v in split.items()}) for i in range(2)]
  num, den, _ = loss(policy, whole)
  assert float(sum(p[0] for p in parts) / sum(p[1] for p in parts)) == pytest.approx(float(num / den), rel=1e-5)
  # Each microbatch is chosen rows then rejected rows of its own pairs.
  np.testing.assert_array_equal(split["tokens"][[0, 1, 4, 5]], whole["tokens"][[0, 1, 2, 3]])


def test_length_bucket_pads_less_and_changes_nothing(tiny):
  model, policy, reference, rendered = tiny
  full = next(_data(model, reference, rendered))
  ref = dpo.reference_logprobs_fn(model, lambda: reference)
  short = next(dpo.DpoBatches(rendered, ref, 4, SEQ_LEN, PAD, seed=0, length_bucket=8))
  longest = max(len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) for r in rendered)  # 14
  assert short["tokens"].shape[1] == 16 == -(-longest // 8) * 8
  np.testing.assert_allclose(short["ref_logp"], full["ref_logp"], rtol=1e-5)
  loss = dpo.make_loss(_apply(model), 0.1)
  assert float(loss(policy, short)[0]) == pytest.approx(float(loss(policy, full)[0]), rel=1e-5)


def test_iterator_resumes_at_the_same_batch(tiny):
  model, _, reference, rendered = tiny
  a = _data(model, reference, rendered, pairs=3)
  for _ in range(2):
    next(a)
  b = _data(model, reference, rendered, pairs=3)
  b.set_state(a.get_state())
  np.testing.assert_array_equal(next(a)["tokens"], next(b)["tokens"])
  assert a.get_state()["epoch"] == 2  # 9 of 4 pairs: the third batch ran into the third epoch


def test_bad_knobs_are_refused_before_any_run_is_read(tmp_path):
  w = str(tmp_path / "dpo")
  for key, value, match in (
      ("rlhf.method", "ppo", "rlhf.method='ppo'"),
      ("dpo.beta", 0.0, "dpo.beta must be > 0"),
      ("dpo.beta", -1.0, "dpo.beta must be > 0"),
      ("dpo.label_smoothing", 0.7, "label_smoothing"),
      ("dpo.pairs_per_step", 0, "pairs_per_step"),
      ("rlhf.kl_in_reward", 0.05, "cannot take effect with rlhf.method=dpo"),
  ):
    cfg = rlhf_configs.get_config("dpo")
    section, leaf = key.split(".")
    cfg[section][leaf] = value
    cfg.init_from = str(tmp_path / "not_a_run")  # never read: the knobs fail first
    with pytest.raises(ValueError, match=match):
      rlhf_stage.prepare(cfg, w)


# --- on the shared trainer -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_runs_dpo_on_the_reward_models_pairs(one_step_run, one_step_reward_model, tmp_path):
  rm_dir, train_file = one_step_reward_model["run"], one_step_reward_model["train_file"]
  c = rlhf_configs.get_config("dpo")
  c.train.update(steps=2, seq_len=64, eval_every=1, checkpoint_every=2, async_checkpointing=False, log_every=1)
  c.optim.update(lr=1e-3, warmup_steps=0)
  c.dpo.update(pairs_per_step=4)
  c.eval.update(num_problems=8, samples=1, max_new_tokens=8, chunk_prompts=8)
  c.rlhf.update(train_prompts=16, log_samples=0)
  workdir = str(tmp_path / "dpo")
  out = base.run(rlhf_stage.STAGE, c, workdir, init_from=rm_dir)
  assert out["step"] == 2
  saved = runs.read_config(workdir)
  assert saved.dpo.train_file == train_file  # "" = the reward model's own training pairs
  assert saved.train.batch_size == 8 and saved.rlhf.policy_from == one_step_run
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in rows if "gold_reward" in r]
  assert [r["step"] for r in evals] == [0, 1, 2] and evals[0]["kl"] == 0.0
  assert evals[-1]["kl"] != 0.0  # the policy moved
  steps = [r for r in rows if "dpo_reward_accuracy" in r]
  assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # step 1's loss is at the reference's params
  assert not any("bon_n" in r for r in rows)  # best-of-n is the RL run's
  assert os.path.exists(os.path.join(workdir, "rlhf_curves.png"))
