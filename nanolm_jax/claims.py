"""The seed's claims (Karpathy, *Deep Dive into LLMs*) as measured experiments on a chain's runs.

Each claim is read off the runs a chain already trained and evaluated (speedrun folder or runs/ of default names:
nanolm_jax.report.collect.find_runs) and becomes a `Claim`: the numbers with their n and 95 % Wilson intervals, a
plot, whether the small model shows it, and one computed sentence saying so — or, where it does not, which numbers
say why. "Shows" is decided by the intervals (the two 95 % intervals do not overlap in the claimed direction), never
by a point estimate alone, so a small sample is reported as "not shown (yet)" rather than as a finding.

Two claims sample the chain's models (`COMPUTED`: identity before and after SFT, with and without a system prompt;
the base model zero- vs few-shot); the rest read the runs' own evaluations (`READ_FROM_RUNS`). A claim that needs
its own training (vocabulary size vs sequence length at equal FLOPs) comes in as `extra`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Sequence

from matplotlib import figure

from nanolm_jax.report import collect

CLAIMS_FILE = "claims.json"


@dataclasses.dataclass
class Claim:
  """One claim of the seed, measured."""

  name: str
  claim: str  # the seed's statement
  shows: bool | None  # None: the chain has not produced the numbers
  sentence: str
  numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
  plot: str | None = None  # file name next to claims.json


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
  """95 % Wilson score interval of a rate p over n trials."""
  if n <= 0:
    return (0.0, 1.0)
  d = 1 + z * z / n
  c = (p + z * z / (2 * n)) / d
  h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
  return (max(0.0, c - h), min(1.0, c + h))


def rate(ev: dict[str, Any], key: str) -> dict[str, Any] | None:
  """{value, n, ci} of an eval.json rate (ci recomputed from n when the file has none)."""
  if key not in ev:
    return None
  n = int(ev.get(f"{key}_n", 0))
  ci = ev.get(f"{key}_ci") or (list(wilson(ev[key], n)) if n else None)
  return {"value": float(ev[key]), "n": n, "ci": ci}


def above(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
  """Whether rate a is above rate b beyond both 95 % intervals (None when either is missing)."""
  if not a or not b or not a.get("ci") or not b.get("ci"):
    return None
  return a["ci"][0] > b["ci"][1]


def _fmt(r: dict[str, Any] | None) -> str:
  if not r:
    return "—"
  ci = r.get("ci")
  return f"{r['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}] (n={r['n']})" if ci else "")


def _bars(path: str, title: str, groups: dict[str, dict[str, dict[str, Any] | None]], ylabel: str = "rate") -> str:
  """Grouped bars with 95 % interval whiskers: groups = {group: {bar: rate}}."""
  fig = figure.Figure(figsize=(6.4, 3.6))
  ax = fig.subplots()
  bars = list(dict.fromkeys(b for g in groups.values() for b in g))
  width = 0.8 / max(1, len(bars))
  for j, bar in enumerate(bars):
    xs, ys, lo, hi = [], [], [], []
    for i, g in enumerate(groups.values()):
      r = g.get(bar)
      if r:
        ci = r.get("ci") or [r["value"], r["value"]]
        xs.append(i + j * width)
        ys.append(r["value"])
        lo.append(r["value"] - ci[0])
        hi.append(ci[1] - r["value"])
    ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=bar)
  ax.set_xticks([i + width * (len(bars) - 1) / 2 for i in range(len(groups))], list(groups))
  ax.set_ylim(0, 1.05)
  ax.set_ylabel(ylabel)
  return _save(fig, ax, path, title)


def _save(fig: figure.Figure, ax: Any, path: str, title: str) -> str:
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return os.path.basename(path)


def hallucination(runs: dict[str, str], out: str) -> Claim:
  """Probe-labelled "I don't know" data vs fact QA for everyone (the no-probe control) on unknown people."""
  claim = "With enough 'I don't know' examples (from probing what the model knows), models learn to admit ignorance."
  ev = collect.read_json(os.path.join(runs.get("sft", ""), "eval.json")) or {}
  ctl = ev.get("no_probe") or {}
  keys = ("unknown_fact_idk_rate", "unknown_fact_hallucination_rate", "known_fact_accuracy")
  probe, control = {k: rate(ev, k) for k in keys}, {k: rate(ctl, k) for k in keys}
  fewer = above(control["unknown_fact_hallucination_rate"], probe["unknown_fact_hallucination_rate"])
  numbers = {"probe": probe, "no_probe": control}
  if fewer is None:
    return Claim("hallucination", claim, None, "the SFT run has no eval.json with its no-probe control", numbers)
  plot = _bars(
      os.path.join(out, "claim_hallucination.png"),
      "Reply kinds on unknown people (and known ones), with and without probe data",
      {
          "I don't know": {"probe": probe[keys[0]], "no probe": control[keys[0]]},
          "hallucinated": {"probe": probe[keys[1]], "no probe": control[keys[1]]},
          "known: correct": {"probe": probe[keys[2]], "no probe": control[keys[2]]},
      },
  )
  h_p, h_c = _fmt(probe[keys[1]]), _fmt(control[keys[1]])
  if fewer:
    s = f"shown: on unknown people the probe-trained model hallucinates {h_p} against {h_c} without probe data."
  else:
    s = f"not shown: hallucination on unknown people {h_p} with probe data vs {h_c} without; the intervals overlap."
  return Claim("hallucination", claim, bool(fewer), s, numbers, plot)


def _contrast(
    name: str, claim: str, runs: dict[str, str], better: str, worse: str, labels: tuple[str, str], title: str, out: str
) -> Claim:
  """Two rates of the SFT run's eval.json: is `better` above `worse` beyond both intervals?"""
  ev = collect.read_json(os.path.join(runs.get("sft", ""), "eval.json")) or {}
  a, b = rate(ev, better), rate(ev, worse)
  numbers = {better: a, worse: b}
  shown = above(a, b)
  if shown is None:
    return Claim(name, claim, None, f"no {better} / {worse} in the SFT run's eval.json", numbers)
  plot = _bars(os.path.join(out, f"claim_{name}.png"), title, {"": {labels[0]: a, labels[1]: b}}, "accuracy")
  verdict = "shown" if shown else "not shown (the 95 % intervals overlap or invert)"
  return Claim(name, claim, shown, f"{verdict}: {labels[0]} {_fmt(a)} vs {labels[1]} {_fmt(b)}.", numbers, plot)


