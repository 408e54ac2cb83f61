"""The reward-model stage (issue 15): a Bradley-Terry proxy of the gold preferences, from an SFT run.

The runner (stages.base) resolves `init_from` (the default SFT run, trained first when absent) and takes its model;
`prepare` cuts it to ``rm.num_layers`` blocks (0 = all) and finds the pairs: ``rm.train_file`` / ``rm.val_file``
(JSONL in any format preferences.load_jsonl reads) or, when no train file is given, generated ones: prompts of the
gold task (gold_judge.prompts on the SFT run's fact world; validation prompts from the judge's held-out people), two
samples each from the SFT model, labelled by the gold judge (Bradley-Terry label noise ``rm.data.bt_temperature`` on
the training pairs only: held-out accuracy is measured against the gold itself), written to <workdir>/rm_data/.

Training: the shared trainer with posttrain.reward_model's model (the transformer + a scalar head) and loss; every
eval step scores the held-out pairs (rm_accuracy, rm_bt_loss, rm_ece, rm_reward_gap) and the end writes eval.json.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from nanolm_jax import engine as engine_lib
from nanolm_jax import fs
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import trainer
from nanolm_jax.posttrain import gold_judge
from nanolm_jax.posttrain import preferences
from nanolm_jax.posttrain import probe
from nanolm_jax.posttrain import reward_model as rm_lib
from nanolm_jax.stages import base
from nanolm_jax.stages import sft

DATA_DIR = "rm_data"  # inside the run folder: train.jsonl, validation.jsonl, stats.json


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Checks the knobs, cuts the model to rm.num_layers, finds or generates the pairs; the config the trainer runs."""
  if jax.process_count() > 1:
    raise ValueError(f"reward_model runs on one process, not {jax.process_count()}: its pairs are read on one host")
  cfg = copy.deepcopy(cfg)
  rm = cfg.rm
  _check_knobs(cfg)
  run_layers = int(cfg.model.num_layers)
  if not 0 <= rm.num_layers <= run_layers:
    raise ValueError(f"rm.num_layers={rm.num_layers} must be in [0, {run_layers}] (the layers of {cfg.init_from})")
  cfg.model.num_layers = rm.num_layers or run_layers
  rm.num_layers = cfg.model.num_layers
  # User files are read now, so a missing file or one without a valid pair fails before any sampling or training.
  for key in ("train_file", "val_file"):
    if rm[key]:
      preferences.load_jsonl(rm[key])
  if not rm.train_file:  # generated; a given val_file keeps one held-out set across a sweep of generated ones
    paths = generate_data(cfg, workdir, ("train",) if rm.val_file else ("train", "validation"))
    rm.train_file, rm.val_file = paths["train"], rm.val_file or paths["validation"]
  rows, what = (
      (rm.packed_rows, "rm.packed_rows rows of packed pairs; set rm.packed_rows")
      if rm.packed_rows
      else (2 * rm.pairs_per_step, "2 x rm.pairs_per_step rows (chosen and rejected); set rm.pairs_per_step")
  )
  if cfg.train.batch_size is not None and cfg.train.batch_size != rows:
    raise ValueError(
        f"train.batch_size={cfg.train.batch_size} cannot take effect: a reward-model batch is {rows} = {what} instead"
    )
  cfg.train.batch_size = rows
  return cfg


