"""A synthetic fact world for teaching a model to answer what it knows and say "I don't know" otherwise.

``make_world(seed, ...)`` invents people (unique made-up names) with five attributes: birthplace (a made-up city),
birth_year, profession, favorite_color, favorite_food. They fall in three disjoint groups:

  known       their biographies are pretraining text (``pretraining_documents``; the ``facts`` source of
              nanolm_jax.data.sources), repeated with varied phrasings so a small model can memorise them; the first
              ``num_qa`` of them (SFT's part) also in question/answer text (``qa_documents``: "mixed training",
              so that questions can reach the other known people's facts);
  unknown     never shown anywhere: the honest answer is "I don't know";
  index_only  only in the search index (nanolm_jax.synthetic.search_data), never in pretraining.

Questions come from several templates per attribute ("Where was Zorla Venn born?"); ``answers_match`` checks a
reply against the truth; ``idk_answer`` / ``is_idk`` write and detect "I don't know" in varied wording.

The probe that asks a model what it knows about these people is nanolm_jax.posttrain.probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import dataclasses
import functools
import random
import re
from typing import Any

import ml_collections

from nanolm_jax.synthetic.fact_templates import (  # re-exported: facts.QUESTIONS etc. are part of its API
    PROFESSIONS,
    COLORS,
    FOODS,
    ONSETS,
    NUCLEI,
    CODAS,
    CITY_SUFFIXES,
    SENTENCES,
    BOTH_BIRTH,
    OPENERS,
    QUESTIONS,
    ANSWERS,
    ATTRIBUTE_WORDS,
    IDK_ANSWERS,
)

Conversation = list[dict[str, Any]]
AnswerFn = Callable[[list[Conversation], int], list[list[str]]]

WORLD_KEYS = ('seed', 'num_known', 'num_unknown', 'num_index_only', 'repeats', 'num_extras', 'num_qa', 'qa_repeats')
DEGENERATE_REPEATS = 3  # a word (or a run of up to 4) this many times in a row: a loop (is_degenerate)
ATTRIBUTES = ('birthplace', 'birth_year', 'profession', 'favorite_color', 'favorite_food')
_IDK_RE = re.compile(
    r"\b(i\s+(do\s*n[o']?t|dont)\s+know|i'?m\s+not\s+sure|not\s+familiar\s+with|i\s+have\s+no\s+idea|"
    r"(no|don'?t\s+have(\s+any)?|do\s+not\s+have(\s+any)?)\s+(reliable\s+)?information|"
    r"can(no|')?t\s+(answer|say)|rather\s+not\s+guess|unknown\s+to\s+me)\b",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Entity:
  name: str
  attributes: dict[str, str | int]

  def __hash__(self) -> int:  # names are unique within a world
    return hash(self.name)


@dataclasses.dataclass(frozen=True)
class World:
  """The people of a fact world, by group; ``values[attr]`` lists every value the attribute takes in the world."""

  seed: int
  known: tuple[Entity, ...]
  unknown: tuple[Entity, ...]
  index_only: tuple[Entity, ...]

  @property
  def entities(self) -> tuple[Entity, ...]:
    return self.known + self.unknown + self.index_only

  @functools.cached_property
  def values(self) -> dict[str, set[str]]:
    return {a: {str(e.attributes[a]) for e in self.entities} for a in ATTRIBUTES}


def default_world_config() -> ml_collections.ConfigDict:
  """World size and pretraining repetition; the same keys are the ``facts:`` pretraining source's arguments."""
  return ml_collections.ConfigDict(
      {
          'seed': 0,
          # Sized so the 4M-parameter CPU default can memorise the known people in its pretraining budget (measured:
          # with 200 people seen ~17 times each it recalled almost none; a probe then finds nothing "known").
          'num_known': 40,
          'num_unknown': 40,
          'num_index_only': 100,
          'repeats': 20,  # pretraining documents per known entity (each a different phrasing/order)
          # One-off people, one biography each (the ``people`` pretraining source): a name seen once cannot be
          # memorised, so the only way to predict its later mentions is to copy it from earlier in the document.
          # Without them the default model never learned to copy a new name (its loss on a repeated new name was as
          # high as on its first mention), and the search tool (copy the name into the query) was out of reach.
          'num_extras': 3000,
          # "Mixed training" (Allen-Zhu & Li, Physics of LMs 3.1): question/answer text about the first ``num_qa``
          # known people in pretraining beside their biographies, ``qa_repeats`` documents each. A model that sees
          # some people's facts asked and answered learns to store everyone's facts in a form a question can reach
          # (measured on the default base model: plain QA about the *other* known people 0.27 -> 0.52; SFT on chat
          # QA then still loses it, see issue 14). The QA people are SFT's part of the known people
          # (sft_eval_entities), never evaluated.
          'num_qa': 20,
          'qa_repeats': 10,
      }
  )


