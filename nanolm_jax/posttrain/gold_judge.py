"""The gold preference signal of the RLHF experiment (issue 15): a programmatic judge standing in for human raters.

The task is not verifiable: "Tell me about <person>" for the people of the fact world (nanolm_jax.synthetic.facts).
There is no one right reply; a rater holding the person's true facts prefers a reply that

  on_topic     names the person (full name 1, one of the two names 0.5);
  facts        states distinct true facts, with diminishing returns (0, 0.5, 0.8, 1 for 0, 1, 2, 3+ facts), halved
               when the reply never says whose facts they are (on_topic 0);
  declined     for someone the model never saw (world.unknown / index_only) honestly says "I don't know" instead
               (facts credit decline_unknown 0.6; about a known person decline_known 0.1: better than a lie or a
               guess, worse than a fact; always declining scores ~0.4 on average, the real thing up to 0.9);
  honesty      states nothing false: each wrong value (a world city / year / profession / color / food that is not
               the person's; any value at all for an unknown person) divides the score by 1 + wrong;
  fluency      is made of real words (the generators' vocabulary, common English, the person's name): squared
               fraction, so garbled tokens ("RormorsRormors Korskosake") cost quickly;
  repetition   does not loop: the lower of the distinct word-trigram ratio (the name as one token, so naming the
               subject in every sentence is no loop) and the distinct-sentence ratio; x 0.25 for a word loop;
  fragments    writes sentences: form loses up to half as the share of sentences under 3 words ("baker.",
               "Zorla Venn's.": a contraction's lone letter is no word) grows;
  complete     ends its final sentence (. ! ?), else x 0.5;
  length       is one to a few sentences: 1 within [min_words, max_words], a ramp below, down to 0 at hard_max_words;
  format       has no leftover tool / chat markup and starts with a capital or a digit.

  score = (w_base + w_topic * on_topic + w_facts * max(facts, decline credit)) * honesty
          * fluency * repetition * fragments * complete * length * format          in [0, 1]

Content is a weighted sum with saturating terms and everything else multiplies it, so no single trick maxes it:
echoing the prompt buys only on_topic (0.2), repeating a true fact adds no fact and costs repetition, hedging over
several candidate values is dishonest, padding leaves the length band, and fluent small talk has no content.

``prompts(cfg, n, split)`` draws the task's prompt conversations (people split train / validation by a stable hash of
the name, so the splits are disjoint); ``generate_pairs`` turns two policy samples per prompt into gold-labelled
PreferencePairs, optionally with Bradley-Terry label noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import hashlib
import math
import random
import re
from typing import Any

import ml_collections

from nanolm_jax.posttrain import preferences
from nanolm_jax.synthetic import fact_templates
from nanolm_jax.synthetic import facts

Conversation = list[dict[str, Any]]
AnswerFn = Callable[[list[Conversation], int], list[list[str]]]

TEMPLATES = (
    "Tell me about {name}.",
    "Who was {name}?",
    "Write a short description of {name}.",
    "Describe {name} in a sentence or two.",
    "What do you know about {name}?",
    "Give me a short biography of {name}.",
)
# Everyday words a fluent reply about a person may use beyond the generators' own (fact_templates); kept short
# on purpose: the judge's vocabulary is what the SFT data speaks, plus the glue of plain English.
COMMON_WORDS = """
a an the and or but so of in on at to for from with by as is was were be been being are am has had have do did does
not no yes i me my you your he she his her him they them their it its this that these those there here who what when
where which why how all any some one two three many much more most very also too only just well known famous life
lived live grew up worked work career person people man woman name called named city town year years born birth
favorite favourite color colour food dish loved liked enjoyed best above others always every sunday cook cooking
eat eating wore wearing job trade profession living made making spent whole whose about information know sure sorry
afraid idea anyone anything nothing can cannot t s m d ll re ve don isn wasn would could should rather guess answer
reliable familiar hello hi thanks thank please course certainly let tell told said say short
biography description profile describe details detail fact facts something someone later early still often
assistant language model small help glad happy engineers project access only text
""".split()
_MARKUP = re.compile(r"<\||\|>|\b(search|check|calc|python)\s*:|```")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_YEAR = re.compile(r"\b(1[6-9]\d\d|20\d\d)\b")


def default_gold_config() -> ml_collections.ConfigDict:
  """The gold task and judge; ``world`` must be the SFT run's fact world (its cfg.sft.world)."""
  return ml_collections.ConfigDict(
      {
          "world": facts.default_world_config(),
          "seed": 0,
          "val_fraction": 0.25,  # people held out for validation prompts (stable hash of the name)
          "unknown_fraction": 0.25,  # prompts about people the model never saw (the honest reply declines)
          # content = base + on_topic + facts credit; base ranks fluent off-topic replies above gibberish
          "weights": {"base": 0.05, "on_topic": 0.2, "facts": 0.75},
          "fact_curve": (0.5, 0.8, 1.0),  # content credit for 1, 2, 3+ distinct true facts
          # facts credit of an honest "I don't know": about a known person better than a lie, worse than a fact;
          # about an unknown one the best reply, yet below knowing, so that declining everything is no optimum
          "decline_known": 0.1,
          "decline_unknown": 0.6,
          "min_words": 6,
          "max_words": 40,
          "hard_max_words": 80,
          "unterminated": 0.5,  # factor when the final sentence is cut off
          "degenerate": 0.25,  # factor for a word loop (facts.is_degenerate)
          "fragments": 0.5,  # form lost when every sentence is a fragment (< 3 words)
          "markup": 0.5,  # factor for leftover tool / chat markup
          "lowercase_start": 0.8,  # factor for a reply starting with a lowercase letter
      }
  )


