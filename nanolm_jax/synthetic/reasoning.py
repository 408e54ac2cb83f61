"""Arithmetic word problems solved step by step, with the answer last (or first, for contrast).

A problem is a short story over small integers with 1..3 operations (+, -, x): a person starts with some items (or
with boxes of items: a product), then gains, loses or multiplies them. Intermediate results never go negative.

  user:      Mia has 3 apples. Mia buys 4 more apples. Then Mia ends up with 2 times as many apples.
             How many apples does Mia have now?
  assistant: Mia starts with 3 apples. Buying 4 more gives 3 + 4 = 7. Then 7 x 2 = 14. The answer is 14.

With ``answer_first`` the assistant writes "The answer is 14." *before* the steps. A model must then produce the
answer with no tokens to compute in, which is the "computational capacity per token" contrast: trained on
answer-first data, a small model does much worse on multi-step problems.

``extract_answer`` reads "The answer is N" / "#### N" (GSM8K) from a reply, for evaluation and RL rewards.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

import ml_collections

Conversation = list[dict[str, Any]]

NAMES = (
    'Mia',
    'Leo',
    'Ava',
    'Sam',
    'Noah',
    'Zoe',
    'Omar',
    'Lena',
    'Ivan',
    'Priya',
    'Kofi',
    'Yuki',
    'Ella',
    'Ben',
    'Rosa',
    'Tariq',
)
ITEMS = (
    'apples',
    'coins',
    'books',
    'marbles',
    'stickers',
    'pencils',
    'cookies',
    'cards',
    'stamps',
    'shells',
    'balloons',
    'toy cars',
)
CONTAINERS = ('boxes', 'bags', 'jars', 'baskets', 'packs')
# Phrasings per operation: {n} the person, {b} the operand, {items}; each with the step's explanation.
_ADD = (
    ('{n} buys {b} more {items}.', 'Buying {b} more gives'),
    ('A friend gives {n} {b} more {items}.', 'Getting {b} more gives'),
    ('{n} finds {b} more {items}.', 'Finding {b} more gives'),
    ('{n} wins {b} {items} in a game.', 'Winning {b} gives'),
)
_SUB = (
    ('{n} gives {b} {items} to a friend.', 'Giving away {b} leaves'),
    ('{n} loses {b} {items}.', 'Losing {b} leaves'),
    ('{n} sells {b} {items}.', 'Selling {b} leaves'),
    ('{n} uses up {b} {items}.', 'Using {b} leaves'),
)
_MUL = (
    ('Then {n} ends up with {b} times as many {items}.', 'Having {b} times as many gives'),
    ('{n} collects {b} times as many {items} as before.', 'Multiplying by {b} gives'),
    ('Every one of the {items} is swapped for {b} new ones.', 'Swapping each for {b} gives'),
)
_QUESTIONS = (
    'How many {items} does {n} have now?',
    'How many {items} does {n} have at the end?',
    'How many {items} are left with {n}?',
    'What is the final number of {items} {n} has?',
)
_OPS = {'+': _ADD, '-': _SUB, 'x': _MUL}
_ANSWER_RE = re.compile(r'(?:the answer is|####)\s*:?\s*\$?\s*(-?[\d,]*\d)', re.IGNORECASE)
_NUMBER_RE = re.compile(r'-?\d[\d,]*')


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """Operands have up to ``digits`` digits; problems have 1..``steps`` operations; factors stay <= ``max_factor``."""

  digits: int = 1
  steps: int = 3
  max_factor: int = 5


def default_reasoning_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'digits': 1,
          'min_steps': 1,
          'max_steps': 3,
          'max_factor': 5,
          'answer_first': False,  # True: "The answer is N." first, then the steps (the contrast run)
      }
  )


def _noun(count: int, plural: str) -> str:
  return plural[:-1] if count == 1 else plural  # every item noun is a regular '-s' plural


def _operand(rng: random.Random, digits: int) -> int:
  return rng.randint(1, 10**digits - 1)


def make_problem(rng: random.Random, difficulty: int | Difficulty) -> tuple[str, int, list[str]]:
  """(question, answer, steps) with exactly ``difficulty.steps`` operations (an int means that many, 1 digit).

  ``steps`` are the solution sentences, the last ending with the equation that gives the answer.
  """
  if isinstance(difficulty, int):
    difficulty = Difficulty(steps=difficulty)
  if not 1 <= difficulty.steps or difficulty.digits < 1:
    raise ValueError(f'need steps >= 1 and digits >= 1, got {difficulty}')
  n, items = rng.choice(NAMES), rng.choice(ITEMS)
  story, steps = [], []
  if rng.random() < 0.3:  # start from a product: boxes of items (one of the operations)
    boxes, per = rng.randint(2, difficulty.max_factor), _operand(rng, difficulty.digits)
    container = rng.choice(CONTAINERS)
    value = boxes * per
    story.append(f'{n} has {boxes} {container} with {per} {items} in each.')
    steps.append(f'{n} has {boxes} {container} of {per}, so {boxes} x {per} = {value}.')
    remaining = difficulty.steps - 1
    have_equation = True
  else:
    value = _operand(rng, difficulty.digits)
    story.append(f'{n} has {value} {_noun(value, items)}.')
    steps.append(f'{n} starts with {value} {_noun(value, items)}.')
    remaining = difficulty.steps
    have_equation = False
  for _ in range(remaining):
    ops = ['+'] if value == 0 else ['+', '-', 'x']  # x 0 would make every later step trivial
    op = rng.choice(ops)
    if op == 'x':
      b = rng.randint(2, difficulty.max_factor)
      new = value * b
    elif op == '-':
      b = rng.randint(1, min(value, 10**difficulty.digits - 1))
      new = value - b
    else:
      b = _operand(rng, difficulty.digits)
      new = value + b
    text, why = rng.choice(_OPS[op])
    why = why.format(b=b)
    story.append(text.format(n=n, b=b, items=_noun(b, items) if op != 'x' else items))
    equation = f'{value} {op} {b} = {new}'
    steps.append(f'Then {why[:1].lower()}{why[1:]} {equation}.' if have_equation else f'{why} {equation}.')
    have_equation = True
    value = new
  question = ' '.join(story) + ' ' + rng.choice(_QUESTIONS).format(n=n, items=items)
  return question, value, steps


def solution(answer: int, steps: list[str], answer_first: bool = False) -> str:
  """The assistant's reply: the steps then 'The answer is N.', or that sentence first."""
  final = f'The answer is {answer}.'
  return ' '.join([final] + steps) if answer_first else ' '.join(steps + [final])


