"""Tests for nanolm_jax.synthetic.identity: facts from the identity file, variety, determinism, valid format."""

import json
import re

import pytest

from nanolm_jax import chat
from nanolm_jax.synthetic import identity


def _custom(tmp_path, **changes):
  ident = identity.load_identity()
  ident.update(changes)
  path = tmp_path / 'identity.json'
  path.write_text(json.dumps(ident))
  cfg = identity.default_identity_config()
  cfg.path = str(path)
  return cfg


def test_deterministic_valid_and_varied():
  a = identity.generate(None, 0, 400)
  assert a == identity.generate(None, 0, 400) and a != identity.generate(None, 1, 400)
  assert len(a) == 400
  for conv in a:
    chat.validate(conv)
    assert all(not re.search(r'[{}]', m['content']) for m in conv)  # every template slot filled
  users = {m['content'] for c in a for m in c if m['role'] == 'user'}
  assistants = {m['content'] for c in a for m in c if m['role'] == 'assistant'}
  assert len(users) > 150 and len(assistants) > 40
  multi = sum(len(c) > 2 for c in a) / len(a)
  assert 0.2 < multi < 0.4  # multi_turn_fraction 0.3


def test_answers_state_the_identity_file_facts(tmp_path):
  cfg = _custom(tmp_path, name='Quokka', maker='the Q team', project='qproj')
  convs = identity.generate(cfg, 0, 300)
  text = json.dumps(convs)
  assert 'nanolm' not in text  # every fact comes from the file
  for conv in convs:
    for user, reply in zip(conv[::2], conv[1::2]):
      question = user['content'].lower()
      if question.endswith(('your name?', 'your name')):
        assert 'Quokka' in reply['content']
      if 'who made you' in question or 'who created you' in question:
        assert 'Q team' in reply['content']
  limits = identity.load_identity()['limits']
  replies = {m['content'] for c in identity.generate(None, 0, 400) for m in c}
  for topic, answers in limits.items():
    assert replies & set(answers), topic  # every limit is taught


def test_every_topic_answers_and_questions():
  ident = identity.load_identity()
  import random  # pylint: disable=g-import-not-at-top

  rng = random.Random(0)
  for topic in identity.TOPICS:
    assert identity.answer(ident, topic, rng).strip()
    assert len(identity.QUESTIONS[topic]) >= 4


def test_bad_identity_file(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps({'name': 'x'}))
  with pytest.raises(ValueError, match='misses'):
    identity.load_identity(str(path))