# --- prompts ---------------------------------------------------------------------------------------------------------


def _in_validation(name: str, val_fraction: float) -> bool:
  digest = hashlib.blake2b(f"gold/{name}".encode("utf-8"), digest_size=8).digest()  # the same in every process
  return int.from_bytes(digest, "big") / 2.0**64 < val_fraction


def split_people(world: facts.World, val_fraction: float, split: str) -> dict[str, list[facts.Entity]]:
  """{'known': [...], 'unknown': [...]} people of ``split`` ('train' | 'validation'); disjoint across splits."""
  if split not in ("train", "validation"):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  want = split == "validation"
  unknown = world.unknown + world.index_only
  return {
      g: [e for e in people if _in_validation(e.name, val_fraction) == want]
      for g, people in (("known", world.known), ("unknown", unknown))
  }


def prompts(
    cfg: ml_collections.ConfigDict, n: int, split: str = "train", seed: int | None = None
) -> list[Conversation]:
  """``n`` prompt conversations ([one user message]) of ``split``, deterministic in (cfg, seed, split).

  Each prompt is about a known person with probability 1 - unknown_fraction, else an unknown one; person and
  template are drawn at random (repeats once n exceeds the distinct prompts).
  """
  seed = cfg.seed if seed is None else seed
  groups = split_people(facts.world_from_config(cfg.world), cfg.val_fraction, split)
  if not groups["known"] and not groups["unknown"]:
    raise ValueError(f"gold prompts: no people in the {split} split")
  rng = random.Random(f"gold/prompts/{seed}/{split}")
  out = []
  for _ in range(n):
    unknown = rng.random() < cfg.unknown_fraction
    pool = groups["unknown"] if (unknown and groups["unknown"]) or not groups["known"] else groups["known"]
    person = rng.choice(pool)
    out.append([{"role": "user", "content": rng.choice(TEMPLATES).format(name=person.name)}])
  return out


# --- the judge -------------------------------------------------------------------------------------------------------


def _template_words() -> set[str]:
  texts = [*fact_templates.BOTH_BIRTH, *fact_templates.OPENERS, *fact_templates.IDK_ANSWERS, *TEMPLATES]
  for table in (fact_templates.SENTENCES, fact_templates.QUESTIONS, fact_templates.ANSWERS):
    texts += [t for ts in table.values() for t in ts]
  texts += list(fact_templates.ATTRIBUTE_WORDS.values())
  return {w for t in texts for w in _WORD.findall(re.sub(r"\{[^}]*\}", " ", t).lower())}


def words(text: str) -> list[str]:
  """Lowercase alphanumeric words (an apostrophe splits: "Zorla's" -> zorla, s)."""
  return _WORD.findall(text.lower())


def _contains(norm_text: str, value: str) -> bool:
  return facts.normalize_words(value) in norm_text


def _ramp(x: float, lo: float, hi: float) -> float:
  return min(1.0, max(0.0, (x - lo) / (hi - lo)))


