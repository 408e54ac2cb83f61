"""report.md from the report dict: header, wall times, crawl funnel, tokenizer, the metric table, plots, samples."""

from __future__ import annotations

from typing import Any

MISSING = "—"
COLUMNS = (("pretrain", "BASE"), ("sft", "SFT"), ("grpo", "GRPO"), ("rlhf", "RLHF"))
OPTIONAL_COLUMNS = (("reward_model", "RM"), ("dpo", "DPO"))  # shown only when the chain trained them
# (key, label): rows of the metric table, in reading order.
ROWS = (
    ("val_bpb", "val bpb (own corpus; lower is better)"),
    ("blimp", "BLiMP accuracy"),
    ("core", "CORE-style mean centered accuracy"),
    ("gsm8k", "GSM8K"),
    ("arithmetic", "arithmetic (few-shot harness)"),
    ("arithmetic_accuracy_answer_last", "arithmetic (chat eval)"),
    ("identity_accuracy", "identity"),
    ("identity_paraphrase_accuracy", "identity (paraphrased)"),
    ("known_fact_accuracy", "known-fact accuracy"),
    ("known_fact_idk_rate", 'known facts: "I don\'t know" rate'),
    ("known_fact_hallucination_rate", "known facts: hallucination rate"),
    ("unknown_fact_idk_rate", 'unknown facts: "I don\'t know" rate'),
    ("unknown_fact_hallucination_rate", "unknown facts: hallucination rate"),
    ("fact_recall_cloze", "pretrained facts held out of SFT: cloze recall"),
    ("fact_recall_qa", "pretrained facts held out of SFT: Q/A recall"),
    ("fact_recall_chat", "pretrained facts held out of SFT: chat recall"),
    ("search_success_rate", "search success"),
    ("grpo_eval_accuracy_start", "RL task accuracy at start"),
    ("grpo_eval_accuracy", "RL task accuracy (held out)"),
    ("grpo_eval_kl", "GRPO KL to start"),
    ("rm_accuracy", "reward model pair accuracy"),
    ("proxy_reward_start", "proxy reward at start"),
    ("proxy_reward", "proxy reward"),
    ("gold_reward_start", "gold reward at start"),
    ("gold_reward", "gold reward"),
    ("kl", "KL to start"),
)


def cell(m: dict[str, Any] | None) -> str:
  """'0.700 [0.60, 0.78] n=100', '1.892' or '—'."""
  if not m:
    return MISSING
  text = f"{m['value']:.3f}"
  if m.get("ci"):
    text += f" [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]"
  if m.get("n"):
    text += f" n={m['n']}"
  return text


def columns(report: dict[str, Any]) -> list[tuple[str, str]]:
  return list(COLUMNS) + [c for c in OPTIONAL_COLUMNS if c[0] in report["stages"]]