def _check_knobs(cfg: ml_collections.ConfigDict) -> None:
  rm = cfg.rm
  if rm.pairs_per_step < 1:
    raise ValueError(f"rm.pairs_per_step must be >= 1, got {rm.pairs_per_step}")
  if rm.packed_rows < 0 or rm.packed_rows % cfg.train.microbatches:
    raise ValueError(
        f"rm.packed_rows={rm.packed_rows} must be >= 0 (0 = padded pairs) and divisible by train.microbatches="
        f"{cfg.train.microbatches}"
    )
  if rm.packed_rows and cfg.train.seq_len % 2:
    raise ValueError(f"train.seq_len={cfg.train.seq_len} must be even with packing: a pair's sides take half each")
  if rm.pairs_per_step % cfg.train.microbatches:
    raise ValueError(
        f"train.microbatches={cfg.train.microbatches} does not divide rm.pairs_per_step={rm.pairs_per_step} "
        "(each microbatch holds whole pairs)"
    )
  if rm.center_coefficient < 0:
    raise ValueError(f"rm.center_coefficient must be >= 0, got {rm.center_coefficient}")
  if cfg.train.z_loss:
    raise ValueError(f"train.z_loss={cfg.train.z_loss} cannot take effect: the reward model has no LM head")
  if rm.train_file and not rm.val_file:
    raise ValueError(f"rm.train_file={rm.train_file!r} needs rm.val_file: the held-out pairs accuracy is measured on")
  d = rm.data
  if not rm.train_file and (d.num_train < 1 or d.num_val < 1):
    raise ValueError(f"rm.data.num_train / num_val must be >= 1, got {d.num_train} / {d.num_val}")


def generate_data(cfg: ml_collections.ConfigDict, workdir: str, splits: tuple[str, ...]) -> dict[str, str]:
  """Gold-labelled pairs of ``splits`` sampled from the init_from run into <workdir>/rm_data (reused when there).

  Each split samples with its own seed, so the validation pairs do not depend on how many training pairs came first."""
  d = cfg.rm.data
  data_dir = fs.join(workdir, DATA_DIR)
  paths = {s: fs.join(data_dir, f"{s}.jsonl") for s in splits}
  if all(fs.exists(p) for p in paths.values()):
    return paths
  run = runs.load_run(cfg.init_from)
  gcfg = gold_config(cfg, run.cfg)
  judge = gold_judge.GoldJudge(gcfg)
  eng = engine_lib.Engine(run.model, run.params, run.tokenizer)
  stats = {}
  for split in splits:
    n, noise = (d.num_train, d.bt_temperature) if split == "train" else (d.num_val, 0.0)
    seed = cfg.seed + (0 if split == "train" else 7919)
    answer = probe.engine_answer_fn(
        eng, run.tokenizer, temperature=d.temperature, max_new_tokens=d.max_new_tokens, seed=seed
    )
    pairs, stats[split] = gold_judge.generate_pairs(
        answer,
        gold_judge.prompts(gcfg, n, split),
        judge,
        samples=d.samples,
        bt_temperature=noise,
        seed=seed,
        pairing=d.pairing,
    )
    if split == "train" and d.min_gap > 0:  # the clearly-ranked pairs only (labels a rater would agree on)
      pairs = [
          p for p in pairs if abs(judge.score(p.prompt, p.chosen) - judge.score(p.prompt, p.rejected)) >= d.min_gap
      ]
      stats[split]["kept_min_gap"] = len(pairs)
    if not pairs:
      raise ValueError(f"the gold judge labelled no {split} pair (every sampled pair tied); raise the prompt count")
    preferences.write_jsonl(paths[split], pairs)
    logging.info("%s pairs: %s", split, stats[split])
  fs.write_text(fs.join(data_dir, "stats.json"), json.dumps(stats, indent=2))
  return paths


