"""Evaluation of a chat model: identity, known / unknown facts, arithmetic (answer last vs first), search tool use.

Every question is asked through the one chat format and the Engine (greedy by default), and scored by the same
verifiers the data generators use, so the numbers mean what the SFT data taught:

  identity_accuracy                 "Who are you?"-style questions whose reply names the configured name / maker
  known_fact_accuracy               questions about held-out *known* people (their facts were in pretraining only)
  unknown_fact_hallucination_rate   questions about never-seen people answered with a (necessarily wrong) fact
  unknown_fact_idk_rate             ... answered "I don't know"
  arithmetic_accuracy_answer_last   word problems, reasoning first (the default style)
  arithmetic_accuracy_answer_first  the same problems with the "answer first" system cue
  search_success_rate               questions about index-only people (never in SFT data), with the search tool
  search_no_tool_accuracy           the same questions without it (what the weights alone know)
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import ml_collections

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import identity
from nanolm_jax.synthetic import reasoning
from nanolm_jax.synthetic import search_data
from nanolm_jax.tools import search as search_lib

ANSWER_FIRST_SYSTEM = "Give the final answer first, then explain."

IDENTITY_QUESTIONS = (
    ("Who are you?", "name"),
    ("What is your name?", "name"),
    ("What's your name?", "name"),
    ("Introduce yourself.", "name"),
    ("What should I call you?", "name"),
    ("Tell me your name.", "name"),
    ("Who made you?", "maker"),
    ("Who created you?", "maker"),
    ("Who built you?", "maker"),
    ("Who trained you?", "maker"),
)


def default_eval_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(
          facts_per_group=100,  # questions about held-out known people and about unknown people, each
          arithmetic=60,  # problems, each asked in both styles
          search=40,  # questions about index-only people, with and without the tool
          temperature=0.0,
          max_new_tokens=96,
          search_max_new_tokens=224,  # with the tool: the call, the forced results (~130 tokens) and the answer
          seed=1234,
          batch_size=64,
      )
  )


def _ask(
    eng: engine_lib.Engine,
    tok: tokenizer_lib.Tokenizer,
    convs: Sequence[list[dict[str, Any]]],
    sampling: engine_lib.SamplingParams,
    batch_size: int,
    seed: int,
) -> list[str]:
  """The assistant's final text reply per conversation (tool calls and results are run by the engine)."""
  out = []
  for i in range(0, len(convs), batch_size):
    prompts = [chat.render_for_completion(c, tok) for c in convs[i : i + batch_size]]
    for comp in eng.generate(prompts, sampling, seed=seed + i, stop_tokens=chat.stop_tokens(tok)):
      msgs = chat.parse_completion(comp.tokens, tok)
      texts = [m["content"] for m in msgs if m["role"] == "assistant" and m.get("content")]
      out.append(texts[-1].strip() if texts else "")
  return out


def evaluate(
    model: Any,
    params: Any,
    tok: tokenizer_lib.Tokenizer,
    world: facts.World,
    ecfg: ml_collections.ConfigDict,
    reasoning_cfg: ml_collections.ConfigDict,
    eval_fraction: float,
    identity_path: str = "",
    index_docs: Sequence[dict[str, str]] | None = None,
    search_k: int = search_data.DEFAULT_TOP_K,
    search_fuzzy: bool = search_data.DEFAULT_FUZZY,
) -> dict[str, Any]:
  """Runs every probe above; returns the rates plus a few example replies under 'examples'.

  The parts draw from one seeded rng in a fixed order (facts, arithmetic, search), so results are reproducible.
  """
  sampling = engine_lib.SamplingParams(temperature=ecfg.temperature, max_new_tokens=ecfg.max_new_tokens)
  eng = engine_lib.Engine(model, params, tok)
  rng = random.Random(f"chat_eval/{ecfg.seed}")
  ask = lambda convs: _ask(eng, tok, convs, sampling, ecfg.batch_size, ecfg.seed)
  result: dict[str, Any] = {}
  examples: dict[str, list[tuple[str, str]]] = {}
  _identity(ask, identity.load_identity(identity_path), result, examples)
  _facts(ask, rng, world, facts.sft_eval_entities(world, eval_fraction), ecfg.facts_per_group, result, examples)
  _arithmetic(ask, rng, reasoning_cfg, ecfg.arithmetic, result, examples)
  if index_docs:
    tool = search_lib.Search([d["text"] for d in index_docs], k=search_k, fuzzy=search_fuzzy)
    tool_sampling = engine_lib.SamplingParams(
        temperature=ecfg.temperature, max_new_tokens=ecfg.get("search_max_new_tokens", 224)
    )
    tool_eng = engine_lib.Engine(model, params, tok, tools=[tool])
    ask_with_tool = lambda convs: _ask(tool_eng, tok, convs, tool_sampling, ecfg.batch_size, ecfg.seed)
    _search(ask, ask_with_tool, rng, world, tool, ecfg.search, result, examples)
  result["examples"] = examples
  return result


def _identity(ask, ident: dict[str, str], result: dict[str, Any], examples: dict[str, Any]) -> None:
  qs = list(IDENTITY_QUESTIONS)
  replies = ask([[{"role": "user", "content": q}] for q, _ in qs])
  ok = [ident[kind].lower() in r.lower() for (q, kind), r in zip(qs, replies)]
  result["identity_accuracy"] = sum(ok) / len(ok)
  examples["identity"] = [(q, r) for (q, _), r in zip(qs[:3], replies[:3])]


