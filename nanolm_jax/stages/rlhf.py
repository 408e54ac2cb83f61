"""The RLHF stage (issue 15): GRPO against a reward model, from the SFT run the reward model was trained from.

The runner (stages.base) resolves `init_from` to a reward-model run (the default one, trained first when absent,
itself from the default SFT run). `prepare` reads that run's own init_from — the SFT run — and records it as
``rlhf.policy_from``: the policy starts from it and it is the frozen reference (KL in the loss with rl.beta, in the
reward with rlhf.kl_in_reward, and the `kl` metric); the model block is the SFT run's. The reward is the proxy's
score (posttrain.rlhf.RewardModelTask on the gold judge's prompts); the loss, the rollouts and the optimizer step
are GRPO's (posttrain.grpo, posttrain.rollouts) on the shared trainer.

Every eval step (and step 0) writes proxy_reward, gold_reward and kl to metrics.jsonl and sample texts to
rlhf_samples.jsonl; the end adds best-of-n against the same proxy from the starting policy (bon_n rows),
rlhf_curves.png and rlhf_fits.json (posttrain.rlhf_report: gold and proxy vs sqrt(KL) with Gao et al.'s fits).

rlhf.method="dpo" swaps the loss and the data for DPO's (posttrain.dpo) on the gold-labelled pairs the proxy was
trained on (dpo.train_file; "" = the reward-model run's rm.train_file), batches of 2 x dpo.pairs_per_step rows with
the reference's log-probs computed in the iterator; the evaluation is the same (the proxy is only measured), so DPO's
points sit on the same gold-vs-KL axes as RL's. Its end writes the curves only: best-of-n is the RL run's job.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jax
import ml_collections
from absl import logging

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import fs
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import trainer
from nanolm_jax.posttrain import dpo
from nanolm_jax.posttrain import gold_judge
from nanolm_jax.posttrain import preferences
from nanolm_jax.posttrain import reward_model as rm_lib
from nanolm_jax.posttrain import rlhf
from nanolm_jax.posttrain import rlhf_report
from nanolm_jax.posttrain import rollouts
from nanolm_jax.stages import base
from nanolm_jax.stages import grpo as grpo_stage
from nanolm_jax.stages import reward_model as rm_stage

METHODS = ("rl", "dpo")


def method(cfg: ml_collections.ConfigDict) -> str:
  return cfg.rlhf.get("method", "rl")  # configs written before DPO existed are RL runs


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Checks the knobs and the reward-model run; the policy and its model from the run's SFT run; the method's batch
  (GRPO's, or 2 x dpo.pairs_per_step rows)."""
  cfg = copy.deepcopy(cfg)
  _check_method(cfg)
  rm_cfg = runs.read_config(cfg.init_from)
  if rm_cfg.get("stage") != "reward_model":
    raise ValueError(
        f"init_from={cfg.init_from} is a {rm_cfg.get('stage')!r} run: rlhf starts from a reward_model run "
        "(python -m experiments.reward_model), whose own init_from is the policy's SFT run"
    )
  if not runs.checkpoint_steps(cfg.init_from):
    raise FileNotFoundError(f"reward-model run {cfg.init_from} has no checkpoint: train it first")
  policy = rm_cfg.get("init_from", "")
  if not policy or not runs.is_run(policy):
    raise FileNotFoundError(
        f"the reward-model run {cfg.init_from} records init_from={policy!r}, which is not a run folder: the policy "
        "and the reference start from that SFT run"
    )
  if cfg.rlhf.policy_from and fs.abspath(cfg.rlhf.policy_from) != fs.abspath(policy):
    raise ValueError(f"rlhf.policy_from={cfg.rlhf.policy_from} is not the reward model's SFT run ({policy})")
  cfg.rlhf.policy_from = policy
  # The policy's architecture is the SFT run's (a proxy may be cut to fewer blocks); runtime keys stay as resolved.
  model = ml_collections.ConfigDict(runs.read_config(policy).model.to_dict())
  for key in base.RUNTIME_MODEL_KEYS:
    model[key] = cfg.model[key]
  cfg.model = model
  e = cfg.rlhf
  if e.kl_in_reward < 0:
    raise ValueError(f"rlhf.kl_in_reward must be >= 0, got {e.kl_in_reward}")
  if e.bon_samples < 1 or e.bon_prompts < 0 or e.train_prompts < 1:
    raise ValueError(
        f"rlhf.bon_samples must be >= 1, bon_prompts >= 0, train_prompts >= 1 "
        f"(got {e.bon_samples}, {e.bon_prompts}, {e.train_prompts})"
    )
  if cfg.rl.temperature != 1.0 and e.kl_in_reward > 0:
    raise ValueError("rlhf.kl_in_reward needs rl.temperature=1: the penalty reads the sampling-time log-probs as π's")
  if method(cfg) == "dpo":
    return _prepare_dpo(cfg, rm_cfg)
  return grpo_stage.prepare(cfg, workdir)


