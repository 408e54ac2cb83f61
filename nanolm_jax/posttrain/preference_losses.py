"""Preference losses: Bradley-Terry for reward models, DPO for policies, and their metrics (pure jax).

Shapes: P pairs; B = 2P rows laid out as preferences.pair_batch does, chosen rows 0..P-1 then rejected rows P..2P-1;
L row length, V vocabulary.

  Bradley-Terry (reward model): P(chosen > rejected) = σ(r_c − r_r); loss = mean_p −log σ(r_c − r_r − margin), plus
    TRL RewardTrainer's centering term c · mean_p (r_c + r_r)² (``center_rewards_coefficient``; Eisenstein et al.
    2023) that pins the rewards' free offset near 0.
  DPO (Rafailov et al. 2023): h = (π_c − ref_c) − (π_r − ref_r) from the summed reply log-probs of policy π and
    reference; loss = mean_p −(1 − ε) log σ(β h) − ε log σ(−β h) with label smoothing ε (cDPO, Mitchell 2023;
    TRL's ``label_smoothing``; ε = 0 is DPO). Implicit rewards are β (π − ref) per side.

Accuracy counts a pair as right only when r_c > r_r strictly (a tie is wrong: the model did not separate the two).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nanolm_jax.posttrain import grpo


def reward_at(values_BxL: jax.Array, last_index_B: jax.Array) -> jax.Array:
  """values_BxL[b, last_index_B[b]] per row (float32, B): the reward head's scalar at each row's last token."""
  idx_Bx1 = last_index_B.astype(jnp.int32)[:, None]
  return jnp.take_along_axis(values_BxL, idx_Bx1, axis=1)[:, 0].astype(jnp.float32)


def packed_pair_rewards(
    values_BxL: jax.Array, reward_side_BxL: jax.Array, segment_ids_BxL: jax.Array, margin_BxL: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Pairs of a packed batch (preferences.pack_pairs) -> (r_c, r_r, margin, valid), each float32 B x K, K = L // 2.

  A row's k-th pair is segments 2k + 1 (chosen) and 2k + 2 (rejected); its rewards are the values where
  reward_side is +1 / -1 in those segments. valid is 1 for the slots holding a pair (r_c, r_r, margin 0 elsewhere).
  """
  l = values_BxL.shape[1]
  slot_BxL = jnp.maximum(segment_ids_BxL - 1, 0) // 2
  onehot_BxLxK = jax.nn.one_hot(slot_BxL, l // 2, dtype=jnp.float32)
  side_BxL = reward_side_BxL.astype(jnp.float32)
  v_BxL = values_BxL.astype(jnp.float32)
  chosen_BxL, rejected_BxL = (side_BxL > 0).astype(jnp.float32), (side_BxL < 0).astype(jnp.float32)
  pick = lambda x_BxL: jnp.einsum("bl,blk->bk", x_BxL, onehot_BxLxK)
  return pick(v_BxL * chosen_BxL), pick(v_BxL * rejected_BxL), pick(margin_BxL * chosen_BxL), pick(chosen_BxL)


def split_pairs(x_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rows of a pair batch -> (chosen_P, rejected_P)."""
  p = x_B.shape[0] // 2
  if x_B.shape[0] != 2 * p:
    raise ValueError(f"a pair batch has an even number of rows (chosen then rejected), got {x_B.shape[0]}")
  return x_B[:p], x_B[p:]


def bradley_terry_loss(
    rewards_chosen_P: jax.Array,
    rewards_rejected_P: jax.Array,
    margin_P: jax.Array | None = None,
    center_coefficient: float = 0.0,
    valid_P: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) of mean −log σ(r_c − r_r − margin) + center_coefficient · mean (r_c + r_r)².

  metrics: bt_loss (without centering), center_loss (the added term), accuracy (fraction r_c > r_r), margin (mean
  r_c − r_r), reward_chosen / reward_rejected (means). With valid_P (1 for a pair, 0 for an empty packed slot) every
  mean is over the valid pairs only.
  """
  r_c = rewards_chosen_P.astype(jnp.float32)
  r_r = rewards_rejected_P.astype(jnp.float32)
  diff = r_c - r_r
  m = jnp.zeros_like(diff) if margin_P is None else margin_P.astype(jnp.float32)
  w = jnp.ones_like(diff) if valid_P is None else valid_P.astype(jnp.float32)
  mean = lambda x: jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)
  bt = -mean(jax.nn.log_sigmoid(diff - m))
  center = center_coefficient * mean((r_c + r_r) ** 2)
  metrics = {
      "bt_loss": bt,
      "center_loss": center,
      "accuracy": mean((diff > 0).astype(jnp.float32)),
      "margin": mean(diff),
      "reward_chosen": mean(r_c),
      "reward_rejected": mean(r_r),
  }
  return bt + center, metrics


def calibration(rewards_chosen_P: jax.Array, rewards_rejected_P: jax.Array, num_bins: int = 10) -> dict[str, jax.Array]:
  """Reliability of the Bradley-Terry probability σ(r_c − r_r) on labelled pairs, as for a binary classifier.

  A pair's prediction is the side with the higher reward, with confidence max(p, 1 − p) ∈ [0.5, 1], p = σ(r_c − r_r);
  it is correct when that side is the chosen one (r_c > r_r). Confidences fall into ``num_bins`` equal bins of
  [0.5, 1] (1 in the last). Returns ece = Σ_bins (count / P) |accuracy − mean confidence| (0 when calibrated),
  and per bin: count, confidence (mean), accuracy (0 for empty bins).
  """
  p = jax.nn.sigmoid(rewards_chosen_P.astype(jnp.float32) - rewards_rejected_P.astype(jnp.float32))
  conf = jnp.maximum(p, 1.0 - p)
  correct = (p > 0.5).astype(jnp.float32)
  bins = jnp.clip(jnp.floor((conf - 0.5) * 2 * num_bins), 0, num_bins - 1).astype(jnp.int32)
  count = jax.ops.segment_sum(jnp.ones_like(conf), bins, num_segments=num_bins)
  conf_sum = jax.ops.segment_sum(conf, bins, num_segments=num_bins)
  correct_sum = jax.ops.segment_sum(correct, bins, num_segments=num_bins)
  safe = jnp.maximum(count, 1.0)
  ece = jnp.sum(jnp.abs(correct_sum - conf_sum)) / jnp.maximum(jnp.sum(count), 1.0)
  return {"ece": ece, "count": count, "confidence": conf_sum / safe, "accuracy": correct_sum / safe}


def sequence_logprobs(logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array) -> jax.Array:
  """Σ_t weights · log π(target_t) per row (float32, B): a reply's log-probability under the model.

  With a pair batch: sequence_logprobs(logits[:, :-1], tokens[:, 1:], weights[:, 1:]) (logits at t predict t + 1).
  """
  logp_BxL, _ = grpo.token_logprobs(logits_BxLxV, targets_BxL)
  return jnp.sum(logp_BxL * weights_BxL.astype(jnp.float32), axis=1)


def dpo_loss(
    policy_chosen_P: jax.Array,
    policy_rejected_P: jax.Array,
    ref_chosen_P: jax.Array,
    ref_rejected_P: jax.Array,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) of DPO / cDPO from summed reply log-probs of the policy and the (frozen) reference.

  metrics: reward_chosen / reward_rejected (means of the implicit rewards β (π − ref)), reward_accuracy (fraction
  with the chosen implicit reward strictly higher), reward_margin (mean difference), logits (mean h).
  """
  if beta <= 0:
    raise ValueError(f"beta must be positive, got {beta}")
  if not 0.0 <= label_smoothing <= 0.5:
    raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
  r_c = beta * (policy_chosen_P.astype(jnp.float32) - ref_chosen_P.astype(jnp.float32))
  r_r = beta * (policy_rejected_P.astype(jnp.float32) - ref_rejected_P.astype(jnp.float32))
  z = r_c - r_r  # = β h
  losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
  metrics = {
      "reward_chosen": jnp.mean(r_c),
      "reward_rejected": jnp.mean(r_r),
      "reward_accuracy": jnp.mean((z > 0).astype(jnp.float32)),
      "reward_margin": jnp.mean(z),
      "logits": jnp.mean(z) / beta,
  }
  return jnp.mean(losses), metrics
