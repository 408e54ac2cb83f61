"""The evaluation of one run folder: what `experiments.evaluate` and the speedrun both run.

`evaluate_workdir` scores a run folder on the task suite (public benchmarks, the project's arithmetic) plus the run's
own measures (validation bpb for base runs, the eval_chat metrics for chat runs) and writes eval/<step>.json and
eval/* rows of metrics.jsonl in the run folder. The chat evaluation's settings come from the SFT run a chat run
descends from, over `sft_defaults` (the SFT stage's default config, injected: the core does not import configs).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import ml_collections

from nanolm_jax import engine as engine_lib
from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import sharding
from nanolm_jax.evals import harness
from nanolm_jax.evals import tasks as tasks_lib
from nanolm_jax.posttrain import chat_eval
from nanolm_jax.stages import sft

SUITE_MAX_EXAMPLES = 500  # per task but BLiMP: the default suite on the tiny run in ~3 min on 2 CPU cores


@dataclasses.dataclass(frozen=True)
class Options:
  """What to score and how; the defaults are `python -m experiments.evaluate` with no flags."""

  tasks: str = ""  # comma-separated task specs (name, name=PATH, tfds:NAME); '' = the default suite
  max_examples: int = -1  # per task; 0 = all; -1 = all of BLiMP and the first SUITE_MAX_EXAMPLES of the others
  skip_bad_lines: bool = False
  step: int | None = None
  batch_size: int = 32
  max_new_tokens: int = 160
  arithmetic: int = 64  # arithmetic problems added to the default suite (0 = none)
  seed: int = 0
  mesh: str = ""  # 'data=2,fsdp=2,tensor=2'; '' = one device


def make_mesh(spec: str):
  """'data=2,fsdp=2,tensor=2' -> a Mesh over this process's devices; '' -> None (one device)."""
  if not spec:
    return None
  sizes = dict(sharding.default_mesh_config())
  for part in spec.split(","):
    key, _, value = part.partition("=")
    if key.strip() not in sizes or not value.strip().lstrip("-").isdigit():
      raise ValueError(f"--mesh={spec!r}: expected data=N,fsdp=N,tensor=N")
    sizes[key.strip()] = int(value)
  return sharding.make_mesh(sizes)


def is_chat(run: runs.Run) -> bool:
  return "sft" in run.cfg or "rl" in run.cfg


def load_tasks(opts: Options) -> list[tasks_lib.Task]:
  """Every task of the suite read and checked (a bad line is a ValueError naming file:line)."""
  specs = tasks_lib.parse_tasks(opts.tasks) if opts.tasks else [tasks_lib.REGISTRY[n] for n in tasks_lib.DEFAULT_SUITE]
  out = []
  for s in specs:
    n = opts.max_examples
    if n < 0:
      n = 0 if s.kind == "minimal_pairs" else SUITE_MAX_EXAMPLES
    out.append(tasks_lib.load_task(s, max_examples=n or None, skip_bad_lines=opts.skip_bad_lines, seed=opts.seed))
  return out


def evaluate_workdir(
    workdir: str,
    opts: Options,
    sft_defaults: Callable[[], ml_collections.ConfigDict],
    tasks: list[tasks_lib.Task] | None = None,
) -> tuple[dict, str]:
  """(results, path of the eval/<step>.json written): the suite and the run's own measures on `workdir`'s run."""
  tasks = load_tasks(opts) if tasks is None else tasks  # read and checked before the model is loaded
  mesh = make_mesh(opts.mesh)
  run = runs.load_run(workdir, step=opts.step, mesh=mesh)
  params = run.params
  if mesh is not None:  # the parameters placed the way the rules shard them (the engine's own placement)
    params = engine_lib.Engine(run.model, run.params, mesh=mesh).params
  chat_run = is_chat(run)
  if not opts.tasks and opts.arithmetic:
    tasks = tasks + [harness.arithmetic_task(opts.arithmetic, seed=opts.seed)]
  results = harness.evaluate(
      run.model,
      params,
      run.tokenizer,
      tasks,
      mesh=mesh,
      batch_size=opts.batch_size,
      chat_format=chat_run,
      max_new_tokens=opts.max_new_tokens,
      seed=opts.seed,
  )
  if not opts.tasks:
    results.update(own_measures(run, chat_run, sft_defaults))
  step = run.step or 0
  path = fs.join(run.workdir, "eval", f"{step}.json")
  fs.write_text(path, json.dumps({"step": step, "results": results}, indent=2, default=str))
  metrics.MetricsWriter(run.workdir).write(step, harness.flat_metrics(results) | scalar_own(results))
  return results, path


def own_measures(
    run: runs.Run, chat_run: bool, sft_defaults: Callable[[], ml_collections.ConfigDict]
) -> dict[str, Any]:
  """Validation bpb of the run's own corpus (pretraining runs); the eval_chat metrics (chat runs). On one device:
  they are small, and the chat eval builds its own engine."""
  out = {}
  cfg = run.cfg
  run = dataclasses.replace(run, model=model_lib.build_model(cfg, None))
  if "data" in cfg and not chat_run:
    out["val"] = harness.validation_bpb(
        run.model,
        run.params,
        run.tokenizer,
        cfg.data,
        seq_len=cfg.train.seq_len,
        batch_size=cfg.train.batch_size,
        batches=cfg.train.eval_batches,
        seed=cfg.seed,
    )
  origin = sft_origin(cfg) if chat_run else None
  if origin is not None:  # the SFT run's world, index and eval settings, also for the GRPO / RLHF runs after it
    scfg = sft_defaults()
    for key in ("sft", "eval"):
      if key in origin:
        scfg[key] = ml_collections.ConfigDict(origin[key].to_dict())
    chat = sft.evaluate_run(scfg, run.model, run.params, run.tokenizer)
    out["chat"] = {k: chat[k] for k in chat_eval.METRIC_KEYS if k in chat}
    out["chat_details"] = {k: v for k, v in chat.items() if k not in chat_eval.METRIC_KEYS and k != "examples"}
  return out


def sft_origin(cfg: ml_collections.ConfigDict, max_hops: int = 4) -> ml_collections.ConfigDict | None:
  """The config of the SFT run a chat run descends from (itself when it is one), following init_from / policy_from."""
  for _ in range(max_hops):
    if "sft" in cfg:
      return cfg
    parent = cfg.get("rlhf", {}).get("policy_from", "") or cfg.get("init_from", "")
    if not parent or not runs.is_run(parent):
      return None
    cfg = runs.read_config(parent)
  return None


def scalar_own(results: dict[str, Any]) -> dict[str, float]:
  row = {}
  if "val" in results:
    row["val_bpb"] = results["val"]["val_bpb"]
  for k, v in results.get("chat", {}).items():
    row[f"eval/chat_{k}"] = v
  return row
