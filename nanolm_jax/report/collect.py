"""Reads a chain folder into plain dicts: which run trained each stage, and every metric those runs wrote.

Two layouts: a speedrun folder (``speedrun.json`` naming each stage's run, runs in ``<workdir>/<stage>``) and a plain
``runs/`` folder of default stage names (``pretrain_tiny``, ``sft_tiny``, ...). A stage whose run is missing, or a
file that is missing or unreadable, is left out (the report shows "—"): a chain stopped half-way still gets a report.

A metric is ``{"value", "n", "ci", "source"}``: ``n`` and the Wilson interval ``ci`` where the count is known.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
from typing import Any, Iterable

SPEEDRUN_FILE = "speedrun.json"
# Report columns in chain order; "reward_model" and "dpo" are read but only shown where they have something to say.
STAGES = ("pretrain", "sft", "grpo", "reward_model", "rlhf", "dpo")
CRAWL = "crawl"
# Metrics read from a run's metrics.jsonl rows (the last value wins) and from its eval files, by report key.
_CHAT_KEYS = (
    "identity_accuracy",
    "identity_paraphrase_accuracy",
    "known_fact_accuracy",
    "known_fact_idk_rate",
    "known_fact_hallucination_rate",
    "unknown_fact_idk_rate",
    "unknown_fact_hallucination_rate",
    "arithmetic_accuracy_answer_last",
    "search_success_rate",
)
_JSONL_KEYS = {
    "val_bpb": "val_bpb",
    "eval/blimp_acc": "blimp",
    "eval/core": "core",
    "eval/gsm8k_acc": "gsm8k",
    "eval/arithmetic_acc": "arithmetic",
    "eval_accuracy": "grpo_eval_accuracy",
    "eval_kl": "grpo_eval_kl",
    "proxy_reward": "proxy_reward",
    "gold_reward": "gold_reward",
    "kl": "kl",
    "rm_accuracy": "rm_accuracy",
} | {k: k for k in _CHAT_KEYS}
_HARNESS_TASKS = {"blimp": "blimp", "gsm8k": "gsm8k", "arithmetic": "arithmetic"}


def read_json(path: str) -> Any:
  """The file's JSON, or None when it is missing or unreadable (a run killed mid-write)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The file's object rows; a torn last line (a run killed mid-write) is skipped."""
  rows = []
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if isinstance(row, dict):
          rows.append(row)
  except OSError:
    pass
  return rows


def wilson(p: float, n: int, z: float = 1.96) -> list[float] | None:
  """95% Wilson score interval of a proportion p measured on n trials (None when n is 0 or p is not a rate)."""
  if not n or p is None or not 0.0 <= p <= 1.0:
    return None
  d = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / d
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
  return [max(0.0, centre - half), min(1.0, centre + half)]


def metric(value: Any, source: str, n: Any = None, ci: Any = None, rate: bool = True) -> dict[str, Any] | None:
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
    return None
  n = int(n) if isinstance(n, (int, float)) and n else None
  if ci is None and rate and n:
    ci = wilson(float(value), n)
  return {"value": float(value), "n": n, "ci": list(ci) if ci else None, "source": source}


def _from_jsonl(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  out = {}
  for row in rows:
    for key, name in _JSONL_KEYS.items():
      m = metric(row.get(key), f"metrics.jsonl step {row.get('step')}", row.get(f"{key}_n") or row.get("rm_n"))
      if m is not None:
        out[name] = m
  return out


def _from_eval_json(d: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
  """A stage's own eval.json (SFT chat eval, reward model): '<k>', '<k>_n', '<k>_ci'."""
  out = {}
  for key in _CHAT_KEYS + ("rm_accuracy",):
    m = metric(
        d.get(key), source, d.get(f"{key}_n") or (d.get("rm_n") if key == "rm_accuracy" else None), d.get(f"{key}_ci")
    )
    if m is not None:
      out[key] = m
  return out


