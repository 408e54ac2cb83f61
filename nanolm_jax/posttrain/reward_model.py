"""A reward model: the policy's transformer with a scalar head in place of its LM head (issue 15).

Shapes: B rows, L length, D d_model, P pairs (a pair batch is B = 2P rows, chosen 0..P-1 then rejected P..2P-1; see
preferences.pair_batch), Y layers.

``RewardModel`` runs the transformer to its final normalised hidden states (model.Transformer's return_hidden path)
and applies a d_model -> 1 linear head (``reward_head``, logical axes ('embed', None)) at every position; a row's
reward is the value at its last token, the reply's closing <|end|> (preference_losses.reward_at). Params are
{"transformer": the policy's tree without its LM head, "reward_head": D x 1}.

A proxy of fewer layers keeps the first k blocks of its starting run (``init_transformer_params``), so a family of
proxy sizes is one sweep over ``rm.num_layers``; the embeddings, final norm and the kept blocks start from the run.

``load_reward_model(workdir)`` turns a finished reward-model run into ``score_fn(conversations) -> rewards``, the
entry point of best-of-n and the RLHF stage: each conversation ends with the assistant reply to score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nanolm_jax import chat
from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.posttrain import preference_losses
from nanolm_jax.posttrain import preferences

Conversation = list[dict[str, Any]]
BODY, HEAD = "transformer", "reward_head"
_LAYER = re.compile(r"layer_(\d+)")


class RewardModel(nn.Module):
  """tokens_BxL -> values_BxL (float32): the head applied to every position's final hidden state."""

  cfg: model_lib.ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(
      self, tokens_BxL: jax.Array, segment_ids_BxL: jax.Array | None = None, positions_BxL: jax.Array | None = None
  ) -> jax.Array:
    h_BxLxD = model_lib.Transformer(self.cfg, self.mesh, self.rules, name=BODY)(
        tokens_BxL, segment_ids_BxL, positions_BxL, return_hidden=True
    )
    return apply_head(h_BxLxD, self.head_param())

  def head_param(self) -> jax.Array:
    init = nn.with_logical_partitioning(_head_init(self.cfg), ("embed", None))
    return self.param(HEAD, init, (self.cfg.d_model, 1), jnp.float32)


def _head_init(cfg: model_lib.ModelConfig) -> nn.initializers.Initializer:
  # Small random rather than zero: a zero head passes no gradient to the body on the first step.
  return nn.initializers.normal(cfg.init_std)


def init_head(cfg: model_lib.ModelConfig, key: jax.Array, abstract: jax.ShapeDtypeStruct) -> jax.Array:
  """A fresh head in the abstract one's shape and sharding (the body comes from a run, the head does not)."""
  return jax.device_put(_head_init(cfg)(key, abstract.shape, abstract.dtype), abstract.sharding)


def apply_head(h_BxLxD: jax.Array, w_Dx1: jax.Array) -> jax.Array:
  """values_BxL = h_BxLxD @ w_Dx1, in float32 (the head is read by a sigmoid: no low-precision rounding)."""
  return jnp.einsum("bld,do->blo", h_BxLxD.astype(jnp.float32), w_Dx1.astype(jnp.float32))[..., 0]


def build_model(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None) -> RewardModel:
  """The run's reward model (its model block resolved, the run's logical-axis rules)."""
  mc = model_lib.ModelConfig.from_config(cfg.model)
  return RewardModel(mc, mesh=mesh, rules=shd.normalize_rules(cfg.sharding_rules))


