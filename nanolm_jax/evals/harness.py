"""One harness for every evaluation task: choice tasks by log-likelihood, generative tasks by exact match.

`evaluate(model, params, tok, tasks)` returns one result per task (accuracy, CORE-style centered accuracy, counts,
per-phenomenon / per-field breakdowns for BLiMP, the time it took) and a CORE aggregate over the CORE tasks present;
`flat_metrics` turns that into the `eval/<task>_acc` rows that metrics.jsonl and TensorBoard take.
"""

from __future__ import annotations

import collections
import itertools
import time
from typing import Any, Sequence

import jax
import numpy as np

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import model as model_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax.data import pipeline
from nanolm_jax.posttrain import tasks as posttrain_tasks
from nanolm_jax.synthetic import reasoning
from nanolm_jax.evals import scoring
from nanolm_jax.evals import tasks as tasks_lib

CHOICE_KINDS = ("minimal_pairs", "multiple_choice", "schema", "language_modeling")


def evaluate(
    model: model_lib.Transformer,
    params: Any,
    tok: tokenizer_lib.Tokenizer,
    tasks: Sequence[tasks_lib.Task],
    *,
    mesh: Any = None,
    batch_size: int = 32,
    chat_format: bool = False,
    max_new_tokens: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
  """{task name: result} plus "core" (mean centered accuracy over the CORE tasks present) when any ran."""
  scorer = _scorer(model, params, mesh, batch_size)
  engine = None
  out: dict[str, Any] = {}
  for task in tasks:
    t0 = time.perf_counter()
    if task.spec.kind in CHOICE_KINDS:
      res = score_choice_task(scorer, tok, task)
    elif task.spec.kind == "generative":
      if engine is None:
        engine = engine_lib.Engine(model, params, tok, mesh=mesh)
      res = score_generative_task(engine, tok, task, chat_format, max_new_tokens, batch_size, seed)
    else:
      raise ValueError(f"task {task.spec.name}: unknown kind {task.spec.kind!r}")
    res["seconds"] = time.perf_counter() - t0
    res["examples_per_s"] = res["examples"] / max(res["seconds"], 1e-9)
    res["skipped_lines"] = task.skipped_lines
    out[task.spec.name] = res
  core = [out[n]["centered"] for n in tasks_lib.CORE_TASKS if n in out]
  if core:
    out["core"] = {"centered": float(np.mean(core)), "tasks": len(core)}
  out["_compiled_shapes"] = sorted(scorer.compiled_shapes)
  return out


# One scorer (and so one jit cache) per model, mesh and batch size: evaluating at every eval step of a run must not
# compile again each time.
_SCORERS: dict[Any, scoring.LogLikelihood] = {}


def _scorer(model: model_lib.Transformer, params: Any, mesh: Any, batch_size: int) -> scoring.LogLikelihood:
  key = (model, mesh, batch_size)
  if key not in _SCORERS:
    _SCORERS[key] = scoring.LogLikelihood(model, params, mesh=mesh, batch_size=batch_size)
  _SCORERS[key].params = params
  return _SCORERS[key]


def score_choice_task(scorer: scoring.LogLikelihood, tok: tokenizer_lib.Tokenizer, task: tasks_lib.Task) -> dict:
  """Accuracy of a log-likelihood task: the gold option must score strictly highest (minimal pairs, multiple
  choice, schema), or the continuation must be the model's greedy choice token by token (language modelling)."""
  spec, rows, owner = task.spec, [], []
  for i, item in enumerate(task.items):
    for ctx, cont in zip(item.contexts, item.continuations):
      rows.append(scoring.encode_row(tok, ctx, cont, scorer.max_len))
      owner.append(i)
  scores = scorer(rows)
  per_item: list[list[scoring.Scored]] = [[] for _ in task.items]
  for i, s in zip(owner, scores):
    per_item[i].append(s)
  if spec.kind == "language_modeling":
    correct = [s[0].greedy for s in per_item]
  else:
    normalise = spec.length_normalize and spec.kind == "multiple_choice"
    correct = [scoring.choose(s, normalise) == item.gold for s, item in zip(per_item, task.items)]
  res = _accuracy(correct, spec.random_baseline)
  if spec.kind == "minimal_pairs":
    res["logprobs"] = [[s.logprob for s in ss] for ss in per_item]
    res.update(_breakdown(correct, task.items))
  return res


def _accuracy(correct: Sequence[bool], random_baseline: float) -> dict[str, Any]:
  acc = float(np.mean(correct)) if correct else float("nan")
  return {
      "accuracy": acc,
      "centered": tasks_lib.core_centered(acc, random_baseline),
      "random_baseline": random_baseline,
      "examples": len(correct),
      "correct": int(sum(correct)),
  }


def _breakdown(correct: Sequence[bool], items: Sequence[Any]) -> dict[str, Any]:
  """BLiMP accuracy per phenomenon (UID) and per field, the field a mean over its phenomena."""
  by_uid: dict[str, list[bool]] = collections.defaultdict(list)
  field_of: dict[str, str] = {}
  for ok, item in zip(correct, items):
    uid = item.meta.get("UID", "all")
    by_uid[uid].append(ok)
    field_of[uid] = item.meta.get("field", "")
  per_uid = {u: float(np.mean(v)) for u, v in sorted(by_uid.items())}
  by_field: dict[str, list[float]] = collections.defaultdict(list)
  for u, acc in per_uid.items():
    by_field[field_of[u]].append(acc)
  return {"per_phenomenon": per_uid, "per_field": {f: float(np.mean(v)) for f, v in sorted(by_field.items())}}


def score_generative_task(
    engine: engine_lib.Engine,
    tok: tokenizer_lib.Tokenizer,
    task: tasks_lib.Task,
    chat_format: bool,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
  """Exact match of the final number of a greedy completion (base models: the few-shot prompt as text; chat
  models: the question as a user turn, the reply parsed out of the assistant turn)."""
  sampling = engine_lib.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
  correct, samples = [], []
  items = task.items
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    if chat_format:
      prompts = [
          chat.render_for_completion([{"role": "user", "content": it.meta.get("question", it.prompt)}], tok)
          for it in chunk
      ]
      comps = engine.generate(prompts, sampling, seed=seed, stop_tokens=chat.stop_tokens(tok), truncate_prompt=True)
      texts = [_reply(c.tokens, tok) for c in comps]
    else:
      prompts = [tok.encode(it.prompt, bos=True) for it in chunk]
      stop = tuple(chunk[0].stop)
      comps = engine.generate(prompts, sampling, seed=seed, stop_strings=stop, truncate_prompt=True)
      texts = [c.text for c in comps]
    for it, text in zip(chunk, texts):
      correct.append(tasks_lib.exact_match(text, it.answer))
      if len(samples) < 3:
        samples.append({"answer": it.answer, "generated": text[:300]})
  res = _accuracy(correct, task.spec.random_baseline)
  res["samples"] = samples
  return res


def _reply(tokens: Sequence[int], tok: tokenizer_lib.Tokenizer) -> str:
  msgs = chat.parse_completion(tokens, tok)
  texts = [m["content"] for m in msgs if m["role"] == "assistant" and m.get("content")]
  return texts[-1] if texts else ""


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
  """`eval/<task>_acc` (and `_centered`, BLiMP's `eval/blimp_<field>`) for metrics.jsonl and TensorBoard."""
  out: dict[str, float] = {}
  for name, res in results.items():
    if name.startswith("_"):
      continue
    if name == "core":
      out["eval/core"] = res["centered"]
      continue
    if "accuracy" not in res:
      continue
    out[f"eval/{name}_acc"] = res["accuracy"]
    if res.get("random_baseline"):
      out[f"eval/{name}_centered"] = res["centered"]
    for field, acc in res.get("per_field", {}).items():
      out[f"eval/{name}_{field}"] = acc
  return out


def format_table(results: dict[str, Any], per_phenomenon: bool = False) -> str:
  """A plain-text table: task, examples, accuracy, centered accuracy, examples/s (and BLiMP's phenomena)."""
  lines = [f"{'task':<24}{'examples':>9}{'accuracy':>10}{'centered':>10}{'ex/s':>9}"]
  for name, res in results.items():
    if name.startswith("_") or "accuracy" not in res:
      continue
    lines.append(
        f"{name:<24}{res['examples']:>9}{res['accuracy']:>10.3f}{res['centered']:>10.3f}{res['examples_per_s']:>9.1f}"
    )
    for field, acc in res.get("per_field", {}).items():
      lines.append(f"  {name}/{field:<17}{'':>9}{acc:>10.3f}")
    for uid, acc in res.get("per_phenomenon", {}).items() if per_phenomenon else ():
      lines.append(f"    {uid:<47}{acc:>6.2f}")
  if "core" in results:
    lines.append(
        f"{'CORE (mean centered)':<24}{results['core']['tasks']:>9}{'':>10}{results['core']['centered']:>10.3f}"
    )
  return "\n".join(lines)


def validation_bpb(
    model: model_lib.Transformer,
    params: Any,
    tok: tokenizer_lib.Tokenizer,
    data_cfg: Any,
    *,
    seq_len: int,
    batch_size: int,
    batches: int,
    seed: int = 0,
) -> dict[str, float]:
  """val_loss / val_bpb of the run's own validation split (the trainer's measure, recomputed on a loaded run)."""
  token_bytes = step_lib.token_bytes_table(tok.token_bytes(), model.cfg.vocab_size)

  def apply(p, inputs, segment_ids, positions):
    return model.apply({"params": p}, inputs, segment_ids, positions)

  step = jax.jit(step_lib.make_eval_step(apply, token_bytes))
  ds = pipeline.make_lm_dataset(
      data_cfg, tok, split="validation", seq_len=seq_len, batch_size=batch_size, seed=seed, repeat=False
  )
  sums = {"loss_sum": 0.0, "tokens": 0.0, "bytes": 0.0}
  for batch in itertools.islice(ds, batches):
    out = jax.device_get(step(params, batch))
    for k in sums:
      sums[k] += float(out[k])
  return step_lib.summarize_eval(sums)


def arithmetic_task(n: int, num_fewshot: int = 4, seed: int = 0, **difficulty: int) -> tasks_lib.Task:
  """The project's own arithmetic word problems as a generative task (held-out problems; shots from training
  ones): the answer is the number in 'The answer is N.'."""
  cfg = reasoning.default_reasoning_config()
  task = posttrain_tasks.ArithmeticTask(
      digits=difficulty.get("digits", cfg.digits),
      min_steps=difficulty.get("min_steps", cfg.min_steps),
      max_steps=difficulty.get("max_steps", cfg.max_steps),
      max_factor=difficulty.get("max_factor", cfg.max_factor),
      seed=seed,
  )
  shots = [task.train_problem(i) for i in range(num_fewshot)]
  block = "".join(f"Question: {p.question}\nAnswer: {p.solution}\n\n" for p in shots)
  spec = tasks_lib.TaskSpec(
      name="arithmetic",
      kind="generative",
      path="(generated)",
      num_fewshot=num_fewshot,
      random_baseline=0.0,
      length_normalize=False,
  )
  items = [
      tasks_lib.GenItem(
          prompt=f"{block}Question: {p.question}\nAnswer:",
          answer=str(p.answer),
          stop=("\n\nQuestion:", "Question:", "\n\n"),
          meta={"question": p.question},
      )
      for p in task.eval_problems(n)
  ]
  return tasks_lib.Task(spec=spec, items=items)
