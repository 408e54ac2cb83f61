"""Pure train and eval steps: (state, batch) -> (state, metrics), with on-device gradient accumulation.

A stage plugs in a loss function `loss_fn(params, batch) -> (numerator, denominator, aux)`: the step's loss is
sum(numerator) / sum(denominator) over all microbatches, so accumulating k microbatches gives exactly the gradient of the
whole batch (token-weighted, not an average of microbatch averages). Pretraining and SFT use `lm_loss` (SFT's batches
carry a loss mask in `weights`); RL and reward models add their own losses with the same signature.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Batch], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def token_cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token cross entropy (nats) and log-partition, in float32."""
  logits = logits_BxLxV.astype(jnp.float32)
  lse_BxL = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
  return lse_BxL - target_logit, lse_BxL


def make_lm_loss(apply_fn: Callable[..., jax.Array], z_loss: float = 0.0) -> LossFn:
  """Next-token loss weighted by batch["weights"] (padding and, in SFT, non-assistant tokens have weight 0).

  The optional z-loss (PaLM) adds z_loss * logsumexp^2 per weighted token to keep the softmax normaliser near 1.
  """

  def loss_fn(params, batch):
    logits = apply_fn(params, batch["inputs"], batch["segment_ids"], batch["positions"])
    ce_BxL, lse_BxL = token_cross_entropy(logits, batch["targets"])
    w_BxL = batch["weights"].astype(jnp.float32)
    ce_sum = jnp.sum(ce_BxL * w_BxL)
    total = ce_sum
    if z_loss:
      total = total + z_loss * jnp.sum(jnp.square(lse_BxL) * w_BxL)
    return total, jnp.sum(w_BxL), {"ce_sum": ce_sum}

  return loss_fn


def _split_microbatches(batch: Batch, k: int) -> Batch:
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} microbatches")
    return x.reshape((k, x.shape[0] // k) + x.shape[1:])

  return jax.tree.map(split, batch)


def make_train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule | None = None, microbatches: int = 1
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the pure step. Metrics: loss, grad_norm, lr, tokens (the loss denominator), and loss-fn aux sums."""
  grad_fn = jax.grad(lambda p, b: _with_aux(loss_fn(p, b)), has_aux=True)

  def train_step(state: TrainState, batch: Batch):
    if microbatches == 1:
      grads, (num, den, aux) = grad_fn(state.params, batch)
    else:

      def body(carry, mb):
        g_acc, num_acc, den_acc, aux_acc = carry
        g, (num, den, aux) = grad_fn(state.params, mb)
        return (
            jax.tree.map(jnp.add, g_acc, g),
            num_acc + num,
            den_acc + den,
            jax.tree.map(jnp.add, aux_acc, aux),
        ), None

      mbs = _split_microbatches(batch, microbatches)
      first = jax.tree.map(lambda x: x[0], mbs)
      aux_shape = jax.eval_shape(lambda: grad_fn(state.params, first)[1][2])
      zeros = (
          jax.tree.map(jnp.zeros_like, state.params),
          jnp.zeros(()),
          jnp.zeros(()),
          jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape),
      )
      (grads, num, den, aux), _ = jax.lax.scan(body, zeros, mbs)
    den = jnp.maximum(den, 1e-9)
    grads = jax.tree.map(lambda g: g / den, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": num / den,
        "grad_norm": optax.tree.norm(grads),
        "tokens": den,
        **{k: v / den for k, v in aux.items()},
    }
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def _with_aux(out):
  num, den, aux = out
  return num, (num, den, aux)


def token_bytes_table(token_bytes: Any, vocab_size: int) -> jax.Array:
  """UTF-8 bytes of each token id, zero for the model's padding ids past the tokenizer's vocabulary (for bpb)."""
  table_V = jnp.asarray(token_bytes, jnp.float32)
  return jnp.pad(table_V, (0, vocab_size - table_V.shape[0]))


def make_eval_step(
    apply_fn: Callable[..., jax.Array], token_bytes_V: jax.Array
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Sums for validation: loss (nats), tokens, and UTF-8 bytes of the targets (for bits per byte)."""

  def eval_step(params, batch):
    logits = apply_fn(params, batch["inputs"], batch["segment_ids"], batch["positions"])
    ce_BxL, _ = token_cross_entropy(logits, batch["targets"])
    w_BxL = batch["weights"].astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(ce_BxL * w_BxL),
        "tokens": jnp.sum(w_BxL),
        "bytes": jnp.sum(jnp.take(token_bytes_V, batch["targets"]) * w_BxL),
    }

  return eval_step


def summarize_eval(sums: dict[str, float]) -> dict[str, float]:
  """val_loss (nats/token) and val_bpb = total nats / (ln 2 * total bytes)."""
  return {
      "val_loss": sums["loss_sum"] / max(sums["tokens"], 1.0),
      "val_bpb": sums["loss_sum"] / (math.log(2) * max(sums["bytes"], 1.0)),
  }
