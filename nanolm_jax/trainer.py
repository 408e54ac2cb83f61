"""THE training loop, shared by every stage (pretraining, SFT, RL): init or restore, step, eval, log, checkpoint.

A stage plugs in a `Stage`: its loss, its training batches (an iterator with get_state/set_state so resumes are
exact; an optional `step_metrics() -> dict` is logged with the step its last batch fed, e.g. RL rollout rewards)
and optionally its evaluation and an end-of-run hook. Everything else — mesh, shardings, the jitted pure step
with donated state, checkpoints, preemption, metrics — is this file, read top to bottom in `train`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import fs
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import model as model_lib
from nanolm_jax import optim
from nanolm_jax import runs
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax.data import pipeline
from nanolm_jax.evals import harness as evals_harness
from nanolm_jax.evals import tasks as evals_tasks


class NonFiniteLossError(RuntimeError):
  pass


@dataclasses.dataclass
class RunContext:
  """What a stage's builders get: the resolved pieces of the run."""

  cfg: ml_collections.ConfigDict
  workdir: str
  model: model_lib.Transformer
  mesh: jax.sharding.Mesh
  tokenizer: tokenizer_lib.Tokenizer
  # The current params, for stages whose data depends on the policy (RL rollouts); set once the state exists.
  current_params: Callable[[], Any] | None = None


@dataclasses.dataclass
class Stage:
  """What a training stage adds to the shared loop: a loss and data (and optional eval / end hooks)."""

  name: str
  make_loss: Callable[[RunContext, Callable[..., jax.Array]], step_lib.LossFn]
  make_train_data: Callable[[RunContext], Iterator[dict[str, np.ndarray]]]
  make_eval_data: Callable[[RunContext], Iterable[dict[str, np.ndarray]]] | None = None
  on_end: Callable[[RunContext, Any], dict[str, Any] | None] | None = None
  load_tokenizer: Callable[[ml_collections.ConfigDict, str], Any] | None = None
  # Fresh runs only: (ctx, abstract sharded params) -> params, e.g. SFT restoring the --init_from run's weights.
  init_params: Callable[[RunContext, Any], Any] | None = None
  # (ctx, params) -> metrics, replacing the validation-loss eval (e.g. RL's sampled accuracy); runs at step 0 too.
  evaluate: Callable[[RunContext, Any], dict[str, float]] | None = None
  # (cfg, mesh) -> the module the step trains, in place of the language model (a reward model: the same transformer
  # with another head); it must take (tokens, segment_ids, positions) and carry the resolved ModelConfig as `.cfg`.
  build_model: Callable[[ml_collections.ConfigDict, jax.sharding.Mesh], nn.Module] | None = None


def default_train_config() -> ml_collections.ConfigDict:
  """The ``train`` config block (the CPU `tiny` pretraining run's values)."""
  return ml_collections.ConfigDict(
      dict(
          steps=450,
          batch_size=16,  # global batch, in sequences
          # The global batch is read as this many data shards (0 = one per process). Fix it to read the same
          # batches on any number of hosts that divides it (a one-process rerun of a pod run, a test's reference).
          data_shards=0,
          seq_len=256,
          microbatches=1,  # gradient accumulation: batch_size is split into this many scanned microbatches
          eval_every=150,  # 0 = never
          eval_batches=8,
          # Benchmarks scored at every eval step beside the validation loss (nanolm_jax.evals task names, e.g.
          # "blimp"; "" = none), at most eval_tasks_max_examples examples each (0 = all; BLiMP: per phenomenon).
          eval_tasks="",
          eval_tasks_max_examples=0,
          log_every=10,
          checkpoint_every=150,  # 0 = only at the end (and on preemption)
          keep_checkpoints=3,
          async_checkpointing=True,
          z_loss=0.0,
          peak_flops_per_device=0.0,  # 0 = look the device up; used for MFU
          # jax.profiler trace of steps [profile_start, profile_start + profile_steps) into <workdir>/profile
          # (0 = off), e.g. --config.train.profile_steps=3; see metrics.ProfileWindow.
          profile_steps=0,
          profile_start=5,
      )
  )