class GoldJudge:
  """Scores a reply to a ``prompts`` conversation in [0, 1]; see the module docstring for the components."""

  def __init__(self, cfg: ml_collections.ConfigDict, world: facts.World | None = None):
    self.cfg = cfg
    self.world = world or facts.world_from_config(cfg.world)
    self._known = {e.name for e in self.world.known}
    self._people = {e.name: e for e in self.world.entities}
    self._name_re = re.compile("|".join(re.escape(n) for n in sorted(self._people, key=len, reverse=True)))
    self._values = {a: sorted(v, key=len, reverse=True) for a, v in self.world.values.items()}
    pool_words = {w for vs in self._values.values() for v in vs for w in words(v)}
    self._lexicon = _template_words() | set(COMMON_WORDS) | pool_words

  def person(self, prompt_messages: Sequence[dict[str, Any]]) -> facts.Entity:
    """The person the prompt's last user message asks about; ValueError when it names nobody of the world."""
    users = [m for m in prompt_messages if m.get("role") == "user"]
    match = self._name_re.search(users[-1]["content"]) if users else None
    if match is None:
      raise ValueError("gold judge: the prompt names no person of the fact world")
    return self._people[match.group(0)]

  def _claims(self, norm: str, person: facts.Entity) -> tuple[int, int]:
    """(distinct true attributes stated, distinct wrong values stated) in the normalised reply."""
    true_k = wrong = 0
    for attr in facts.ATTRIBUTES:
      truth = str(person.attributes[attr])
      if attr == "birth_year":
        stated = set(_YEAR.findall(norm))
      else:
        stated = {v for v in self._values[attr] if _contains(norm, v)}
      true_k += truth in stated
      wrong += len(stated - {truth})
    return true_k, wrong

  def _content(self, reply: str, person: facts.Entity) -> dict[str, float]:
    cfg = self.cfg
    norm = facts.normalize_words(reply)
    first, last = person.name.split()[0], person.name.split()[-1]
    on_topic = 1.0 if _contains(norm, person.name) else 0.5 if _contains(norm, first) or _contains(norm, last) else 0.0
    known = person.name in self._known
    true_k, wrong = self._claims(norm, person)
    if not known:  # the model cannot know: any stated value is made up, even a lucky one
      wrong, true_k = wrong + true_k, 0
    declined = float(facts.is_idk(reply) and true_k == 0)
    curve = (0.0, *cfg.fact_curve)
    # a bare value ("Haexgrad.") is half a description: whose birthplace?
    fact_credit = curve[min(true_k, len(curve) - 1)] * (0.5 + 0.5 * on_topic)
    if declined:
      fact_credit = max(fact_credit, cfg.decline_known if known else cfg.decline_unknown)
    content = cfg.weights.base + cfg.weights.on_topic * on_topic + cfg.weights.facts * fact_credit
    return {
        "known": float(known),
        "on_topic": on_topic,
        "true_facts": float(true_k),
        "false_facts": float(wrong),
        "declined": declined,
        "facts": fact_credit,
        "content": content,
        "honesty": 1.0 / (1.0 + wrong),
    }

  def _form(self, reply: str, person: facts.Entity) -> dict[str, float]:
    cfg = self.cfg
    ws = words(reply)
    lexicon = self._lexicon | set(words(person.name))
    real = sum(w in lexicon or (w.isdigit() and len(w) <= 4) for w in ws)  # "1888888888" is no number
    fluency = (real / len(ws)) ** 2 if ws else 0.0
    name_ws = words(person.name)
    collapsed, i = [], 0  # the name as one token: naming the subject in every sentence is not a loop
    while i < len(ws):
      if ws[i : i + len(name_ws)] == name_ws:
        collapsed.append("<name>")
        i += len(name_ws)
      else:
        collapsed.append(ws[i])
        i += 1
    trigrams = [tuple(collapsed[j : j + 3]) for j in range(len(collapsed) - 2)]
    text = reply.strip()
    sentences = [tuple(words(s)) for s in _SENTENCE_END.split(text) if words(s)]
    repetition = min(
        len(set(trigrams)) / len(trigrams) if len(trigrams) >= 2 else 1.0,
        len(set(sentences)) / len(sentences) if sentences else 1.0,
    )
    if facts.is_degenerate(reply):
      repetition *= cfg.degenerate
    # a sentence of one or two words ("baker.") is a fragment, not a description
    whole = (
        sum(sum(len(w) > 1 or w in ("a", "i") for w in s) >= 3 for s in sentences) / len(sentences)
        if sentences
        else 0.0
    )
    fragments = 1.0 - cfg.fragments * (1.0 - whole)
    complete = 1.0 if re.search(r"[.!?][\"')\]]*$", text) else cfg.unterminated
    n = len(ws)
    if n < cfg.min_words:
      length = 0.4 + 0.6 * n / cfg.min_words if n else 0.0
    else:
      length = 1.0 - _ramp(n, cfg.max_words, cfg.hard_max_words)
    fmt = cfg.markup if _MARKUP.search(text) else 1.0
    if text[:1].islower():
      fmt *= cfg.lowercase_start
    form = fluency * repetition * fragments * complete * length * fmt
    return {
        "words": float(n),
        "fluency": fluency,
        "repetition": repetition,
        "fragments": fragments,
        "complete": complete,
        "length": length,
        "format": fmt,
        "form": form,
    }

  def components(self, prompt_messages: Sequence[dict[str, Any]], reply: str) -> dict[str, float]:
    """Every component (see the module docstring) and 'score' = content * honesty * form."""
    person = self.person(prompt_messages)
    out = {**self._content(reply, person), **self._form(reply, person)}
    out["score"] = out["content"] * out["honesty"] * out["form"]
    return out

  def score(self, prompt_messages: Sequence[dict[str, Any]], reply: str) -> float:
    """The gold score of ``reply`` in [0, 1]."""
    return self.components(prompt_messages, reply)["score"]


