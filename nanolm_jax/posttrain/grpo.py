"""GRPO-family policy-gradient math: group advantages, clipped ratio loss, k3 KL, loss aggregation.

Shapes: P prompts, G samples per prompt, B = P*G rows (one prompt + completion per row), L row length.
A batch row's `weights_BxL` marks the completion tokens that are trained (sampled by the policy; prompt, padding and
forced tool-result tokens are 0). `old_logprobs_BxL` are the sampling-time log-probs (π_old), `ref_logprobs_BxL` the
frozen reference's (only when β > 0), `advantages_B` one value per row.

Variants, as compared in the literature:
  advantages: grpo (z-score within the group, DeepSeekMath), drgrpo (mean-centred only, Dr. GRPO),
              rloo (leave-one-out baseline: r_i - mean_{j != i} r_j).
  aggregation: token_mean (every completion token in the batch weighs the same, DAPO),
               sequence_mean (GRPO's 1/|o_i| per sequence, then mean over sequences),
               constant (Dr. GRPO: per-sequence sums divided by a constant max length, then mean over sequences).
  clipping: ratio clipped to [1 - eps_low, 1 + eps_high] (DAPO's clip-higher when eps_high > eps_low).
  KL: k3 estimator exp(ref - logp) - (ref - logp) - 1 >= 0, weighted by beta (beta = 0 keeps no reference).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ADVANTAGES = ("grpo", "drgrpo", "rloo")
AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def group_advantages(rewards_PxG: np.ndarray, estimator: str, eps: float = 1e-6) -> np.ndarray:
  """Per-sample advantages from the rewards of each prompt's group (float32, P x G)."""
  r = np.asarray(rewards_PxG, np.float64)
  g = r.shape[1]
  mean = r.mean(axis=1, keepdims=True)
  if estimator == "grpo":
    adv = (r - mean) / (r.std(axis=1, keepdims=True) + eps)
  elif estimator == "drgrpo":
    adv = r - mean
  elif estimator == "rloo":
    if g < 2:
      raise ValueError("rloo needs at least 2 samples per prompt")
    adv = r - (r.sum(axis=1, keepdims=True) - r) / (g - 1)
  else:
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {ADVANTAGES}")
  return adv.astype(np.float32)


def token_logprobs(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log π(target) per token and the entropy of π per position (float32)."""
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  chosen = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_BxLxV) * logp_BxLxV, axis=-1)
  return chosen, entropy


def policy_loss(
    logp_BxL: jax.Array,
    batch: dict[str, jax.Array],
    *,
    eps_low: float,
    eps_high: float,
    beta: float,
    aggregation: str,
    max_len: int,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """(numerator, denominator, aux sums) of the clipped surrogate + beta * KL, for the shared train step.

  The step divides summed numerators by summed denominators, so each aggregation is written as a ratio of sums
  that stays exact under gradient accumulation.
  """
  w = batch["weights"].astype(jnp.float32)
  adv_Bx1 = batch["advantages"].astype(jnp.float32)[:, None]
  log_ratio = logp_BxL - batch["old_logprobs"]
  ratio = jnp.exp(log_ratio)
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  per_token = -jnp.minimum(ratio * adv_Bx1, clipped * adv_Bx1)
  is_clipped = ((ratio * adv_Bx1) > (clipped * adv_Bx1)).astype(jnp.float32)
  aux = {"clip_frac": jnp.sum(is_clipped * w), "ratio": jnp.sum(ratio * w)}
  if beta > 0:
    d = batch["ref_logprobs"] - logp_BxL
    kl = jnp.exp(d) - d - 1.0
    per_token = per_token + beta * kl
    aux["kl"] = jnp.sum(kl * w)
  tokens = jnp.sum(w)
  lengths_B = jnp.sum(w, axis=1)
  rows = jnp.sum((lengths_B > 0).astype(jnp.float32))
  if aggregation == "token_mean":
    num, den = jnp.sum(per_token * w), tokens
  elif aggregation == "sequence_mean":
    num, den = jnp.sum(jnp.sum(per_token * w, axis=1) / jnp.maximum(lengths_B, 1.0)), rows
  elif aggregation == "constant":
    num, den = jnp.sum(per_token * w) / max_len, rows
  else:
    raise ValueError(f"unknown loss aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
  # Aux sums are reported per completion token by the step (it divides every aux by `den`); rescale them so that
  # what reaches the logs is a per-token mean whatever the aggregation.
  scale = den / jnp.maximum(tokens, 1.0)
  return num, den, {k: v * scale for k, v in aux.items()}


def make_grpo_loss(
    apply_fn: Callable[..., jax.Array], *, eps_low: float, eps_high: float, beta: float, aggregation: str, max_len: int
):
  """A LossFn for train_step.make_train_step: (params, batch) -> (numerator, denominator, aux)."""

  def loss_fn(params: Any, batch: dict[str, jax.Array]):
    logits = apply_fn(params, batch["inputs"], batch["segment_ids"], batch["positions"])
    logp, entropy = token_logprobs(logits, batch["targets"])
    num, den, aux = policy_loss(
        logp, batch, eps_low=eps_low, eps_high=eps_high, beta=beta, aggregation=aggregation, max_len=max_len
    )
    w = batch["weights"].astype(jnp.float32)
    aux["entropy"] = jnp.sum(entropy * w) * den / jnp.maximum(jnp.sum(w), 1.0)
    return num, den, aux

  return loss_fn
