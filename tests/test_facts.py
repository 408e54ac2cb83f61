"""Tests for nanolm_jax.synthetic.facts: the world, pretraining text, matching, "I don't know", and the probe."""

import random

import pytest

from nanolm_jax import chat
from nanolm_jax.data import sources
from nanolm_jax.posttrain import probe
from nanolm_jax.synthetic import facts


@pytest.fixture(scope='module')
def world():
  return facts.make_world(seed=3, num_known=40, num_unknown=30, num_index_only=20)


def test_world_is_deterministic_with_unique_names_and_disjoint_groups(world):
  assert world == facts.make_world(seed=3, num_known=40, num_unknown=30, num_index_only=20)
  assert world.known != facts.make_world(seed=4, num_known=40, num_unknown=30, num_index_only=20).known
  names = [e.name for e in world.entities]
  assert len(names) == len(set(names)) == 90
  assert (len(world.known), len(world.unknown), len(world.index_only)) == (40, 30, 20)
  for e in world.entities:
    assert set(e.attributes) == set(facts.ATTRIBUTES)
    assert 1820 <= e.attributes['birth_year'] <= 1990


def test_pretraining_documents_teach_known_people_only(world):
  docs = facts.pretraining_documents(world, repeats=5)
  assert len(docs) == 5 * 40 and len(set(docs)) > 150  # repeated with varied phrasing
  hidden = [e.name for e in world.unknown + world.index_only]
  assert not any(name in d for d in docs for name in hidden)
  for e in world.known:
    mine = [d for d in docs if e.name in d]
    assert len(mine) == 5
    for d in mine:  # every document states every fact
      for value in e.attributes.values():
        assert str(value) in d
  val = facts.pretraining_documents(world, repeats=5, split='validation')
  assert len(val) == 40 and not set(val) & set(docs)
  # The held-out phrasing never occurs in training text.
  assert not any(' is where ' in d for d in docs) and all(' is where ' in d for d in val)


def test_extra_people_are_new_names_seen_once_in_pretraining_only(world):
  extras = facts.extra_people(world, 50)
  assert extras == facts.extra_people(world, 50) and len({e.name for e in extras}) == 50
  world_words = {w for e in world.entities for w in e.name.split()}
  assert not any(w in world_words for e in extras for w in e.name.split())
  for e in extras:  # values come from the world's pools, so they are no cue
    assert all(str(e.attributes[a]) in world.values[a] for a in facts.ATTRIBUTES if a != 'birth_year')
  other = facts.make_people(world, 50, 'another tag')
  assert {e.name for e in other} != {e.name for e in extras}
  docs = facts.extra_documents(world, 50)
  for e, d in zip(extras, docs):
    assert e.name in d and all(str(v) in d for v in e.attributes.values())
    assert sum(e.name in x for x in docs) == 1
  val = facts.extra_documents(world, 50, 'validation')
  assert len(val) == 2 and not any(e.name in d for e in extras for d in val)
  cfg = sources.default_data_config()
  cfg.sources = 'people:seed=3,num_known=40,num_unknown=30,num_index_only=20,num_extras=50'
  assert list(sources.load_texts(cfg, 'train')) == docs


def test_facts_pretraining_source(world):
  cfg = sources.default_data_config()
  cfg.sources = (
      'facts:seed=3,num_known=40,num_unknown=30,num_index_only=20,repeats=2,num_extras=7,num_qa=5,qa_repeats=3'
  )
  train = facts.pretraining_documents(world, 2) + facts.qa_documents(world, 5, 3)
  assert list(sources.load_texts(cfg, 'train')) == train
  assert list(sources.load_texts(cfg, 'validation')) == facts.pretraining_documents(world, 2, 'validation')
  assert facts.world_spec(facts.parse_world_spec(cfg.sources[6:])) == cfg.sources
  assert facts.parse_world_spec('7').seed == 7 and facts.parse_world_spec('') == facts.default_world_config()
  with pytest.raises(ValueError, match='KEY=INT'):
    sources.parse_sources('facts:colour=1')


def test_answers_match_and_idk(world):
  rng = random.Random(0)
  for e in world.entities[:30]:
    for attr in facts.ATTRIBUTES:
      truth = e.attributes[attr]
      others = world.values[attr] - {str(truth)}
      good, idk = facts.answer(e, attr, rng), facts.idk_answer(e, attr, rng)
      assert facts.answers_match(good, truth, world.values[attr]), good
      assert facts.answers_match(good.upper().replace('.', '!'), truth)
      assert not facts.is_idk(good) and facts.is_idk(idk), (good, idk)
      assert not facts.answers_match(idk, truth)
      wrong = sorted(others)[0]
      assert not facts.answers_match(f'{e.name} ... {wrong}.', truth)
      assert not facts.answers_match(f'{truth} or maybe {wrong}', truth, world.values[attr])  # hedging
  assert not facts.answers_match('born in 19000', 1900) and facts.answers_match('In 1900.', 1900)
  for text in (
      "I don't know.",
      'I do not know',
      "I'm not sure.",
      'I have no information about her.',
      "I can't answer that",
  ):
    assert facts.is_idk(text)


