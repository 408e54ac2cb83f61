r"""GRPO rollout time: one engine call for every row vs continuous batching in fewer slots (rl.rollout_slots).

  python -m experiments.bench_rollouts --workdir=runs/sft_default          # the GRPO default: 16 prompts x 8
  python -m experiments.bench_rollouts --workdir=runs/sft --slots=32,64 --repeats=3

Samples the GRPO config's rollout (prompts_per_step prompts of its task, group_size samples each, its sampler and
max_new_tokens, the chat stop tokens) from a run, timing Engine.generate (all rows at once: every row decodes until
the longest one ends) against continuous.generate with each --slots (rows wait for a slot and join as others end),
interleaved, median of --repeats on fresh prompts. Both draw every row with the same key, so their completions must
agree: the tokens are compared and the share that differ printed (float rounding of the differently shaped
attention can flip a near-tie).
"""

from __future__ import annotations

import statistics
import time

from absl import app
from absl import flags
import jax

from configs import grpo as grpo_configs
from nanolm_jax import chat
from nanolm_jax import continuous
from nanolm_jax import engine as engine_lib
from nanolm_jax import metrics
from nanolm_jax import runs
from nanolm_jax.posttrain import tasks as tasks_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "SFT run folder to sample from.", required=True)
_SLOTS = flags.DEFINE_list("slots", ["32", "64"], "Continuous-batching slot counts to time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rollouts per setting (medians are reported).")
_PROMPTS = flags.DEFINE_integer("prompts", 0, "Prompts per rollout (0: the GRPO config's prompts_per_step).")
_CHUNK = flags.DEFINE_integer("chunk_steps", 8, "Decode steps between joins of the continuous runs.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed rollouts first (compiles: the shapes a rollout meets vary).")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  cfg = grpo_configs.get_config("")
  rl = cfg.rl
  run = runs.load_run(_WORKDIR.value)
  task = tasks_lib.make_task(cfg.task, seed=0)
  tok = run.tokenizer
  eng = engine_lib.Engine(run.model, run.params, tok)
  sampling = engine_lib.SamplingParams(
      temperature=rl.temperature, top_k=rl.top_k, top_p=rl.top_p, max_new_tokens=rl.max_new_tokens
  )
  p, g, stops = _PROMPTS.value or rl.prompts_per_step, rl.group_size, chat.stop_tokens(tok)
  print(
      f"jax {jax.__version__} on {jax.default_backend()}; {p} prompts x {g} samples, max_new_tokens {rl.max_new_tokens}"
  )
  settings = {"engine call": 0} | {f"{s} slots": int(s) for s in _SLOTS.value}
  times = {k: [] for k in settings}
  differ, lengths = {k: [] for k in settings}, []
  for rep in range(-_WARMUP.value, _REPEATS.value):  # negative reps compile
    prompts = [
        chat.render_for_completion(task.messages(task.train_problem((rep + _WARMUP.value) * p + i)), tok)
        for i in range(p)
    ]
    ref = None
    for name, slots in settings.items():
      t0 = time.perf_counter()
      if slots:
        outs = continuous.generate(
            eng, prompts, sampling, n=g, seed=rep, stop_tokens=stops, slots=slots, chunk_steps=_CHUNK.value
        )
      else:
        outs = eng.generate(prompts, sampling, n=g, seed=rep, stop_tokens=stops)
      dt = time.perf_counter() - t0
      ref = ref or outs
      if rep >= 0:
        times[name].append(dt)
        differ[name].append(sum(a.tokens != b.tokens for a, b in zip(outs, ref)) / len(outs))
    if rep >= 0:
      lengths += [len(o.tokens) for o in ref]
  print(f"completion lengths: mean {statistics.mean(lengths):.1f}, max {max(lengths)} (contended CPU timings)")
  base = statistics.median(times["engine call"])
  for name in settings:
    med = statistics.median(times[name])
    print(
        f"{name:>12}: {med:6.2f} s per rollout (x{base / med:.2f} vs one engine call), "
        f"rows differing from it {100 * statistics.mean(differ[name]):.1f}%"
    )


if __name__ == "__main__":
  app.run(main)
