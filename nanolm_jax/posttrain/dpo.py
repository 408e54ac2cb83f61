"""DPO (Rafailov et al. 2023) on preference pairs: the trainer's loss and its batches with the reference's log-probs.

Shapes: P pairs; B = 2P rows laid out as preferences.pair_batch does (chosen rows 0..P-1, then the rejected rows);
L the row width (train.seq_len, or the longest row rounded up to dpo.length_bucket).

The frozen reference's summed reply log-probs are computed once per batch, in the data iterator (``DpoBatches``,
with ``reference_logprobs_fn``'s jitted forward), and carried in the batch as ``ref_logp`` (B x 1), as TRL's
precompute_ref_log_probs does: the loss (``make_loss``) stays a pure function of (params, batch), and the step
differentiates one forward, the policy's. A reply's log-probability is Σ log π(token) over its tokens (its text and
the closing <|end|>; ``weights`` is 1 there), each read from the logits one position earlier.

Resume: the iterator's position is a preferences.PairCursor (epoch e visits the pairs in a permutation seeded by
(seed, e)), as the reward model's PairBatches, so a resumed run sees the same pairs in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import sharding as shd
from nanolm_jax.posttrain import preference_losses
from nanolm_jax.posttrain import preferences

BATCH_KEYS = ("tokens", "segment_ids", "positions", "weights")
CURVES = (
    "proxy_reward",
    "gold_reward",
    "kl",
    "loss",
    "dpo_reward_accuracy",
    "dpo_reward_margin",
    "dpo_reward_chosen",
    "dpo_reward_rejected",
    "dpo_logp_chosen",
)


def reply_logprobs(logits_BxLxV: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
  """logp_B: each row's summed reply log-probability (float32), the logits at t predicting token t + 1."""
  return preference_losses.sequence_logprobs(logits_BxLxV[:, :-1], batch["tokens"][:, 1:], batch["weights"][:, 1:])


def make_loss(apply: Callable[..., jax.Array], beta: float, label_smoothing: float = 0.0):
  """The trainer's loss (numerator, denominator, aux sums): DPO summed over the batch's P pairs.

  Batch keys: tokens / segment_ids / positions / weights B x L, ref_logp B x 1 (the reference's reply log-probs).
  Summing (not averaging) per pair makes microbatch accumulation exact, each microbatch being a pair batch."""

  def loss_fn(params, batch):
    logits_BxLxV = apply(params, batch["tokens"], batch["segment_ids"], batch["positions"])
    pi_c_P, pi_r_P = preference_losses.split_pairs(reply_logprobs(logits_BxLxV, batch))
    ref_c_P, ref_r_P = preference_losses.split_pairs(batch["ref_logp"][:, 0])
    loss, m = preference_losses.dpo_loss(pi_c_P, pi_r_P, ref_c_P, ref_r_P, beta=beta, label_smoothing=label_smoothing)
    p = jnp.float32(pi_c_P.shape[0])
    aux = {f"dpo_{k}": m[k] for k in ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected")}
    # The policy's own log-probs: DPO can lower both sides (likelihood displacement) while the margin grows.
    aux["dpo_logp_chosen"], aux["dpo_logp_rejected"] = jnp.mean(pi_c_P), jnp.mean(pi_r_P)
    return loss * p, p, {k: v * p for k, v in aux.items()}

  return loss_fn


def batch_of(
    rendered: Sequence[dict[str, Any]], seq_len: int, pad_id: int, groups: int, length_bucket: int = 0
) -> dict[str, np.ndarray]:
  """Pairs -> ``groups`` consecutive pair batches (so every microbatch is itself a pair batch), BATCH_KEYS B x W.

  W is the longest row rounded up to a multiple of length_bucket (capped at seq_len), or seq_len when 0: a few
  compiled shapes instead of always paying for seq_len."""
  longest = max(len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) for r in rendered)
  width = seq_len if not length_bucket else min(seq_len, -(-longest // length_bucket) * length_bucket)
  size = len(rendered) // groups
  parts = [preferences.pair_batch(rendered[g * size : (g + 1) * size], width, pad_id) for g in range(groups)]
  return {k: np.concatenate([p[k] for p in parts]) for k in BATCH_KEYS}


def reference_logprobs_fn(
    model: Any, ref_params: Callable[[], Any], sharding: jax.sharding.NamedSharding | None = None
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
  """batch -> logp_B (numpy float32): the reply log-probs of the params ``ref_params()`` returns, one jitted
  forward (batch placed with ``sharding`` when given, as the trainer places it)."""

  @jax.jit
  def fwd(params, batch):
    logits = model.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"])
    return reply_logprobs(logits, batch)

  def logprobs(batch: dict[str, np.ndarray]) -> np.ndarray:
    b = {k: batch[k] for k in BATCH_KEYS}
    b = shd.global_batch(b, sharding) if sharding is not None else b
    return np.asarray(jax.device_get(fwd(ref_params(), b)), np.float32)

  return logprobs


class DpoBatches:
  """Endless shuffled batches of P pairs (BATCH_KEYS and ref_logp B x 1); see the module docstring.

  rendered: preferences.render_pair outputs; ref_logprobs: batch -> logp_B of the frozen reference; groups: pair
  batches per batch (train.microbatches); length_bucket: see batch_of. Resumable (preferences.PairCursor)."""

  def __init__(
      self,
      rendered: Sequence[dict[str, Any]],
      ref_logprobs: Callable[[dict[str, np.ndarray]], np.ndarray],
      pairs_per_step: int,
      seq_len: int,
      pad_id: int,
      seed: int,
      groups: int = 1,
      length_bucket: int = 0,
  ):
    self.rendered, self.ref_logprobs, self.p = rendered, ref_logprobs, pairs_per_step
    self.seq_len, self.pad_id, self.groups, self.bucket = seq_len, pad_id, groups, length_bucket
    self.cursor = preferences.PairCursor(len(rendered), seed)
    self.get_state, self.set_state = self.cursor.get_state, self.cursor.set_state

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    picked = [self.rendered[i] for i in self.cursor.take(self.p)]
    batch = batch_of(picked, self.seq_len, self.pad_id, self.groups, self.bucket)
    batch["ref_logp"] = self.ref_logprobs(batch).reshape(-1, 1)  # B x 1: every batch array shares B x L's sharding
    return batch
