"""Decoder-only transformer (Flax Linen), GPT-2 or Llama style, with logical axis names and a KV-cache path.

Shapes: B batch, L query length, S key/cache length, D d_model, N query heads, K kv heads, H head dim, F d_ff,
V vocab, Y layers. Every parameter is created with logical axis names (see sharding.DEFAULT_RULES) and key
activations are constrained with `act_*` names, so one rules table decides data / FSDP / tensor parallelism.

Matmuls take inputs in the compute dtype and accumulate in float32 (`preferred_element_type`): the residual stream
stays float32, which is both the fast path on CPUs with bf16 units and the numerically safe one.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nanolm_jax import model_config
from nanolm_jax import sharding as shd

# The config lives in its own module; these names are part of this one's API (model_lib.ModelConfig, ...).
from nanolm_jax.model_config import ModelConfig, default_model_config, validate_model_config  # noqa: F401

Array = jax.Array
Cache = dict[str, Any]  # see init_cache

_DTYPES = {name: getattr(jnp, name) for name in model_config.DTYPES}
_REMAT_POLICIES = dict(
    zip(
        model_config.REMAT_POLICIES,
        (None, jax.checkpoint_policies.checkpoint_dots, jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims),
    )
)


def _param(
    module: nn.Module,
    name: str,
    shape: tuple[int, ...],
    axes: tuple[str | None, ...],
    init: nn.initializers.Initializer,
    cfg: ModelConfig,
) -> Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, _DTYPES[cfg.param_dtype])


def _einsum(spec: str, x: Array, w: Array, cfg: ModelConfig) -> Array:
  """einsum with inputs in the compute dtype and a float32 result (and, for low precision, a fast backward)."""
  dt = _DTYPES[cfg.dtype]
  if dt == jnp.float32:
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)
  return _lowp_einsum(spec, (dt, x.dtype, w.dtype), x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lowp_einsum(spec: str, dtypes: tuple[Any, Any, Any], x: Array, w: Array) -> Array:
  dt = dtypes[0]
  return jnp.einsum(spec, x.astype(dt), w.astype(dt), preferred_element_type=jnp.float32)


def _lowp_einsum_fwd(spec, dtypes, x, w):
  dt = dtypes[0]
  # Residuals in the compute dtype: half the memory of float32 copies, and already cast for the backward matmuls.
  xc, wc = x.astype(dt), w.astype(dt)
  return jnp.einsum(spec, xc, wc, preferred_element_type=jnp.float32), (xc, wc)


def _lowp_einsum_bwd(spec, dtypes, res, g):
  # JAX's own transpose of a mixed-precision dot multiplies the float32 cotangent with the bf16 operand, which XLA's
  # CPU backend upcasts to a float32 matmul. Casting the cotangent to the compute dtype keeps the backward matmuls
  # on the bf16 x bf16 -> f32 path (AMX / AVX512-BF16), same as the forward, and as on accelerators.
  (dt, x_dtype, w_dtype), (xc, wc) = dtypes, res
  ins, out = spec.split("->")
  x_spec, w_spec = ins.split(",")
  gc = g.astype(dt)
  dx = jnp.einsum(f"{out},{w_spec}->{x_spec}", gc, wc, preferred_element_type=jnp.float32)
  dw = jnp.einsum(f"{x_spec},{out}->{w_spec}", xc, gc, preferred_element_type=jnp.float32)
  return dx.astype(x_dtype), dw.astype(w_dtype)


_lowp_einsum.defvjp(_lowp_einsum_fwd, _lowp_einsum_bwd)


class _Constrain:
  """Applies activation sharding constraints when the model runs under a mesh."""

  def __init__(self, mesh, rules):
    self.mesh, self.rules = mesh, rules

  def __call__(self, x: Array, axes: tuple[str | None, ...]) -> Array:
    if self.mesh is None:
      return x
    return nn.with_logical_constraint(x, axes, rules=self.rules, mesh=self.mesh)


class Norm(nn.Module):
  """LayerNorm (gpt2, with bias) or RMSNorm (llama); computed in float32."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: Array) -> Array:
    cfg = self.cfg
    x = x_BxLxD.astype(jnp.float32)
    scale = _param(self, "scale", (cfg.d_model,), ("norm",), nn.initializers.ones, cfg)
    if cfg.llama:
      x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps)
      return x * scale
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    x = (x - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
    bias = _param(self, "bias", (cfg.d_model,), ("norm",), nn.initializers.zeros, cfg)
    return x * scale + bias


def rope(x_BxLxNxH: Array, positions_BxL: Array, theta: float) -> Array:
  """Rotary embedding, Llama's half-split layout (rotate_half), in float32."""
  h = x_BxLxNxH.shape[-1]
  freq_H2 = 1.0 / (theta ** (np.arange(0, h, 2, dtype=np.float32) / h))
  angle_BxLxH2 = positions_BxL[..., None].astype(jnp.float32) * freq_H2
  sin, cos = jnp.sin(angle_BxLxH2)[:, :, None, :], jnp.cos(angle_BxLxH2)[:, :, None, :]
  x = x_BxLxNxH.astype(jnp.float32)
  x1, x2 = x[..., : h // 2], x[..., h // 2 :]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q_BxLxNxH: Array, k_BxSxKxH: Array, v_BxSxKxH: Array, mask_BxLxS: Array, cfg: ModelConfig) -> Array:
  """Masked softmax attention with GQA (query head n reads kv head n // (N / K)), softmax in float32.

  Both matmuls go through `_einsum`, so in bfloat16 they take the bf16 x bf16 -> f32 path forward and backward
  (jax.nn.dot_product_attention's XLA path multiplies probabilities by values with a bf16 result, which is slow on
  CPU, and transposes the cotangent in float32).
  """
  b, l, n, h = q_BxLxNxH.shape
  k = k_BxSxKxH.shape[2]
  q_BxLxKxGxH = (q_BxLxNxH * (1.0 / np.sqrt(h)).astype(q_BxLxNxH.dtype)).reshape(b, l, k, n // k, h)
  s_BxKxGxLxS = _einsum("blkgh,bskh->bkgls", q_BxLxKxGxH, k_BxSxKxH, cfg)
  s_BxKxGxLxS = jnp.where(mask_BxLxS[:, None, None], s_BxKxGxLxS, jnp.finfo(jnp.float32).min)
  p_BxKxGxLxS = jax.nn.softmax(s_BxKxGxLxS, axis=-1)
  out_BxLxKxGxH = _einsum("bkgls,bskh->blkgh", p_BxKxGxLxS, v_BxSxKxH, cfg)
  return out_BxLxKxGxH.reshape(b, l, n, h)


def cached_attention(
    q_BxLxNxH: Array,
    k_BxKxSxH: Array,
    v_BxKxSxH: Array,
    k_BxLxKxH: Array,
    v_BxLxKxH: Array,
    masks: tuple[Array, Array],
) -> Array:
  """Attention of L new queries over the cache as it was before this call (BxKxSxH) plus the L new keys / values.

  masks: (old_BxS: which cache slots every new query sees, new_BxLxL: which new keys each new query sees), from
  `cached_mask`. Reading the old cache rather than the one with the new keys written into it keeps that write the
  cache's only use, so XLA updates it in place (reading the written cache made XLA copy every layer's k and v
  several times per decode step, more traffic than the weights at long caches). Inputs in the cache's dtype,
  float32 accumulation and one float32 softmax over old and new keys together. On CPU the engine keeps a float32
  cache: converting a bfloat16 cache every decode step cost 5x the attention itself.
  """
  b, l, n, h = q_BxLxNxH.shape
  k = k_BxKxSxH.shape[1]
  g, s = n // k, k_BxKxSxH.shape[2]
  dt = k_BxKxSxH.dtype
  old_BxS, new_BxLxL = masks
  # M = G * L query rows per kv head, g-major: query head n reads kv head n // G, as in `attention`.
  q_BxKxMxH = (q_BxLxNxH * (1.0 / np.sqrt(h))).reshape(b, l, k, g, h).transpose(0, 2, 3, 1, 4).reshape(b, k, g * l, h)
  q_BxKxMxH = q_BxKxMxH.astype(dt)
  kn_BxKxLxH, vn_BxKxLxH = (jnp.swapaxes(a, 1, 2).astype(dt) for a in (k_BxLxKxH, v_BxLxKxH))
  batched = ((0, 1), (0, 1))
  f32 = jnp.float32
  s_old = jax.lax.dot_general(q_BxKxMxH, k_BxKxSxH, (((3,), (3,)), batched), preferred_element_type=f32)
  s_new = jax.lax.dot_general(q_BxKxMxH, kn_BxKxLxH, (((3,), (3,)), batched), preferred_element_type=f32)
  mask_Bx1xMxS = jnp.broadcast_to(old_BxS[:, None, None, :], (b, 1, g * l, s))
  mask_Bx1xMxL = jnp.broadcast_to(new_BxLxL[:, None, None], (b, 1, g, l, l)).reshape(b, 1, g * l, l)
  s_BxKxMx_SL = jnp.concatenate([s_old, s_new], axis=-1)
  mask = jnp.concatenate([mask_Bx1xMxS, mask_Bx1xMxL], axis=-1)
  p_BxKxMx_SL = jax.nn.softmax(jnp.where(mask, s_BxKxMx_SL, jnp.finfo(f32).min), axis=-1).astype(dt)
  out_BxKxMxH = jax.lax.dot_general(
      p_BxKxMx_SL[..., :s], v_BxKxSxH, (((3,), (2,)), batched), preferred_element_type=f32
  ) + jax.lax.dot_general(p_BxKxMx_SL[..., s:], vn_BxKxLxH, (((3,), (2,)), batched), preferred_element_type=f32)
  return out_BxKxMxH.reshape(b, k, g, l, h).transpose(0, 3, 1, 2, 4).reshape(b, l, n, h)


class Attention(nn.Module):
  """Causal self-attention with GQA; segment ids keep packed documents apart; optional KV cache.

  With a cache, mask_BxLxS is cached_mask's pair (old_BxS, new_BxLxL) (see cached_attention).
  """

  cfg: ModelConfig
  constrain: Any

  @nn.compact
  def __call__(
      self,
      x_BxLxD: Array,
      mask_BxLxS: Array,
      positions_BxL: Array,
      cache: Cache | None,
      cache_index: Array | None = None,
  ) -> tuple[Array, Cache | None]:
    cfg, c = self.cfg, self.constrain
    d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nn.initializers.normal(cfg.init_std)
    out_init = nn.initializers.normal(cfg.init_std / np.sqrt(2 * cfg.num_layers))
    wq = _param(self, "wq", (d, n, h), ("embed", "heads", "head_dim"), init, cfg)
    wk = _param(self, "wk", (d, k, h), ("embed", "kv_heads", "head_dim"), init, cfg)
    wv = _param(self, "wv", (d, k, h), ("embed", "kv_heads", "head_dim"), init, cfg)
    wo = _param(self, "wo", (n, h, d), ("heads", "head_dim", "embed"), out_init, cfg)
    q_BxLxNxH = _einsum("bld,dnh->blnh", x_BxLxD, wq, cfg)
    k_BxLxKxH = _einsum("bld,dkh->blkh", x_BxLxD, wk, cfg)
    v_BxLxKxH = _einsum("bld,dkh->blkh", x_BxLxD, wv, cfg)
    if not cfg.llama:
      zeros = nn.initializers.zeros
      q_BxLxNxH = q_BxLxNxH + _param(self, "bq", (n, h), ("heads", "head_dim"), zeros, cfg)
      k_BxLxKxH = k_BxLxKxH + _param(self, "bk", (k, h), ("kv_heads", "head_dim"), zeros, cfg)
      v_BxLxKxH = v_BxLxKxH + _param(self, "bv", (k, h), ("kv_heads", "head_dim"), zeros, cfg)
    else:
      q_BxLxNxH = rope(q_BxLxNxH, positions_BxL, cfg.rope_theta)
      k_BxLxKxH = rope(k_BxLxKxH, positions_BxL, cfg.rope_theta)
    q_BxLxNxH = c(q_BxLxNxH, ("act_batch", "act_length", "act_heads", "act_head_dim"))
    k_BxLxKxH = c(k_BxLxKxH, ("act_batch", "act_length", "act_kv_heads", "act_head_dim"))
    v_BxLxKxH = c(v_BxLxKxH, ("act_batch", "act_length", "act_kv_heads", "act_head_dim"))

    if cache is not None:
      # Every row writes its L new keys / values at the same slots [cache_index, cache_index + L): one in-place
      # dynamic-update-slice (a per-row scatter cost 13x more on CPU). Which slots a row may see is mask_BxLxS.
      def write(buf_BxKxSxH, new_BxLxKxH):
        new_BxKxLxH = jnp.swapaxes(new_BxLxKxH, 1, 2).astype(buf_BxKxSxH.dtype)
        return jax.lax.dynamic_update_slice(buf_BxKxSxH, new_BxKxLxH, (0, 0, cache_index, 0))

      out_BxLxNxH = cached_attention(q_BxLxNxH, cache["k"], cache["v"], k_BxLxKxH, v_BxLxKxH, mask_BxLxS)
      # The writes must visibly follow every read of the old buffers, or XLA copies each buffer (twice) per step to
      # write in place; an optimization barrier does not order them. Hence a data dependency on the attention output
      # (per row, + 0 * a finite value: the keys and values written are unchanged).
      after_Bx1x1x1 = 0.0 * out_BxLxNxH[:, :1, :1, :1]
      k_BxLxKxH, v_BxLxKxH = k_BxLxKxH + after_Bx1x1x1, v_BxLxKxH + after_Bx1x1x1
      cache = {"k": write(cache["k"], k_BxLxKxH), "v": write(cache["v"], v_BxLxKxH)}
    elif cfg.attention == "xla":
      out_BxLxNxH = attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, mask_BxLxS, cfg)
    else:
      dt = _DTYPES[cfg.dtype]
      qkv = (q_BxLxNxH.astype(dt), k_BxLxKxH.astype(dt), v_BxLxKxH.astype(dt))
      out_BxLxNxH = jax.nn.dot_product_attention(*qkv, mask=mask_BxLxS[:, None], implementation=cfg.attention)
    out_BxLxNxH = c(out_BxLxNxH, ("act_batch", "act_length", "act_heads", "act_head_dim"))
    if cache is not None:
      # (N*H) x D in its stored order: with the 4-d einsum XLA transposed wo (a copy of the weight) every decode step.
      b, l = x_BxLxD.shape[:2]
      y_BxLxD = _einsum("blf,fd->bld", out_BxLxNxH.reshape(b, l, n * h), wo.reshape(n * h, d), cfg)
    else:
      y_BxLxD = _einsum("blnh,nhd->bld", out_BxLxNxH, wo, cfg)
    if not cfg.llama:
      y_BxLxD = y_BxLxD + _param(self, "bo", (d,), ("embed",), nn.initializers.zeros, cfg)
    return y_BxLxD, cache


class Mlp(nn.Module):
  """GELU MLP (gpt2) or SwiGLU (llama)."""

  cfg: ModelConfig
  constrain: Any

  @nn.compact
  def __call__(self, x_BxLxD: Array) -> Array:
    cfg, c = self.cfg, self.constrain
    d, f = cfg.d_model, cfg.d_ff
    init = nn.initializers.normal(cfg.init_std)
    out_init = nn.initializers.normal(cfg.init_std / np.sqrt(2 * cfg.num_layers))
    if cfg.llama:
      w_gate = _param(self, "w_gate", (d, f), ("embed", "mlp"), init, cfg)
      w_up = _param(self, "w_up", (d, f), ("embed", "mlp"), init, cfg)
      h_BxLxF = jax.nn.silu(_einsum("bld,df->blf", x_BxLxD, w_gate, cfg)) * _einsum("bld,df->blf", x_BxLxD, w_up, cfg)
    else:
      w_in = _param(self, "w_in", (d, f), ("embed", "mlp"), init, cfg)
      b_in = _param(self, "b_in", (f,), ("mlp",), nn.initializers.zeros, cfg)
      h_BxLxF = jax.nn.gelu(_einsum("bld,df->blf", x_BxLxD, w_in, cfg) + b_in, approximate=True)
    h_BxLxF = c(h_BxLxF, ("act_batch", "act_length", "act_mlp"))
    w_out = _param(self, "w_out", (f, d), ("mlp", "embed"), out_init, cfg)
    y = _einsum("blf,fd->bld", h_BxLxF, w_out, cfg)
    if not cfg.llama:
      y = y + _param(self, "b_out", (d,), ("embed",), nn.initializers.zeros, cfg)
    return y


class Block(nn.Module):
  """Pre-norm residual block. Signature is scan-friendly: (x, cache) carry/xs; mask, positions, index broadcast."""

  cfg: ModelConfig
  constrain: Any

  @nn.compact
  def __call__(
      self,
      x_BxLxD: Array,
      cache: Cache | None,
      mask_BxLxS: Array,
      positions_BxL: Array,
      cache_index: Array | None = None,
  ) -> tuple[Array, Cache | None]:
    c = self.constrain
    y, cache = Attention(self.cfg, c, name="attn")(
        Norm(self.cfg, name="ln1")(x_BxLxD), mask_BxLxS, positions_BxL, cache, cache_index
    )
    x_BxLxD = c(x_BxLxD + y, ("act_batch", "act_length", "act_embed"))
    x_BxLxD = x_BxLxD + Mlp(self.cfg, c, name="mlp")(Norm(self.cfg, name="ln2")(x_BxLxD))
    return c(x_BxLxD, ("act_batch", "act_length", "act_embed")), cache


class Transformer(nn.Module):
  """tokens_BxL -> logits_BxLxV (float32). With `cache`, also returns the updated cache.

  return_hidden: the final normalised hidden states x_BxLxD (float32) instead of the logits, for a head of the
  caller's (posttrain.reward_model); an untied LM head is then neither created nor applied.

  Cached calls (the engine's prefill and decode): the L new tokens go to cache slots [index, index + L) of every row;
  positions_BxL are their true positions (position embedding / RoPE), segment_ids_BxL > 0 marks the real ones. A
  query sees the valid slots up to its own, so rows of different lengths share slot numbers: prompts are
  left-padded and a row that is paused or finished leaves an invalid (never seen) slot behind.

  mesh / rules: when given, activations are constrained to their logical shardings (training and sharded decoding).
  """

  cfg: ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(
      self,
      tokens_BxL: Array,
      segment_ids_BxL: Array | None = None,
      positions_BxL: Array | None = None,
      cache: Cache | None = None,
      return_hidden: bool = False,
  ) -> Array | tuple[Array, Cache]:
    cfg = self.cfg
    c = _Constrain(self.mesh, self.rules)
    if segment_ids_BxL is None:
      segment_ids_BxL = jnp.ones_like(tokens_BxL)
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    init = nn.initializers.normal(cfg.init_std)
    embed_VxD = _param(self, "embed", (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), init, cfg)
    x_BxLxD = jnp.take(embed_VxD, tokens_BxL, axis=0).astype(jnp.float32)
    if not cfg.llama:
      pos_init = nn.initializers.normal(cfg.init_std / 2)
      pos_PxD = _param(self, "pos_embed", (cfg.max_len, cfg.d_model), ("position", "embed"), pos_init, cfg)
      x_BxLxD = x_BxLxD + jnp.take(pos_PxD, positions_BxL, axis=0)
    x_BxLxD = c(x_BxLxD, ("act_batch", "act_length", "act_embed"))
    # One mask for all layers (not one B x L x S build per layer).
    if cache is None:
      x_BxLxD, _ = self._layers(x_BxLxD, None, packed_causal_mask(segment_ids_BxL), positions_BxL, None, c)
    else:
      masks, valid_BxS = cached_mask(segment_ids_BxL, cache)  # (old_BxS, new_BxLxL), see cached_attention
      kv = {"k": cache["k"], "v": cache["v"]}
      x_BxLxD, kv = self._layers(x_BxLxD, kv, masks, positions_BxL, cache["index"], c)
      cache = {**kv, "valid": valid_BxS, "index": cache["index"] + tokens_BxL.shape[1]}
    x_BxLxD = Norm(cfg, name="ln_f")(x_BxLxD)
    if return_hidden:  # a head of the caller's own reads these (a reward model): no LM head is made or applied
      return x_BxLxD if cache is None else (x_BxLxD, cache)
    if cfg.tie_embeddings:
      logits = _einsum("bld,vd->blv", x_BxLxD, embed_VxD, cfg)
    else:
      head_DxV = _param(self, "lm_head", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), init, cfg)
      logits = _einsum("bld,dv->blv", x_BxLxD, head_DxV, cfg)
    logits = c(logits, ("act_batch", "act_length", "act_vocab"))
    return logits if cache is None else (logits, cache)

  def _layers(
      self, x_BxLxD: Array, kv: Cache | None, mask_BxLxS: Array, positions_BxL: Array, index: Array | None, c: Any
  ) -> tuple[Array, Cache | None]:
    """The Y blocks, scanned or unrolled; kv holds the cache's "k" / "v" (None without a cache) and is returned new."""
    cfg = self.cfg
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      scanned = nn.scan(
          block,
          variable_axes={"params": 0},
          split_rngs={"params": True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
          out_axes=0,
          length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )
      return scanned(cfg, c, name="layers")(x_BxLxD, kv, mask_BxLxS, positions_BxL, index)
    # Unscanned, the cache is one buffer per layer, each updated in place (slicing a stacked cache and stacking it back
    # copied all of it every decode step).
    new_k, new_v = [], []
    for i in range(cfg.num_layers):
      layer_kv = None if kv is None else {"k": kv["k"][i], "v": kv["v"][i]}
      x_BxLxD, layer_kv = block(cfg, c, name=f"layer_{i}")(x_BxLxD, layer_kv, mask_BxLxS, positions_BxL, index)
      if kv is not None:
        new_k.append(layer_kv["k"])
        new_v.append(layer_kv["v"])
    return x_BxLxD, None if kv is None else {"k": new_k, "v": new_v}


def packed_causal_mask(segment_ids_BxL: Array) -> Array:
  """mask_BxLxS without a cache: causal within a row and block-diagonal across packed documents (segment 0 pads)."""
  l = segment_ids_BxL.shape[1]
  causal_LxL = jnp.tril(jnp.ones((l, l), bool))
  return (segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]) & causal_LxL


def cached_mask(segment_ids_BxL: Array, cache: Cache) -> tuple[tuple[Array, Array], Array]:
  """((old_BxS, new_BxLxL), valid_BxS) for L new tokens at slots [index, index + L).

  A new query sees the cache's valid slots before index (old_BxS, the same for all L queries) and the real new
  tokens up to its own (new_BxLxL); valid_BxS is the cache's valid mask with the new tokens written in.
  """
  index, real_BxL = cache["index"], segment_ids_BxL > 0
  l = real_BxL.shape[1]
  old_BxS = cache["valid"] & (jnp.arange(cache["valid"].shape[1]) < index)[None, :]
  new_BxLxL = real_BxL[:, None, :] & jnp.tril(jnp.ones((l, l), bool))[None]
  return (old_BxS, new_BxLxL), jax.lax.dynamic_update_slice(cache["valid"], real_BxL, (0, index))


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> Cache:
  """An empty KV cache of `length` slots per row, in the compute dtype unless given.

  {"k", "v"}: a list of Y BxKxSxH buffers (stacked YxBxKxSxH when cfg.scan_layers), "valid": BxS bool (which slots
  hold a real token of that row), "index": the next slot to write (int32 scalar, shared by all rows).
  """
  shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
  dt = dtype or _DTYPES[cfg.dtype]
  if cfg.scan_layers:
    k = jnp.zeros((cfg.num_layers,) + shape, dt)
    v = jnp.zeros((cfg.num_layers,) + shape, dt)
  else:
    k = [jnp.zeros(shape, dt) for _ in range(cfg.num_layers)]
    v = [jnp.zeros(shape, dt) for _ in range(cfg.num_layers)]
  return {"k": k, "v": v, "valid": jnp.zeros((batch, length), bool), "index": jnp.zeros((), jnp.int32)}


KV_AXES = ("act_batch", "act_kv_heads", "cache_length", "act_head_dim")  # one layer's k or v, BxKxSxH


def cache_axes(cache: Cache) -> Cache:
  """The logical axis names of every cache leaf (a pytree like `cache`), for sharding constraints."""
  kv = jax.tree.map(lambda a: (("layers",) if a.ndim == 5 else ()) + KV_AXES, {"k": cache["k"], "v": cache["v"]})
  return {**kv, "valid": ("act_batch", "cache_length"), "index": ()}


def count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward = 3x forward), PaLM appendix B accounting.

  6 * (matmul parameters, incl. the LM head whether tied or not) + 12 * layers * d_model * seq_len for attention
  scores and values (not halved for the causal mask, as in PaLM / nanoGPT, so MFU is comparable to theirs).
  """
  d, f, n, k, h = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  attn = d * n * h + 2 * d * k * h + n * h * d
  mlp = (3 if cfg.llama else 2) * d * f
  matmul_params = cfg.num_layers * (attn + mlp) + d * cfg.vocab_size
  return 6.0 * matmul_params + 12.0 * cfg.num_layers * d * seq_len


def build_model(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None) -> Transformer:
  """The run's model: its config block resolved, with the run's logical-axis rules (for the mesh's constraints)."""
  return Transformer(ModelConfig.from_config(cfg.model), mesh=mesh, rules=shd.normalize_rules(cfg.sharding_rules))