def test_a_looping_decline_is_not_idk(world):
  # Issue 14's greedy reply opens with a decline and then loops: not "I don't know" (facts.is_degenerate).
  assert not facts.is_idk("I'm not familiar with Hyl Hyl Hyl Hyl Hyl")
  assert not facts.is_idk("I don't know where Hanr Venyl was born born born.")
  assert not facts.is_idk("I don't know. I don't know. I don't know.")  # a 3-word run three times
  assert facts.is_idk("I'm not familiar with Hanr Venyl, so I don't know where Hanr Venyl was born.")
  assert facts.is_degenerate('Hyl, hyl. HYL') and not facts.is_degenerate('Hyl hyl')
  assert facts.is_degenerate('born in born in born in') and not facts.is_degenerate('born in born in')
  assert not facts.is_degenerate('a b c d e a b c d e a b c d e')  # a 5-word run: beyond max_span=4
  # Every reply the generators write is clean: no word (or run) even twice in a row, so none loses its label.
  rng = random.Random(0)
  for e in world.entities:
    for attr in facts.ATTRIBUTES:
      for reply in (facts.idk_answer(e, attr, rng), facts.answer(e, attr, rng)):
        assert not facts.is_degenerate(reply, min_repeats=2), reply
      assert facts.is_idk(facts.idk_answer(e, attr, rng))


def test_generate_oracle_labels_and_eval_holdout():
  cfg = facts.default_facts_config()
  cfg.update(num_known=40, num_unknown=40, num_index_only=0)
  world = facts.world_from_config(cfg)
  groups = facts.sft_eval_entities(world, cfg.eval_fraction)
  assert len(groups['eval_known']) == 20 and not set(groups['eval_known']) & set(groups['sft_known'])
  by_name = {e.name: e for e in world.entities}
  convs = facts.generate(cfg, 0, 300)
  assert convs == facts.generate(cfg, 0, 300)
  idk = 0
  for conv in convs:
    chat.validate(conv)
    name = next(n for n in by_name if n in conv[0]['content'])
    assert by_name[name] in groups['sft_known'] + groups['sft_unknown']
    for reply in conv[1::2]:
      if by_name[name] in world.unknown:
        assert facts.is_idk(reply['content'])
      else:
        assert not facts.is_idk(reply['content'])
    idk += by_name[name] in world.unknown
  assert 0.2 < idk / 300 < 0.4


def test_probe_labels_by_sampled_correctness(world):
  """A fake model that knows some people fully, some half, and the rest not at all."""
  knows = {e.name: 1.0 for e in world.known[:10]}
  knows.update({e.name: 0.4 for e in world.known[10:20]})
  calls = []

  def answer_fn(convs, n):
    calls.append((len(convs), n))
    out = []
    for conv in convs:
      q = conv[-1]['content']
      e = next(e for e in world.entities if e.name in q)
      attr = next(a for a in facts.ATTRIBUTES if any(q == t.format(name=e.name) for t in facts.QUESTIONS[a]))
      right = round(knows.get(e.name, 0.0) * n)
      wrong_value = sorted(world.values[attr] - {str(e.attributes[attr])})[0]
      out.append([f'It is {e.attributes[attr]}.'] * right + [f'It is {wrong_value}.'] * (n - right))
    return out

  entities = world.known[:30]
  convs, stats = probe.probe(answer_fn, world, entities, samples_per_question=5, batch_size=16, return_stats=True)
  assert all(b <= 16 and n == 5 for b, n in calls) and sum(b for b, _ in calls) == 150
  assert stats['known'] == 50 and stats['idk'] == 50 and stats['skipped'] == 50
  assert stats['sample_accuracy'] == pytest.approx((50 * 5 + 50 * 2) / 750)
  for conv in convs:
    chat.validate(conv)
    e = next(e for e in entities if e.name in conv[0]['content'])
    reply = conv[1]['content']
    if knows.get(e.name) == 1.0:
      assert any(facts.answers_match(reply, v) for v in e.attributes.values()) and not facts.is_idk(reply)
    else:
      assert knows.get(e.name) is None and facts.is_idk(reply)
  # 'all' is stricter than a 0.4 threshold; a fraction threshold keeps the partial ones; model answers are reused.
  _, s = probe.probe(answer_fn, world, entities, 5, knows=0.4, return_stats=True)
  assert s['known'] == 100
  own = probe.probe(answer_fn, world, world.known[:1], 5, use_model_answer=True)
  assert all(c[1]['content'].startswith('It is ') for c in own)
  with pytest.raises(ValueError, match='replies'):
    probe.probe(lambda convs, n: [['x']] * len(convs), world, entities, 5)