def _check_method(cfg: ml_collections.ConfigDict) -> None:
  """rlhf.method and, for DPO, its knobs: checked before any run folder is read."""
  if method(cfg) not in METHODS:
    raise ValueError(f"rlhf.method={method(cfg)!r}; choose one of {', '.join(METHODS)}")
  if method(cfg) != "dpo":
    return
  d = cfg.dpo
  if not d.beta > 0:
    raise ValueError(f"dpo.beta must be > 0 (the implicit reward's scale), got {d.beta}")
  if not 0.0 <= d.label_smoothing <= 0.5:
    raise ValueError(f"dpo.label_smoothing must be in [0, 0.5], got {d.label_smoothing}")
  if d.pairs_per_step < 1 or d.length_bucket < 0:
    raise ValueError(f"dpo.pairs_per_step must be >= 1, length_bucket >= 0 (got {d.pairs_per_step}, {d.length_bucket})")
  if d.pairs_per_step % cfg.train.microbatches:
    raise ValueError(
        f"train.microbatches={cfg.train.microbatches} does not divide dpo.pairs_per_step={d.pairs_per_step} "
        "(each microbatch holds whole pairs)"
    )
  # RL knobs DPO has no use for: refused rather than silently ignored.
  if cfg.rlhf.kl_in_reward > 0 or cfg.rl.beta > 0:
    raise ValueError(
        f"rlhf.kl_in_reward={cfg.rlhf.kl_in_reward} / rl.beta={cfg.rl.beta} cannot take effect with rlhf.method=dpo: "
        "DPO's pull towards the reference is dpo.beta"
    )
  if cfg.train.eval_batches != 1 or cfg.train.z_loss:
    raise ValueError("train.eval_batches must stay 1 and train.z_loss 0: RLHF evaluates by sampling (eval block)")


