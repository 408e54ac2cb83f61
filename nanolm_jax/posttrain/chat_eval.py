"""Evaluation of a chat model: identity, known / unknown facts, arithmetic (answer last vs first), search tool use.

Every question is asked through the one chat format and the Engine (greedy by default), and scored by the same
verifiers the data generators use, so the numbers mean what the SFT data taught:

  identity_accuracy                 "Who are you?"-style questions whose reply names the configured name / maker
  identity_paraphrase_accuracy      the same on paraphrases the SFT data never asks (identity.EVAL_QUESTIONS)
  persona_accuracy                  a system prompt sets a held-out persona; the reply names its name / maker
  known_fact_accuracy               questions about held-out *known* people (their facts were in pretraining only)
  known_fact_idk_rate / _hallucination_rate / _other_rate   ... the rest of those replies, by kind (sum to 1)
  unknown_fact_hallucination_rate   questions about never-seen people answered with a (necessarily wrong) fact
  unknown_fact_idk_rate             ... answered "I don't know"
  unknown_fact_other_rate           ... neither: empty, looping, garbled, off topic (the three sum to 1)
  arithmetic_accuracy_answer_last   word problems, reasoning first (the default style)
  arithmetic_accuracy_answer_first  the same problems with the "answer first" system cue
  search_success_rate               questions about index-only people (never in SFT data), with the search tool
  search_no_tool_accuracy           the same questions without it (what the weights alone know)
  search_no_call_rate / _bad_query_rate / _not_copied_rate   where the failing searches break: no call made; a
                                    call whose results do not hold the person's card; the card shown but the reply
                                    wrong (with search_success_rate they sum to 1)

Each rate comes with ``<key>_n`` (questions asked) and ``<key>_ci`` ([lo, hi], the 95 % Wilson score interval), so
that a difference between two runs can be told from sampling noise; ``format_table`` prints them.
"""

from __future__ import annotations

import math
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
from nanolm_jax.synthetic import system_prompts
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
          # >= 100 questions per rate where the world allows (issue 14): at n = 100 a 95 % interval is about
          # +-0.1 wide at a rate of 0.5, and narrower towards 0 or 1.
          identity=100,  # the base questions, then surface variants of them (identity.vary_question)
          facts_per_group=100,  # questions about held-out known people and about unknown people, each (the default
          # world holds out 20 + 20 people x 5 attributes: exactly 100 each)
          arithmetic=100,  # problems, each asked in both styles
          search=100,  # questions about index-only people (one each: the default world has 100), with / without tool
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
    with_calls: bool = False,
) -> list[Any]:
  """The assistant's final text reply per conversation (tool calls and results are run by the engine); with
  ``with_calls``, (reply, the completion's tool calls) pairs."""
  out = []
  for i in range(0, len(convs), batch_size):
    prompts = [chat.render_for_completion(c, tok) for c in convs[i : i + batch_size]]
    for comp in eng.generate(prompts, sampling, seed=seed + i, stop_tokens=chat.stop_tokens(tok)):
      msgs = chat.parse_completion(comp.tokens, tok)
      texts = [m["content"] for m in msgs if m["role"] == "assistant" and m.get("content")]
      reply = texts[-1].strip() if texts else ""
      out.append((reply, comp.tool_calls) if with_calls else reply)
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
  n_identity = ecfg.get("identity", len(IDENTITY_QUESTIONS))  # runs saved before the key existed asked 10
  ident = identity.load_identity(identity_path)
  _identity(ask, ident, n_identity, ecfg.seed, result, examples)
  _persona(ask, ident, ecfg.get("persona", n_identity), ecfg.seed, result, examples)
  _facts(ask, rng, world, facts.sft_eval_entities(world, eval_fraction), ecfg.facts_per_group, result, examples)
  _arithmetic(ask, rng, reasoning_cfg, ecfg.arithmetic, result, examples)
  if index_docs:
    tool = search_lib.Search([d["text"] for d in index_docs], k=search_k, fuzzy=search_fuzzy)
    tool_sampling = engine_lib.SamplingParams(
        temperature=ecfg.temperature, max_new_tokens=ecfg.get("search_max_new_tokens", 224)
    )
    tool_eng = engine_lib.Engine(model, params, tok, tools=[tool])
    ask_with_tool = lambda convs: _ask(tool_eng, tok, convs, tool_sampling, ecfg.batch_size, ecfg.seed, True)
    _search(ask, ask_with_tool, rng, world, tool, ecfg.search, result, examples)
  result["examples"] = examples
  return result