def tools(runs: dict[str, str], out: str) -> Claim:
  return _contrast(
      "tools",
      "Tools refresh the working memory: a model that searches answers facts it never memorised.",
      runs,
      "search_success_rate",
      "search_no_tool_accuracy",
      ("with the search tool", "without"),
      "Index-only people: accuracy with and without search",
      out,
  )


def computation_per_token(runs: dict[str, str], out: str) -> Claim:
  return _contrast(
      "computation_per_token",
      "Models need tokens to think: the answer after the working beats the answer first at the same problems.",
      runs,
      "arithmetic_accuracy_answer_last",
      "arithmetic_accuracy_answer_first",
      ("answer after reasoning", "answer first"),
      "Arithmetic: answer last vs answer first",
      out,
  )


def _series(run_dir: str, x: str, ys: Sequence[str]) -> list[dict[str, float]]:
  rows = collect.read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if run_dir else []
  return [r for r in rows if x in r and all(y in r for y in ys)]


def _curve_plot(path: str, title: str, xs, series: dict[str, list[float]], xlabel: str) -> str:
  fig = figure.Figure(figsize=(6.4, 3.6))
  ax = fig.subplots()
  for label, ys in series.items():
    ax.plot(xs, ys, marker="o", label=label)
  ax.set_xlabel(xlabel)
  return _save(fig, ax, path, title)


def verifiable_rl(runs: dict[str, str], out: str) -> Claim:
  """GRPO's true accuracy against its KL from the SFT model: up, and no turn-down at the end."""
  claim = "RL on verifiable answers improves on SFT, and its true reward does not turn down as the policy moves."
  rows = _series(runs.get("grpo", ""), "eval_kl", ("eval_accuracy",))
  if len(rows) < 2:
    return Claim("verifiable_rl", claim, None, "the GRPO run has fewer than two evaluations", {})
  ecfg = (collect.read_json(os.path.join(runs["grpo"], "config.json")) or {}).get("eval", {})
  n = int(ecfg.get("num_problems", 0)) * int(ecfg.get("samples", 1))  # sampled answers per evaluation
  acc = [r["eval_accuracy"] for r in rows]
  kl = [r["eval_kl"] for r in rows]
  start = {"value": acc[0], "n": n, "ci": list(wilson(acc[0], n))}
  end = {"value": acc[-1], "n": n, "ci": list(wilson(acc[-1], n))}
  best = {"value": max(acc), "n": n, "ci": list(wilson(max(acc), n))}
  improves, turned_down = above(end, start), above(best, end)
  numbers = {"start": start, "end": end, "best": best, "kl_end": kl[-1], "evals": len(rows)}
  plot = _curve_plot(os.path.join(out, "claim_verifiable_rl.png"), "GRPO: accuracy vs KL", kl, {"accuracy": acc}, "KL")
  shows = bool(improves and not turned_down)
  s = (
      f"{'shown' if shows else 'not shown'}: accuracy {_fmt(start)} at the start, {_fmt(end)} at the end "
      f"(best {best['value']:.2f}) at KL {kl[-1]:.2f}"
      + ("; it fell from its best beyond the intervals." if turned_down else "; no turn-down beyond the intervals.")
  )
  return Claim("verifiable_rl", claim, shows, s, numbers, plot)


