"""The knowledge split of the default SFT config's fact world, pinned without a model (issue 14).

The chat evaluation's fact and search numbers mean what they claim only if the people it asks about were kept where
the design puts them (facts.py's module docstring):

  evaluated known people    in pretraining (their biographies), never in SFT data
  evaluated unknown people  nowhere: neither pretraining nor SFT data
  index-only people         only in the search index: neither pretraining nor the trained SFT turns; the tool
                            results of SFT search conversations may show their index cards (measured on the
                            default config: 269 of the 5000 conversations, 65 of the 100 people, as a second
                            result or in a "found nothing" search), which is the index as the tool shows it, never a
                            turn the loss trains

Every text is generated the way the default chain generates it: SFT conversations through sft_data.load_sources on
configs/sft.py's sources (both splits) plus the files sft.prepare adds (answer-first problems, and the probe's
questions: probe.oracle_conversations asks exactly the probe's questions, about the same people, without a model),
pretraining documents through data.sources on configs/pretrain.py's sources. A person "appears" when the full name
occurs in the text.
"""

import re

import pytest

from configs import pretrain as pretrain_configs
from configs import sft as sft_configs
from nanolm_jax.data import sft_data
from nanolm_jax.data import sources
from nanolm_jax.posttrain import probe
from nanolm_jax.stages import sft
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import reasoning
from nanolm_jax.synthetic import search_data


@pytest.fixture(scope="module")
def cfg():
  return sft_configs.get_config()


@pytest.fixture(scope="module")
def world(cfg):
  return facts.world_from_config(cfg.sft.world)


@pytest.fixture(scope="module")
def groups(cfg, world):
  return facts.sft_eval_entities(world, cfg.sft.facts.eval_fraction)


def _names_in(texts, people) -> set[str]:
  """The full names of ``people`` that occur in any of ``texts``."""
  pattern = re.compile("|".join(re.escape(e.name) for e in people))
  return {m.group(0) for t in texts for m in pattern.finditer(t)}


def _turns(convs, roles):
  return [m["content"] for c in convs for m in c if m["role"] in roles]


@pytest.fixture(scope="module")
def sft_conversations(cfg, world):
  """Every conversation the default SFT run (and its control) trains or validates on."""
  convs = [
      c
      for split in ("train", "validation")
      for spec, ds in sft_data.load_sources(cfg.sft, split)
      if spec.kind != "replay"
      for c in ds
  ]
  convs += sft.answer_first_conversations(cfg.sft, cfg.sft.answer_first_count)
  convs += probe.oracle_conversations(cfg, world)  # the probe's questions (probe.jsonl holds a subset of them)
  # Not in the default sources but in the 'generated' mixture: oracle-labelled fact QA must respect the split too.
  convs += sft_data.generate(cfg.sft, "facts", cfg.sft.seed)
  return convs


@pytest.fixture(scope="module")
def pretraining_documents(cfg):
  """The documents of the default pretraining run's fact-world sources (both splits)."""
  del cfg
  data = pretrain_configs.get_config().data
  out = []
  for spec in sources.parse_sources(data.sources):
    if spec.kind in ("facts", "people"):
      out += [d for split in sources.SPLITS for d in sources.KINDS[spec.kind].load(spec, data, split)]
  return out


def test_other_pretraining_sources_cannot_name_a_world_person(world):
  # stdlib is Python's own documentation; arithmetic problems name people from a fixed list of first names (6.6 s
  # to generate all 21000, so its vocabulary is checked instead of its documents).
  kinds = {s.kind for s in sources.parse_sources(pretrain_configs.get_config().data.sources)}
  assert kinds == {"stdlib", "facts", "people", "arithmetic"}
  assert not _names_in(reasoning.NAMES + reasoning.ITEMS, world.entities)


def test_the_world_is_the_pretrained_one(cfg):
  # The default pretraining sources build the same world as the SFT config (else every check below is moot).
  specs = sources.parse_sources(pretrain_configs.get_config().data.sources)
  worlds = {facts.world_spec(facts.parse_world_spec(s.arg)) for s in specs if s.kind in ("facts", "people")}
  assert worlds == {sft_data.pretraining_source(cfg.sft)}


def test_sizes_give_100_questions_per_fact_rate(cfg, groups, world):
  # 20 + 20 held-out people x 5 attributes, 100 index-only people: what the eval's n >= 100 rests on.
  assert cfg.eval.facts_per_group >= 100 and cfg.eval.search >= 100 and cfg.eval.arithmetic >= 100
  assert len(groups["eval_known"]) * len(facts.ATTRIBUTES) >= cfg.eval.facts_per_group
  assert len(groups["eval_unknown"]) * len(facts.ATTRIBUTES) >= cfg.eval.facts_per_group
  assert len(world.index_only) >= cfg.eval.search  # one question per index-only person
  assert cfg.eval.identity >= 100


