"""GRPO math against hand-computed values: advantages, clipping, KL, aggregations, masking, inner steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nanolm_jax import train_step as S
from nanolm_jax.posttrain import grpo

R = np.array([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])


def test_advantages_by_hand():
  # group 1: mean 0.5, population std 0.5
  np.testing.assert_allclose(grpo.group_advantages(R, "grpo")[0], [1, -1, -1, 1], atol=1e-5)
  np.testing.assert_allclose(grpo.group_advantages(R, "grpo")[1], 0, atol=1e-6)  # all equal -> no signal
  np.testing.assert_allclose(grpo.group_advantages(R, "drgrpo")[0], [0.5, -0.5, -0.5, 0.5])
  # rloo: r_i - mean of the other three: 1 - 1/3, 0 - 2/3
  np.testing.assert_allclose(grpo.group_advantages(R, "rloo")[0], [2 / 3, -2 / 3, -2 / 3, 2 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown advantage"):
    grpo.group_advantages(R, "ppo")


def _batch(logp, old, adv, w, ref=None):
  b = {
      "old_logprobs": jnp.asarray(old, jnp.float32),
      "advantages": jnp.asarray(adv, jnp.float32),
      "weights": jnp.asarray(w, jnp.float32),
  }
  if ref is not None:
    b["ref_logprobs"] = jnp.asarray(ref, jnp.float32)
  return jnp.asarray(logp, jnp.float32), b


LOGP = [[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.5]]
OLD = [[-1.2, -2.0, -0.2], [-0.3, -1.0, -2.5]]
ADV = [1.0, -2.0]
W = [[1, 1, 0], [1, 1, 1]]


def _per_token(eps_low=0.2, eps_high=0.2):
  ratio = np.exp(np.array(LOGP) - np.array(OLD))
  adv = np.array(ADV)[:, None]
  return -np.minimum(ratio * adv, np.clip(ratio, 1 - eps_low, 1 + eps_high) * adv), ratio


@pytest.mark.parametrize("agg", grpo.AGGREGATIONS)
def test_clipped_loss_and_aggregations_by_hand(agg):
  logp, b = _batch(LOGP, OLD, ADV, W)
  num, den, aux = grpo.policy_loss(logp, b, eps_low=0.2, eps_high=0.28, beta=0.0, aggregation=agg, max_len=5)
  per, ratio = _per_token(0.2, 0.28)
  w = np.array(W, float)
  if agg == "token_mean":
    expect = (per * w).sum() / w.sum()
  elif agg == "sequence_mean":
    expect = np.mean((per * w).sum(1) / w.sum(1))
  else:
    expect = np.mean((per * w).sum(1) / 5)
  np.testing.assert_allclose(float(num / den), expect, rtol=1e-5)
  # Row 0 token 0: ratio e^0.2 = 1.22 > 1.28? no; row 1 token 1: ratio e^-0.5 = 0.61 < 0.8 with A < 0 -> clipped.
  np.testing.assert_allclose(float(aux["clip_frac"] / den), 1 / 5, rtol=1e-5)


def test_ratio_one_and_no_clipping_at_first_inner_step_and_self_kl_zero():
  logp, b = _batch(LOGP, LOGP, ADV, W, ref=LOGP)
  num, den, aux = grpo.policy_loss(logp, b, eps_low=0.2, eps_high=0.2, beta=0.1, aggregation="token_mean", max_len=3)
  assert float(aux["clip_frac"]) == 0.0
  np.testing.assert_allclose(float(aux["ratio"] / den), 1.0, rtol=1e-7)
  assert float(aux["kl"]) == 0.0
  w = np.array(W, float)
  np.testing.assert_allclose(float(num / den), -(np.array(ADV)[:, None] * w).sum() / w.sum(), rtol=1e-6)


def test_k3_kl_by_hand():
  ref = [[-1.1, -1.0, 0.0], [-0.3, -1.5, -2.0]]
  logp, b = _batch(LOGP, LOGP, [0.0, 0.0], W, ref=ref)
  num, den, aux = grpo.policy_loss(logp, b, eps_low=0.2, eps_high=0.2, beta=0.5, aggregation="token_mean", max_len=3)
  d = np.array(ref) - np.array(LOGP)
  kl = np.exp(d) - d - 1
  w = np.array(W, float)
  np.testing.assert_allclose(float(num / den), 0.5 * (kl * w).sum() / w.sum(), rtol=1e-5)
  assert (kl >= 0).all()


def test_masked_tokens_contribute_nothing():
  logp, b = _batch(LOGP, OLD, ADV, W)
  base = grpo.policy_loss(logp, b, eps_low=0.2, eps_high=0.2, beta=0.0, aggregation="sequence_mean", max_len=3)
  wild = np.array(LOGP)
  wild[0, 2] = 5.0  # a masked position
  logp2, b2 = _batch(wild, np.where(np.array(W) > 0, OLD, -9.0), ADV, W)
  other = grpo.policy_loss(logp2, b2, eps_low=0.2, eps_high=0.2, beta=0.0, aggregation="sequence_mean", max_len=3)
  np.testing.assert_allclose(float(base[0]), float(other[0]), rtol=1e-6)


def test_inner_steps_move_the_ratio_away_from_one():
  """mu > 1: the first step sees ratio 1 exactly, the second a changed policy."""
  v, l = 11, 6
  emb = jax.random.normal(jax.random.PRNGKey(0), (v, v))

  def apply(params, inputs, segment_ids, positions):
    return params["w"][inputs]

  loss = grpo.make_grpo_loss(apply, eps_low=0.2, eps_high=0.2, beta=0.0, aggregation="token_mean", max_len=l)
  rng = np.random.default_rng(0)
  toks = rng.integers(0, v, (4, l + 1)).astype(np.int32)
  params = {"w": emb}
  logp, _ = grpo.token_logprobs(params["w"][toks[:, :-1]], toks[:, 1:])
  batch = {
      "inputs": toks[:, :-1],
      "targets": toks[:, 1:],
      "segment_ids": np.ones((4, l), np.int32),
      "positions": np.tile(np.arange(l), (4, 1)),
      "weights": np.ones((4, l), np.float32),
      "old_logprobs": np.asarray(logp),
      "advantages": np.array([1.0, -1.0, 0.5, -0.5], np.float32),
  }
  tx = optax.sgd(1.0)
  step = jax.jit(S.make_train_step(loss, tx))
  state = S.init_state(params, tx)
  state, m1 = step(state, batch)
  state, m2 = step(state, batch)
  np.testing.assert_allclose(float(m1["ratio"]), 1.0, rtol=1e-6)
  assert float(m1["clip_frac"]) == 0.0
  assert abs(float(m2["ratio"]) - 1.0) > 1e-3
