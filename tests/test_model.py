"""Model: KV cache vs recompute, packed segments vs separate documents, scan vs loop, remat, styles, FLOPs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanolm_jax import model as M

from tests.conftest import make_config


def _model(preset="tiny", **over):
  c = make_config(
      preset, **{"model.vocab_size": 128, "model.d_model": 64, "model.num_layers": 2, "model.max_len": 64, **over}
  )
  return M.Transformer(M.ModelConfig.from_config(c.model))


@pytest.mark.slow
@pytest.mark.parametrize("preset,scan", [("tiny", False), ("llama_tiny", False), ("llama_tiny", True)])
def test_kv_cache_matches_recompute_at_every_step(preset, scan):
  m = _model(preset, **{"model.scan_layers": scan})
  toks = jax.random.randint(jax.random.PRNGKey(0), (3, 20), 0, 128)
  params = m.init(jax.random.PRNGKey(1), toks)
  apply = jax.jit(m.apply)  # one compile per shape instead of op-by-op dispatch at every step
  full = apply(params, toks)
  cache = M.init_cache(m.cfg, 3, 32, jnp.float32)
  pos = jnp.broadcast_to(jnp.arange(12), (3, 12))
  first, cache = apply(params, toks[:, :12], positions_BxL=pos, cache=cache)
  steps = [first]
  for t in range(12, 20):
    out, cache = apply(params, toks[:, t : t + 1], positions_BxL=jnp.full((3, 1), t), cache=cache)
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)


def test_cached_attention_over_old_cache_and_new_keys_equals_attention_over_the_written_cache():
  """cached_attention reads the cache before the write plus the new keys; the reference writes first, then attends."""
  b, l, n, k, h, s, index = 3, 4, 4, 2, 8, 12, 5
  cfg = M.ModelConfig.from_config(make_config("tiny", **{"model.dtype": "float32"}).model)
  r = jax.random.split(jax.random.PRNGKey(0), 6)
  q = jax.random.normal(r[0], (b, l, n, h))
  k_old, v_old = jax.random.normal(r[1], (b, k, s, h)), jax.random.normal(r[2], (b, k, s, h))
  k_new, v_new = jax.random.normal(r[3], (b, l, k, h)), jax.random.normal(r[4], (b, l, k, h))
  valid = (jax.random.uniform(r[5], (b, s)) < 0.7) & (jnp.arange(s) < index)
  valid = valid.at[:, 0].set(True)  # every query sees at least one key
  seg = jnp.array([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 1]])  # some new tokens are padding (never seen)
  masks, valid_after = M.cached_mask(seg, {"valid": valid, "index": jnp.int32(index)})
  got = M.cached_attention(q, k_old, v_old, k_new, v_new, masks)
  write = lambda buf, new: buf.at[:, :, index : index + l].set(jnp.swapaxes(new, 1, 2))
  k_all, v_all = write(k_old, k_new), write(v_old, v_new)
  mask = valid_after[:, None, :] & (jnp.arange(s)[None, None, :] <= index + jnp.arange(l)[None, :, None])
  want = M.attention(q, jnp.swapaxes(k_all, 1, 2), jnp.swapaxes(v_all, 1, 2), mask, cfg)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(valid_after, valid.at[:, index : index + l].set(seg > 0))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "llama_tiny"])
def test_packed_documents_do_not_attend_to_each_other(preset):
  m = _model(preset)
  a = jax.random.randint(jax.random.PRNGKey(2), (1, 7), 0, 128)
  b = jax.random.randint(jax.random.PRNGKey(3), (1, 9), 0, 128)
  params = m.init(jax.random.PRNGKey(1), a)
  packed = jnp.concatenate([a, b], 1)
  seg = jnp.array([[1] * 7 + [2] * 9])
  pos = jnp.array([list(range(7)) + list(range(9))])
  out = m.apply(params, packed, seg, pos)
  np.testing.assert_allclose(out[:, :7], m.apply(params, a), atol=1e-5)
  np.testing.assert_allclose(out[:, 7:], m.apply(params, b), atol=1e-5)
  # And the mask really matters: without segment ids document b's logits change.
  assert not np.allclose(m.apply(params, packed)[:, 7:], out[:, 7:], atol=1e-3)


@pytest.mark.slow
def test_scan_over_layers_equals_loop_with_stacked_params():
  loop, scan = _model(), _model(**{"model.scan_layers": True})
  toks = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, 128)
  p = dict(nn.unbox(loop.init(jax.random.PRNGKey(1), toks))["params"])
  layers = [p.pop(f"layer_{i}") for i in range(2)]
  p["layers"] = jax.tree.map(lambda *x: jnp.stack(x), *layers)
  for i, lp in enumerate(layers):
    p[f"layer_{i}"] = lp
  loop_out = loop.apply({"params": {k: v for k, v in p.items() if k != "layers"}}, toks)
  scan_out = scan.apply({"params": {k: v for k, v in p.items() if not k.startswith("layer_")}}, toks)
  np.testing.assert_allclose(loop_out, scan_out, atol=1e-5)


@pytest.mark.slow
def test_remat_keeps_gradients():
  plain, remat = _model(), _model(**{"model.remat": "full"})
  toks = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, 128)
  params = plain.init(jax.random.PRNGKey(1), toks)
  loss = lambda m: lambda p: jnp.mean(m.apply(p, toks) ** 2)
  g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


@pytest.mark.slow
def test_bf16_compute_keeps_fp32_params_and_stays_close():
  f32, bf16 = _model(), _model(**{"model.dtype": "bfloat16"})
  toks = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, 128)
  params = f32.init(jax.random.PRNGKey(1), toks)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.init(jax.random.PRNGKey(1), toks)))
  a, b = f32.apply(params, toks), bf16.apply(params, toks)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=0.05)


@pytest.mark.slow
def test_styles_have_their_parameters_and_logical_axes():
  gpt = _model()
  llama = _model("llama_tiny", **{"model.num_kv_heads": 2})
  toks = jnp.zeros((1, 4), jnp.int32)
  pg = gpt.init(jax.random.PRNGKey(0), toks)["params"]
  pl = llama.init(jax.random.PRNGKey(0), toks)["params"]
  assert "pos_embed" in pg and "lm_head" not in pg  # learned positions, tied head
  assert "pos_embed" not in pl and "lm_head" in pl  # RoPE, untied head
  assert pl["layer_0"]["attn"]["wk"].value.shape == (64, 2, 16)  # GQA: 2 kv heads of dim 16
  assert set(pl["layer_0"]["mlp"]) == {"w_gate", "w_up", "w_out"}
  assert "bias" in pg["ln_f"] and "bias" not in pl["ln_f"]  # LayerNorm vs RMSNorm
  assert pg["layer_0"]["attn"]["wq"].names == ("embed", "heads", "head_dim")
  assert pg["embed"].names == ("vocab", "embed")


@pytest.mark.slow
def test_llama_rmsnorm_and_swiglu_by_hand():
  m = _model("llama_tiny", **{"model.num_layers": 1})
  toks = jnp.array([[1, 2, 3]])
  p = m.init(jax.random.PRNGKey(0), toks)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 64))
  mlp = p["params"]["layer_0"]["mlp"]
  unbox = lambda v: v.value
  norm = M.Norm(m.cfg).apply({"params": {"scale": jnp.full((64,), 2.0)}}, x)
  np.testing.assert_allclose(norm, 2 * x / np.sqrt(np.mean(np.square(x), -1, keepdims=True) + 1e-5), rtol=1e-5)
  out = M.Mlp(m.cfg, M._Constrain(None, ())).apply(
      {"params": jax.tree.map(unbox, mlp, is_leaf=lambda v: hasattr(v, "value"))}, x
  )
  g, u, o = (unbox(mlp[k]) for k in ("w_gate", "w_up", "w_out"))
  np.testing.assert_allclose(out, (jax.nn.silu(x @ g) * (x @ u)) @ o, atol=1e-5)


def test_flops_per_token_by_hand():
  c = M.ModelConfig(vocab_size=100, num_layers=2, num_heads=2, num_kv_heads=2, d_model=8, d_ff=32)
  matmul = 2 * (4 * 8 * 8 + 2 * 8 * 32) + 8 * 100
  assert M.flops_per_token(c, 16) == 6 * matmul + 12 * 2 * 8 * 16


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="num_heads"):
    M.validate_model_config(M.ModelConfig(d_model=64, num_heads=5, num_kv_heads=5))
  with pytest.raises(ValueError, match="num_kv_heads"):
    M.validate_model_config(M.ModelConfig(d_model=64, num_heads=4, num_kv_heads=3))


def test_model_config_defaults_are_the_config_blocks_defaults():
  """One set of model defaults: the dataclass's own equal the resolved `model` config block's."""
  assert M.ModelConfig.from_config(M.default_model_config()) == M.ModelConfig()