def extract_answer(text: str, strict: bool = True) -> int | None:
  """The integer after the last 'The answer is' / '####' in ``text``; with ``strict=False`` else the last integer."""
  matches = _ANSWER_RE.findall(text)
  if matches:
    return int(matches[-1].replace(',', ''))
  if not strict:
    numbers = _NUMBER_RE.findall(text)
    if numbers:
      return int(numbers[-1].replace(',', ''))
  return None


def default_corpus_config() -> ml_collections.ConfigDict:
  """The ``arithmetic:`` pretraining source (nanolm_jax.data.sources): worked problems as plain documents."""
  cfg = default_reasoning_config()
  del cfg['answer_first']
  cfg.count = 20000
  cfg.seed = 0
  return cfg


def parse_corpus_spec(arg: str) -> ml_collections.ConfigDict:
  """'' (defaults), 'COUNT', or 'count=5000,max_steps=2' -> corpus config; errors name the bad item."""
  cfg = default_corpus_config()
  arg = arg.strip()
  if arg.isdigit():
    cfg.count = int(arg)
    arg = ''
  for item in filter(None, (x.strip() for x in arg.split(','))):
    key, sep, value = (x.strip() for x in item.partition('='))
    if not sep or key not in cfg or not value.isdigit():
      raise ValueError(f'arithmetic:{arg}: expected COUNT or KEY=INT items with KEY in {sorted(cfg)}, got {item!r}.')
    cfg[key] = int(value)
  if cfg.count < 1 or not 1 <= cfg.min_steps <= cfg.max_steps or cfg.digits < 1 or cfg.max_factor < 2:
    raise ValueError(
        f'arithmetic:{arg}: need count >= 1, 1 <= min_steps <= max_steps, digits >= 1, '
        f'max_factor >= 2; got {cfg.to_dict()}.'
    )
  return cfg


_DOC_FORMATS = ('Question: {q}\nAnswer: {a}', 'Problem: {q}\nSolution: {a}', '{q}\n\n{a}', 'Q: {q}\nA: {a}')


def corpus_documents(cfg: ml_collections.ConfigDict, split: str = 'train') -> list[str]:
  """Worked problems as documents: ``cfg.count`` for 'train', ``count // 20`` (at least 1) for 'validation'."""
  if split not in ('train', 'validation'):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  rng = random.Random(f'reasoning/corpus/{cfg.seed}/{split}')
  out = []
  for _ in range(cfg.count if split == 'train' else max(1, cfg.count // 20)):
    q, a, steps = make_problem(rng, Difficulty(cfg.digits, rng.randint(cfg.min_steps, cfg.max_steps), cfg.max_factor))
    out.append(rng.choice(_DOC_FORMATS).format(q=q, a=solution(a, steps)))
  return out


def generate(cfg: ml_collections.ConfigDict | None, seed: int, n: int) -> list[Conversation]:
  """``n`` word problems with worked solutions; steps uniform in [min_steps, max_steps]."""
  cfg = cfg or default_reasoning_config()
  if not 1 <= cfg.min_steps <= cfg.max_steps:
    raise ValueError(f'need 1 <= min_steps <= max_steps, got {cfg.min_steps}, {cfg.max_steps}')
  rng = random.Random(f'reasoning/{seed}')
  out = []
  for _ in range(n):
    steps = rng.randint(cfg.min_steps, cfg.max_steps)
    q, a, s = make_problem(rng, Difficulty(cfg.digits, steps, cfg.max_factor))
    out.append([{'role': 'user', 'content': q}, {'role': 'assistant', 'content': solution(a, s, cfg.answer_first)}])
  return out