def validate_config(
    cfg: ml_collections.ConfigDict, num_devices: int | None = None, process_count: int | None = None
) -> None:
  """Checks everything that can be checked before any work or folder is made; ValueError names the field."""
  mc = model_lib.ModelConfig.from_config(cfg.model)
  model_lib.validate_model_config(mc)
  t = cfg.train
  for k in ("steps", "batch_size", "seq_len", "microbatches", "eval_batches", "log_every"):
    if t[k] < 1:
      raise ValueError(f"train.{k} must be >= 1, got {t[k]}")
  for k in ("eval_every", "checkpoint_every", "profile_steps", "profile_start"):
    if t.get(k, 0) < 0:
      raise ValueError(f"train.{k} must be >= 0 (0 = never), got {t[k]}")
  if t.seq_len > mc.max_len:
    raise ValueError(f"train.seq_len={t.seq_len} exceeds model.max_len={mc.max_len}")
  if t.batch_size % t.microbatches:
    raise ValueError(f"train.microbatches={t.microbatches} does not divide train.batch_size={t.batch_size}")
  if not 0 <= cfg.optim.warmup_steps:
    raise ValueError(f"optim.warmup_steps must be >= 0, got {cfg.optim.warmup_steps}")
  if not cfg.optim.lr > 0:
    raise ValueError(f"optim.lr must be > 0, got {cfg.optim.lr}")
  num_devices = num_devices or jax.device_count()
  process_count = process_count or jax.process_count()
  if t.get("data_shards", 0) < 0 or (t.get("data_shards", 0) and t.data_shards % process_count):
    raise ValueError(f"train.data_shards={t.data_shards} must be 0 or a multiple of the {process_count} processes")
  shards = data_shards(cfg, process_count)
  if t.batch_size % shards:
    raise ValueError(f"train.batch_size={t.batch_size} does not split into {shards} data shards (one per process)")
  data, fsdp, tensor = shd.resolve_mesh_shape(cfg.mesh, num_devices)
  shd.check_divisibility(
      {"data": data, "fsdp": fsdp, "tensor": tensor},
      cfg.sharding_rules,
      [
          ("act_batch", t.batch_size // t.microbatches, "train.batch_size / train.microbatches"),
          ("embed", mc.d_model, "model.d_model"),
          ("heads", mc.num_heads, "model.num_heads"),
          ("kv_heads", mc.num_kv_heads, "model.num_kv_heads"),
          ("mlp", mc.d_ff, "model.d_ff"),
          ("vocab", mc.vocab_size, "model.vocab_size"),
      ],
  )


def data_shards(cfg: ml_collections.ConfigDict, process_count: int) -> int:
  """How many data shards the global batch is read as (train.data_shards; 0 = one per process)."""
  return int(cfg.train.get("data_shards", 0) or process_count)


def _apply_fn(model: model_lib.Transformer) -> Callable[..., jax.Array]:
  def apply(params, inputs, segment_ids, positions):
    return model.apply({"params": params}, inputs, segment_ids, positions)

  return apply


class _Preemption:
  """A preemption notice (SIGTERM) sets a flag the loop checks after each step.

  In a lone process a Python handler sets it. With several processes JAX's preemption service owns SIGTERM: the
  coordinator tells every host, and they agree on the step to save at (Checkpointer.reached_preemption), so a
  notice that reaches one host never starts a save the others do not join.
  """

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    if jax.process_count() > 1:
      return self
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, rely on the cluster's preemption service
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint at the current step, then exiting")
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def train(cfg: ml_collections.ConfigDict, workdir: str, stage: Stage) -> dict[str, Any]:
  """Runs (or resumes) a training run in `workdir`; returns the final metrics (+ 'preempted', 'step').

  With several processes every one runs this; process 0 alone writes the run folder's shared files."""
  validate_config(cfg)
  with _Preemption() as preemption:  # from the start: a notice during restore or compilation is not lost
    return _train(cfg, workdir, stage, preemption)


def _train(cfg: ml_collections.ConfigDict, workdir: str, stage: Stage, preemption: _Preemption) -> dict[str, Any]:
  is_main = shd.is_main_process()
  jax.config.update("jax_threefry_partitionable", True)  # same init whatever the sharding
  fs.makedirs(workdir)
  cfg_dict = runs.config_to_dict(cfg)
  if is_main:
    runs.write_config(workdir, cfg_dict)

  # 1. Mesh, model, tokenizer.
  ctx = _context(cfg, workdir, stage)

  # 2. Abstract state -> shardings; the jitted pure step with explicit in/out shardings and donated state.
  apply = _apply_fn(ctx.model)
  setup = make_sharded_step(cfg, ctx.model, ctx.mesh, stage.make_loss(ctx, apply))
  ckpt = ckpt_lib.Checkpointer(workdir, keep=cfg.train.keep_checkpoints, async_save=cfg.train.async_checkpointing)
  train_data = stage.make_train_data(ctx)
  start_step, state, resumed = _restore_or_init(cfg, ctx, stage, setup, ckpt, train_data)
  holder = {"state": state}  # the loop swaps in each new (donated) state; RL rollouts read the current params
  ctx.current_params = lambda: holder["state"].params
  logging.info("model: %s style, %.2fM parameters", ctx.model.cfg.style, model_lib.count_params(state.params) / 1e6)
  evaluate = _make_evaluator(ctx, stage, apply, setup.batch_sharding)
  writer = metrics_lib.MetricsWriter(workdir, enabled=is_main, resume_step=start_step if resumed else None)

  last: dict[str, Any] = {}
  if start_step == 0 and evaluate is not None and cfg.train.eval_every:
    last.update(evaluate(state.params))
    writer.write(0, last)
    logging.info("step 0: %s", _fmt(last))

  # 3. The loop.
  loop = _Loop(cfg, setup, ckpt, train_data, evaluate, writer, cfg_dict, _Throughput(cfg, ctx.model.cfg), holder)
  loop.profile = metrics_lib.ProfileWindow(
      workdir, cfg.train.get("profile_start", 0), cfg.train.get("profile_steps", 0)
  )
  step, last, preempted = loop.run(start_step, last, is_main, preemption)
  loop.profile.close()
  ckpt.wait()

  # 4. The end: curves (process 0) and the stage's hook (evaluations, samples), which every process runs on its own
  # whole copy of the parameters, so hosts stay in step; the hooks write files on process 0 only.
  last["preempted"] = preempted
  last["step"] = int(step) if cfg.train.steps > start_step else start_step
  if not preempted:
    if is_main:
      metrics_lib.plot_losses(workdir)
    if stage.on_end is not None:
      extra = stage.on_end(ctx, shd.host_local_copy(holder["state"].params)) or {}
      last.update(extra)
      numeric = {k: v for k, v in extra.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
      if numeric:
        writer.write(last["step"], numeric)
  writer.close()
  ckpt.close()
  return last


def _context(cfg: ml_collections.ConfigDict, workdir: str, stage: Stage) -> RunContext:
  mesh = shd.make_mesh(cfg.mesh)
  model = stage.build_model(cfg, mesh) if stage.build_model else model_lib.build_model(cfg, mesh)
  tokenizer = stage.load_tokenizer(cfg, workdir) if stage.load_tokenizer else None
  if tokenizer is not None and tokenizer.vocab_size > model.cfg.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size={model.cfg.vocab_size}")
  logging.info("mesh %s on %d devices (%s)", dict(mesh.shape), jax.device_count(), jax.devices()[0].device_kind)
  return RunContext(cfg=cfg, workdir=workdir, model=model, mesh=mesh, tokenizer=tokenizer)


def _restore_or_init(cfg, ctx: RunContext, stage: Stage, setup: ShardedStep, ckpt, train_data) -> tuple[int, Any, bool]:
  """(start step, state, resumed?): the latest good checkpoint with its data position, else a fresh init (with the
  stage's initial params, e.g. SFT's starting run, and a matching optimizer state)."""
  restored = ckpt.restore_latest(setup.abstract_state)
  if restored is not None:
    start_step, state, data_state = restored
    if data_state is not None and hasattr(train_data, "set_state"):
      train_data.set_state(data_state)
    logging.info("resumed from step %d", start_step)
    return start_step, state, True
  state = setup.init(jax.random.PRNGKey(cfg.seed))
  if stage.init_params is not None:
    state = state.replace(params=stage.init_params(ctx, setup.abstract_state.params))
    state = state.replace(opt_state=jax.jit(setup.tx.init, out_shardings=setup.state_sharding.opt_state)(state.params))
  return 0, state, False


class _Throughput:
  """Tokens/s, FLOP/s and MFU (on devices with a known peak) of the steps since the last log."""

  def __init__(self, cfg: ml_collections.ConfigDict, mc: model_lib.ModelConfig):
    self.tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
    self.flops_per_step = model_lib.flops_per_token(mc, cfg.train.seq_len) * self.tokens_per_step
    peak = cfg.train.peak_flops_per_device or metrics_lib.device_peak_flops()
    self.peak_total = peak * jax.device_count() if peak else None

  def rates(self, steps: int, seconds: float) -> dict[str, float]:
    out = {
        "tokens_per_s": self.tokens_per_step * steps / seconds,
        "flops_per_s": self.flops_per_step * steps / seconds,
    }
    if self.peak_total:
      out["mfu"] = out["flops_per_s"] / self.peak_total
    return out


class _Loop:
  """Steps, logs, evaluates and checkpoints until train.steps or a preemption notice."""

  def __init__(self, cfg, setup, ckpt, train_data, evaluate, writer, cfg_dict, meter, holder):
    self.cfg, self.setup, self.ckpt, self.train_data = cfg, setup, ckpt, train_data
    self.evaluate, self.writer, self.cfg_dict, self.meter, self.holder = evaluate, writer, cfg_dict, meter, holder
    self.pending: list[tuple[int, Any]] = []
    self.t_last, self.steps_since = time.perf_counter(), 0
    self.profile = metrics_lib.ProfileWindow("", 0, 0)

  def run(
      self, start_step: int, last: dict[str, Any], is_main: bool, preemption: _Preemption
  ) -> tuple[int, dict[str, Any], bool]:
    t, data = self.cfg.train, self.train_data
    progress = _progress(start_step, t.steps, is_main)
    preempted = False
    step = start_step
    while step < t.steps:
      batch = shd.global_batch(next(data), self.setup.batch_sharding)
      host_m = data.step_metrics() if hasattr(data, "step_metrics") else {}
      self.profile.before_step(step)
      self.holder["state"], m = self.setup.step(self.holder["state"], batch)
      step += 1
      self.profile.after_step(step, m)
      self.steps_since += 1
      self.pending.append((step, {**m, **host_m}))
      progress.update(1)
      stop = preemption.requested or self.ckpt.reached_preemption(step)
      is_eval = self.evaluate is not None and t.eval_every and (step % t.eval_every == 0 or step == t.steps)
      is_ckpt = stop or step == t.steps or (t.checkpoint_every and step % t.checkpoint_every == 0)
      if step % t.log_every == 0 or is_eval or is_ckpt:
        last = self._log(step, is_eval)
        progress.set_postfix_str(_fmt(last, ("loss", "val_bpb", "tokens_per_s")))
      if is_ckpt:
        self.writer.flush()  # the log on an object store is buffered: never behind a checkpoint
        data_state = data.get_state() if hasattr(data, "get_state") else None
        self.ckpt.save(step, self.holder["state"], data_state, self.cfg_dict)
      if stop:
        preempted = True
        logging.warning("preempted at step %d: checkpoint saved", step)
        break
    progress.close()
    return step, last, preempted

  def _log(self, step: int, is_eval: bool) -> dict[str, Any]:
    # Fetching every pending step's metrics both logs them and proves no NaN slipped in before a save.
    fetched = [(s, jax.device_get(x)) for s, x in self.pending]
    self.pending.clear()
    for s, x in fetched:
      if not (math.isfinite(float(x["loss"])) and math.isfinite(float(x["grad_norm"]))):
        self.ckpt.wait()
        raise NonFiniteLossError(
            f"non-finite loss {x['loss']} / grad norm {x['grad_norm']} at step {s}; "
            "stopping without writing a checkpoint of it (last good: "
            f"{self.ckpt.steps()[-1] if self.ckpt.steps() else 'none'})"
        )
    last = {k: float(v) for k, v in fetched[-1][1].items()}
    last.update(self.meter.rates(self.steps_since, time.perf_counter() - self.t_last))
    self.t_last, self.steps_since = time.perf_counter(), 0
    if is_eval:
      last.update(self.evaluate(self.holder["state"].params))
      self.t_last = time.perf_counter()  # keep eval time out of the throughput
    self.writer.write(step, last)
    if is_eval or step % (self.cfg.train.log_every * 10) == 0:
      logging.info("step %d: %s", step, _fmt(last))
    return last


@dataclasses.dataclass
class ShardedStep:
  """The sharded pieces of a run: initialiser, jitted step, and the shardings they use."""

  tx: Any
  init: Callable[[jax.Array], step_lib.TrainState]
  step: Callable[..., tuple[step_lib.TrainState, dict[str, jax.Array]]]
  abstract_state: Any
  state_sharding: Any
  batch_sharding: jax.sharding.NamedSharding


def make_sharded_step(
    cfg: ml_collections.ConfigDict, model: model_lib.Transformer, mesh: jax.sharding.Mesh, loss_fn: step_lib.LossFn
) -> ShardedStep:
  """Shardings from the logical axis rules; init straight into them (no host-side full copy); jit with donation."""
  rules = shd.normalize_rules(cfg.sharding_rules)
  schedule = optim.make_schedule(cfg.optim, cfg.train.steps)
  tx = optim.make_optimizer(cfg.optim, cfg.train.steps)
  dummy = jnp.zeros((1, cfg.train.seq_len), jnp.int32)

  def init_boxed(rng):
    return step_lib.init_state(model.init(rng, dummy)["params"], tx)

  abstract_boxed = jax.eval_shape(init_boxed, jax.random.PRNGKey(0))
  state_sharding = shd.state_shardings(abstract_boxed, mesh, rules)
  init = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=state_sharding)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(abstract_boxed), state_sharding
  )
  batch_sharding = shd.batch_sharding(mesh, rules)
  step_fn = step_lib.make_train_step(loss_fn, tx, schedule, cfg.train.microbatches)
  step = jax.jit(
      step_fn,
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, shd.replicated(mesh)),
      donate_argnums=(0,),
  )
  return ShardedStep(tx, init, step, abstract_state, state_sharding, batch_sharding)


