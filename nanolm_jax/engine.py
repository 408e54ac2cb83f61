"""Generation: one prefill over the prompts, then a jitted decode loop against a preallocated KV cache.

Prompts of different lengths are right-padded; row b's cache slot s holds position s, and decoding row b writes slot
len_b, len_b + 1, ... in order, so padding slots are overwritten before any query can see them (model.Attention).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import model as model_lib


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """temperature 0 = greedy; top_k 0 and top_p 1 switch those filters off."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 64

  def validate(self) -> "SamplingParams":
    if not (self.temperature >= 0 and np.isfinite(self.temperature)):
      raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
    if self.top_k < 0 or int(self.top_k) != self.top_k:
      raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    return self


def filter_logits(logits_BxV: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Temperature-scaled logits with everything outside top-k / the top-p nucleus set to -inf (float32).

  All three knobs are traced values, so changing them does not recompile.
  """
  logits = logits_BxV.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
  v = logits.shape[-1]
  sorted_BxV = jnp.sort(logits, axis=-1)[:, ::-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
  kth_Bx1 = jnp.take_along_axis(sorted_BxV, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), axis=-1)
  logits = jnp.where(logits < kth_Bx1, -jnp.inf, logits)
  # Nucleus: keep the smallest prefix of the sorted distribution whose mass reaches top_p (always >= 1 token).
  sorted_BxV = jnp.where(sorted_BxV < kth_Bx1, -jnp.inf, sorted_BxV)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  keep_BxV = mass_before_BxV < top_p
  cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff_Bx1, -jnp.inf, logits)


def sample_token(logits_BxV: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 top_p: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row; returns (tokens_B, logprobs_B) under the model's unfiltered distribution."""
  filtered = filter_logits(logits_BxV, temperature, top_k, top_p)
  sampled = jax.random.categorical(rng, filtered, axis=-1)
  greedy = jnp.argmax(logits_BxV, axis=-1)
  tok_B = jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)
  logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  return tok_B, jnp.take_along_axis(logp_BxV, tok_B[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "cache_len"))
def _generate(model: model_lib.Transformer, params: Any, prompt_BxT: jax.Array, lengths_B: jax.Array,
              rng: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, eos_id: jax.Array,
              max_new_tokens: int, cache_len: int):
  b, t = prompt_BxT.shape
  cache = model_lib.init_cache(model.cfg, b, cache_len)
  positions_BxT = jnp.broadcast_to(jnp.arange(t), (b, t))
  logits_BxTxV, cache = model.apply(params, prompt_BxT, positions_BxL=positions_BxT, cache=cache)
  last_BxV = jnp.take_along_axis(logits_BxTxV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]

  def step(carry, rng_t):
    last_BxV, cache, pos_B, done_B = carry
    tok_B, logp_B = sample_token(last_BxV, rng_t, temperature, top_k, top_p)
    tok_B = jnp.where(done_B, eos_id, tok_B)
    emitted_B = ~done_B
    done_B = done_B | (tok_B == eos_id)
    logits_Bx1xV, cache = model.apply(params, tok_B[:, None], positions_BxL=pos_B[:, None], cache=cache)
    return (logits_Bx1xV[:, 0], cache, pos_B + 1, done_B), (tok_B, logp_B, emitted_B)

  carry = (last_BxV, cache, lengths_B, jnp.zeros((b,), bool))
  _, (toks_NxB, logps_NxB, emitted_NxB) = jax.lax.scan(step, carry, jax.random.split(rng, max_new_tokens))
  return toks_NxB.T, logps_NxB.T, emitted_NxB.T


def generate(model: model_lib.Transformer, params: Any, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
             rng: jax.Array, eos_id: int = -1) -> list[list[int]]:
  """Samples a continuation for each prompt (token ids); each stops after eos (included) or max_new_tokens.

  The context is the model's max_len: a prompt plus max_new_tokens longer than it is an error naming both.
  """
  sampling.validate()
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token (encode with bos=True)")
  t = max(len(p) for p in prompts)
  need = t + sampling.max_new_tokens
  if need > model.cfg.max_len:
    raise ValueError(f"prompt length {t} + max_new_tokens {sampling.max_new_tokens} = {need} exceeds the model's "
                     f"context of {model.cfg.max_len} tokens")
  prompt_BxT = np.zeros((len(prompts), t), np.int32)
  for i, p in enumerate(prompts):
    prompt_BxT[i, :len(p)] = p
  lengths_B = np.array([len(p) for p in prompts], np.int32)
  toks, _, emitted = _generate(model, params, jnp.asarray(prompt_BxT), jnp.asarray(lengths_B), rng,
                               jnp.float32(sampling.temperature), jnp.int32(sampling.top_k),
                               jnp.float32(sampling.top_p), jnp.int32(eos_id), sampling.max_new_tokens, need)
  toks, emitted = np.asarray(toks), np.asarray(emitted)
  return [row[m].tolist() for row, m in zip(toks, emitted)]