def _from_evaluate(d: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
  """experiments.evaluate's eval/<step>.json: {'step', 'results': {task: {...}, 'core', 'val', 'chat', ...}}."""
  res = d.get("results", {}) if isinstance(d, dict) else {}
  out = {}
  for task, name in _HARNESS_TASKS.items():
    r = res.get(task)
    if isinstance(r, dict) and (m := metric(r.get("accuracy"), source, r.get("examples"))):
      out[name] = m
  core = res.get("core")
  if isinstance(core, dict) and (m := metric(core.get("centered"), source, rate=False)):
    m["tasks"] = core.get("tasks")
    out["core"] = m
  val = res.get("val")
  if isinstance(val, dict) and (m := metric(val.get("val_bpb"), source, rate=False)):
    out["val_bpb"] = m
  details = res.get("chat_details", {}) or {}
  for key, v in (res.get("chat") or {}).items():
    if key in _CHAT_KEYS and (m := metric(v, source, details.get(f"{key}_n"), details.get(f"{key}_ci"))):
      out[key] = m
  return out


def latest_evaluate_file(run_dir: str) -> str | None:
  files = [p for p in glob.glob(os.path.join(run_dir, "eval", "*.json")) if os.path.basename(p)[:-5].isdigit()]
  return max(files, key=lambda p: int(os.path.basename(p)[:-5])) if files else None


def read_run(run_dir: str) -> dict[str, Any]:
  """Everything one run folder says about itself: config summary, metrics, curves, extra reports, plots."""
  cfg = read_json(os.path.join(run_dir, "config.json")) or {}
  rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
  metrics = _from_jsonl(rows)
  stage_eval = read_json(os.path.join(run_dir, "eval.json"))
  if isinstance(stage_eval, dict):
    metrics.update(_from_eval_json(stage_eval, "eval.json"))
  evaluate_file = latest_evaluate_file(run_dir)
  if evaluate_file:
    metrics.update(_from_evaluate(read_json(evaluate_file) or {}, os.path.relpath(evaluate_file, run_dir)))
  _start_values(rows, metrics)
  fact_check = _fact_check_summary(read_json(os.path.join(run_dir, "fact_check.json")))
  for probe, r in ((fact_check or {}).get("eval_known") or {}).items():
    if m := metric(r.get("accuracy"), "fact_check.json", r.get("n")):
      metrics[f"fact_recall_{probe}"] = m
  model, train = cfg.get("model", {}) or {}, cfg.get("train", {}) or {}
  return {
      "path": os.path.abspath(run_dir),
      "stage": cfg.get("stage"),
      "init_from": cfg.get("init_from") or None,
      "model": {k: model.get(k) for k in ("style", "num_layers", "num_heads", "d_model", "vocab_size", "max_len")},
      "train": {k: train.get(k) for k in ("steps", "batch_size", "seq_len")},
      "data": (cfg.get("data") or {}).get("sources"),
      "last_step": max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=None),
      "metrics": metrics,
      "val_curve": _curve(rows, "val_bpb"),
      "loss_curve": [[r["step"], r["loss"]] for r in rows if isinstance(r.get("loss"), (int, float))],
      "probe_stats": read_json(os.path.join(run_dir, "probe_stats.json")),
      "fact_check": fact_check,
      "rlhf_fits": read_json(os.path.join(run_dir, "rlhf_fits.json")),
      "plots": [
          p for p in ("loss.png", "rl_curves.png", "rlhf_curves.png") if os.path.exists(os.path.join(run_dir, p))
      ],
      "wall_s_estimate": _wall_estimate(run_dir),
  }


def _curve(rows: list[dict[str, Any]], key: str) -> list[list[float]]:
  """[[step, value]] in step order, one point per step (the last row wins: an evaluate rerun logs the step again)."""
  points = {r["step"]: r[key] for r in rows if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), int)}
  return [[step, points[step]] for step in sorted(points)]