def gold_config(cfg: ml_collections.ConfigDict, run_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The gold judge's config on the SFT run's fact world (the task's people are the ones it was trained on)."""
  gcfg = gold_judge.default_gold_config()
  if "sft" in run_cfg and "world" in run_cfg.sft:
    gcfg.world = run_cfg.sft.world
  gcfg.seed = cfg.seed
  return gcfg


# --- data ------------------------------------------------------------------------------------------------------------


def side_len(cfg: ml_collections.ConfigDict) -> int:
  """The most tokens one side of a pair (prompt + reply) takes: a row, or half a packed row (both sides fit)."""
  return cfg.train.seq_len // 2 if cfg.rm.packed_rows else cfg.train.seq_len


def load_pairs(cfg: ml_collections.ConfigDict, tok, split: str) -> tuple[list[dict[str, Any]], np.ndarray]:
  """The split's pairs rendered at side_len (pairs that cannot fit dropped and counted), and their margins."""
  rm = cfg.rm
  if split == "train":
    pairs, _ = preferences.load_jsonl(rm.train_file)
  elif rm.val_file:
    pairs, _ = preferences.load_jsonl(rm.val_file)
  else:
    raise ValueError("rm.val_file is unset: give a validation file beside rm.train_file")
  return preferences.render_pairs(pairs, tok, side_len(cfg), f"the {split} pairs")


def batch_of(rendered, margins, seq_len: int, pad_id: int, groups: int) -> dict[str, np.ndarray]:
  """Pairs -> ``groups`` consecutive pair batches (each chosen rows then rejected rows, so every microbatch is a pair
  batch), with last_index and margin as B x 1 (every batch array shares the trainer's B x L sharding)."""
  parts = []
  size = len(rendered) // groups
  for g in range(groups):
    sl = slice(g * size, (g + 1) * size)
    b = preferences.pair_batch(rendered[sl], seq_len, pad_id, margins=margins[sl])
    b["margin"] = np.concatenate([b["margin"], b["margin"]])
    del b["weights"]  # the reward reads one token a row
    parts.append(b)
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  out["last_index"], out["margin"] = out["last_index"][:, None], out["margin"][:, None]
  return out


class PairBatches:
  """Endless shuffled batches of pairs (preferences.PairCursor: resumable through get_state / set_state).

  Padded (packed_rows 0): P pairs a step, 2P rows (batch_of). Packed (packed_rows R > 0): R rows of seq_len holding
  as many whole pairs, in order, as fit (preferences.pack_pairs), so a step's pair count follows the pairs' lengths."""

  def __init__(
      self, rendered, margins, pairs_per_step: int, seq_len: int, pad_id: int, seed: int, groups=1, packed_rows=0
  ):
    self.rendered, self.margins, self.p = rendered, margins, pairs_per_step
    self.seq_len, self.pad_id, self.groups, self.rows = seq_len, pad_id, groups, packed_rows
    self.cursor = preferences.PairCursor(len(rendered), seed)
    self.get_state, self.set_state = self.cursor.get_state, self.cursor.set_state

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.rows:
      picked = self.cursor.upcoming(self.rows * self.seq_len // 4 + 1)  # a pair is >= 4 tokens: more than can fit
      batch, used = preferences.pack_pairs(
          [self.rendered[i] for i in picked], self.seq_len, self.pad_id, self.rows, margins=self.margins[picked]
      )
      self.cursor.advance(used)
      return batch
    picked = self.cursor.take(self.p)
    return batch_of([self.rendered[i] for i in picked], self.margins[picked], self.seq_len, self.pad_id, self.groups)


# --- the trainer plug-in ---------------------------------------------------------------------------------------------


def _train_data(ctx: trainer.RunContext) -> PairBatches:
  rendered, margins = load_pairs(ctx.cfg, ctx.tokenizer, "train")
  c = ctx.cfg
  return PairBatches(
      rendered,
      margins,
      c.rm.pairs_per_step,
      c.train.seq_len,
      ctx.tokenizer.pad_id,
      c.seed,
      c.train.microbatches,
      c.rm.packed_rows,
  )


class Evaluator:
  """Scores the held-out pairs in train-shaped batches (one compiled forward) and returns pair_metrics."""

  def __init__(self, ctx: trainer.RunContext):
    self.ctx = ctx
    self.rendered, self.margins = load_pairs(ctx.cfg, ctx.tokenizer, "validation")
    self.sharding = shd.batch_sharding(ctx.mesh, shd.normalize_rules(ctx.cfg.sharding_rules))
    self.fn = jax.jit(lambda p, b: rm_lib.rewards(ctx.model, p, b))

  def __call__(self, params: Any) -> dict[str, float]:
    c, p = self.ctx.cfg, self.ctx.cfg.rm.pairs_per_step
    n = len(self.rendered)
    r_c, r_r = [], []
    for start in range(0, n, p):
      idx = [min(i, n - 1) for i in range(start, start + p)]  # the last batch padded with the last pair
      b = batch_of([self.rendered[i] for i in idx], self.margins[idx], side_len(c), self.ctx.tokenizer.pad_id, 1)
      r_B = np.asarray(jax.device_get(self.fn(params, shd.global_batch(b, self.sharding))))
      keep = min(p, n - start)
      r_c.append(r_B[:keep])
      r_r.append(r_B[p : p + keep])
    return rm_lib.pair_metrics(np.concatenate(r_c), np.concatenate(r_r), self.margins)


def _init_params(ctx: trainer.RunContext, abstract_params: Any) -> dict[str, Any]:
  body = rm_lib.init_transformer_params(
      ctx.cfg.init_from, abstract_params[rm_lib.BODY], ctx.model.cfg.num_layers, ctx.model.cfg.scan_layers
  )
  logging.info("reward model: %d layers of %s and a fresh head", ctx.model.cfg.num_layers, ctx.cfg.init_from)
  head = rm_lib.init_head(ctx.model.cfg, jax.random.PRNGKey(ctx.cfg.seed), abstract_params[rm_lib.HEAD])
  return {rm_lib.BODY: body, rm_lib.HEAD: head}


def build(cfg: ml_collections.ConfigDict) -> trainer.Stage:
  """Its model (transformer + head), loss, pair data and held-out pair evaluation; eval.json at the end."""
  del cfg
  holder: dict[str, Any] = {}

  def evaluate(ctx, params):
    if "e" not in holder or holder["e"].ctx is not ctx:
      holder["e"] = Evaluator(ctx)
    holder["last"] = holder["e"](params)
    return holder["last"]

  def on_end(ctx, params):
    # The loop evaluates the last step when it evaluates at all: that result is the final params' (and already in
    # metrics.jsonl); a run resumed at its end, or with eval_every 0, is evaluated here.
    fresh = "last" not in holder or not ctx.cfg.train.eval_every
    out = evaluate(ctx, params) if fresh else holder["last"]
    if shd.is_main_process():
      runs.write_eval(ctx.workdir, out)
    return out if fresh else {}

  return trainer.Stage(
      name="reward_model",
      make_loss=lambda ctx, apply: rm_lib.make_loss(apply, ctx.cfg.rm.center_coefficient),
      make_train_data=_train_data,
      evaluate=evaluate,
      on_end=on_end,
      load_tokenizer=base.inherited_tokenizer,
      init_params=_init_params,
      build_model=rm_lib.build_model,
  )


def summary(cfg: ml_collections.ConfigDict, workdir: str, out: dict[str, Any]) -> list[str]:
  """Held-out accuracy at the first and last eval, the data's size, and where the scorer loads from."""
  del out
  evals = [r for r in metrics_lib.read_metrics(workdir) if "rm_accuracy" in r]
  lines = [
      f"held-out at step {r['step']:>4}: rm_accuracy {100 * r['rm_accuracy']:.1f}%  bt_loss {r['rm_bt_loss']:.3f}  "
      f"ece {r['rm_ece']:.3f}  reward gap {r['rm_reward_gap']:+.3f}  ({int(r['rm_n'])} pairs)"
      for r in (evals[:1] + evals[-1:] if len(evals) > 1 else evals)
  ]
  lines.append(f"train pairs: {cfg.rm.train_file}; score with posttrain.reward_model.load_reward_model({workdir!r})")
  return lines


STAGE = base.StageDef(name="reward_model", build=build, requires=sft.STAGE, prepare=prepare, summary=summary)