def rewards(model: RewardModel, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """rewards_B: each row's value at batch['last_index'] (B, or B x 1 as the trainer carries it)."""
  values_BxL = model.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"])
  return preference_losses.reward_at(values_BxL, batch["last_index"].reshape(-1))


def make_loss(apply: Callable[..., jax.Array], center_coefficient: float = 0.0):
  """The trainer's loss (numerator, denominator, aux sums): Bradley-Terry summed over the batch's P pairs.

  Batch keys as the stage's data gives them: tokens / segment_ids / positions B x L and either (padded pairs)
  last_index B x 1 and margin B x 1 (the pair's margin on both its rows), or (packed, preferences.pack_pairs)
  reward_side and margin B x L. Summing (not averaging) per pair makes microbatch accumulation exact."""

  def loss_fn(params, batch):
    values_BxL = apply(params, batch["tokens"], batch["segment_ids"], batch["positions"])
    if "reward_side" in batch:  # packed: pairs sit in slots of each row; empty slots have valid 0
      r_c, r_r, margin, valid = preference_losses.packed_pair_rewards(
          values_BxL, batch["reward_side"], batch["segment_ids"], batch["margin"]
      )
      r_c_P, r_r_P, margin_P, valid_P = r_c.reshape(-1), r_r.reshape(-1), margin.reshape(-1), valid.reshape(-1)
    else:
      r_B = preference_losses.reward_at(values_BxL, batch["last_index"][:, 0])
      r_c_P, r_r_P = preference_losses.split_pairs(r_B)
      margin_P, valid_P = batch["margin"][: r_c_P.shape[0], 0], jnp.ones_like(r_c_P)
    loss, m = preference_losses.bradley_terry_loss(r_c_P, r_r_P, margin_P, center_coefficient, valid_P)
    p = jnp.sum(valid_P)
    aux = {
        "bt_loss": m["bt_loss"],
        "center_loss": m["center_loss"],
        "train_accuracy": m["accuracy"],
        "reward_gap": m["margin"],
        "reward_mean": 0.5 * (m["reward_chosen"] + m["reward_rejected"]),
    }
    return loss * p, p, {k: v * p for k, v in aux.items()}

  return loss_fn


def pair_metrics(r_c_P: np.ndarray, r_r_P: np.ndarray, margin_P: np.ndarray | None = None) -> dict[str, float]:
  """Held-out metrics of a reward model's rewards on labelled pairs (the keys metrics.jsonl and eval.json carry)."""
  _, m = preference_losses.bradley_terry_loss(jnp.asarray(r_c_P), jnp.asarray(r_r_P), margin_P)
  cal = preference_losses.calibration(jnp.asarray(r_c_P), jnp.asarray(r_r_P))
  return {
      "rm_accuracy": float(m["accuracy"]),
      "rm_bt_loss": float(m["bt_loss"]),
      "rm_ece": float(cal["ece"]),
      "rm_reward_gap": float(m["margin"]),
      "rm_reward_std": float(np.std(np.concatenate([r_c_P, r_r_P]))),
      "rm_n": int(len(r_c_P)),
  }


# --- starting from a policy run --------------------------------------------------------------------------------------


def truncate_layers(params: Any, num_layers: int, scan_layers: bool) -> Any:
  """The transformer tree keeping its first ``num_layers`` blocks (scanned: the leading Y axis sliced)."""
  if scan_layers:
    return {**params, "layers": jax.tree.map(lambda x: x[:num_layers], params["layers"])}
  return {k: v for k, v in params.items() if not (m := _LAYER.fullmatch(k)) or int(m.group(1)) < num_layers}


def init_transformer_params(init_from: str, abstract_body: Any, num_layers: int, scan_layers: bool) -> Any:
  """The body's params from run ``init_from`` (its first ``num_layers`` blocks), restored into the abstract
  (sharded) tree; the run's LM head is left behind."""
  run_layers = int(runs.read_config(init_from).model.num_layers)
  if num_layers > run_layers:
    raise ValueError(f"rm.num_layers={num_layers} exceeds the {run_layers} layers of {init_from}")
  if not scan_layers or num_layers == run_layers:
    # A subset of the run's tree (unscanned blocks are named layer_i): restored straight into its shardings.
    return ckpt_lib.restore_params(init_from, target=abstract_body)[1]
  _, full = ckpt_lib.restore_params(init_from)  # scanned and cut: the stacked blocks are sliced on the host
  body = truncate_layers({k: v for k, v in full.items() if k in abstract_body}, num_layers, scan_layers)
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), body, abstract_body)


# --- scoring conversations -------------------------------------------------------------------------------------------


def render_scored(conv: Conversation, tok: tokenizer_lib.Tokenizer, max_len: int) -> list[int]:
  """The tokens a conversation ending in an assistant reply is scored on: its training rendering (the reply's
  <|end|> last), cut from the left after <s> when longer than ``max_len`` (as preferences.render_pair cuts)."""
  if not conv or conv[-1].get("role") != "assistant":
    raise ValueError("a scored conversation must end with the assistant reply to score")
  tokens, _ = chat.render_for_training(conv, tok)
  if len(tokens) > max_len:
    tokens = tokens[:1] + tokens[len(tokens) - max_len + 1 :]
  return tokens


@dataclasses.dataclass
class Scorer:
  """score(conversations) -> rewards (float32 numpy), batched in ``chunk`` rows padded to a multiple of ``bucket``
  tokens (a few compiled shapes)."""

  model: RewardModel
  params: Any
  tokenizer: tokenizer_lib.Tokenizer
  chunk: int = 64
  bucket: int = 32

  def __post_init__(self):
    self._fn = jax.jit(lambda p, b: rewards(self.model, p, b))

  def score_tokens(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
    out = []
    max_len = self.model.cfg.max_len
    for start in range(0, len(rows), self.chunk):
      part = list(rows[start : start + self.chunk])
      seq_len = min(max_len, -(-max(len(r) for r in part) // self.bucket) * self.bucket)
      pad = self.chunk - len(part)  # a full chunk always: one compiled shape per length bucket
      padded = [(r, ()) for r in part + [part[0]] * pad]
      batch = preferences.row_batch(padded, seq_len, self.tokenizer.pad_id)
      del batch["weights"]
      out.append(np.asarray(self._fn(self.params, batch))[: len(part)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def __call__(self, conversations: Sequence[Conversation]) -> np.ndarray:
    return self.score_tokens([render_scored(c, self.tokenizer, self.model.cfg.max_len) for c in conversations])


def load_reward_model(workdir: str, step: int | None = None) -> Scorer:
  """A reward-model run folder -> score_fn(conversations ending in a reply) -> rewards_N (numpy float32)."""
  cfg = runs.read_config(workdir)
  if cfg.get("stage") != "reward_model":
    raise ValueError(f"{workdir} is a {cfg.get('stage')!r} run, not a reward_model run")
  _, params = ckpt_lib.restore_params(workdir, step=step)
  return Scorer(build_model(cfg, mesh=None), params, runs.load_tokenizer(workdir))