def rlhf_overoptimisation(runs: dict[str, str], out: str) -> Claim:
  """The proxy reward keeps rising while the gold reward peaks and falls (Goodhart)."""
  claim = "RLHF games its reward model: the proxy reward keeps rising while the true (gold) reward peaks and falls."
  rows = _series(runs.get("rlhf", ""), "kl", ("proxy_reward", "gold_reward"))
  if len(rows) < 3:
    return Claim("rlhf_overoptimisation", claim, None, "the RLHF run has fewer than three evaluations", {})
  kl = [r["kl"] for r in rows]
  proxy, gold = [r["proxy_reward"] for r in rows], [r["gold_reward"] for r in rows]
  peak = max(range(len(gold)), key=gold.__getitem__)
  fall = gold[peak] - gold[-1]
  spread = max(gold) - min(gold)
  proxy_up = proxy[-1] > proxy[peak] and proxy[-1] > proxy[0]
  shows = bool(proxy_up and 0 < peak < len(gold) - 1 and fall > 0.25 * spread)
  numbers = {"gold_start": gold[0], "gold_peak": gold[peak], "gold_end": gold[-1], "peak_kl": kl[peak]}
  numbers |= {"proxy_start": proxy[0], "proxy_end": proxy[-1], "evals": len(rows)}
  plot = _curve_plot(
      os.path.join(out, "claim_rlhf.png"), "RLHF: proxy and gold reward vs KL", kl, {"proxy": proxy, "gold": gold}, "KL"
  )
  s = (
      f"{'shown' if shows else 'not shown'}: gold reward {gold[0]:.3f} -> peak {gold[peak]:.3f} at KL "
      f"{kl[peak]:.2f} -> {gold[-1]:.3f}, while the proxy went {proxy[0]:.2f} -> {proxy[-1]:.2f}."
  )
  return Claim("rlhf_overoptimisation", claim, shows, s, numbers, plot)


def _loaded(run_dir: str):
  from nanolm_jax import runs as runs_lib  # pylint: disable=g-import-not-at-top  # loads jax models: computed claims only

  return runs_lib.load_run(run_dir)


def identity_claim(runs: dict[str, str], out: str, n: int = 50) -> Claim:
  """'Who are you?' asked of the base model and of the SFT model, without and with a (held-out persona) system prompt."""
  claim = "The model has no self: its identity is what SFT data (or a system prompt) says it is."
  if "pretrain" not in runs or "sft" not in runs:
    return Claim("identity", claim, None, "needs the chain's pretraining and SFT runs", {})
  from nanolm_jax.posttrain import chat_eval  # pylint: disable=g-import-not-at-top

  numbers = {}
  for stage in ("pretrain", "sft"):
    run = _loaded(runs[stage])
    path = (run.cfg.get("sft", {}).get("identity", {}) or {}).get("path", "") if stage == "sft" else ""
    r = chat_eval.identity_rates(run.model, run.params, run.tokenizer, n, identity_path=path)
    numbers[stage] = {k: rate(r, k) for k in ("identity_accuracy", "persona_accuracy")}
  plot = _bars(
      os.path.join(out, "claim_identity.png"),
      "'Who are you?' before and after SFT",
      {
          "no system prompt": {
              "base": numbers["pretrain"]["identity_accuracy"],
              "SFT": numbers["sft"]["identity_accuracy"],
          },
          "persona system prompt": {
              "base": numbers["pretrain"]["persona_accuracy"],
              "SFT": numbers["sft"]["persona_accuracy"],
          },
      },
      "answers as told",
  )
  learned = above(numbers["sft"]["identity_accuracy"], numbers["pretrain"]["identity_accuracy"])
  follows = above(numbers["sft"]["persona_accuracy"], numbers["pretrain"]["persona_accuracy"])
  s = (
      f"{'shown' if learned else 'not shown'}: names its identity {_fmt(numbers['pretrain']['identity_accuracy'])} "
      f"before SFT and {_fmt(numbers['sft']['identity_accuracy'])} after; takes a system prompt's persona "
      f"{_fmt(numbers['pretrain']['persona_accuracy'])} before and {_fmt(numbers['sft']['persona_accuracy'])} after"
      + ("." if follows else " (not beyond the intervals).")
  )
  return Claim("identity", claim, bool(learned), s, numbers, plot)