def identity_rates(
    model: Any,
    params: Any,
    tok: tokenizer_lib.Tokenizer,
    n: int,
    seed: int = 1234,
    identity_path: str = "",
    max_new_tokens: int = 64,
) -> dict[str, Any]:
  """identity / identity_paraphrase / persona accuracy alone (with n and intervals): the identity claim asks them of
  the base model too, where the rest of the chat evaluation has nothing to say."""
  sampling = engine_lib.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
  eng = engine_lib.Engine(model, params, tok)
  ask = lambda convs: _ask(eng, tok, convs, sampling, 64, seed)
  result: dict[str, Any] = {}
  examples: dict[str, Any] = {}
  ident = identity.load_identity(identity_path)
  _identity(ask, ident, n, seed, result, examples)
  _persona(ask, ident, n, seed, result, examples)
  result["examples"] = examples
  return result


def identity_questions(
    n: int, seed: int, base: Sequence[tuple[str, str]] = IDENTITY_QUESTIONS, tag: str = "identity"
) -> list[tuple[str, str]]:
  """``n`` (question, 'name' | 'maker') pairs: ``base`` as written, then surface variants of it in turn.

  Its own rng (not evaluate's), so the other parts ask the same questions whatever ``n`` is.
  """
  rng = random.Random(f"chat_eval/{tag}/{seed}")
  base = list(base)
  return base[:n] + [
      (identity.vary_question(rng, q), kind) for q, kind in (base[i % len(base)] for i in range(n - len(base)))
  ]


def _identity(ask, ident: dict[str, str], n: int, seed: int, result: dict[str, Any], examples) -> None:
  """Name / maker questions in the trained wordings, and in paraphrases the SFT data never asks."""
  held_out = [(q, kind) for kind, q_list in identity.EVAL_QUESTIONS.items() for q in q_list]
  for key, qs in (
      ("identity", identity_questions(n, seed)),
      ("identity_paraphrase", identity_questions(n, seed, held_out, "identity_paraphrase")),
  ):
    replies = ask([[{"role": "user", "content": q}] for q, _ in qs])
    _rate(result, f"{key}_accuracy", [ident[kind].lower() in r.lower() for (_, kind), r in zip(qs, replies)])
    examples[key] = [(q, r) for (q, _), r in zip(qs[:3], replies[:3])]


def _persona(ask, ident: dict[str, str], n: int, seed: int, result: dict[str, Any], examples) -> None:
  """A held-out persona in the system prompt, then a name or maker question: does the reply take it up (and not
  the trained identity's name)?"""
  rng = random.Random(f"chat_eval/persona/{seed}")
  items = []
  for i in range(n):
    name, maker = rng.choice(system_prompts.EVAL_PERSONA_NAMES), rng.choice(system_prompts.EVAL_PERSONA_MAKERS)
    kind = ("name", "maker")[i % 2]
    system = system_prompts.EVAL_PERSONA_PROMPT.format(name=name, maker=maker)
    items.append((system, rng.choice(identity.QUESTIONS[kind]), name if kind == "name" else maker))
  replies = ask([[{"role": "system", "content": s}, {"role": "user", "content": q}] for s, q, _ in items])
  own = ident["name"].lower()
  hits = [want.lower() in r.lower() and own not in r.lower() for (_, _, want), r in zip(items, replies)]
  _rate(result, "persona_accuracy", hits)
  examples["persona"] = [(f"[{s}] {q}", r) for (s, q, _), r in zip(items[:2], replies[:2])]