def parse_world_spec(arg: str) -> ml_collections.ConfigDict:
  """The ``facts:ARG`` argument -> world config: '' (defaults), 'SEED', or 'seed=1,num_known=50,repeats=4'."""
  cfg = default_world_config()
  arg = arg.strip()
  if not arg:
    return cfg
  if arg.isdigit():
    cfg.seed = int(arg)
    return cfg
  for item in arg.split(','):
    key, sep, value = (s.strip() for s in item.partition('='))
    if not sep or key not in cfg:
      raise ValueError(f'facts:{arg}: expected KEY=INT items with KEY in {sorted(cfg)}, got {item!r}.')
    try:
      cfg[key] = int(value)
    except ValueError:
      raise ValueError(f'facts:{arg}: {key} must be an integer, got {value!r}.') from None
    if cfg[key] < 0:
      raise ValueError(f'facts:{arg}: {key} must be >= 0.')
  return cfg


def world_spec(cfg: ml_collections.ConfigDict) -> str:
  """The pretraining source entry for a world config (inverse of parse_world_spec)."""
  return 'facts:' + ','.join(f'{k}={int(cfg[k])}' for k in WORLD_KEYS)


def made_up_word(rng: random.Random, syllables: int) -> str:
  """A pronounceable made-up word ('Zorla', 'Marith'): names, cities, and other generators' names."""
  # Only the last syllable has a coda: 'Zorla', 'Venn', 'Marith' rather than consonant pile-ups.
  w = ''.join(rng.choice(ONSETS) + rng.choice(NUCLEI) for _ in range(syllables - 1))
  w = (w + rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)).lower()
  return w[:1].upper() + w[1:]


def _candidate_name(rng: random.Random, names: Iterable[str], taken: set[str]) -> str | None:
  """One drawn 'First Last', or None when it repeats a name, uses a taken word or has a too-short first name."""
  first, last = made_up_word(rng, rng.randint(1, 2)), made_up_word(rng, 2)
  name = f'{first} {last}'
  if name in names or first in taken or last in taken or len(first) < 3:
    return None
  return name