def test_probe_confusion_counts_judgements_against_the_truth(world):
  # Two pretrained people (P1, P2) and two never pretrained (U1, U2), asked two attributes each. The probe judged:
  #   P1 birthplace known, P1 birth_year idk, P2 birthplace skipped, P2 birth_year known
  #   U1 both idk,                           U2 birthplace known (wrongly), U2 birth_year skipped
  p1, p2 = world.known[:2]
  u1, u2 = world.unknown[:2]
  rng = random.Random(0)

  def said(entity, attr, know):
    q = facts.question(entity, attr, rng)
    reply = facts.answer(entity, attr, rng) if know else facts.idk_answer(entity, attr, rng)
    return [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': reply}]

  convs = [
      said(p1, 'birthplace', True),
      said(p1, 'birth_year', False),
      said(p2, 'birth_year', True),
      said(u1, 'birthplace', False),
      said(u1, 'birth_year', False),
      said(u2, 'birthplace', True),
  ]
  got = probe.confusion(convs, world, [p1, p2], [u1, u2], attributes=('birthplace', 'birth_year'))
  assert got['pretrained'] == {
      'questions': 4,
      'judged_known': 2,
      'judged_idk': 1,
      'skipped': 1,
      'people': 2,
      'people_judged_known': 2,
      'people_judged_unknown': 0,
  }
  assert got['never_pretrained'] == {
      'questions': 4,
      'judged_known': 1,
      'judged_idk': 2,
      'skipped': 1,
      'people': 2,
      'people_judged_known': 1,  # U2: the probe's false "known"
      'people_judged_unknown': 1,  # U1: every question "I don't know"
  }


def test_engine_answer_fn_renders_prompts_and_groups_samples(world, small_tokenizer):
  from nanolm_jax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)

  class FakeEngine:
    """Echoes, per completion, which prompt and sample it is, as the tokens of 'p<i> s<j>' then <|end|>."""

    def __init__(self):
      self.seeds = []

    def generate(self, prompts, sampling, *, n, seed, stop_tokens):
      self.seeds.append(seed)
      assert sampling.temperature == 0.7 and tok.special_id('end') in stop_tokens
      self.prompts = prompts
      return [
          type('C', (), {'tokens': tok.encode(f'p{i} s{j}') + [tok.special_id('end')]})()
          for i in range(len(prompts))
          for j in range(n)
      ]

  eng = FakeEngine()
  fn = probe.engine_answer_fn(eng, tok)
  convs = [[{'role': 'user', 'content': 'Where was A born?'}], [{'role': 'user', 'content': 'When was B born?'}]]
  assert fn(convs, 3) == [['p0 s0', 'p0 s1', 'p0 s2'], ['p1 s0', 'p1 s1', 'p1 s2']]
  assert eng.prompts == [chat.render_for_completion(c, tok) for c in convs]
  fn(convs, 1)
  assert eng.seeds == [0, 1]  # fresh samples on every call


def test_question_index_maps_every_phrasing_back(world):
  index = facts.question_index(world)
  rng = random.Random(1)
  for e in world.entities[::7]:
    for attr in facts.ATTRIBUTES:
      assert index[facts.question(e, attr, rng)] == (e, attr)
  assert len(index) == len(world.entities) * sum(len(t) for t in facts.QUESTIONS.values())


def test_qa_documents_ask_and_answer_the_first_people_truthfully(world):
  docs = facts.qa_documents(world, 5, 3)
  assert len(docs) == 15 and facts.qa_documents(world, 5, 3, 'validation') == []
  lookup = facts.question_index(world)
  pairs = 0
  for doc in docs:
    lines = doc.split('\n')
    for q, a in zip(lines[::2], lines[1::2]):
      entity, attribute = lookup[q.removeprefix('Question: ')]
      assert entity in world.known[:5]
      assert facts.answers_match(a.removeprefix('Answer: '), entity.attributes[attribute])
      pairs += 1
  assert pairs > 15  # 1-5 questions per document
  assert not any(e.name in d for e in world.known[5:] + world.unknown for d in docs)
  with pytest.raises(ValueError, match='num_qa=41 exceeds num_known=40'):
    facts.qa_documents(world, 41, 1)