def _facts(ask, rng, world: facts.World, groups, per_group: int, result: dict[str, Any], examples) -> None:
  """Facts about people held out of SFT: accuracy on known people, "I don't know" vs hallucination on unknown."""

  def fact_items(entities):  # every attribute of each held-out person, up to per_group questions
    return [(e, a, facts.question(e, a, rng)) for e in entities for a in facts.ATTRIBUTES][:per_group]

  for group, prefix in (("eval_known", "known_fact"), ("eval_unknown", "unknown_fact")):
    items = fact_items(groups[group])
    replies = ask([[{"role": "user", "content": q}] for _, _, q in items])
    kinds = [classify_reply(r, e.attributes[a], world.values[a]) for (e, a, _), r in zip(items, replies)]
    for name, counted in FACT_RATES[prefix].items():
      _rate(result, f"{prefix}_{name}", [k in counted for k in kinds])
    examples[f"{prefix}s"] = [(q, r) for (_, _, q), r in zip(items[:3], replies[:3])]


# Which classify_reply kinds each fact rate counts; each group's rates partition its replies (they sum to 1).
FACT_RATES = {
    "known_fact": {
        "accuracy": ("correct",),
        "idk_rate": ("idk",),
        "hallucination_rate": ("hallucination",),
        "other_rate": ("other",),
    },
    # 'correct' about an unknown person is a lucky draw from the shared value pools: a made-up fact all the same.
    "unknown_fact": {
        "idk_rate": ("idk",),
        "hallucination_rate": ("hallucination", "correct"),
        "other_rate": ("other",),
    },
}


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
  for key, replies in (("arithmetic_accuracy_answer_last", last), ("arithmetic_accuracy_answer_first", first)):
    _rate(result, key, [reasoning.extract_answer(r, strict=False) == a for (_, a, _), r in zip(problems, replies)])
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
  replies = [r for r, _ in with_tool]
  for key, texts in (("search_success_rate", replies), ("search_no_tool_accuracy", without)):
    _rate(
        result,
        key,
        [classify_reply(r, e.attributes[a], world.values[a]) == "correct" for (e, a, _), r in zip(items, texts)],
    )
  outcomes = [search_outcome(e, a, r, calls, world.values[a]) for (e, a, _), (r, calls) in zip(items, with_tool)]
  for outcome in ("no_call", "bad_query", "not_copied"):
    _rate(result, f"search_{outcome}_rate", [o == outcome for o in outcomes])
  examples["search"] = [(q, r) for (_, _, q), r in zip(items[:2], replies[:2])]
  examples["search_calls"] = [c[0]["arguments"] if c else "" for _, c in with_tool[:5]]


def search_outcome(entity: facts.Entity, attribute: str, reply: str, calls: Sequence[dict[str, str]], values) -> str:
  """'correct', or where a search answer broke: 'no_call' (answered without searching), 'bad_query' (no call's
  results hold the person's card: the name was not copied into the query, or the query found others),
  'not_copied' (the card was shown, the reply does not state its fact)."""
  if classify_reply(reply, entity.attributes[attribute], values) == "correct":
    return "correct"
  if not calls:
    return "no_call"
  if not any(entity.name in (c.get("result") or "") for c in calls):  # a card opens with the name
    return "bad_query"
  return "not_copied"


