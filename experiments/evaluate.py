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

import sys
import time

from absl import app
from absl import flags

import configs
from nanolm_jax import metrics
from nanolm_jax import run_eval as evaluation
from nanolm_jax.evals import harness
from nanolm_jax.stages import base
from nanolm_jax.stages import pretrain

SUITE_MAX_EXAMPLES = evaluation.SUITE_MAX_EXAMPLES

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


def main(argv):
  del argv
  metrics.quiet_library_logs()
  t0 = time.perf_counter()
  opts = evaluation.Options(
      tasks=_TASKS.value,
      max_examples=_MAX.value,
      skip_bad_lines=_SKIP.value,
      step=_STEP.value,
      batch_size=_BATCH.value,
      max_new_tokens=_NEW.value,
      arithmetic=_ARITH.value,
      seed=_SEED.value,
      mesh=_MESH.value,
  )
  try:  # every task file is read and checked before any model work
    tasks = evaluation.load_tasks(opts)
    evaluation.make_mesh(opts.mesh)
    workdir = _WORKDIR.value or base.ensure_default_run(pretrain.STAGE, configs.default_config)
    results, path = evaluation.evaluate_workdir(workdir, opts, lambda: configs.default_config("sft"), tasks)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
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
  print(f"wrote {path} and eval/* rows to {path.rsplit('/eval/', 1)[0]}/metrics.jsonl")


if __name__ == "__main__":
  app.run(main)