# --- gold-labelled pairs ---------------------------------------------------------------------------------------------


PAIRINGS = ("adjacent", "best_worst")


def _sigmoid(x: float) -> float:
  return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def generate_pairs(
    answer_fn: AnswerFn,
    prompt_convs: Sequence[Conversation],
    judge: GoldJudge,
    *,
    samples: int = 2,
    bt_temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    pairing: str = "adjacent",
) -> tuple[list[preferences.PreferencePair], dict[str, float]]:
  """Samples ``samples`` replies per prompt, pairs them and labels each pair by the gold.

  pairing 'adjacent': (0, 1), (2, 3), ... — pairs of independent samples (Gao et al.'s setup), samples even.
  pairing 'best_worst': one pair a prompt, the gold's best and worst of the samples (UltraFeedback-binarized's
  best-vs-rest, at its clearest): raters asked to compare several replies agree most on the extremes.

  bt_temperature = 0: chosen is the higher gold score. T > 0: the first reply is chosen with Bradley-Terry
  probability σ((g_a − g_b) / T), drawn from a RNG seeded by ``seed`` (label noise). Equal scores are skipped.
  Stats: prompts, pairs, ties (skipped), flips (labels against the gold by the noise), mean_gap (mean |g_a − g_b| of
  kept pairs), mean_gold (over every sample), mean_chosen / mean_rejected (gold of the kept pairs' sides).
  """
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
  if samples < 2 or (samples % 2 and pairing == "adjacent"):
    raise ValueError(f"samples must be >= 2 (and even with adjacent pairing), got {samples}")
  if bt_temperature < 0:
    raise ValueError(f"bt_temperature must be >= 0, got {bt_temperature}")
  rng = random.Random(f"gold/bt/{seed}")
  pairs: list[preferences.PreferencePair] = []
  golds, gaps, chosen_g, rejected_g = [], [], [], []
  ties = flips = 0
  for start in range(0, len(prompt_convs), batch_size):
    chunk = list(prompt_convs[start : start + batch_size])
    replies = answer_fn(chunk, samples)
    if len(replies) != len(chunk) or any(len(r) != samples for r in replies):
      raise ValueError(f"answer_fn returned {[len(r) for r in replies]} replies for {len(chunk)} x {samples}")
    for conv, texts in zip(chunk, replies):
      scores = [judge.score(conv, t) for t in texts]
      golds += scores
      if pairing == "adjacent":
        sides = [(a, a + 1) for a in range(0, samples, 2)]
      else:  # the first best and the first worst, in sampling order (a stable choice among equal scores)
        sides = [(scores.index(max(scores)), scores.index(min(scores)))]
      for a, b in sides:
        (ta, ga), (tb, gb) = (texts[a], scores[a]), (texts[b], scores[b])
        if ga == gb:
          ties += 1
          continue
        if bt_temperature > 0:
          first = rng.random() < _sigmoid((ga - gb) / bt_temperature)
        else:
          first = ga > gb
        flips += first != (ga > gb)
        (tc, gc), (tr, gr) = ((ta, ga), (tb, gb)) if first else ((tb, gb), (ta, ga))
        pairs.append(preferences.PreferencePair(list(conv), tc, tr))
        gaps.append(abs(ga - gb))
        chosen_g.append(gc)
        rejected_g.append(gr)
  mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
  stats = {
      "prompts": len(prompt_convs),
      "pairs": len(pairs),
      "ties": ties,
      "flips": flips,
      "mean_gap": mean(gaps),
      "mean_gold": mean(golds),
      "mean_chosen": mean(chosen_g),
      "mean_rejected": mean(rejected_g),
  }
  return pairs, stats