def _make_evaluator(ctx: RunContext, stage: Stage, apply, batch_sharding):
  """params -> eval metrics: the stage's own evaluation, or validation loss / bpb; plus train.eval_tasks."""
  base = _base_evaluator(ctx, stage, apply, batch_sharding)
  names = ctx.cfg.train.get("eval_tasks", "")
  if not names or ctx.tokenizer is None:
    return base
  # Read and checked now, before the first step: a bad task name or file fails the run at once.
  tasks = [
      evals_tasks.load_task(spec, max_examples=ctx.cfg.train.get("eval_tasks_max_examples", 0) or None)
      for spec in evals_tasks.parse_tasks(names)
  ]
  chat_format = stage.name != "pretrain"

  def evaluate(params) -> dict[str, float]:
    out = dict(base(params)) if base is not None else {}
    results = evals_harness.evaluate(
        ctx.model, params, ctx.tokenizer, tasks, mesh=ctx.mesh, chat_format=chat_format, seed=ctx.cfg.seed
    )
    out.update(evals_harness.flat_metrics(results))
    return out

  return evaluate


def _base_evaluator(ctx: RunContext, stage: Stage, apply, batch_sharding):
  if stage.evaluate is not None:
    return lambda params: stage.evaluate(ctx, params)
  if stage.make_eval_data is None or ctx.tokenizer is None:
    return None
  token_bytes = step_lib.token_bytes_table(ctx.tokenizer.token_bytes(), ctx.model.cfg.vocab_size)
  eval_step = jax.jit(step_lib.make_eval_step(apply, token_bytes))

  def evaluate(params) -> dict[str, float]:
    batches = list(itertools.islice(stage.make_eval_data(ctx), ctx.cfg.train.eval_batches))
    if not batches:
      raise ValueError(f"the {stage.name} validation data gave no batches on process {jax.process_index()}")
    # Every process must run the same number of (collective) eval steps: pad a short shard with padding rows.
    count = shd.max_over_processes(len(batches))
    batches += [pipeline.padding_like(batches[0])] * (count - len(batches))
    sums = {"loss_sum": 0.0, "tokens": 0.0, "bytes": 0.0}
    for batch in batches:
      out = jax.device_get(eval_step(params, shd.global_batch(batch, batch_sharding)))
      for k in sums:
        sums[k] += float(out[k])
    return step_lib.summarize_eval(sums)

  return evaluate


def _fmt(m: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
  keys = keys or [k for k in m if k != "preempted"]
  return " ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float)))


def _progress(start: int, total: int, enabled: bool):
  return tqdm(total=total, initial=start, disable=not enabled, dynamic_ncols=True, unit="step")
