r"""Evaluate a run on public benchmarks and the project's own tasks; prints a table, writes eval/<step>.json.

  python -m experiments.evaluate                                  # the default pretraining run, the default suite
  python -m experiments.evaluate --workdir=runs/sft_tiny           # a chat run: GSM8K as a chat turn, + eval_chat
  python -m experiments.evaluate --tasks=blimp,copa --max_examples=200
  python -m experiments.evaluate --tasks='blimp=/data/blimp/data/*.jsonl'   # the full BLiMP release, same format
  python -m experiments.evaluate --tasks=tfds:blimp                # a TFDS copy (loaded only when named)

The default suite: validation bpb (the run's own corpus), BLiMP, the CORE-style in-context tasks (copa, piqa,
arc_easy, openbook_qa, winograd_wsc, lambada), GSM8K (8-shot for base models, a chat turn for chat runs), the
project's arithmetic, and for chat runs the eval_chat metrics. Every task file is read and checked before the model is
loaded; a bad line is an error naming file:line unless --skip_bad_lines.
"""

import dataclasses
import json
import sys
import time

import ml_collections
from absl import app
from absl import flags

import configs
from configs import sft as sft_configs
from nanolm_jax import engine as engine_lib
from nanolm_jax import fs
from nanolm_jax import metrics
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax import sharding
from nanolm_jax.evals import harness
from nanolm_jax.evals import tasks as tasks_lib
from nanolm_jax.posttrain import chat_eval
from nanolm_jax.stages import base
from nanolm_jax.stages import pretrain
from nanolm_jax.stages import sft

SUITE_MAX_EXAMPLES = 500  # per task but BLiMP: the default suite on the tiny run in ~3 min on 2 CPU cores

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: the default pretraining run, trained if absent).")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated tasks (name, name=PATH, tfds:NAME); '' = the default suite.")
_MAX = flags.DEFINE_integer(
    "max_examples",
    -1,
    "At most this many examples per task (BLiMP: spread evenly over its phenomena); 0 = all; -1 = the suite's CPU "
    f"default: all of BLiMP, the first {SUITE_MAX_EXAMPLES} of every other task.",
)
_SKIP = flags.DEFINE_bool("skip_bad_lines", False, "Count and skip malformed lines instead of stopping on the first.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Rows per forward pass.")
_NEW = flags.DEFINE_integer("max_new_tokens", 160, "Generation budget of generative tasks.")
_ARITH = flags.DEFINE_integer("arithmetic", 64, "Arithmetic problems in the default suite (0 = leave it out).")
_SEED = flags.DEFINE_integer("seed", 0, "Few-shot draws and sampling.")
_MESH = flags.DEFINE_string(
    "mesh", "", "Score on a device mesh, e.g. 'data=2,fsdp=2,tensor=2' (-1 = the rest); '' = one device."
)
_PER_PHENOMENON = flags.DEFINE_bool("per_phenomenon", False, "Also print BLiMP's accuracy per phenomenon.")


def _mesh(spec: str):
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


def _is_chat(run: runs.Run) -> bool:
  return "sft" in run.cfg or "rl" in run.cfg


def _load_tasks(names: str, max_examples: int) -> list[tasks_lib.Task]:
  specs = tasks_lib.parse_tasks(names) if names else [tasks_lib.REGISTRY[n] for n in tasks_lib.DEFAULT_SUITE]
  out = []
  for s in specs:
    n = max_examples
    if n < 0:
      n = 0 if s.kind == "minimal_pairs" else SUITE_MAX_EXAMPLES
    out.append(tasks_lib.load_task(s, max_examples=n or None, skip_bad_lines=_SKIP.value, seed=_SEED.value))
  return out


def main(argv):
  del argv
  metrics.quiet_library_logs()
  t0 = time.perf_counter()
  try:  # every task file is read and checked before any model work
    tasks = _load_tasks(_TASKS.value, _MAX.value)
    mesh = _mesh(_MESH.value)
    workdir = _WORKDIR.value or base.ensure_default_run(pretrain.STAGE, configs.default_config)
    run = runs.load_run(workdir, step=_STEP.value, mesh=mesh)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  params = run.params
  if mesh is not None:  # the parameters placed the way the rules shard them (the engine's own placement)
    params = engine_lib.Engine(run.model, run.params, mesh=mesh).params
  chat_run = _is_chat(run)
  if not _TASKS.value and _ARITH.value:
    tasks.append(harness.arithmetic_task(_ARITH.value, seed=_SEED.value))
  results = harness.evaluate(
      run.model,
      params,
      run.tokenizer,
      tasks,
      mesh=mesh,
      batch_size=_BATCH.value,
      chat_format=chat_run,
      max_new_tokens=_NEW.value,
      seed=_SEED.value,
  )
  if not _TASKS.value:
    results.update(_own_measures(run, chat_run))
  step = run.step or 0
  print(harness.format_table(results, per_phenomenon=_PER_PHENOMENON.value))
  if "val" in results:
    print(f"validation (the run's own corpus): val_bpb={results['val']['val_bpb']:.4f}")
  for k, v in results.get("chat", {}).items():
    ci = results.get("chat_details", {}).get(f"{k}_ci")
    print(f"chat {k}: {v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
  scored = sum(r["examples"] for r in results.values() if isinstance(r, dict) and "examples_per_s" in r)
  busy = sum(r["seconds"] for r in results.values() if isinstance(r, dict) and "examples_per_s" in r)
  print(
      f"benchmark: {scored} examples scored in {busy:.1f} s = {scored / max(busy, 1e-9):.1f} examples/s "
      f"({len(results.get('_compiled_shapes', []))} log-likelihood shapes compiled); wall {time.perf_counter() - t0:.1f} s"
  )
  path = fs.join(run.workdir, "eval", f"{step}.json")
  fs.write_text(path, json.dumps({"step": step, "results": results}, indent=2, default=str))
  metrics.MetricsWriter(run.workdir).write(step, harness.flat_metrics(results) | _scalar_own(results))
  print(f"wrote {path} and eval/* rows at step {step} to {fs.join(run.workdir, 'metrics.jsonl')}")


def _own_measures(run: runs.Run, chat_run: bool) -> dict:
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
  if chat_run and "sft" in cfg:
    scfg = sft_configs.get_config()
    for key in ("sft", "eval"):
      if key in cfg:
        scfg[key] = ml_collections.ConfigDict(cfg[key].to_dict())
    chat = sft.evaluate_run(scfg, run.model, run.params, run.tokenizer)
    out["chat"] = {k: chat[k] for k in chat_eval.METRIC_KEYS if k in chat}
    out["chat_details"] = {k: v for k, v in chat.items() if k not in chat_eval.METRIC_KEYS and k != "examples"}
  return out


def _scalar_own(results: dict) -> dict:
  row = {}
  if "val" in results:
    row["val_bpb"] = results["val"]["val_bpb"]
  for k, v in results.get("chat", {}).items():
    row[f"eval/chat_{k}"] = v
  return row


if __name__ == "__main__":
  app.run(main)
