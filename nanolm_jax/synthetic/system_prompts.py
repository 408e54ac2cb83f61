"""System-prompt conversations: the system message sets facts, a persona or a rule, and the assistant follows it.

Three kinds, mixed by config:

* identity   the identity facts (configs/identity.json) stated in a system message, then an identity question;
* persona    "Your name is Zed. You were made by Acme Labs." -> the assistant uses that name / maker, and answers
             ordinary questions normally;
* rule       a rule from RULES ("Answer in one word.", "Always answer in uppercase.", "You are a pirate: always
             start with 'Arr'.", ...) applied to every answer of a 1..max_turns conversation over a bank of simple
             questions with known short and full answers.

Answers are produced by rule, so they are verifiable: ``RULES[name].check(text, param)`` says whether a reply follows
the rule (the RL / eval stages can reuse it). Deterministic by seed.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable

import ml_collections

from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import identity as identity_lib

Conversation = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class QA:
  """A question with a one-word answer and a full-sentence answer."""

  question: str
  short: str
  full: str
  numeric: bool = False


TRIVIA = (
    QA('What color is the sky on a clear day?', 'Blue', 'On a clear day the sky is blue.'),
    QA('What is the opposite of hot?', 'Cold', 'The opposite of hot is cold.'),
    QA('How many legs does a spider have?', 'Eight', 'A spider has eight legs.'),
    QA('What do bees make?', 'Honey', 'Bees make honey.'),
    QA('What is frozen water called?', 'Ice', 'Frozen water is called ice.'),
    QA('Which animal says moo?', 'Cow', 'A cow says moo.'),
    QA('What is the capital of France?', 'Paris', 'The capital of France is Paris.'),
    QA('How many days are in a week?', 'Seven', 'There are seven days in a week.'),
    QA('What planet do we live on?', 'Earth', 'We live on the planet Earth.'),
    QA('What color are most leaves in summer?', 'Green', 'In summer most leaves are green.'),
    QA('What do you call a baby dog?', 'Puppy', 'A baby dog is called a puppy.'),
    QA('What gas do people need to breathe?', 'Oxygen', 'People need oxygen to breathe.'),
    QA('Which season comes after winter?', 'Spring', 'Spring comes after winter.'),
    QA('What is the largest ocean on Earth?', 'Pacific', 'The Pacific is the largest ocean on Earth.'),
    QA('How many hours are in a day?', '24', 'There are 24 hours in a day.'),
    QA('What shape has three sides?', 'Triangle', 'A shape with three sides is a triangle.'),
    QA('What color is fresh snow?', 'White', 'Fresh snow is white.'),
    QA('Which is bigger, an elephant or a mouse?', 'Elephant', 'An elephant is bigger than a mouse.'),
    QA(
        'What is the name of the star at the center of our solar system?',
        'Sun',
        'The star at the center of our solar system is the Sun.',
    ),
    QA('What instrument has black and white keys?', 'Piano', 'A piano has black and white keys.'),
    QA('What month comes after June?', 'July', 'July comes after June.'),
    QA('What is the opposite of up?', 'Down', 'The opposite of up is down.'),
    QA('What is H2O commonly called?', 'Water', 'H2O is commonly called water.'),
    QA('How many sides does a square have?', 'Four', 'A square has four sides.'),
    QA('What do you use to write on a blackboard?', 'Chalk', 'You write on a blackboard with chalk.'),
    QA('What do cows drink?', 'Water', 'Cows drink water, not milk.'),
    QA('Which fruit is yellow and curved?', 'Banana', 'A banana is yellow and curved.'),
    QA('What is the first day of the weekend?', 'Saturday', 'The weekend starts on Saturday.'),
    QA('What do caterpillars turn into?', 'Butterflies', 'Caterpillars turn into butterflies or moths.'),
    QA(
        'Which programming language is named after a snake?',
        'Python',
        'Python is the programming language named after a snake, though it was really named after Monty Python.',
    ),
)
_NUMBER_WORDS = ('plus', 'added to')


def arithmetic_qa(rng: random.Random) -> QA:
  a, b = rng.randint(1, 20), rng.randint(1, 20)
  if rng.random() < 0.5:
    return QA(f'What is {a} {rng.choice(_NUMBER_WORDS)} {b}?', str(a + b), f'{a} plus {b} is {a + b}.', True)
  a, b = max(a, b), min(a, b)
  return QA(f'What is {a} minus {b}?', str(a - b), f'{a} minus {b} is {a - b}.', True)


def _has_letters(text: str) -> bool:
  return any(c.isalpha() for c in text)


@dataclasses.dataclass(frozen=True)
class Rule:
  """A system-prompt rule: how to phrase it, how to apply it to an answer, how to check a reply follows it."""

  name: str
  prompts: tuple[str, ...]  # may contain {param}
  params: tuple[str, ...]  # choices for {param}; ('',) when the rule has none
  apply: Callable[[QA, str, random.Random], str]
  check: Callable[[str, str], bool]  # (reply, param) -> follows the rule
  numeric_only: bool = False  # only for questions with numeric answers


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            'one_word',
            (
                'Answer in one word.',
                'Reply with a single word only.',
                'Only ever respond with one word.',
                'Keep every answer to exactly one word.',
            ),
            ('',),
            lambda qa, p, rng: qa.short,
            lambda t, p: len(t.split()) == 1,
        ),
        Rule(
            'uppercase',
            ('Always answer in uppercase.', 'Write every reply in capital letters.', 'RESPOND ONLY IN UPPERCASE.'),
            ('',),
            lambda qa, p, rng: qa.full.upper(),
            lambda t, p: t == t.upper() and _has_letters(t),
        ),
        Rule(
            'lowercase',
            ('Write only in lowercase letters.', 'never use capital letters in your replies.', 'Use lowercase only.'),
            ('',),
            lambda qa, p, rng: qa.full.lower(),
            lambda t, p: t == t.lower() and _has_letters(t),
        ),
        Rule(
            'pirate',
            (
                "You are a pirate: always start with 'Arr'.",
                "Talk like a pirate and begin every answer with 'Arr!'",
                "You're a pirate captain. Every reply starts with 'Arr'.",
            ),
            ('',),
            lambda qa, p, rng: rng.choice(('Arr! ', 'Arr, matey! ', 'Arr. ')) + qa.full,
            lambda t, p: t.startswith('Arr'),
        ),
        Rule(
            'prefix',
            ("Begin every answer with '{param}'", 'Start each reply with the words "{param}"'),
            ('Certainly!', 'Sure thing!', 'Okay.', 'Good question!', 'Here you go:'),
            lambda qa, p, rng: f'{p} {qa.full}',
            lambda t, p: t.startswith(p),
        ),
        Rule(
            'suffix',
            ("End every answer with '{param}'", 'Finish each reply with "{param}"'),
            ('Over.', 'Hope that helps!', 'Cheers!', 'Anything else?'),
            lambda qa, p, rng: f'{qa.full} {p}',
            lambda t, p: t.endswith(p),
        ),
        Rule(
            'number_only',
            ('Reply with only the number.', 'Answer with digits only, no words.'),
            ('',),
            lambda qa, p, rng: qa.short,
            lambda t, p: t.strip().lstrip('-').isdigit(),
            numeric_only=True,
        ),
    )
}

PERSONA_NAMES = (
    'Zed',
    'Mira',
    'Orbit',
    'Pip',
    'Atlas',
    'Nova',
    'Juniper',
    'Quill',
    'Echo',
    'Sage',
    'Bolt',
    'Luna',
    'Tessa',
    'Rho',
    'Kiwi',
    'Marlowe',
)
PERSONA_MAKERS = (
    'Acme Labs',
    'the Lighthouse team',
    'Blue Harbor AI',
    'a startup called Fernwood',
    'the Open Robotics Club',
    'Northwind Research',
)
# Held out of the SFT data: the chat evaluation's personas (names and makers ``generate`` never uses, a prompt
# wording it never writes), so that adopting a persona is measured on one the model has not memorised.
EVAL_PERSONA_NAMES = ('Ember', 'Finch', 'Cobalt', 'Wren', 'Tavi', 'Orla', 'Basil', 'Indigo', 'Rook', 'Sol')
EVAL_PERSONA_MAKERS = ('Harbor Light Systems', 'the Maple Street lab', 'Copperfield AI', 'a team called Driftwood')
EVAL_PERSONA_PROMPT = 'Act as {name}, the assistant that {maker} made.'
_PERSONA_PROMPTS = (
    'Your name is {name}. You were made by {maker}.',
    'You are {name}, an assistant built by {maker}.',
    'You are {name}. {Maker} created you. Be helpful and brief.',
)
_PERSONA_ANSWERS = {
    'name': ('My name is {name}.', "I'm {name}.", "I'm {name}, your assistant."),
    'maker': ('I was made by {maker}.', '{Maker} built me.', "I'm {name}, and {maker} created me."),
}
_IDENTITY_PROMPTS = (
    'You are {name}, {kind} made by {maker}.',
    'Your name is {name}. You were created by {maker} as part of the {project} project.',
    'You are {name}, a helpful assistant trained by {maker}. Be concise.',
)


def default_system_prompts_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'identity_path': '',  # '' = configs/identity.json
          'identity_fraction': 0.2,  # system states the real identity
          'persona_fraction': 0.3,  # system sets another name / maker (70 % generated names); the rest are rules
          'max_turns': 3,
      }
  )


def persona_name(rng: random.Random) -> str:
  """A made-up one-word assistant name ('Velmar'), never one of EVAL_PERSONA_NAMES: with thousands of them in the
  data the model must copy the name from the system prompt (measured: with the 16 PERSONA_NAMES alone, a held-out
  persona was never taken up, persona_accuracy 0.00)."""
  while True:
    name = facts.made_up_word(rng, 2)
    if len(name) >= 3 and name not in EVAL_PERSONA_NAMES:
      return name


_MAKER_FORMS = ('{w} Labs', 'the {w} team', '{w} AI', 'a company called {w}', '{w} Research')


def persona_maker(rng: random.Random) -> str:
  """A made-up maker ('Skoprith Labs', 'the Mewuna team'), for the same reason as persona_name."""
  return rng.choice(_MAKER_FORMS).format(w=persona_name(rng))


def _cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def _question(rng: random.Random, numeric_only: bool = False) -> QA:
  return arithmetic_qa(rng) if numeric_only or rng.random() < 0.3 else rng.choice(TRIVIA)


def _identity_conversation(ident: dict[str, Any], rng: random.Random) -> Conversation:
  fields = identity_lib._fields(ident)  # pylint: disable=protected-access
  conv = [{'role': 'system', 'content': rng.choice(_IDENTITY_PROMPTS).format(**fields)}]
  topic = rng.choice(('name', 'maker', 'what', 'other_model', 'training') + identity_lib.LIMIT_TOPICS)
  conv.append({'role': 'user', 'content': identity_lib.vary_question(rng, rng.choice(identity_lib.QUESTIONS[topic]))})
  conv.append({'role': 'assistant', 'content': identity_lib.answer(ident, topic, rng)})
  return conv


def _persona_conversation(rng: random.Random, max_turns: int) -> Conversation:
  name = rng.choice(PERSONA_NAMES) if rng.random() < 0.3 else persona_name(rng)
  maker = rng.choice(PERSONA_MAKERS) if rng.random() < 0.3 else persona_maker(rng)
  fields = {'name': name, 'maker': maker}
  fields['Maker'] = _cap(fields['maker'])
  conv = [{'role': 'system', 'content': rng.choice(_PERSONA_PROMPTS).format(**fields)}]
  topics = ['name' if rng.random() < 0.6 else 'maker']
  topics += [rng.choice(('name', 'maker', 'qa')) for _ in range(rng.randint(1, max_turns) - 1)]
  rng.shuffle(topics)
  for topic in topics:
    if topic == 'qa':
      qa = _question(rng)
      conv += [{'role': 'user', 'content': qa.question}, {'role': 'assistant', 'content': qa.full}]
    else:
      q = identity_lib.vary_question(rng, rng.choice(identity_lib.QUESTIONS[topic]))
      conv += [
          {'role': 'user', 'content': q},
          {'role': 'assistant', 'content': rng.choice(_PERSONA_ANSWERS[topic]).format(**fields)},
      ]
  return conv


def rule_conversation(rng: random.Random, rule: Rule, turns: int) -> tuple[Conversation, str]:
  """A ``turns``-turn conversation following ``rule``; returns it with the rule's parameter."""
  param = rng.choice(rule.params)
  conv = [{'role': 'system', 'content': rng.choice(rule.prompts).format(param=param)}]
  for _ in range(turns):
    qa = _question(rng, rule.numeric_only)
    conv += [{'role': 'user', 'content': qa.question}, {'role': 'assistant', 'content': rule.apply(qa, param, rng)}]
  return conv, param


def generate(cfg: ml_collections.ConfigDict | None, seed: int, n: int) -> list[Conversation]:
  """``n`` conversations that start with a system message the assistant's replies follow."""
  cfg = cfg or default_system_prompts_config()
  ident = identity_lib.load_identity(cfg.identity_path)
  rng = random.Random(f'system_prompts/{seed}')
  rules = sorted(RULES)
  out = []
  for _ in range(n):
    r = rng.random()
    if r < cfg.identity_fraction:
      out.append(_identity_conversation(ident, rng))
    elif r < cfg.identity_fraction + cfg.persona_fraction:
      out.append(_persona_conversation(rng, cfg.max_turns))
    else:
      out.append(rule_conversation(rng, RULES[rng.choice(rules)], rng.randint(1, cfg.max_turns))[0])
  return out