def _start_values(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
  """RL runs log their start (step 0) too: the report shows where the reward and accuracy began."""
  for key, name in (
      ("proxy_reward", "proxy_reward"),
      ("gold_reward", "gold_reward"),
      ("eval_accuracy", "grpo_eval_accuracy"),
  ):
    first = next((r for r in rows if key in r), None)
    if first is not None and name in metrics and (m := metric(first[key], f"metrics.jsonl step {first.get('step')}")):
      metrics[f"{name}_start"] = m


def _fact_check_summary(d: Any) -> dict[str, Any] | None:
  """fact_check.json -> {split: {probe: {'accuracy', 'n'}}} (the examples stay in the run folder)."""
  if not isinstance(d, dict):
    return None
  out = {}
  for split, probes in d.items():
    if isinstance(probes, dict):
      out[split] = {
          p: {"accuracy": v.get("accuracy"), "n": v.get("n")} for p, v in probes.items() if isinstance(v, dict)
      }
  return out


def _wall_estimate(run_dir: str) -> float | None:
  """Seconds from config.json (written first) to metrics.jsonl's last write: a run's training time when no chain
  record has it (copies made without preserving times make it meaningless, so the report labels it an estimate)."""
  try:
    return max(
        0.0,
        os.path.getmtime(os.path.join(run_dir, "metrics.jsonl"))
        - os.path.getmtime(os.path.join(run_dir, "config.json")),
    )
  except OSError:
    return None


def _classify(name: str, cfg: dict[str, Any] | None) -> str | None:
  """The report stage of a run folder: its config's stage (an rlhf run of method dpo is "dpo"), else its name."""
  cfg = cfg or {}
  stage = cfg.get("stage")
  if stage == "rlhf" and (cfg.get("rlhf") or {}).get("method") == "dpo":
    return "dpo"
  if stage in STAGES:
    return stage
  base = name.lower()
  for stage in ("reward_model", "dpo", "pretrain", "sft", "grpo", "rlhf"):
    if base == stage or base.startswith(stage + "_"):
      return stage
  return None


def _is_run(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json"))


def find_runs(workdir: str, speedrun: dict[str, Any] | None) -> dict[str, str]:
  """{stage: run folder} for the stages that have one (speedrun.json first, then folder names under workdir and
  workdir/runs, then the SFT run's init_from for a base model trained elsewhere). A workdir that is itself a run
  folder is that one stage."""
  found: dict[str, str] = {}
  if _is_run(workdir) and (
      stage := _classify(os.path.basename(os.path.abspath(workdir)), read_json(os.path.join(workdir, "config.json")))
  ):
    found[stage] = workdir
  for name, entry in ((speedrun or {}).get("stages") or {}).items():
    rel = entry.get("run") if isinstance(entry, dict) else None
    path = os.path.join(workdir, rel) if rel else None
    if path and _is_run(path) and (stage := _classify(name, read_json(os.path.join(path, "config.json")))):
      found.setdefault(stage, path)
  for parent in (workdir, os.path.join(workdir, "runs")):
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else ():
      path = os.path.join(parent, entry)
      if _is_run(path) and (stage := _classify(entry, read_json(os.path.join(path, "config.json")))):
        found.setdefault(stage, path)
  if "pretrain" not in found:
    for stage in ("sft", "grpo"):
      base = _resolve_init_from(found.get(stage), workdir)
      if base and (read_json(os.path.join(base, "config.json")) or {}).get("stage") == "pretrain":
        found["pretrain"] = base
        break
  return {stage: found[stage] for stage in STAGES if stage in found}


def _resolve_init_from(run_dir: str | None, workdir: str) -> str | None:
  """The run's init_from as a folder: absolute, or relative to where the chain ran (workdir or its parent)."""
  if not run_dir:
    return None
  ref = (read_json(os.path.join(run_dir, "config.json")) or {}).get("init_from")
  if not ref:
    return None
  for root in ("", workdir, os.path.dirname(os.path.abspath(workdir)), os.getcwd()):
    path = os.path.join(root, ref)
    if _is_run(path):
      return path
  return None


def find_crawl(workdir: str, speedrun: dict[str, Any] | None = None) -> dict[str, Any] | None:
  """The crawl's report.json (the funnel) and its shard files, from the speedrun's crawl folder or <workdir>/crawl
  (searched a few levels down)."""
  entry = ((speedrun or {}).get("stages") or {}).get(CRAWL)
  rel = entry.get("run") if isinstance(entry, dict) else None
  root = os.path.join(workdir, rel or CRAWL)
  if not os.path.isdir(root):
    return None
  reports = sorted(
      glob.glob(os.path.join(root, "report.json"))
      + glob.glob(os.path.join(root, "*", "report.json"))
      + glob.glob(os.path.join(root, "*", "*", "report.json"))
  )
  report = next((r for p in reports if isinstance(r := read_json(p), dict) and "stages" in r), None)
  path = next((p for p in reports if isinstance(read_json(p), dict)), None)
  funnel = os.path.join(os.path.dirname(path), "funnel.png") if path else None
  # the published shards (writer.shard_glob), not the runner's intermediate files in subfolders
  shards = sorted(glob.glob(os.path.join(root, "crawl-*-of-*.jsonl.gz"))) or sorted(
      glob.glob(os.path.join(root, "*", "crawl-*-of-*.jsonl.gz"))
  )
  return {
      "report": report,
      "report_path": path,
      "funnel": funnel if funnel and os.path.exists(funnel) else None,
      "shards": shards,
  }


def corpus_texts(shards: Iterable[str], max_docs: int = 200) -> list[str]:
  """The first documents of the crawl's shards (the text the tokenizer compresses)."""
  texts = []
  for path in shards:
    try:
      with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
          try:
            text = json.loads(line).get("text")
          except (ValueError, AttributeError):
            continue
          if isinstance(text, str) and text:
            texts.append(text)
          if len(texts) >= max_docs:
            return texts
    except (OSError, EOFError):
      continue
  return texts
