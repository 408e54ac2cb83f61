"""The GRPO stage: RL on a verifiable task from an SFT run, on the shared trainer.

The runner (stages.base) resolves `init_from` (the default SFT run, trained first when absent) — the starting
policy and, when rl.beta > 0, the frozen reference — and takes its model. `prepare` checks the RL knobs and sets
the batch: prompts_per_step x group_size rows. Rollouts, their rows and the sampled evaluation are
posttrain.rollouts; the loss is posttrain.grpo. Held-out accuracy (pass@1, pass@k) is measured at step 0 and every
eval step with a fixed sampler and seed, and the summary prints it before and after with the rollout / update speed.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import ml_collections
from absl import logging

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import trainer
from nanolm_jax.posttrain import grpo
from nanolm_jax.posttrain import rollouts
from nanolm_jax.stages import base
from nanolm_jax.stages import sft


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Checks the RL knobs; sets train.batch_size to prompts_per_step x group_size rows (or checks a set one)."""
  del workdir
  if jax.process_count() > 1:
    raise ValueError(
        f"grpo runs on one process, not {jax.process_count()}: its rollouts sample with the engine on the local "
        "devices from the current parameters; run it on one host (any number of local devices)"
    )
  cfg = copy.deepcopy(cfg)
  rl = cfg.rl
  if rl.group_size < 2:
    raise ValueError(f"rl.group_size must be >= 2 (advantages compare samples of a prompt), got {rl.group_size}")
  for k in ("prompts_per_step", "inner_steps", "max_new_tokens"):
    if rl[k] < 1:
      raise ValueError(f"rl.{k} must be >= 1, got {rl[k]}")
  if rl.advantage not in grpo.ADVANTAGES:
    raise ValueError(f"rl.advantage={rl.advantage!r}; choose one of {grpo.ADVANTAGES}")
  if rl.aggregation not in grpo.AGGREGATIONS:
    raise ValueError(f"rl.aggregation={rl.aggregation!r}; choose one of {grpo.AGGREGATIONS}")
  if cfg.train.seq_len + 1 - rl.max_new_tokens < 8:
    raise ValueError(
        f"train.seq_len={cfg.train.seq_len} leaves no room for prompts with rl.max_new_tokens={rl.max_new_tokens}"
    )
  # Trainer knobs the RL stage has no use for: refused rather than silently ignored.
  if cfg.train.eval_batches != 1:
    raise ValueError(
        f"train.eval_batches={cfg.train.eval_batches} cannot take effect: GRPO evaluates by sampling "
        "eval.num_problems held-out problems; set that instead"
    )
  if cfg.train.z_loss:
    raise ValueError(f"train.z_loss={cfg.train.z_loss} cannot take effect: the GRPO policy loss has no z-loss term")
  rows = rl.prompts_per_step * rl.group_size
  if cfg.train.batch_size is not None and cfg.train.batch_size != rows:
    raise ValueError(
        f"train.batch_size={cfg.train.batch_size} cannot take effect: a GRPO batch is rl.prompts_per_step x "
        f"rl.group_size = {rl.prompts_per_step} x {rl.group_size} = {rows} rows; set those instead"
    )
  cfg.train.batch_size = rows
  return cfg


def make_loss(ctx: trainer.RunContext, apply):
  """The trainer's loss: GRPO's clipped surrogate (+ beta k3 KL) with the rl block's knobs (RLHF uses it too)."""
  rl = ctx.cfg.rl
  inner = grpo.make_grpo_loss(
      apply,
      eps_low=rl.eps_low,
      eps_high=rl.eps_high,
      beta=rl.beta,
      aggregation=rl.aggregation,
      max_len=rl.max_new_tokens,
  )

  def loss_fn(params, batch):
    # Advantages travel as B x L (every batch array shares the B x L sharding); the loss wants one per row.
    return inner(params, {**batch, "advantages": batch["advantages"][:, 0]})

  return loss_fn


def _on_end(ctx: trainer.RunContext, params: Any) -> dict[str, Any]:
  del params
  path = rollouts.plot_curves(ctx.workdir)
  evals = [m for m in metrics_lib.read_metrics(ctx.workdir) if "eval_accuracy" in m]
  out = {}
  if evals:
    out = {"eval_accuracy_start": evals[0]["eval_accuracy"], "eval_accuracy_end": evals[-1]["eval_accuracy"]}
  logging.info("RL curves: %s", path)
  return out


def build(cfg: ml_collections.ConfigDict) -> trainer.Stage:
  """Its loss, rollout data, sampled evaluation, init from cfg.init_from, curves at the end."""
  del cfg
  holder: dict[str, rollouts.Shared] = {}

  def shared(ctx):  # one engine and task per run, shared by the rollouts and the evaluation
    if "s" not in holder or holder["s"].ctx is not ctx:
      holder["s"] = rollouts.Shared(ctx)
    return holder["s"]

  return trainer.Stage(
      name="grpo",
      make_loss=make_loss,
      make_train_data=lambda ctx: rollouts.RolloutData(shared(ctx)),
      evaluate=lambda ctx, params: rollouts.evaluate(shared(ctx), params),
      on_end=_on_end,
      load_tokenizer=base.inherited_tokenizer,
      init_params=lambda ctx, abstract: ckpt_lib.restore_params(ctx.cfg.init_from, target=abstract)[1],
  )


def summary(cfg: ml_collections.ConfigDict, workdir: str, out: dict[str, Any]) -> list[str]:
  """Held-out accuracy before and after (the same sampler settings and seed) and the rollout / update speed."""
  del out
  rows = metrics_lib.read_metrics(workdir)
  evals = [r for r in rows if "eval_accuracy" in r]
  k = cfg.eval.samples
  lines = []
  for r in (evals[:1] + evals[-1:]) if len(evals) > 1 else evals:
    lines.append(
        f"held-out accuracy at step {r['step']:>4}: pass@1 {100 * r['eval_accuracy']:.1f}%  "
        f"pass@{k} {100 * r.get(f'eval_pass@{k}', float('nan')):.1f}%  "
        f"({cfg.eval.num_problems} problems x {k} samples, temperature {cfg.eval.temperature})"
    )
  if len(evals) > 1:
    lines.append(f"change: {100 * (evals[-1]['eval_accuracy'] - evals[0]['eval_accuracy']):+.1f} points")
  steps = [r for r in rows if "rollout_tokens_per_s" in r]
  if steps:

    def median(key):  # the median keeps the compile of step 1 and the evals (timed into the update) out
      vals = sorted(r[key] for r in steps if isinstance(r.get(key), (int, float)))
      return vals[len(vals) // 2] if vals else float("nan")

    lines.append(
        f"benchmark: rollout {median('rollout_tokens_per_s'):.0f} generated tokens/s, update "
        f"{median('update_tokens_per_s'):.0f} tokens/s (median rollout {median('rollout_s'):.1f} s, update "
        f"{median('update_s'):.1f} s per step)"
    )
  return lines


STAGE = base.StageDef(name="grpo", build=build, requires=sft.STAGE, prepare=prepare, summary=summary)