def _prepare_dpo(cfg: ml_collections.ConfigDict, rm_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """dpo.train_file resolved (and read, so a bad file fails now); train.batch_size = 2 x dpo.pairs_per_step."""
  if jax.process_count() > 1:
    raise ValueError(f"rlhf runs on one process, not {jax.process_count()}: its evaluation samples on local devices")
  d = cfg.dpo
  if not d.train_file:
    d.train_file = rm_cfg.get("rm", {}).get("train_file", "") or fs.join(
        cfg.init_from, rm_stage.DATA_DIR, "train.jsonl"
    )
  if not fs.exists(d.train_file):
    raise FileNotFoundError(f"dpo.train_file={d.train_file} does not exist: give the pairs DPO trains on")
  preferences.load_jsonl(d.train_file)
  rows = 2 * d.pairs_per_step
  if cfg.train.batch_size is not None and cfg.train.batch_size != rows:
    raise ValueError(
        f"train.batch_size={cfg.train.batch_size} cannot take effect: a DPO batch is 2 x dpo.pairs_per_step = {rows} "
        "rows (chosen and rejected); set dpo.pairs_per_step instead"
    )
  cfg.train.batch_size = rows
  return cfg


def _shared(ctx: trainer.RunContext) -> rollouts.Shared:
  cfg = ctx.cfg
  policy_cfg = runs.read_config(cfg.rlhf.policy_from)
  gcfg = rm_stage.gold_config(cfg, policy_cfg)
  scorer = rm_lib.load_reward_model(cfg.init_from)
  scorer.chunk = cfg.rl.prompts_per_step * cfg.rl.group_size  # a rollout round in one forward
  task = rlhf.RewardModelTask(scorer, gold_judge.GoldJudge(gcfg), gcfg, int(cfg.rlhf.train_prompts))
  logging.info("reward: %s; policy and reference: %s", cfg.init_from, cfg.rlhf.policy_from)
  return rollouts.Shared(ctx, task=task, reference=cfg.rlhf.policy_from)


def _on_end(ctx: trainer.RunContext, params: Any, shared: rollouts.Shared) -> dict[str, Any]:
  """Best-of-n from the starting policy (bon_n rows in metrics.jsonl, once per run folder) and the curves."""
  rows = metrics_lib.read_metrics(ctx.workdir)
  if not any("bon_n" in r for r in rows):
    table = rlhf.best_of_n_rows(shared, params)
    if shd.is_main_process():
      step = max((r["step"] for r in rows), default=0)
      lines = "".join(json.dumps({"step": step, **r}) + "\n" for r in table)
      fs.append_text(fs.join(ctx.workdir, "metrics.jsonl"), lines)
  if shd.is_main_process():  # gold and proxy vs sqrt(KL) with Gao et al.'s fits (+ rlhf_fits.json)
    for entry in rlhf_report.write_report([ctx.workdir])["fits"]:
      logging.info("fit: %s", rlhf_report.describe(entry))
  return {}  # nothing new for metrics.jsonl: the summary reads the eval rows (a rerun at the end adds no row)


def _dpo_loss(ctx: trainer.RunContext, apply):
  return dpo.make_loss(apply, ctx.cfg.dpo.beta, ctx.cfg.dpo.label_smoothing)


def _dpo_data(ctx: trainer.RunContext, shared: rollouts.Shared) -> dpo.DpoBatches:
  """The pairs with the reference's log-probs: the reference is the one the evaluation's KL reads (loaded once)."""
  c = ctx.cfg
  pairs, _ = preferences.load_jsonl(c.dpo.train_file)
  rendered, _ = preferences.render_pairs(pairs, ctx.tokenizer, c.train.seq_len, c.dpo.train_file)
  logging.info("DPO on %d pairs of %s (beta %g)", len(rendered), c.dpo.train_file, c.dpo.beta)
  ref = dpo.reference_logprobs_fn(ctx.model, lambda: shared.ref_params(ctx.current_params()), shared.batch_sharding)
  p, seq_len, pad = c.dpo.pairs_per_step, c.train.seq_len, ctx.tokenizer.pad_id
  return dpo.DpoBatches(rendered, ref, p, seq_len, pad, c.seed, c.train.microbatches, c.dpo.length_bucket)


def _dpo_on_end(ctx: trainer.RunContext, params: Any) -> dict[str, Any]:
  del params
  path = metrics_lib.plot_panels(ctx.workdir, dpo.CURVES, "rlhf_curves.png") if shd.is_main_process() else None
  logging.info("DPO curves: %s", path)
  return {}


def build(cfg: ml_collections.ConfigDict) -> trainer.Stage:
  """GRPO's loss and rollout data with the reward-model task, or DPO's on the pairs; the sampled proxy / gold / KL
  evaluation either way."""
  holder: dict[str, rollouts.Shared] = {}

  def shared(ctx):  # one engine, task and reward model per run
    if "s" not in holder or holder["s"].ctx is not ctx:
      holder["s"] = _shared(ctx)
    return holder["s"]

  if method(cfg) == "dpo":
    make_loss, on_end = _dpo_loss, _dpo_on_end

    def make_train_data(ctx):
      return _dpo_data(ctx, shared(ctx))

  else:
    make_loss = grpo_stage.make_loss

    def make_train_data(ctx):
      return rollouts.RolloutData(shared(ctx), kl_in_reward=ctx.cfg.rlhf.kl_in_reward)

    def on_end(ctx, params):
      return _on_end(ctx, params, shared(ctx))

  return trainer.Stage(
      name="rlhf",
      make_loss=make_loss,
      make_train_data=make_train_data,
      evaluate=lambda ctx, params: rlhf.evaluate(shared(ctx), params),
      on_end=on_end,
      load_tokenizer=base.inherited_tokenizer,
      init_params=lambda ctx, abstract: ckpt_lib.restore_params(ctx.cfg.rlhf.policy_from, target=abstract)[1],
  )


def summary(cfg: ml_collections.ConfigDict, workdir: str, out: dict[str, Any]) -> list[str]:
  """The eval curve (proxy, gold, KL per eval step), the gold's peak, and best-of-n at a few n."""
  del out
  rows = metrics_lib.read_metrics(workdir)
  evals = [r for r in rows if "gold_reward" in r]
  lines = [f"reward model {cfg.init_from}; policy and reference {cfg.rlhf.policy_from}"]
  if method(cfg) == "dpo":
    lines.append(f"DPO (beta {cfg.dpo.beta}, label smoothing {cfg.dpo.label_smoothing}) on {cfg.dpo.train_file}")
  lines += [
      f"step {r['step']:>4}: proxy {r['proxy_reward']:+.3f}  gold {r['gold_reward']:.3f}  kl {r['kl']:.2f} nats"
      for r in evals
  ]
  if evals:
    peak = max(evals, key=lambda r: r["gold_reward"])
    end = evals[-1]["gold_reward"]
    drop = 100 * (peak["gold_reward"] - end) / max(peak["gold_reward"], 1e-9)
    lines.append(f"gold peak {peak['gold_reward']:.3f} at step {peak['step']}; end {end:.3f} ({drop:.0f}% below)")
  bon = [r for r in rows if "bon_n" in r]
  for r in bon:
    if r["bon_n"] in (1, 2, 4, 8, 16, 32, 64):
      lines.append(
          f"best-of-{r['bon_n']:<3d}: proxy {r['bon_proxy']:+.3f}  gold {r['bon_gold']:.3f}  kl {r['bon_kl']:.2f}"
      )
  return lines


STAGE = base.StageDef(name="rlhf", build=build, requires=rm_stage.STAGE, prepare=prepare, summary=summary)