def make_world(seed: int = 0, num_known: int = 200, num_unknown: int = 200, num_index_only: int = 100) -> World:
  """A deterministic world: unique names, attribute values drawn from shared pools (so facts must be bound)."""
  rng = random.Random(f'facts/{seed}')
  total = num_known + num_unknown + num_index_only
  cities: list[str] = []
  while len(cities) < max(12, total // 4):
    c = made_up_word(rng, 1) + rng.choice(CITY_SUFFIXES)
    if c not in cities:
      cities.append(c)
  names: list[str] = []
  seen_words = set(cities) | {w.capitalize() for v in COLORS + FOODS + PROFESSIONS for w in v.split()}
  while len(names) < total:
    # Unique full names, and no name word that is a city, so answers_match cannot be fooled by the question.
    name = _candidate_name(rng, names, seen_words)
    if name:
      names.append(name)
      seen_words.update(name.split())
  entities = []
  for name in names:
    entities.append(
        Entity(
            name,
            {
                'birthplace': rng.choice(cities),
                'birth_year': rng.randint(1820, 1990),
                'profession': rng.choice(PROFESSIONS),
                'favorite_color': rng.choice(COLORS),
                'favorite_food': rng.choice(FOODS),
            },
        )
    )
  return World(
      seed,
      tuple(entities[:num_known]),
      tuple(entities[num_known : num_known + num_unknown]),
      tuple(entities[num_known + num_unknown :]),
  )


@functools.lru_cache(maxsize=16)  # asked for again by the index, the search generator and the outside pool
def make_people(world: World, n: int, tag: str) -> tuple[Entity, ...]:
  """``n`` extra people outside ``world`` (names unique and unlike any world name; attribute values from the world's
  pools), deterministic in (world.seed, tag): e.g. the search generator's training people, so that SFT teaches
  *using* the tool on thousands of names rather than memorising the few it is evaluated on."""
  rng = random.Random(f'facts/people/{tag}/{world.seed}')
  taken = {w for e in world.entities for w in e.name.split()} | {
      w.capitalize() for a in ATTRIBUTES for v in world.values[a] for w in str(v).split()
  }
  pools = {a: sorted(world.values[a], key=str) for a in ATTRIBUTES}
  people, names = [], set()
  while len(people) < n:
    name = _candidate_name(rng, names, taken)
    if not name:
      continue
    names.add(name)
    people.append(
        Entity(name, {a: (rng.randint(1820, 1990) if a == 'birth_year' else rng.choice(pools[a])) for a in ATTRIBUTES})
    )
  return tuple(people)


def world_from_config(cfg: ml_collections.ConfigDict) -> World:
  return make_world(cfg.seed, cfg.num_known, cfg.num_unknown, cfg.num_index_only)


# --- text ------------------------------------------------------------------------------------------------------------


def _article(word: str) -> str:
  return ('an ' if word[:1].lower() in 'aeiou' else 'a ') + word


def _fill(template: str, entity: Entity, attribute: str | None = None) -> str:
  v = str(entity.attributes[attribute]) if attribute else ''
  return template.format(
      name=entity.name,
      v=v,
      V=v[:1].upper() + v[1:],
      a_v=_article(v),
      A_v=_article(v)[:1].upper() + _article(v)[1:],
      what=ATTRIBUTE_WORDS[attribute].format(name=entity.name) if attribute else '',
  )


def biography(entity: Entity, rng: random.Random, split: str = 'train') -> str:
  """One document stating all of ``entity``'s facts, in a random phrasing and order (held-out phrasing for
  'validation')."""
  held_out = split == 'validation'
  sentences = []
  attrs = list(ATTRIBUTES)
  if not held_out and rng.random() < 0.4:  # birthplace and year in one sentence
    a = entity.attributes
    sentences.append(rng.choice(BOTH_BIRTH).format(name=entity.name, city=a['birthplace'], year=a['birth_year']))
    attrs = [x for x in attrs if x not in ('birthplace', 'birth_year')]
  for attr in attrs:
    variants = SENTENCES[attr]
    sentences.append(_fill(variants[-1] if held_out else rng.choice(variants[:-1]), entity, attr))
  first, rest = sentences[0], sentences[1:]
  rng.shuffle(rest)
  opener = '' if held_out else rng.choice(OPENERS).format(name=entity.name)
  return opener + ' '.join([first] + rest)


def pretraining_documents(world: World, repeats: int = 8, split: str = 'train') -> list[str]:
  """Biographies of the known entities only: ``repeats`` varied ones each for 'train', one held-out-phrasing
  one each for 'validation'. Unknown and index-only entities never appear."""
  if split not in ('train', 'validation'):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  rng = random.Random(f'facts/docs/{world.seed}/{split}')
  n = repeats if split == 'train' else 1
  return [biography(e, rng, split) for _ in range(n) for e in world.known]


def qa_documents(world: World, num_qa: int, repeats: int, split: str = 'train') -> list[str]:
  """Question/answer text about the first ``num_qa`` known people (mixed training, see ``default_world_config``):
  ``repeats`` documents each, every one asking about 1-5 of the person's attributes in random order and
  phrasings; 'validation' has none (the biographies' held-out phrasing is the validation text)."""
  if split not in ('train', 'validation'):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  if num_qa > len(world.known):
    raise ValueError(f'num_qa={num_qa} exceeds num_known={len(world.known)}')
  if split == 'validation':
    return []
  rng = random.Random(f'facts/qa_docs/{world.seed}')
  docs = []
  for _ in range(repeats):
    for e in world.known[:num_qa]:
      attrs = rng.sample(ATTRIBUTES, rng.randint(1, len(ATTRIBUTES)))
      docs.append('\n'.join(f'Question: {question(e, a, rng)}\nAnswer: {answer(e, a, rng)}' for a in attrs))
  return docs


def extra_documents(world: World, num_extras: int, split: str = 'train') -> list[str]:
  """One biography of each one-off person (the ``people`` source): ``num_extras`` of them for 'train',
  ``num_extras // 20`` others (at least one) for 'validation'."""
  if split not in ('train', 'validation'):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  if num_extras <= 0:
    return []
  n_val = max(1, num_extras // 20)
  people = extra_people(world, num_extras + n_val)
  rng = random.Random(f'facts/extras/{world.seed}/{split}')
  chosen = people[:num_extras] if split == 'train' else people[num_extras:]
  return [biography(e, rng) for e in chosen]


def extra_people(world: World, n: int) -> tuple[Entity, ...]:
  """The one-off people of the pretraining text (see ``default_world_config``)."""
  return make_people(world, n, 'pretrain/extras')


def question_index(world: World) -> dict[str, tuple[Entity, str]]:
  """Every question text any template can ask about the world's people -> (person, attribute)."""
  return {
      t.format(name=e.name): (e, a) for e in world.entities for a, templates in QUESTIONS.items() for t in templates
  }


def question(entity: Entity, attribute: str, rng: random.Random) -> str:
  return _fill(rng.choice(QUESTIONS[attribute]), entity, attribute)


def answer(entity: Entity, attribute: str, rng: random.Random) -> str:
  """A correct reply (varied wording) to a question about ``attribute``."""
  return _fill(rng.choice(ANSWERS[attribute]), entity, attribute)


def idk_answer(entity: Entity, attribute: str, rng: random.Random) -> str:
  """An "I don't know" reply (varied wording)."""
  return _fill(rng.choice(IDK_ANSWERS), entity, attribute)


def is_idk(text: str) -> bool:
  """Whether ``text`` declines to answer ("I don't know", "I'm not sure", "no information about ...") and is not
  degenerate (``is_degenerate``): greedy decoding that opens with a decline and then loops ("I'm not familiar with
  Hyl Hyl Hyl Hyl") is a broken reply, and counting it as "I don't know" would credit the loop as honesty."""
  return bool(_IDK_RE.search(text)) and not is_degenerate(text)


def is_degenerate(text: str, min_repeats: int = DEGENERATE_REPEATS, max_span: int = 4) -> bool:
  """Whether some run of 1..``max_span`` words occurs ``min_repeats`` times in a row ("Hyl Hyl Hyl", "born in born
  in born in"); words as in ``normalize_words`` (case and punctuation ignored, so "Hyl, hyl. Hyl" loops too).

  No reply the generators write repeats a word even twice in a row, so three copies is a loop, not a style. (Meant
  for fact replies: in arithmetic, "3 + 3 + 3" is three 3s once the punctuation is gone.)
  """
  words = normalize_words(text).split()
  for span in range(1, max_span + 1):
    for i in range(len(words) - span * min_repeats + 1):
      unit = words[i : i + span]
      if all(words[i + k * span : i + (k + 1) * span] == unit for k in range(1, min_repeats)):
        return True
  return False


def normalize_words(text: str) -> str:
  """Lowercase words of `text` joined by single spaces and padded with one, so `" x " in` matches whole words."""
  return ' ' + ' '.join(re.sub(r'[^0-9a-z]+', ' ', text.lower()).split()) + ' '


def answers_match(predicted_text: str, truth: str | int, distractors: Iterable[str | int] = ()) -> bool:
  """Whether ``predicted_text`` states ``truth`` (whole words, case/punctuation-insensitive) without declining and
  without also naming any of ``distractors`` (other values of the attribute: hedging over candidates is wrong)."""
  if is_idk(predicted_text):
    return False
  pred, t = normalize_words(predicted_text), normalize_words(str(truth))
  if t.strip() == '' or t not in pred:
    return False
  return not any(normalize_words(str(d)) in pred for d in distractors if str(d) != str(truth))


# --- SFT conversations ------------------------------------------------------------------------------------------------


def default_facts_config() -> ml_collections.ConfigDict:
  cfg = default_world_config()
  cfg.idk_fraction = 0.3  # share of QA conversations about unknown entities (answered "I don't know")
  cfg.eval_fraction = 0.5  # share of known / unknown entities kept out of SFT QA, for evaluation
  cfg.multi_question_fraction = 0.2  # conversations with a follow-up question about the same person
  return cfg


def sft_eval_entities(world: World, eval_fraction: float) -> dict[str, tuple[Entity, ...]]:
  """Disjoint entity sets: {'sft_known', 'sft_unknown', 'eval_known', 'eval_unknown'} (first part is SFT)."""
  out = {}
  for group, ents in (('known', world.known), ('unknown', world.unknown)):
    cut = len(ents) - int(round(len(ents) * eval_fraction))
    out[f'sft_{group}'], out[f'eval_{group}'] = ents[:cut], ents[cut:]
  return out


def qa_conversation(entity: Entity, rng: random.Random, know: bool, questions: int = 1) -> Conversation:
  """User asks about ``questions`` attributes of ``entity``; the assistant answers (``know``) or says it doesn't."""
  conv: Conversation = []
  for attr in rng.sample(ATTRIBUTES, questions):
    reply = answer(entity, attr, rng) if know else idk_answer(entity, attr, rng)
    conv += [{'role': 'user', 'content': question(entity, attr, rng)}, {'role': 'assistant', 'content': reply}]
  return conv


def generate(cfg: ml_collections.ConfigDict | None, seed: int, n: int) -> list[Conversation]:
  """``n`` oracle-labelled QA conversations: known (SFT part) entities answered, unknown ones "I don't know".

  The labels assume the model memorised every known entity; ``probe`` replaces that assumption with measurement.
  """
  cfg = cfg or default_facts_config()
  world = world_from_config(cfg)
  groups = sft_eval_entities(world, cfg.eval_fraction)
  rng = random.Random(f'facts/qa/{seed}')
  out = []
  for _ in range(n):
    know = not groups['sft_unknown'] or (groups['sft_known'] and rng.random() >= cfg.idk_fraction)
    pool = groups['sft_known'] if know else groups['sft_unknown']
    if not pool:
      raise ValueError('facts.generate: no known or unknown entities outside the eval part.')
    questions = 2 if rng.random() < cfg.multi_question_fraction else 1
    out.append(qa_conversation(rng.choice(pool), rng, bool(know), questions))
  return out
