"""Tests for nanolm_jax.synthetic.search_data: the index, tool calls with real tool output, grounded answers."""

import json

import pytest

from nanolm_jax import chat
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import search_data
from nanolm_jax.tools import search as search_tool


@pytest.fixture(scope='module')
def cfg():
  c = search_data.default_search_config()
  c.update(num_known=20, num_unknown=20, num_index_only=20)
  return c


def test_index_holds_index_only_people_and_the_tool_reads_it(cfg, tmp_path):
  world = facts.world_from_config(cfg)
  docs = search_data.index_documents(world)
  assert [d['title'] for d in docs] == [e.name for e in world.index_only]
  path = search_data.write_index(str(tmp_path / 'index'), docs)
  assert [json.loads(l) for l in open(path)] == docs
  tool = search_tool.Search.from_files(str(tmp_path / 'index'))
  e = world.index_only[5]
  top = tool.search(f'{e.name} birthplace')[0][1]
  assert e.name in top and e.attributes['birthplace'] in top
  # Index-only people are never pretraining text.
  pretrain = ' '.join(facts.pretraining_documents(world, 2))
  assert not any(e.name in pretrain for e in world.index_only)


@pytest.mark.parametrize('train_people', [0, 60])
def test_conversations_call_search_and_answer_from_results(cfg, train_people):
  cfg = cfg.copy_and_resolve_references()
  cfg.train_people, cfg.outside_people = train_people, 30 if train_people else 0
  world = facts.world_from_config(cfg)
  docs = search_data.index_documents(world, train_people)
  trained = search_data.train_people(world, train_people) if train_people else world.index_only
  outside = search_data.outside_people(world, 30, train_people) if train_people else world.unknown
  assert [d['title'] for d in docs] == [e.name for e in world.index_only + (trained if train_people else ())]
  tool = search_tool.Search([d['text'] for d in docs], k=cfg.top_k, fuzzy=cfg.fuzzy, timeout_s=30)
  convs = search_data.generate(cfg, 0, 80)
  assert convs == search_data.generate(cfg, 0, 80)
  found = not_found = 0
  for conv in convs:
    chat.validate(conv)
    *_, user, call, result, final = conv
    (c,) = call['tool_calls']
    assert c['name'] == 'search' and result['role'] == 'tool' and result['name'] == 'search'
    assert result['content'] == tool(c['arguments'])  # exactly what the engine's tool call returns
    entity = next(e for e in trained + outside if e.name in user['content'])
    assert entity.name in c['arguments']
    attr = next(
        a for a in facts.ATTRIBUTES if user['content'] in {t.format(name=entity.name) for t in facts.QUESTIONS[a]}
    )
    truth = entity.attributes[attr]
    if entity in trained:
      found += 1
      assert facts.answers_match(final['content'], truth) and str(truth) in result['content']
    else:
      not_found += 1
      assert entity in outside and facts.is_idk(final['content'])
      assert entity.name not in result['content']
    if train_people:  # the evaluated (index-only) people never appear in the training conversations
      text = json.dumps([m for m in conv if m['role'] != 'tool'])
      assert not any(e.name in text for e in world.index_only)
  assert found > 50 and not_found > 3
  with_system = sum(c[0]['role'] == 'system' for c in convs)
  assert with_system == 80  # the tool is always declared (default system_prompt_fraction=1.0)


def test_custom_search_fn_and_empty_results(cfg):
  convs = search_data.generate(cfg, 1, 10, search_fn=lambda q: 'no results')
  for conv in convs:
    assert conv[-2]['content'] == 'no results' and facts.is_idk(conv[-1]['content'])
  bad = cfg.copy_and_resolve_references()
  bad.num_index_only = bad.train_people = 0
  with pytest.raises(ValueError, match='no one to ask about'):
    search_data.generate(bad, 0, 1)
