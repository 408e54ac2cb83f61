"""Train step: hand-computed losses, z-loss, gradient accumulation == whole batch, masked tokens have no effect."""

import jax
import pytest
import jax.numpy as jnp
import numpy as np
import optax

from nanolm_jax import train_step as S
from nanolm_jax import model as model_lib
from nanolm_jax import trainer

from tests.conftest import make_config


def _np_ce(logits, targets):
  logits = np.asarray(logits, np.float64)
  lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0], lse


def test_lm_loss_matches_numpy_with_weights_and_z_loss():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7)) * 3
  targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 7)
  weights = jnp.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], jnp.float32)
  batch = {"inputs": targets, "targets": targets, "segment_ids": targets, "positions": targets, "weights": weights}
  num, den, aux = S.make_lm_loss(lambda p, *a: logits, z_loss=1e-2)(None, batch)
  ce, lse = _np_ce(logits, np.asarray(targets))
  w = np.asarray(weights)
  assert den == 7
  np.testing.assert_allclose(aux["ce_sum"], (ce * w).sum(), rtol=1e-5)
  np.testing.assert_allclose(num, (ce * w).sum() + 1e-2 * (lse**2 * w).sum(), rtol=1e-5)


def _setup(microbatches=1, tx=None, **over):
  c = make_config(
      "tiny",
      **{
          "model.vocab_size": 64,
          "model.d_model": 32,
          "model.num_layers": 2,
          "model.max_len": 16,
          "train.seq_len": 16,
          **over,
      }
  )
  model = model_lib.build_model(c, None)
  tx = tx or optax.adamw(1e-2)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params, is_leaf=lambda x: hasattr(x, "value"))
  step = jax.jit(S.make_train_step(S.make_lm_loss(trainer._apply_fn(model)), tx, microbatches=microbatches))
  return step, S.init_state(params, tx)


def _batch(seed=0, b=8, t=16):
  r = np.random.default_rng(seed)
  toks = r.integers(0, 64, (b, t + 1))
  w = (r.random((b, t)) > 0.3).astype(np.float32)
  return {
      "inputs": toks[:, :-1].astype(np.int32),
      "targets": toks[:, 1:].astype(np.int32),
      "segment_ids": np.ones((b, t), np.int32),
      "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
      "weights": w,
  }


@pytest.mark.slow
def test_gradient_accumulation_equals_whole_batch():
  # SGD: Adam's per-coordinate normalisation would amplify float rounding on near-zero gradients.
  whole, s1 = _setup(1, optax.sgd(0.5))
  accum, s4 = _setup(4, optax.sgd(0.5))
  for i in range(3):
    s1, m1 = whole(s1, _batch(i))
    s4, m4 = accum(s4, _batch(i))
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), s1.params, s4.params)


@pytest.mark.slow
def test_masked_tokens_do_not_affect_loss_or_gradients():
  step, s = _setup()
  b = _batch()
  perturbed = dict(b)
  perturbed["targets"] = np.where(b["weights"] > 0, b["targets"], (b["targets"] + 7) % 64).astype(np.int32)
  _, m1 = step(s, b)
  _, m2 = step(s, perturbed)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-6)


@pytest.mark.slow
def test_loss_at_init_is_near_log_vocab_and_decreases():
  step, s = _setup()
  b = _batch()
  s, m = step(s, b)
  assert abs(float(m["loss"]) - np.log(64)) < 0.3
  for _ in range(10):
    s, m2 = step(s, b)
  assert float(m2["loss"]) < float(m["loss"]) - 0.5


def test_eval_bits_per_byte_by_hand():
  logits = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 5))
  targets = jnp.array([[0, 1, 2, 3]])
  token_bytes = jnp.array([1.0, 2.0, 3.0, 0.0, 4.0])
  batch = {
      "inputs": targets,
      "targets": targets,
      "segment_ids": targets,
      "positions": targets,
      "weights": jnp.array([[1.0, 1.0, 1.0, 0.0]]),
  }
  sums = jax.device_get(S.make_eval_step(lambda p, *a: logits, token_bytes)(None, batch))
  ce, _ = _np_ce(logits, np.asarray(targets))
  assert sums["bytes"] == 6.0 and sums["tokens"] == 3.0
  out = S.summarize_eval({k: float(v) for k, v in sums.items()})
  np.testing.assert_allclose(out["val_bpb"], ce[0, :3].sum() / (np.log(2) * 6), rtol=1e-5)
  np.testing.assert_allclose(out["val_loss"], ce[0, :3].mean(), rtol=1e-5)
