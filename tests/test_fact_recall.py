"""fact_recall: which people's facts a model states, per form, scored against the world (fake model, no training)."""

import random
import types

import ml_collections
import pytest

from configs import pretrain as pretrain_configs
from configs import sft as sft_configs
from nanolm_jax.posttrain import fact_recall
from nanolm_jax.synthetic import facts


class _BytesTok:
  """Text <-> UTF-8 bytes: enough for the cloze and qa forms (no chat specials)."""

  bos_id = 0

  def encode(self, text, bos=False, eos=False):
    return ([0] if bos else []) + list(text.encode())

  def decode(self, ids):
    return bytes(i for i in ids if i).decode()


class _Oracle:
  """Answers with every fact of the person the prompt names when that person is in ``knows``; otherwise with a
  wrong birthplace and birth year (another person's)."""

  def __init__(self, world, knows, tok):
    self.world, self.knows, self.tok = world, {e.name for e in knows}, tok

  def generate(self, prompts, sampling, **kw):
    del sampling, kw
    out = []
    for p in prompts:
      text = self.tok.decode(p)
      e = max((e for e in self.world.entities if e.name in text), key=lambda e: len(e.name))
      other = next(o for o in self.world.known if o.attributes['birthplace'] != e.attributes['birthplace'])
      src = e if e.name in self.knows else other
      reply = (
          ' '.join(str(src.attributes[a]) for a in facts.ATTRIBUTES)
          if src is e
          else str(other.attributes['birthplace'])
      )
      out.append(types.SimpleNamespace(text=' ' + reply))
    return out


@pytest.fixture(scope='module')
def world_cfg():
  cfg = sft_configs.get_config()
  return facts.world_from_config(cfg.sft.world), cfg.sft.facts.eval_fraction


def test_a_pretraining_run_and_its_sft_run_read_the_same_world(world_cfg):
  world, eval_fraction = world_cfg
  pre, pre_fraction = fact_recall.run_world(pretrain_configs.get_config())
  assert [e.name for e in pre.entities] == [e.name for e in world.entities] and pre_fraction == eval_fraction
  with pytest.raises(ValueError, match='neither'):
    fact_recall.run_world(ml_collections.ConfigDict({'data': {'sources': 'stdlib;arithmetic'}}))


@pytest.mark.parametrize('form', ['cloze', 'qa'])
def test_recall_counts_the_people_the_model_states_facts_about(world_cfg, form):
  world, eval_fraction = world_cfg
  groups = facts.sft_eval_entities(world, eval_fraction)
  tok = _BytesTok()
  half = groups['eval_known'][: len(groups['eval_known']) // 2]
  eng = _Oracle(world, groups['sft_known'] + half, tok)
  res = {g: fact_recall.recall(eng, tok, world, groups[g], form) for g in fact_recall.GROUPS}
  assert res['sft_known']['accuracy'] == 1.0 and res['sft_known']['n'] == 5 * len(groups['sft_known'])
  assert res['eval_known']['accuracy'] == pytest.approx(len(half) / len(groups['eval_known']))
  assert res['eval_unknown']['accuracy'] == 0.0
  assert set(res['sft_known']['by_attribute']) == set(facts.ATTRIBUTES)
  # Every question names its person, in the form asked.
  rng = random.Random(0)
  e = groups['eval_known'][0]
  text = tok.decode(fact_recall.prompt_ids(form, e, 'birthplace', tok, rng))
  assert e.name in text and (text.startswith('Question: ') if form == 'qa' else 'born in the city of' in text)
  with pytest.raises(ValueError, match='unknown form'):
    fact_recall.prompt_ids('essay', e, 'birthplace', tok, rng)
