"""Tests for nanolm_jax.synthetic.system_prompts: every reply follows the system message, checked independently."""

import random
import re

import pytest

from nanolm_jax import chat
from nanolm_jax.synthetic import identity
from nanolm_jax.synthetic import system_prompts as sp

# Independent checks of each rule (not the module's own Rule.check).
INDEPENDENT = {
    'one_word': lambda t, p: ' ' not in t.strip() and t.strip() != '',
    'uppercase': lambda t, p: not any(c.islower() for c in t),
    'lowercase': lambda t, p: not any(c.isupper() for c in t),
    'pirate': lambda t, p: t[:3] == 'Arr',
    'prefix': lambda t, p: t[: len(p)] == p,
    'suffix': lambda t, p: t[-len(p) :] == p,
    'number_only': lambda t, p: t.strip().replace('-', '', 1).isdigit(),
}


@pytest.mark.parametrize('name', sorted(sp.RULES))
def test_rule_conversations_follow_the_rule(name):
  rule = sp.RULES[name]
  rng = random.Random(name)
  for _ in range(30):
    conv, param = sp.rule_conversation(rng, rule, 3)
    chat.validate(conv)
    assert conv[0]['role'] == 'system' and (param == '' or param in conv[0]['content'])
    for reply in (m['content'] for m in conv if m['role'] == 'assistant'):
      assert INDEPENDENT[name](reply, param), (name, reply)
      assert rule.check(reply, param)


def test_rule_checks_reject_plain_answers():
  qa = sp.TRIVIA[0]
  for name in ('one_word', 'uppercase', 'lowercase', 'pirate'):
    assert not sp.RULES[name].check(qa.full, '')
  assert not sp.RULES['prefix'].check(qa.full, 'Certainly!')
  assert not sp.RULES['suffix'].check(qa.full, 'Over.')


def test_generate_mix_personas_and_identity():
  convs = sp.generate(None, 0, 600)
  assert convs == sp.generate(None, 0, 600)
  ident = identity.load_identity()
  kinds = {'identity': 0, 'persona': 0, 'rule': 0}
  for conv in convs:
    chat.validate(conv)
    system = conv[0]['content']
    assert conv[0]['role'] == 'system'
    named = re.match(r'(?:Your name is|You are) ([A-Z][a-z]+)[.,]', system)  # a listed or a generated name
    persona = [named.group(1)] if named and named.group(1) != ident['name'] else []
    if ident['name'] in system:
      kinds['identity'] += 1
    elif persona:
      kinds['persona'] += 1
      for user, reply in zip(conv[1::2], conv[2::2]):
        if 'your name' in user['content'].lower() or 'call you' in user['content'].lower():
          assert persona[0] in reply['content'] and ident['name'] not in reply['content']
    else:
      kinds['rule'] += 1
  assert 0.12 < kinds['identity'] / 600 < 0.28 and 0.22 < kinds['persona'] / 600 < 0.38
  # Most persona names are made up (copying, not memorising), none is a held-out evaluation persona.
  names = [re.match(r'(?:Your name is|You are) ([A-Z][a-z]+)', c[0]['content']) for c in convs]
  names = {m.group(1) for m in names if m} - {ident['name']}
  assert len(names - set(sp.PERSONA_NAMES)) > 50 and not names & set(sp.EVAL_PERSONA_NAMES)
