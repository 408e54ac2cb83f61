"""Optimizer: schedule shape, weight-decay mask, clipping."""

import jax.numpy as jnp
import numpy as np
import optax

from nanolm_jax import optim
from tests.conftest import make_config


def test_warmup_then_cosine_to_floor():
  o = make_config().optim
  o.lr, o.warmup_steps, o.min_lr_ratio = 1.0, 10, 0.1
  s = optim.make_schedule(o, 110)
  np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(s(60), 0.1 + 0.9 * 0.5, atol=1e-6)  # half-way through the cosine
  np.testing.assert_allclose(s(110), 0.1, atol=1e-6)


def test_decay_mask_follows_config():
  o = make_config().optim
  params = {
      "embed": jnp.ones((4, 2)),
      "pos_embed": jnp.ones((3, 2)),
      "lm_head": jnp.ones((2, 4)),
      "ln": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
      "attn": {"wq": jnp.ones((2, 1, 2)), "bq": jnp.ones((1, 2))},
  }
  m = optim.decay_mask(params, o)
  assert m["lm_head"] and m["attn"]["wq"]
  assert not (m["embed"] or m["pos_embed"] or m["ln"]["scale"] or m["ln"]["bias"] or m["attn"]["bq"])
  o.decay_embeddings, o.decay_norms_and_biases = True, True
  m = optim.decay_mask(params, o)
  assert all(jnp.array([m["embed"], m["ln"]["scale"], m["attn"]["bq"]]))


def test_weight_decay_applies_only_where_masked_and_clipping_bounds_update():
  o = make_config().optim
  o.lr, o.warmup_steps, o.weight_decay, o.clip_norm = 0.1, 0, 0.5, 1.0
  tx = optim.make_optimizer(o, 10)
  params = {"w": jnp.full((2, 2), 2.0), "embed": jnp.full((2, 2), 2.0)}
  zero = {"w": jnp.zeros((2, 2)), "embed": jnp.zeros((2, 2))}
  upd, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(upd["w"], -0.1 * 0.5 * 2.0, rtol=1e-5)  # decoupled decay only
  np.testing.assert_allclose(upd["embed"], 0.0)
  huge = {"w": jnp.full((2, 2), 1e6), "embed": jnp.zeros((2, 2))}
  clipped = optax.clip_by_global_norm(1.0).update(huge, None)[0]
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-5)