def test_no_sft_conversation_mentions_an_evaluated_person(sft_conversations, groups):
  texts = _turns(sft_conversations, ("system", "user", "assistant", "tool"))
  assert len(sft_conversations) > 10000
  assert not _names_in(texts, groups["eval_known"] + groups["eval_unknown"])
  # ... while the SFT part of the same groups is there (the match would find them).
  assert _names_in(texts, groups["sft_known"]) == {e.name for e in groups["sft_known"]}
  assert _names_in(texts, groups["sft_unknown"]) == {e.name for e in groups["sft_unknown"]}


def test_replayed_text_is_pretraining_text(cfg, pretraining_documents):
  # SFT replays pretraining documents (sft_data.REPLAY_KINDS) to keep what pretraining stored; they are that
  # text and nothing more, so the evaluated known people's biographies in them are pretraining's, not SFT QA.
  replay = [
      d
      for split in ("train", "validation")
      for s, ds in sft_data.load_sources(cfg.sft, split)
      if s.kind == "replay"
      for d in ds
  ]
  assert replay, "the default SFT config replays no pretraining text"
  assert set(replay) <= set(pretraining_documents)


def test_no_pretraining_document_mentions_an_unknown_person(pretraining_documents, world, groups):
  assert not _names_in(pretraining_documents, world.unknown)
  # Every known person is there, the evaluated ones included: their facts are what known_fact_accuracy asks.
  assert _names_in(pretraining_documents, world.known) == {e.name for e in world.known}
  assert set(groups["eval_known"]) <= set(world.known)


def test_index_only_people_are_only_in_the_index(pretraining_documents, sft_conversations, world, cfg):
  assert not _names_in(pretraining_documents, world.index_only)
  # The turns the model is trained to write, and the questions it is asked: no index-only person.
  assert not _names_in(_turns(sft_conversations, ("system", "user", "assistant")), world.index_only)
  # A tool result that shows one shows its index card verbatim (and nothing else about them).
  cards = {e.name: search_data.profile(e) for e in world.index_only}
  shown = 0
  for text in _turns(sft_conversations, ("tool",)):
    for block in re.split(r"(?m)^\[\d+\] ", text):
      for name in _names_in([block], world.index_only):
        shown += 1
        assert block.strip() == cards[name] or cards[name].startswith(block.strip().removesuffix("...")), block
  assert shown < 0.1 * sum(1 for c in sft_conversations for m in c if m["role"] == "tool")
  index = [d["text"] for d in search_data.index_documents(world, cfg.sft.search.train_people)]
  assert _names_in(index, world.index_only) == {e.name for e in world.index_only}


def test_pretraining_qa_is_about_sft_people_only(pretraining_documents, groups, cfg):
  # Mixed training: question/answer text about SFT's part of the known people; the evaluated known people are in
  # pretraining only as biographies, so known_fact_accuracy asks questions never answered anywhere in training.
  qa = [d for d in pretraining_documents if d.startswith("Question: ")]
  assert len(qa) == cfg.sft.world.num_qa * cfg.sft.world.qa_repeats > 0
  assert _names_in(qa, groups["sft_known"]) == {e.name for e in groups["sft_known"][: cfg.sft.world.num_qa]}
  assert not _names_in(qa, groups["eval_known"])


def test_held_out_identity_questions_and_personas_are_not_in_sft(sft_conversations):
  from nanolm_jax.synthetic import identity, system_prompts  # pylint: disable=import-outside-toplevel

  users = [t.lower() for t in _turns(sft_conversations, ("user",))]
  for q in (q for qs in identity.EVAL_QUESTIONS.values() for q in qs):
    stem = q.lower().rstrip("?.")
    assert not any(stem in u for u in users), q
  systems = " ".join(_turns(sft_conversations, ("system",)))
  for word in system_prompts.EVAL_PERSONA_NAMES + system_prompts.EVAL_PERSONA_MAKERS:
    assert not re.search(rf"\b{re.escape(word)}\b", systems), word
  assert system_prompts.EVAL_PERSONA_PROMPT.split("{")[0] not in systems


def test_sft_refuses_pretraining_qa_about_evaluated_people(tmp_path):
  from nanolm_jax import runs  # pylint: disable=import-outside-toplevel

  base_dir = str(tmp_path / "base")
  runs.write_config(base_dir, {"data": {"sources": "facts"}})
  c = sft_configs.get_config()
  c.init_from = base_dir
  c.sft.world.num_qa = 21  # one more than SFT's 20 known people
  with pytest.raises(ValueError, match=r"sft.world.num_qa=21 exceeds the 20 known people SFT trains on"):
    sft.prepare(c, str(tmp_path / "sft"))