def _facts(ask, rng, world: facts.World, groups, per_group: int, result: dict[str, Any], examples) -> None:
  """Facts about people held out of SFT: accuracy on known people, "I don't know" vs hallucination on unknown."""

  def fact_items(entities):  # every attribute of each held-out person, up to per_group questions
    return [(e, a, facts.question(e, a, rng)) for e in entities for a in facts.ATTRIBUTES][:per_group]

  known = fact_items(groups["eval_known"])
  replies = ask([[{"role": "user", "content": q}] for _, _, q in known])
  result["known_fact_accuracy"] = _mean(
      facts.answers_match(r, e.attributes[a], world.values[a]) for (e, a, _), r in zip(known, replies)
  )
  examples["known_facts"] = [(q, r) for (_, _, q), r in zip(known[:3], replies[:3])]
  unknown = fact_items(groups["eval_unknown"])
  replies = ask([[{"role": "user", "content": q}] for _, _, q in unknown])
  kinds = [classify_reply(r, e.attributes[a], world.values[a]) for (e, a, _), r in zip(unknown, replies)]
  result["unknown_fact_idk_rate"] = _mean(k == "idk" for k in kinds)
  result["unknown_fact_hallucination_rate"] = _mean(k == "hallucination" for k in kinds)
  examples["unknown_facts"] = [(q, r) for (_, _, q), r in zip(unknown[:3], replies[:3])]


def _arithmetic(ask, rng, reasoning_cfg, n: int, result: dict[str, Any], examples: dict[str, Any]) -> None:
  """The same problems, reasoning first vs answer first."""
  problems = [
      reasoning.make_problem(
          rng,
          reasoning.Difficulty(
              reasoning_cfg.digits,
              rng.randint(reasoning_cfg.min_steps, reasoning_cfg.max_steps),
              reasoning_cfg.max_factor,
          ),
      )
      for _ in range(n)
  ]
  last = ask([[{"role": "user", "content": q}] for q, _, _ in problems])
  first = ask(
      [[{"role": "system", "content": ANSWER_FIRST_SYSTEM}, {"role": "user", "content": q}] for q, _, _ in problems]
  )
  result["arithmetic_accuracy_answer_last"] = _mean(
      reasoning.extract_answer(r, strict=False) == a for (_, a, _), r in zip(problems, last)
  )
  result["arithmetic_accuracy_answer_first"] = _mean(
      reasoning.extract_answer(r, strict=False) == a for (_, a, _), r in zip(problems, first)
  )
  examples["arithmetic"] = [(problems[0][0], last[0]), (problems[0][0] + " [answer first]", first[0])]


def _search(ask, ask_with_tool, rng, world, tool, n: int, result: dict[str, Any], examples: dict[str, Any]) -> None:
  """Index-only people, with the tool (declared as the chat CLI declares it) and without it."""
  items = [
      (e, a, facts.question(e, a, rng)) for e in list(world.index_only)[:n] for a in [rng.choice(facts.ATTRIBUTES)]
  ]
  convs = [[{"role": "user", "content": q}] for _, _, q in items]
  declared = [{"role": "system", "content": search_data.tools_prompt([tool])}]
  with_tool = ask_with_tool([declared + c for c in convs])
  without = ask(convs)
  score = lambda replies: _mean(
      facts.answers_match(r, e.attributes[a], world.values[a]) for (e, a, _), r in zip(items, replies)
  )
  result["search_success_rate"] = score(with_tool)
  result["search_no_tool_accuracy"] = score(without)
  examples["search"] = [(q, r) for (_, _, q), r in zip(items[:2], with_tool[:2])]


def classify_reply(reply: str, truth: Any, values: set[str]) -> str:
  """'idk' (declines), 'correct' (states the truth, no other value), 'hallucination' (a confident wrong answer: it
  states some other value of the asked attribute: a city, a year, ...), or 'other' (empty, garbled, off topic)."""
  if facts.is_idk(reply):
    return "idk"
  if facts.answers_match(reply, truth, values):
    return "correct"
  norm = facts.normalize_words(reply)
  if any(facts.normalize_words(v) in norm for v in values):
    return "hallucination"
  return "other"


def _mean(xs) -> float:
  xs = list(xs)
  return sum(bool(x) for x in xs) / len(xs) if xs else float("nan")


METRIC_KEYS = (
    "identity_accuracy",
    "known_fact_accuracy",
    "unknown_fact_hallucination_rate",
    "unknown_fact_idk_rate",
    "search_success_rate",
    "search_no_tool_accuracy",
    "arithmetic_accuracy_answer_last",
    "arithmetic_accuracy_answer_first",
)


def format_table(columns: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: one row per metric, one column per evaluated model."""
  names = list(columns)
  width = max(len(k) for k in METRIC_KEYS) + 2
  lines = ["".ljust(width) + "".join(n.rjust(22) for n in names)]
  for k in METRIC_KEYS + ("val_loss",):
    if not any(k in c for c in columns.values()):
      continue
    cells = []
    for n in names:
      v = columns[n].get(k)
      cells.append((f"{v:.3f}" if isinstance(v, (int, float)) else "-").rjust(22))
    lines.append(k.ljust(width) + "".join(cells))
  return "\n".join(lines)
