"""The one shape of a training stage, and the one place that decides where a stage starts from.

A stage module (pretrain, sft, grpo, ...) defines ``STAGE = StageDef(...)``: its name, the stage it starts from,
what it prepares before training (generated data, the batch shape) and the trainer plug-in (loss, data, evaluation;
``trainer.Stage``). ``run`` does the rest, the same for every stage:

  1. ``init_from``: --init_from, else the resumed run's own reference (a rerun continues against the same
     starting point), else the config's, else the prerequisite stage's default run — trained first when absent;
  2. the model block comes from that run: an override the stage cannot honour (a different architecture) is an
     error naming the key, one it can (the compute dtype, remat, the attention kernel) takes effect;
  3. ``prepare``, ``trainer.validate_config``, ``trainer.train``, then ``finish`` (controls, reports).

Configs are injected (``default_config(stage_name)``) rather than imported, so the core never imports ``configs``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable

from absl import logging
import jax
import ml_collections

from nanolm_jax import fs
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import trainer
from nanolm_jax.data import pipeline

ConfigFn = Callable[[str], ml_collections.ConfigDict]
# How the same weights are computed: a stage may change these from its init_from run's.
RUNTIME_MODEL_KEYS = ("dtype", "remat", "attention")
DEFAULT_RUNS_DIR = "runs"


@dataclasses.dataclass(frozen=True)
class StageDef:
  """What a stage adds to the shared runner; see the module docstring."""

  name: str
  build: Callable[[ml_collections.ConfigDict], trainer.Stage]  # the trainer plug-in: loss, data, eval, hooks
  requires: StageDef | None = None  # the stage whose run this one starts from; None = from scratch
  # (cfg, workdir) -> the config the trainer runs, once init_from and the model are resolved.
  prepare: Callable[[ml_collections.ConfigDict, str], ml_collections.ConfigDict] | None = None
  # (cfg, workdir, trainer output) -> output, after an unpreempted run: controls, tables, extra metrics.
  finish: Callable[[ml_collections.ConfigDict, str, dict[str, Any]], dict[str, Any]] | None = None
  # (cfg, workdir, output) -> printed lines summing the run up for the terminal.
  summary: Callable[[ml_collections.ConfigDict, str, dict[str, Any]], list[str]] | None = None


def process_batches(ctx: trainer.RunContext, make: Callable[..., Any], data_cfg: Any, split: str, repeat: bool):
  """A stage's batches for this process: ``make(data_cfg, tokenizer, ...)`` (pipeline.make_lm_dataset,
  sft_data.make_sft_dataset) with the run's sequence length and seed, for this process's data shards.

  The global batch is read as ``train.data_shards`` shards (0 = one per process); process i reads shards
  i*k .. i*k+k-1 side by side (k = shards / processes), so the batches are the same on 1 or k hosts."""
  cfg = ctx.cfg
  n, i = jax.process_count(), jax.process_index()
  shards = trainer.data_shards(cfg, n)
  per_process = shards // n

  def shard(j: int):
    return make(
        data_cfg,
        ctx.tokenizer,
        split=split,
        seq_len=cfg.train.seq_len,
        batch_size=cfg.train.batch_size // shards,
        seed=cfg.seed,
        process_index=i * per_process + j,
        process_count=shards,
        repeat=repeat,
    )

  if per_process == 1:
    return shard(0)
  return pipeline.ShardedBatches([shard(j) for j in range(per_process)])


def inherited_tokenizer(cfg: ml_collections.ConfigDict, workdir: str) -> tokenizer_lib.Tokenizer:
  """The init_from run's tokenizer, its sentencepiece file copied into the new run folder (self-contained, like every
  run; imported Hugging Face tokenizers stay where they are)."""
  src, dst = fs.join(cfg.init_from, runs.TOKENIZER_FILE), fs.join(workdir, runs.TOKENIZER_FILE)
  if fs.exists(src) and not fs.exists(dst) and shd.is_main_process():
    fs.copy(src, dst)
  return runs.load_tokenizer(cfg.init_from)


def default_workdir(stage: StageDef, preset: str = "tiny") -> str:
  return os.path.join(DEFAULT_RUNS_DIR, f"{stage.name}_{preset or 'custom'}")


def resolve_config(
    stage: StageDef,
    cfg: ml_collections.ConfigDict,
    workdir: str,
    *,
    init_from: str | None = None,
    default_config: ConfigFn | None = None,
) -> ml_collections.ConfigDict:
  """The config as the trainer will run it, before the stage's own preparation (no folder is made)."""
  cfg = copy.deepcopy(cfg)
  if stage.requires is None:
    if init_from:
      raise ValueError(f"--init_from={init_from}: {stage.name} trains from scratch and starts from no run")
    return cfg
  cfg.init_from = _init_from(stage, cfg, workdir, init_from, default_config)
  cfg.model = inherit_model(cfg.model, runs.read_config(cfg.init_from).model, stage.name, cfg.init_from)
  return cfg


