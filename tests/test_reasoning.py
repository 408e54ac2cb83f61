"""Tests for nanolm_jax.synthetic.reasoning: problems checked by re-doing the arithmetic, the answer extractor."""

import random
import re

import pytest

from nanolm_jax import chat
from nanolm_jax.synthetic import reasoning

EQUATION = re.compile(r'(\d+) ([+\-x]) (\d+) = (\d+)')


def _check(question, answer, steps, n_ops, digits):
  equations = EQUATION.findall(' '.join(steps))
  assert len(equations) == n_ops
  value = None
  for a, op, b, c in equations:
    a, b, c = int(a), int(b), int(c)
    assert c == {'+': a + b, '-': a - b, 'x': a * b}[op] >= 0
    if value is not None:
      assert a == value  # each step starts from the previous result
    value = c
    assert re.search(rf'\b{b}\b', question)  # every operand comes from the story
  assert value == answer
  numbers = [int(x) for x in re.findall(r'\d+', question)]
  assert max(numbers) < 10**digits


@pytest.mark.parametrize('digits', [1, 2])
@pytest.mark.parametrize('n_ops', [1, 2, 3])
def test_problems_are_correct(digits, n_ops):
  rng = random.Random(f'{digits}/{n_ops}')
  saw_big = False
  for _ in range(200):
    q, a, steps = reasoning.make_problem(rng, reasoning.Difficulty(digits=digits, steps=n_ops))
    _check(q, a, steps, n_ops, digits)
    saw_big |= any(int(x) >= 10 for x in re.findall(r'\d+', q))
  assert saw_big == (digits == 2)


def test_int_difficulty_and_solution_orders():
  q, a, steps = reasoning.make_problem(random.Random(0), 2)
  assert len(EQUATION.findall(' '.join(steps))) == 2
  last = reasoning.solution(a, steps)
  first = reasoning.solution(a, steps, answer_first=True)
  assert last.endswith(f'The answer is {a}.') and first.startswith(f'The answer is {a}.')
  assert reasoning.extract_answer(last) == reasoning.extract_answer(first) == a


def test_generate_answer_first_pairs_the_same_problems():
  cfg = reasoning.default_reasoning_config()
  last = reasoning.generate(cfg, 3, 100)
  cfg.answer_first = True
  first = reasoning.generate(cfg, 3, 100)
  assert [c[0] for c in last] == [c[0] for c in first]  # the contrast: same questions, answer moved
  for l, f in zip(last, first):
    chat.validate(l)
    a = reasoning.extract_answer(l[1]['content'])
    assert f[1]['content'].startswith(f'The answer is {a}.')
  ops = [len(EQUATION.findall(c[1]['content'])) for c in last]
  assert set(ops) == {1, 2, 3}
  assert last == reasoning.generate(reasoning.default_reasoning_config(), 3, 100)


@pytest.mark.parametrize(
    'text, strict, expected',
    [
        ('so 3 + 4 = 7. Then 7 x 2 = 14. The answer is 14.', True, 14),
        ('The answer is 14. Then again, the answer is 15', True, 15),
        ('blah\n#### 1,234', True, 1234),
        ('the answer is: -3', True, -3),
        ('The answer is $42.', True, 42),
        ('I think it is 12 or 13', True, None),
        ('I think it is 12 or 13', False, 13),
        ('no numbers', False, None),
    ],
)
def test_extract_answer(text, strict, expected):
  assert reasoning.extract_answer(text, strict=strict) == expected


def test_corpus_documents_are_worked_problems_with_their_own_validation():
  cfg = reasoning.parse_corpus_spec('count=60,max_steps=2')
  train, val = reasoning.corpus_documents(cfg, 'train'), reasoning.corpus_documents(cfg, 'validation')
  assert len(train) == 60 and len(val) == 3 and not set(train) & set(val)
  assert train == reasoning.corpus_documents(cfg, 'train')
  ops_seen = set()
  for doc in train:
    question, answer_text = re.split(r'\n(?:Answer|Solution|A): |\n\n', doc)
    question = question.split(': ', 1)[-1]
    n_ops = len(EQUATION.findall(answer_text))
    ops_seen.add(n_ops)
    _check(question, reasoning.extract_answer(answer_text), [answer_text], n_ops, 1)
    assert answer_text.endswith(f'The answer is {reasoning.extract_answer(answer_text)}.')
  assert ops_seen == {1, 2}  # max_steps=2: both lengths occur, nothing longer or empty


@pytest.mark.parametrize(
    'arg,message',
    [('count=0', 'count >= 1'), ('max_steps=0', 'min_steps'), ('colour=2', 'KEY=INT'), ('count=x', 'KEY=INT')],
)
def test_corpus_spec_errors(arg, message):
  with pytest.raises(ValueError, match=message):
    reasoning.parse_corpus_spec(arg)
  from nanolm_jax.data import sources

  with pytest.raises(ValueError, match=message):
    sources.parse_sources(f'stdlib;arithmetic:{arg}')
