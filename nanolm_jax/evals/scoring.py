"""Scorers of evaluation tasks: log-likelihoods of continuations, and exact match of generated answers.

Log-likelihoods are computed for many (context, continuation) rows per forward pass: rows are sorted by length and
padded to a few bucketed shapes (powers of two up to the model's context, a fixed number of rows), so a whole suite
compiles a handful of programs. The forward runs on the model's mesh when it has one (rows sharded over the data
axes, parameters as the trainer shards them); every process of a multi-host run scores the same rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import model as model_lib
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib

MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Scored:
  """One continuation under the model."""

  logprob: float  # sum of log p(token | everything before it) over the continuation's tokens, nats
  num_tokens: int
  greedy: bool  # every continuation token is the model's argmax


def encode_row(tok: tokenizer_lib.Tokenizer, context: str, continuation: str, max_len: int) -> tuple[list[int], int]:
  """(ids, n scored): BOS + context + continuation, each encoded on its own (the boundary stays where the task puts
  it). A row longer than the model's context keeps its last max_len + 1 tokens (the oldest context goes first, as in
  lm-evaluation-harness); a continuation that alone exceeds the context is scored on its last max_len tokens."""
  ctx = tok.encode(context, bos=True) if context else [tok.bos_id]
  cont = tok.encode(continuation, bos=False)
  if not cont:
    raise ValueError(f"continuation {continuation!r} encodes to no tokens")
  ids = ctx + cont
  return ids[-(max_len + 1) :], min(len(cont), max_len)


def _bucket(n: int, max_len: int) -> int:
  b = MIN_BUCKET
  while b < n:
    b *= 2
  return min(b, max_len)


class LogLikelihood:
  """Scores rows of token ids (BOS + context + continuation) with one jitted forward per bucketed shape."""

  def __init__(self, model: model_lib.Transformer, params: Any, mesh: Any = None, batch_size: int = 32):
    self.model, self.params, self.mesh = model, params, mesh
    self.max_len = model.cfg.max_len
    multiple = 1  # rows are split over the data shards: a batch is a multiple of their number
    if mesh is not None:
      if model.mesh is None:
        raise ValueError("LogLikelihood(mesh=...) needs a Transformer built with that mesh (model.build_model)")
      rules = list(model.rules) if model.rules else list(shd.DEFAULT_RULES)
      axes = nn.logical_to_mesh_axes(("act_batch",), rules)[0]
      axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
      multiple = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
      self._sharding = shd.batch_sharding(mesh, rules)
      self._replicated = shd.replicated(mesh)
    self.batch_size = -(-max(batch_size, 1) // multiple) * multiple
    self.compiled_shapes: set[tuple[int, int]] = set()
    # Scores come back replicated on a mesh, so every process reads all of them.
    replicated = {} if mesh is None else {"out_shardings": (self._replicated, self._replicated)}
    self._fn = jax.jit(self._score, **replicated)

  def _score(self, params, inputs_BxL, targets_BxL, mask_BxL, segments_BxL):
    positions_BxL = jnp.broadcast_to(jnp.arange(inputs_BxL.shape[1]), inputs_BxL.shape)
    out = self.model.apply({"params": params}, inputs_BxL, segments_BxL, positions_BxL)
    logits_BxLxV = (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    target_BxL = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
    logprob_B = jnp.sum(jnp.where(mask_BxL, target_BxL, 0.0), axis=-1)
    hit_BxL = (jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL) | ~mask_BxL
    return logprob_B, jnp.all(hit_BxL, axis=-1)

  def _put(self, x: np.ndarray) -> Any:
    if self.mesh is None:
      return x
    return jax.make_array_from_callback(x.shape, self._sharding, lambda idx: x[idx])

  def __call__(self, rows: Sequence[tuple[Sequence[int], int]]) -> list[Scored]:
    """rows: (ids, n) with the continuation the last n ids; returns one Scored per row, in order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out: list[Scored | None] = [None] * len(rows)
    fn = self._fn
    for start in range(0, len(order), self.batch_size):
      chunk = order[start : start + self.batch_size]
      length = _bucket(max(len(rows[i][0]) - 1 for i in chunk), self.max_len)
      inputs, targets = np.zeros((2, self.batch_size, length), np.int32)
      mask = np.zeros((self.batch_size, length), bool)
      segments = np.zeros((self.batch_size, length), np.int32)
      for r, i in enumerate(chunk):
        ids, n = rows[i]
        t = len(ids) - 1
        inputs[r, :t], targets[r, :t], segments[r, :t] = ids[:-1], ids[1:], 1
        mask[r, t - n : t] = True
      self.compiled_shapes.add((self.batch_size, length))
      lp, greedy = jax.device_get(fn(self.params, *map(self._put, (inputs, targets, mask, segments))))
      for r, i in enumerate(chunk):
        out[i] = Scored(float(lp[r]), rows[i][1], bool(greedy[r]))
    return out  # type: ignore[return-value]


def choose(scores: Sequence[Scored], length_normalize: bool) -> int | None:
  """The option with the highest (per-token, when normalising) log-likelihood; None on a tie for the top (a tie
  counts as wrong: a model that cannot tell the options apart has not chosen)."""
  values = [s.logprob / s.num_tokens if length_normalize else s.logprob for s in scores]
  best = int(np.argmax(values))
  if sum(v == values[best] for v in values) > 1:
    return None
  return best