def few_shot(runs: dict[str, str], out: str, n: int = 100, shots: int = 4) -> Claim:
  """The base model on the same arithmetic questions, zero-shot and with worked examples in its prompt."""
  claim = "A base model simulates documents; a few-shot prompt turns it into something that answers."
  if "pretrain" not in runs:
    return Claim("few_shot", claim, None, "needs the chain's pretraining run", {})
  from nanolm_jax.evals import harness  # pylint: disable=g-import-not-at-top

  run = _loaded(runs["pretrain"])
  numbers = {}
  for k in (0, shots):
    r = harness.evaluate(
        run.model, run.params, run.tokenizer, [harness.arithmetic_task(n, num_fewshot=k)], max_new_tokens=96
    )["arithmetic"]
    acc = float(r["accuracy"])
    numbers[f"{k}_shot"] = {"value": acc, "n": n, "ci": list(wilson(acc, n))}
  better = above(numbers[f"{shots}_shot"], numbers["0_shot"])
  plot = _bars(
      os.path.join(out, "claim_few_shot.png"),
      "Base model, arithmetic: zero-shot vs few-shot",
      {"": {"0-shot": numbers["0_shot"], f"{shots}-shot": numbers[f"{shots}_shot"]}},
      "accuracy",
  )
  s = (
      f"{'shown' if better else 'not shown'}: {_fmt(numbers['0_shot'])} zero-shot vs "
      f"{_fmt(numbers[f'{shots}_shot'])} with {shots} worked examples"
  )
  if not better and max(numbers["0_shot"]["ci"][1], numbers[f"{shots}_shot"]["ci"][1]) < 0.2:
    s += "; the base model does not solve these problems in either form (both intervals below 0.2)"
  s += "."
  return Claim("few_shot", claim, bool(better), s, numbers, plot)


COMPUTED: dict[str, Callable[[dict[str, str], str], Claim]] = {"few_shot": few_shot, "identity": identity_claim}

READ_FROM_RUNS: dict[str, Callable[[dict[str, str], str], Claim]] = {
    "hallucination": hallucination,
    "tools": tools,
    "computation_per_token": computation_per_token,
    "verifiable_rl": verifiable_rl,
    "rlhf_overoptimisation": rlhf_overoptimisation,
}


def measure(
    workdir: str,
    out: str | None = None,
    only: Sequence[str] = (),
    compute: bool = True,
    extra: Sequence[Claim] = (),
    compute_n: int | None = None,
) -> list[Claim]:
  """Every claim of `workdir`'s runs: read off them, and with `compute` also those that sample the models (a minute
  or two for the tiny chain; `compute_n` questions each instead of their defaults); plus `extra`, measured
  elsewhere. Writes claims.json and the plots into `out`."""
  out = out or workdir
  known = {**COMPUTED, **READ_FROM_RUNS}
  unknown = [n for n in only if n not in known and n not in {c.name for c in extra}]
  if unknown:
    raise ValueError(f"unknown claim(s) {unknown}; known: {sorted(known)}")
  os.makedirs(out, exist_ok=True)
  speedrun = collect.read_json(os.path.join(workdir, collect.SPEEDRUN_FILE))
  runs = collect.find_runs(workdir, speedrun if isinstance(speedrun, dict) else None)
  chosen = {n: f for n, f in known.items() if (not only or n in only) and (compute or n not in COMPUTED)}
  sized = {"n": compute_n} if compute_n else {}
  claims = [f(runs, out, **sized) if n in COMPUTED else f(runs, out) for n, f in chosen.items()]
  claims += [c for c in extra if not only or c.name in only]
  with open(os.path.join(out, CLAIMS_FILE), "w") as f:
    json.dump([dataclasses.asdict(c) for c in claims], f, indent=2)
  return claims


def markdown(claims: Sequence[Claim]) -> str:
  """The claims section of a report: one line of verdict per claim, its plot below."""
  lines = ["## The seed's claims, measured", ""]
  for c in claims:
    mark = {True: "shown", False: "not shown", None: "not measured"}[c.shows]
    lines += [f"**{c.name}** ({mark}). *{c.claim}* {c.sentence}", ""]
    if c.plot:
      lines += [f"![{c.name}]({c.plot})", ""]
  return "\n".join(lines)
