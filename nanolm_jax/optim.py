"""The optax chain from config: global-norm clipping, then AdamW on a warmup + cosine schedule."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import optax

_EMBEDDINGS = ("embed", "pos_embed")


def default_optim_config() -> ml_collections.ConfigDict:
  """The ``optim`` config block: AdamW with warmup and cosine decay (the CPU `tiny` pretraining run's values)."""
  return ml_collections.ConfigDict(
      dict(
          lr=3e-3,
          warmup_steps=50,
          min_lr_ratio=0.1,  # cosine decays to lr * min_lr_ratio (1.0 = constant after warmup)
          b1=0.9,
          b2=0.95,
          eps=1e-8,
          weight_decay=0.1,
          clip_norm=1.0,
          decay_embeddings=False,
          decay_norms_and_biases=False,
      )
  )


def make_schedule(o: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to o.lr over o.warmup_steps, then cosine decay to o.lr * o.min_lr_ratio at total_steps."""
  warmup = min(int(o["warmup_steps"]), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=o["lr"],
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=o["lr"] * o["min_lr_ratio"],
  )


def decay_mask(params: Any, o: Mapping[str, Any]) -> Any:
  """True where weight decay applies: matrices always; embeddings and norms / biases only when configured."""

  def decide(path, x) -> bool:
    name = getattr(path[-1], "key", str(path[-1]))
    if name in _EMBEDDINGS:
      return bool(o["decay_embeddings"])
    if x.ndim <= 1 or (x.ndim == 2 and name.startswith("b")):  # norms, biases (incl. per-head q/k/v biases)
      return bool(o["decay_norms_and_biases"])
    return True

  return jax.tree_util.tree_map_with_path(decide, params)


def make_optimizer(o: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm(o.clip_norm) -> adamw(schedule, b1, b2, eps, weight_decay, mask). clip_norm 0 disables it."""
  adamw = optax.adamw(
      make_schedule(o, total_steps),
      b1=o["b1"],
      b2=o["b2"],
      eps=o["eps"],
      weight_decay=o["weight_decay"],
      mask=lambda p: decay_mask(p, o),
  )
  if o["clip_norm"] and o["clip_norm"] > 0:
    return optax.chain(optax.clip_by_global_norm(o["clip_norm"]), adamw)
  return adamw