def classify_reply(reply: str, truth: Any, values: set[str]) -> str:
  """'idk' (declines), 'correct' (states the truth, no other value), 'hallucination' (a confident wrong answer: it
  states some other value of the asked attribute: a city, a year, ...), or 'other' (empty, garbled, off topic).

  A looping reply (``facts.is_degenerate``: a word or a run of up to 4 repeated 3 times in a row) is 'other' whatever
  it contains: "I'm not familiar with Hyl Hyl Hyl" is not a decline and "Droford Droford Droford" not an answer,
  but greedy decoding stuck in a loop (issue 14 found the first scored as "I don't know").
  """
  if facts.is_degenerate(reply):
    return "other"
  if facts.is_idk(reply):
    return "idk"
  if facts.answers_match(reply, truth, values):
    return "correct"
  norm = facts.normalize_words(reply)
  if any(facts.normalize_words(v) in norm for v in values):
    return "hallucination"
  return "other"


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
  """The Wilson score interval of a binomial rate (95 % for the default z): (nan, nan) when n = 0.

  Unlike p +- z sqrt(p (1 - p) / n) it stays inside [0, 1] and is not empty at 0/n or n/n, the rates a small
  model often scores (0/100 still allows up to 0.037).
  """
  if n <= 0:
    return (float("nan"), float("nan"))
  p = successes / n
  denom = 1 + z * z / n
  center = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  # Exactly 0 / 1 at 0/n and n/n, where the formula gives them up to rounding (0.9999999999999999 < 10/10).
  return (0.0 if successes <= 0 else center - half, 1.0 if successes >= n else center + half)


def _rate(result: dict[str, Any], key: str, hits: Sequence[bool]) -> None:
  """``key``: the rate of ``hits`` (nan when empty), ``key_n``: how many, ``key_ci``: [lo, hi] (Wilson, 95 %)."""
  n, k = len(hits), sum(bool(h) for h in hits)
  result[key] = k / n if n else float("nan")
  result[f"{key}_n"] = n
  result[f"{key}_ci"] = list(wilson_interval(k, n))


METRIC_KEYS = (
    "identity_accuracy",
    "identity_paraphrase_accuracy",
    "persona_accuracy",
    "known_fact_accuracy",
    "known_fact_idk_rate",
    "known_fact_hallucination_rate",
    "known_fact_other_rate",
    "unknown_fact_hallucination_rate",
    "unknown_fact_idk_rate",
    "unknown_fact_other_rate",
    "search_success_rate",
    "search_no_tool_accuracy",
    "search_no_call_rate",
    "search_bad_query_rate",
    "search_not_copied_rate",
    "arithmetic_accuracy_answer_last",
    "arithmetic_accuracy_answer_first",
)


# What a run reports per metric: the rate, its n and its interval (sft.finish copies these for the control).
REPORTED_KEYS = tuple(k + suffix for k in METRIC_KEYS for suffix in ("", "_n", "_ci"))


def format_cell(column: dict[str, Any], key: str) -> str:
  """'0.500 [0.40,0.60] n=100' where the column has the interval, '0.500' where only the value, '-' without it."""
  v = column.get(key)
  if not isinstance(v, (int, float)):
    return "-"
  cell = f"{v:.3f}"
  ci, n = column.get(f"{key}_ci"), column.get(f"{key}_n")
  if ci and all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
    cell += f" [{ci[0]:.2f},{ci[1]:.2f}]"
  if isinstance(n, int):
    cell += f" n={n}"
  return cell


def format_table(columns: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: one row per metric, one column per evaluated model."""
  names = list(columns)
  width = max(len(k) for k in METRIC_KEYS) + 2
  rows = [(k, [format_cell(columns[n], k) for n in names]) for k in METRIC_KEYS + ("val_loss",)]
  rows = [(k, cells) for k, cells in rows if any(k in c for c in columns.values())]
  col = max([22] + [len(c) + 2 for _, cells in rows for c in cells] + [len(n) + 2 for n in names])
  lines = ["".ljust(width) + "".join(n.rjust(col) for n in names)]
  lines += [k.ljust(width) + "".join(c.rjust(col) for c in cells) for k, cells in rows]
  return "\n".join(lines)
