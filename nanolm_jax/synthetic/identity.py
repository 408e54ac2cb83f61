"""Identity conversations: who the assistant is, who made it, what it can and cannot do.

The facts come from an identity file (configs/identity.json: name, maker, project, kind, trained_on, framework,
capabilities, limits{topic: [answers]}); the phrasings live here: every topic has many question paraphrases and
several answer templates, and questions get random surface variation (greetings, casing, punctuation), so the model
learns the facts rather than one string. Conversations are single-turn or chain 2..max_turns topics.

  [{"role": "user", "content": "Hey, who made you?"},
   {"role": "assistant", "content": "I was made by the nanolm_jax engineers."}]

Deterministic: the same identity, config, seed and n give the same list.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Mapping

import ml_collections

Conversation = list[dict[str, Any]]
DEFAULT_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs', 'identity.json'
)
_REQUIRED = ('name', 'maker', 'project', 'kind', 'trained_on', 'framework', 'capabilities', 'limits')

# topic -> (question paraphrases, answer templates). Answer templates use the identity's fields; limit topics take
# their answers from the identity file instead.
QUESTIONS: dict[str, list[str]] = {
    'greeting': ['Hi', 'Hello', 'Hey there', 'Good morning', 'Hi, who am I talking to?', 'Hello! Anyone there?'],
    'name': [
        'What is your name?',
        "What's your name?",
        'Who are you?',
        'What should I call you?',
        'Do you have a name?',
        'Tell me your name.',
        'What are you called?',
        'Introduce yourself.',
        'Who am I talking to?',
        'What do people call you?',
    ],
    'maker': [
        'Who made you?',
        'Who created you?',
        'Who built you?',
        'Who trained you?',
        'Who developed you?',
        'Who are your developers?',
        'Which company made you?',
        'Where do you come from?',
        'Who is behind you?',
        'Who designed you?',
    ],
    'other_model': [
        'Are you ChatGPT?',
        'Are you made by OpenAI?',
        'Are you Claude?',
        'Are you Gemini from Google?',
        'Are you Llama?',
        'Is this GPT-4?',
        'Are you Siri?',
    ],
    'what': [
        'What are you?',
        'Are you a human?',
        'Are you a person or a bot?',
        'Are you an AI?',
        'What kind of assistant are you?',
        'Am I talking to a real person?',
        'Are you a robot?',
    ],
    'training': [
        'How were you trained?',
        'What were you trained on?',
        'How were you made?',
        'What data did you learn from?',
        'What software were you built with?',
    ],
    'capabilities': [
        'What can you do?',
        'How can you help me?',
        'What are you good at?',
        'What can I ask you?',
        'What are your skills?',
    ],
    'internet': [
        'Can you browse the internet?',
        'Do you have internet access?',
        'Can you look something up online?',
        "Can you check today's news?",
        'Can you google something for me?',
        'Are you connected to the web?',
    ],
    'images': [
        'Can you see images?',
        'Can you look at this picture?',
        'If I send you a photo, can you describe it?',
        'Can you read screenshots?',
        'Can you see me?',
    ],
    'knowledge': [
        'What do you know about recent events?',
        'How up to date is your knowledge?',
        'Do you know everything?',
        'What is your knowledge cutoff?',
        'Do you know what happened yesterday?',
    ],
    'mistakes': [
        'Can you make mistakes?',
        'Are you always right?',
        'Should I trust your answers?',
        'How accurate are you?',
        'Are you ever wrong?',
    ],
    'memory': [
        'Do you remember our last conversation?',
        'Will you remember this tomorrow?',
        'Do you remember me?',
        'Can you recall what I told you last week?',
    ],
    'actions': [
        'Can you send an email for me?',
        'Can you order a pizza for me?',
        'Can you set an alarm for 7am?',
        'Can you book a flight for me?',
    ],
    'feelings': ['Do you have feelings?', 'Are you conscious?', 'Are you happy?', 'Do you get tired?'],
}
ANSWERS: dict[str, list[str]] = {
    'greeting': [
        "Hello! I'm {name}, {kind} made by {maker}. How can I help you today?",
        "Hi! I'm {name}. What can I do for you?",
        "Hey! I'm {name}, an AI assistant. How can I help?",
    ],
    'name': [
        "I'm {name}, {kind} made by {maker}.",
        'My name is {name}. I am {kind} created by {maker}.',
        "I'm {name}! I'm {kind} built by {maker}.",
        "You can call me {name}. I'm {kind} trained by {maker}.",
        'I am {name}, an AI assistant from the {project} project.',
    ],
    'maker': [
        'I was made by {maker}.',
        '{Maker} built me as part of the {project} project.',
        'I was created and trained by {maker}, using {framework}.',
        "{Maker} trained me. I'm {kind} from the {project} project.",
        'I come from the {project} project: {maker} made me.',
    ],
    'other_model': [
        "No, I'm {name}, {kind} made by {maker}.",
        "No. I'm {name}, built by {maker} as part of the {project} project. I'm a different model.",
        "No, I'm not. My name is {name} and I was trained by {maker}.",
    ],
    'what': [
        "I'm {name}, {kind}: an AI, not a human.",
        "I'm an AI assistant called {name}, not a person.",
        "I'm not a human. I'm {name}, {kind} made by {maker}.",
    ],
    'training': [
        'I was trained with {framework} on {trained_on}.',
        '{Maker} trained me using {framework}, first on {trained_on}.',
        'I learned from {trained_on}. My training code is written in {framework}.',
    ],
    'capabilities': [
        'I can {capabilities}. I am small, though, so I make mistakes.',
        'I can help you {capabilities}. Please double-check important answers.',
        'Things I can do: {capabilities}.',
    ],
}
# Paraphrases of the name / maker questions that ``generate`` never asks (nor system_prompts): the chat evaluation's
# held-out identity questions, so that identity accuracy measures the behaviour rather than memorised wording.
EVAL_QUESTIONS: dict[str, tuple[str, ...]] = {
    'name': (
        'May I ask your name?',
        'How should I address you?',
        'What name do you go by?',
        'Could you tell me who you are?',
        'Please state your name.',
        'What do I call you?',
        'Who is this?',
        'Can you introduce yourself?',
        'Who exactly are you?',
        'What is your name, assistant?',
    ),
    'maker': (
        'Which team created you?',
        'Who is responsible for building you?',
        'What organization made you?',
        'Who programmed you?',
        'Who are your creators?',
        'Who is your maker?',
        'Who put you together?',
        'Whose assistant are you?',
        'Which group developed you?',
        'Who was it that trained you?',
    ),
}
LIMIT_TOPICS = ('internet', 'images', 'knowledge', 'mistakes', 'memory', 'actions', 'feelings')
TOPICS = tuple(QUESTIONS)
_ANSWER_OPENERS = ('Good question! ', 'Sure. ', 'Happy to tell you. ', 'Of course. ')
_ANSWER_CLOSERS = (
    ' Is there anything else you would like to know?',
    ' How can I help you today?',
    ' What would you like to do next?',
)
_PREFIXES = ('', '', '', 'Hi! ', 'Hey, ', 'Hello. ', 'Quick question: ', 'I was wondering, ', 'Tell me, ')


def default_identity_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'path': '',  # identity JSON; '' = configs/identity.json
          'multi_turn_fraction': 0.3,  # share of conversations with 2..max_turns topics
          'max_turns': 3,
      }
  )


def load_identity(path: str = '') -> dict[str, Any]:
  """The identity file (``path`` or configs/identity.json) with its fields checked."""
  path = path or DEFAULT_PATH
  with open(path, encoding='utf-8') as f:
    ident = json.load(f)
  missing = [k for k in _REQUIRED if k not in ident]
  if missing:
    raise ValueError(f'{path}: identity misses {missing}.')
  unknown = set(ident['limits']) - set(LIMIT_TOPICS)
  if unknown or not all(ident['limits'].get(t) for t in LIMIT_TOPICS):
    raise ValueError(f'{path}: limits must give answers for each of {LIMIT_TOPICS} (unknown: {sorted(unknown)}).')
  return ident


def _fields(ident: Mapping[str, Any]) -> dict[str, str]:
  caps = list(ident['capabilities'])
  caps_text = caps[0] if len(caps) == 1 else ', '.join(caps[:-1]) + ' and ' + caps[-1]
  maker = ident['maker']
  return {
      **{k: ident[k] for k in ('name', 'maker', 'project', 'kind', 'trained_on', 'framework')},
      'Maker': maker[:1].upper() + maker[1:],
      'capabilities': caps_text,
  }


def vary_question(rng: random.Random, question: str) -> str:
  """Surface variation a user might type: a greeting prefix, lower case, a dropped final '?'."""
  prefix = rng.choice(_PREFIXES)
  if prefix and prefix[-2] != '.' and prefix[-2] != '!':
    question = question[:1].lower() + question[1:]
  q = prefix + question
  r = rng.random()
  if r < 0.15:
    q = q.lower()
  elif r < 0.25 and q.endswith('?'):
    q = q[:-1]
  return q


def answer(ident: Mapping[str, Any], topic: str, rng: random.Random) -> str:
  """One answer about ``topic`` (an element of TOPICS) from the identity's facts."""
  if topic in LIMIT_TOPICS:
    text = rng.choice(ident['limits'][topic])
  else:
    text = rng.choice(ANSWERS[topic]).format(**_fields(ident))
  if topic != 'greeting':  # answer-level variation on top of the templates
    r = rng.random()
    if r < 0.15:
      text = rng.choice(_ANSWER_OPENERS) + text
    elif r < 0.3:
      text += rng.choice(_ANSWER_CLOSERS)
  return text


def generate(cfg: ml_collections.ConfigDict | None, seed: int, n: int) -> list[Conversation]:
  """``n`` identity conversations; single-turn, or chains of distinct topics (``multi_turn_fraction``)."""
  cfg = cfg or default_identity_config()
  ident = load_identity(cfg.path)
  rng = random.Random(f'identity/{seed}')
  convs = []
  for _ in range(n):
    turns = 1
    if cfg.max_turns > 1 and rng.random() < cfg.multi_turn_fraction:
      turns = rng.randint(2, cfg.max_turns)
    topics = rng.sample([t for t in TOPICS if t != 'greeting'], turns)
    if turns > 1 and rng.random() < 0.3:
      topics[0] = 'greeting'  # conversations often open with a hello
    conv: Conversation = []
    for topic in topics:
      conv.append({'role': 'user', 'content': vary_question(rng, rng.choice(QUESTIONS[topic]))})
      conv.append({'role': 'assistant', 'content': answer(ident, topic, rng)})
    convs.append(conv)
  return convs
