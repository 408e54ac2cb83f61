"""Preference losses against hand-computed values: Bradley-Terry (margin, centering, accuracy), calibration, the
reward read at each row's last token under left and right padding, summed reply log-probs, and DPO / cDPO."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanolm_jax.posttrain import preference_losses as pl
from nanolm_jax.posttrain import preferences as prefs
from tests.test_preferences import TOK

# Jitted, as the stages use them (and one compile per function is faster than op-by-op dispatch).
BT = jax.jit(pl.bradley_terry_loss)
CAL = jax.jit(pl.calibration, static_argnames="num_bins")
DPO = jax.jit(pl.dpo_loss, static_argnames=("beta", "label_smoothing"))
SEQ = jax.jit(pl.sequence_logprobs)

RC = jnp.array([2.0, 0.0, 1.0])
RR = jnp.array([1.0, 1.0, 1.0])  # differences 1, -1, 0


def test_bradley_terry_by_hand():
  loss, m = BT(RC, RR)
  # -log σ(1) = log(1 + e^-1) = 0.3132617, -log σ(-1) = log(1 + e) = 1.3132617, -log σ(0) = log 2 = 0.6931472
  np.testing.assert_allclose(loss, (0.3132617 + 1.3132617 + 0.6931472) / 3, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 1 / 3)  # the tie (0) counts as wrong
  np.testing.assert_allclose(m["margin"], 0.0, atol=1e-7)
  np.testing.assert_allclose((m["reward_chosen"], m["reward_rejected"]), (1.0, 1.0))
  assert float(m["center_loss"]) == 0.0


def test_bradley_terry_margin_and_centering_by_hand():
  loss, m = BT(RC, RR, margin_P=jnp.array([0.5, 0.0, 0.0]), center_coefficient=0.1)
  bt = (0.4740770 + 1.3132617 + 0.6931472) / 3  # -log σ(1 - 0.5) = log(1 + e^-0.5) = 0.4740770
  center = 0.1 * (3.0**2 + 1.0**2 + 2.0**2) / 3  # TRL: c · mean((r_c + r_r)²)
  np.testing.assert_allclose((m["bt_loss"], m["center_loss"], loss), (bt, center, bt + center), rtol=1e-6)
  # d/dr_r at r_c = 0, r_r = 1: the BT term pushes r_r down by σ(1)/P, centering by 2c·(r_c + r_r)/P
  g = jax.jit(jax.grad(lambda rc: BT(jnp.zeros(3), jnp.zeros(3) + rc, center_coefficient=0.1)[0]))(RR)
  np.testing.assert_allclose(g, (0.7310586 + 2 * 0.1 * 1.0) / 3, rtol=1e-6)  # (σ(r_r - r_c) + 2c(r_c + r_r)) / P


def test_calibration_by_hand():
  # p = σ(r_c - r_r) = 0.75, 0.25, 0.5, 0.95; confidences 0.75, 0.75, 0.5, 0.95; correct 1, 0, 0, 1
  d = jnp.log(jnp.array([3.0, 1 / 3, 1.0, 19.0]))
  c = CAL(d, jnp.zeros(4), num_bins=5)  # bins of width 0.1 over [0.5, 1]
  np.testing.assert_allclose(c["count"], [1, 0, 2, 0, 1])
  np.testing.assert_allclose(c["confidence"], [0.5, 0, 0.75, 0, 0.95], rtol=1e-6)
  np.testing.assert_allclose(c["accuracy"], [0, 0, 0.5, 0, 1])
  np.testing.assert_allclose(c["ece"], (1 * 0.5 + 2 * 0.25 + 1 * 0.05) / 4, rtol=1e-6)


def test_calibration_of_a_calibrated_model_is_small():
  rng = np.random.default_rng(0)
  d = rng.normal(0, 2, 20000)
  first_wins = rng.random(d.size) < 1 / (1 + np.exp(-d))  # labels drawn from the model's own probabilities
  rc, rr = np.where(first_wins, d, 0.0), np.where(first_wins, 0.0, d)
  assert float(CAL(jnp.asarray(rc), jnp.asarray(rr))["ece"]) < 0.02
  assert float(CAL(jnp.asarray(3 * rc), jnp.asarray(3 * rr))["ece"]) > 0.1  # overconfident


@pytest.mark.parametrize("padding", ["right", "left"])
def test_reward_read_at_the_last_token_with_padding(padding):
  pairs = [
      prefs.PreferencePair([{"role": "user", "content": q}], c, r)
      for q, c, r in [("Hi", "Yo!", "No"), ("a", "b", "cc")]
  ]
  batch, _ = prefs.make_pair_batch(pairs, TOK, seq_len=16, padding=padding)
  values = jnp.asarray(batch["tokens"], jnp.float32)  # a "reward head" that outputs the token id
  np.testing.assert_array_equal(pl.reward_at(values, jnp.asarray(batch["last_index"])), TOK.special_id("end"))
  rng = np.random.default_rng(1)
  values = rng.normal(size=batch["tokens"].shape).astype(np.float32)
  n = [len(TOK.encode(x)) + 6 for x in ("Hi", "a")]  # <s> <start><user> q <end> <start><assistant>
  lengths = [n[0] + 4, n[1] + 2, n[0] + 3, n[1] + 3]  # + reply + <end>, chosen rows then rejected rows
  last = [k - 1 if padding == "right" else 15 for k in lengths]
  np.testing.assert_array_equal(batch["last_index"], last)
  got = jax.jit(pl.reward_at)(jnp.asarray(values), jnp.asarray(batch["last_index"]))
  np.testing.assert_array_equal(got, values[np.arange(4), last])
  rc, rr = pl.split_pairs(got)
  np.testing.assert_array_equal(rc, got[:2])
  np.testing.assert_array_equal(rr, got[2:])


def test_sequence_logprobs_sums_the_reply_mask():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
  targets = jnp.array([[0, 1, 2]])
  got = SEQ(logits, targets, jnp.array([[0.0, 1.0, 1.0]]))
  np.testing.assert_allclose(got, [math.log(0.8) + math.log(0.6)], rtol=1e-6)


def test_dpo_by_hand_with_reference_beta_and_label_smoothing():
  pc, pr = jnp.array([-10.0, -5.0]), jnp.array([-12.0, -4.0])
  rc, rr = jnp.array([-11.0, -5.0]), jnp.array([-11.0, -6.0])
  # pair 1: β(π_c - ref_c) = 0.1·1 = 0.1, β(π_r - ref_r) = 0.1·(-1) = -0.1, z = 0.2
  # pair 2: 0.1·0 = 0, 0.1·2 = 0.2, z = -0.2 (the policy prefers chosen, but less than the reference does)
  lp, lm = math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.2))  # -log σ(0.2) = 0.5981389, -log σ(-0.2) = 0.7981389
  loss, m = DPO(pc, pr, rc, rr, beta=0.1)
  np.testing.assert_allclose(loss, (lp + lm) / 2, rtol=1e-6)
  np.testing.assert_allclose(loss, (0.5981389 + 0.7981389) / 2, rtol=1e-6)
  np.testing.assert_allclose((m["reward_chosen"], m["reward_rejected"]), (0.05, 0.05), rtol=1e-6)
  np.testing.assert_allclose((m["reward_accuracy"], m["reward_margin"], m["logits"]), (0.5, 0.0, 0.0), atol=1e-6)
  # cDPO: (1 - ε)·(-log σ(z)) + ε·(-log σ(-z))
  loss_s, _ = DPO(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)
  np.testing.assert_allclose(loss_s, ((0.9 * lp + 0.1 * lm) + (0.9 * lm + 0.1 * lp)) / 2, rtol=1e-6)
  # β scales z; without the reference the first pair alone gives z = β·(π_c - π_r) = 0.5·2 = 1
  loss_b, _ = DPO(pc[:1], pr[:1], jnp.zeros(1), jnp.zeros(1), beta=0.5)
  np.testing.assert_allclose(loss_b, math.log1p(math.exp(-1.0)), rtol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    pl.dpo_loss(pc, pr, rc, rr, beta=0.0)  # not jitted: the check is Python


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
  g = jax.jit(jax.grad(lambda p: DPO(p[0], p[1], jnp.zeros(1), jnp.zeros(1), beta=0.1)[0]))(jnp.zeros((2, 1)))
  # d/dπ_c of -log σ(β(π_c - π_r)) at 0 = -β σ(0) = -0.05; d/dπ_r = +0.05
  np.testing.assert_allclose(g[:, 0], [-0.05, 0.05], rtol=1e-6)


def test_reward_read_at_the_last_tokens_of_packed_pairs():
  # The same pairs padded and packed: the packed slots read the values the padded rows read at last_index.
  pairs = [
      prefs.PreferencePair([{"role": "user", "content": q}], c, r)
      for q, c, r in [("Hi", "Yo!", "No"), ("a", "b", "cc"), ("What?", "x y", "z")]
  ]
  rendered = [prefs.render_pair(p, TOK, 16) for p in pairs]
  padded = prefs.pair_batch(rendered, 16, TOK.pad_id)
  packed, used = prefs.pack_pairs(rendered, 48, TOK.pad_id, rows=2, margins=[1.0, 2.0, 3.0])
  assert used == 3
  rng = np.random.default_rng(0)
  # a "reward head" per (token, position-in-segment): what a causal model reading a segment alone would give
  table = rng.normal(size=(int(max(padded["tokens"].max(), packed["tokens"].max())) + 1, 48)).astype(np.float32)
  padded_values = table[padded["tokens"], padded["positions"]]
  packed_values = table[packed["tokens"], packed["positions"]]
  want = np.asarray(pl.reward_at(jnp.asarray(padded_values), jnp.asarray(padded["last_index"])))
  fn = jax.jit(pl.packed_pair_rewards)
  args = (packed_values, packed["reward_side"], packed["segment_ids"], packed["margin"])
  r_c, r_r, margin, valid = (np.asarray(x) for x in fn(*(jnp.asarray(a) for a in args)))
  assert valid.shape == (2, 24) and valid.sum(axis=1).tolist() == [2, 1]  # two pairs share row 0
  got = {
      (round(float(c), 5), round(float(r), 5), float(m))
      for c, r, m, v in zip(*(x.ravel() for x in (r_c, r_r, margin, valid)))
      if v
  }
  assert got == {(round(float(want[i]), 5), round(float(want[3 + i]), 5), float(i + 1)) for i in range(3)}
  assert np.all(r_c[valid == 0] == 0) and np.all(r_r[valid == 0] == 0)
  # Bradley-Terry over the valid slots only equals Bradley-Terry over the padded pairs.
  loss, m = BT(
      jnp.asarray(r_c.ravel()), jnp.asarray(r_r.ravel()), jnp.asarray(margin.ravel()), 0.1, jnp.asarray(valid.ravel())
  )
  want_loss, want_m = BT(jnp.asarray(want[:3]), jnp.asarray(want[3:]), jnp.asarray([1.0, 2.0, 3.0]), 0.1)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(m["accuracy"], want_m["accuracy"])