def _init_from(
    stage: StageDef, cfg: ml_collections.ConfigDict, workdir: str, flag: str | None, default_config: ConfigFn | None
) -> str:
  """--init_from, else the resumed run's own reference, else the config's, else the prerequisite's default run."""
  chosen = flag or ""
  if not chosen and runs.is_run(workdir):
    chosen = runs.read_config(workdir).get("init_from", "") or ""
  chosen = chosen or cfg.get("init_from", "")
  if chosen:
    if not runs.is_run(chosen):
      raise FileNotFoundError(f"init_from={chosen} is not a run folder (no {runs.CONFIG_FILE})")
    return chosen
  if default_config is None:
    raise ValueError(f"{stage.name} needs init_from: a {stage.requires.name} run folder")
  return ensure_default_run(stage.requires, default_config)


def inherit_model(
    override: ml_collections.ConfigDict,
    inherited: ml_collections.ConfigDict,
    stage_name: str,
    init_from: str,
) -> ml_collections.ConfigDict:
  """The init_from run's model block with the stage config's set (non-None) keys applied where they can be."""
  model = ml_collections.ConfigDict(inherited.to_dict())
  for key, value in override.items():
    if value is None:
      continue
    if key not in model:
      raise ValueError(f"model.{key} is not a key of the init_from run's model block ({init_from})")
    if key in RUNTIME_MODEL_KEYS:
      model[key] = value
    elif value != model[key]:
      raise ValueError(
          f"model.{key}={value!r} cannot take effect: {stage_name} keeps the architecture of its init_from run "
          f"({init_from} has model.{key}={model[key]!r}; only {', '.join(RUNTIME_MODEL_KEYS)} may change). Drop the "
          "override, or train a new starting run with it."
      )
  return model


def prepare_config(
    stage: StageDef,
    cfg: ml_collections.ConfigDict,
    workdir: str,
    *,
    init_from: str | None = None,
    default_config: ConfigFn | None = None,
) -> ml_collections.ConfigDict:
  """The config the trainer runs: resolved, prepared by the stage and validated (errors name the field)."""
  cfg = resolve_config(stage, cfg, workdir, init_from=init_from, default_config=default_config)
  if stage.prepare is not None:  # it may write data into the run folder: process 0 first, the others then reuse it
    cfg = shd.main_first(f"prepare_{stage.name}", lambda: stage.prepare(cfg, workdir))
  trainer.validate_config(cfg)
  return cfg


def train(stage: StageDef, cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) a prepared config; then the stage's finish. Returns the trainer's final metrics."""
  if stage.requires is not None:
    logging.info("%s: workdir %s, init_from %s", stage.name, fs.abspath(workdir), cfg.init_from)
  out = trainer.train(cfg, workdir, stage.build(cfg))
  if stage.finish is not None and not out.get("preempted"):
    out = stage.finish(cfg, workdir, out)
  return out


def run(
    stage: StageDef,
    cfg: ml_collections.ConfigDict,
    workdir: str,
    *,
    init_from: str | None = None,
    default_config: ConfigFn | None = None,
) -> dict[str, Any]:
  """prepare_config -> train: the whole stage, as its entrypoint runs it."""
  cfg = prepare_config(stage, cfg, workdir, init_from=init_from, default_config=default_config)
  return train(stage, cfg, workdir)


def ensure_default_run(stage: StageDef, default_config: ConfigFn) -> str:
  """The stage's default run folder (runs/<name>_tiny), trained with its default config first when unfinished."""
  workdir = default_workdir(stage)
  if not runs.is_finished(workdir):
    print(f"No finished {stage.name} run at {workdir}: running the default {stage.name} first.", flush=True)
    run(stage, default_config(stage.name), workdir, default_config=default_config)
  return workdir