def metric_table(report: dict[str, Any]) -> list[str]:
  cols = columns(report)
  lines = ["| metric | " + " | ".join(label for _, label in cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for key, label in ROWS:
    cells = [cell(report["table"].get(stage, {}).get(key)) for stage, _ in cols]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines


def _duration(s: Any) -> str:
  if not isinstance(s, (int, float)):
    return MISSING
  return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _header(report: dict[str, Any]) -> list[str]:
  from nanolm_jax.report import env  # pylint: disable=g-import-not-at-top

  h = report["header"]
  vers = ", ".join(f"{k} {v}" for k, v in h["versions"].items())
  lines = [
      f"# Report card: `{report['workdir']}`",
      "",
      f"- code: git commit `{h['git_commit']}`",
      f"- date: {h['date']}",
      f"- hardware: {env.describe_hardware(h['hardware'])}",
      f"- versions: {vers}",
  ]
  sr = report.get("speedrun") or {}
  if sr:
    lines.append(f"- speedrun: preset `{sr.get('preset', MISSING)}`, started {sr.get('started', MISSING)}")
  return lines


def _stages(report: dict[str, Any]) -> list[str]:
  lines = [
      "",
      "## Stages",
      "",
      "| stage | status | wall time | run | model | steps x batch x seq | data |",
      "|---|---|---|---|---|---|---|",
  ]
  walls = report.get("wall_times") or {}
  names = list(dict.fromkeys(list(walls) + list(report["stages"])))
  for name in names:
    w, run = walls.get(name, {}), report["stages"].get(name, {})
    m, t = run.get("model") or {}, run.get("train") or {}
    model = f"{m.get('num_layers')}L d{m.get('d_model')} V{m.get('vocab_size')}" if m.get("num_layers") else MISSING
    shape = f"{t.get('steps')} x {t.get('batch_size')} x {t.get('seq_len')}" if t.get("steps") else MISSING
    wall = _duration(w.get("wall_s")) + (" (est.)" if "estimate" in str(w.get("source")) else "")
    lines.append(
        f"| {name} | {w.get('status', MISSING)} | {wall} | `{run.get('path') or w.get('run') or MISSING}` | {model} | {shape} | "
        f"{run.get('data') or MISSING} |"
    )
  total = sum(w["wall_s"] for w in walls.values() if isinstance(w.get("wall_s"), (int, float)))
  if total:
    lines.append(f"| **total** | | {_duration(total)} | | | | |")
  return lines


def _crawl(report: dict[str, Any]) -> list[str]:
  crawl = (report.get("crawl") or {}).get("report")
  lines = ["", "## Crawl funnel", ""]
  if not crawl:
    return lines + [f"{MISSING} (no crawl report in this folder)"]
  lines += ["| step | docs in | docs out | dropped | errored | kept % | chars out |", "|---|---|---|---|---|---|---|"]
  for s in crawl.get("stages", []):
    drops, errs = sum(s.get("dropped", {}).values()), sum(s.get("errored", {}).values())
    pct = 100.0 * s["docs_out"] / s["docs_in"] if s.get("docs_in") else 100.0
    lines.append(
        f"| {s['name']} | {s['docs_in']} | {s['docs_out']} | {drops} | {errs} | {pct:.1f} | {s['chars_out']} |"
    )
  lines.append(
      f"\nrecords in {crawl.get('input_records')}, kept {crawl.get('kept')}, dropped {crawl.get('dropped')}, "
      f"errored {crawl.get('errored')}; {report['crawl'].get('shards', 0)} shard files"
  )
  return lines


def _tokenizer_and_curve(report: dict[str, Any]) -> list[str]:
  tok = report.get("tokenizer")
  lines = ["", "## Tokenizer", ""]
  lines.append(
      f"vocabulary {tok['vocab_size']}, **{tok['bytes_per_token']:.3f} bytes/token** on {tok['text']}"
      if tok
      else MISSING
  )
  curve = (report["stages"].get("pretrain") or {}).get("val_curve") or []
  lines += ["", "## Pretraining curve", ""]
  if not curve:
    return lines + [MISSING]
  lines += ["| step | val bpb |", "|---|---|"] + [f"| {s} | {v:.4f} |" for s, v in curve]
  return lines


def _samples(report: dict[str, Any]) -> list[str]:
  samples = report.get("samples")
  lines = ["", "## Samples (greedy, same prompts for every stage)", ""]
  if not samples:
    return lines + [f"{MISSING} (not generated: --samples=false)"]
  for stage, rows in samples.items():
    lines.append(f"### {stage}")
    if isinstance(rows, dict):
      lines.append(f"could not sample: {rows.get('error')}")
      continue
    lines += [f"- **{r['prompt']}** → {_one_line(r['reply'])}" for r in rows]
    lines.append("")
  return lines


def _one_line(text: str) -> str:
  text = " ".join(text.split()).replace("|", "\\|")
  return text or "(empty)"


def markdown(report: dict[str, Any]) -> str:
  lines = _header(report) + _stages(report) + _crawl(report) + _tokenizer_and_curve(report)
  lines += [
      "",
      "## Metrics by stage",
      "",
      "Rates show a 95% Wilson interval and the number of examples where known; "
      f"{MISSING} = not measured in this chain.",
      "",
  ]
  lines += metric_table(report)
  probe = (report["stages"].get("sft") or {}).get("probe_stats")
  if isinstance(probe, dict):
    lines.append(
        f"\nSFT knowledge probe: {probe.get('known')} questions judged known, {probe.get('idk')} judged "
        f"\"I don't know\", {probe.get('skipped')} skipped of {probe.get('questions')}."
    )
  lines += ["", "## Plots", ""]
  lines += [f"![{caption}]({name})" for caption, name in (report.get("plots") or {}).items()] or [MISSING]
  lines += _samples(report)
  return "\n".join(lines) + "\n"
