"""Tests for nanolm_jax.data.sft_data: whole conversations per segment, the loss mask, overlong, resume."""

import json

import numpy as np
import pytest

from nanolm_jax import chat
from nanolm_jax.synthetic import facts
from nanolm_jax.data import sft_data
from nanolm_jax.data import sources
from nanolm_jax.tokenizer import SentencePieceTokenizer

SEQ, BATCH = 192, 4


@pytest.fixture(scope='module')
def cfg():
  c = sft_data.default_sft_data_config()
  c.counts.update(identity=30, system_prompts=30, reasoning=60, facts=40, search=20)
  c.world.update(num_known=20, num_unknown=20, num_index_only=10)
  c.val_fraction = 0.3
  return c


@pytest.fixture(scope='module')
def tok(cfg):
  texts = [chat.conversation_text(c) for c in sft_data.default_mixture(cfg, 0)]
  return SentencePieceTokenizer.train(texts, 512)


def _segments(batches):
  """(tokens = inputs + last target, targets, weights, positions) per segment, in stream order."""
  out = []
  for b in batches:
    for r in range(b['inputs'].shape[0]):
      seg = b['segment_ids'][r]
      assert np.all(b['weights'][r][seg == 0] == 0)
      for s in range(1, seg.max() + 1):
        m = seg == s
        assert m.any() and np.all(np.diff(np.flatnonzero(m)) == 1)  # one contiguous run per id
        inputs, targets = b['inputs'][r][m], b['targets'][r][m]
        tokens = tuple(int(t) for t in inputs) + (int(targets[-1]),)
        out.append((tokens, targets, b['weights'][r][m], b['positions'][r][m]))
  return out


def _reference_mask(tokens, tok):
  """1 on assistant text / tool calls / the assistant's <|end|>, from the token stream (not chat's renderer)."""
  sid = {n: tok.special_id(n) for n in ('start', 'assistant', 'end', 'tool_result_start', 'tool_result_end')}
  mask, in_assistant, in_result = [], False, False
  for i, t in enumerate(tokens):
    if in_result:
      mask.append(0)
      in_result = t != sid['tool_result_end']
    elif t == sid['tool_result_start']:
      mask.append(0)
      in_result = True
    elif t == sid['assistant'] and i and tokens[i - 1] == sid['start']:
      mask.append(0)
      in_assistant = True
    elif t == sid['start']:
      mask.append(0)
      in_assistant = False
    else:
      mask.append(int(in_assistant))
      if t == sid['end']:
        in_assistant = False
  return mask


def test_validation_pass_is_whole_conversations_with_exact_masks(cfg, tok):
  val = [c for _, ds in sft_data.load_sources(cfg, 'validation') for c in ds]
  rendered = []
  for c in val:
    tokens, mask = chat.render_for_training(c, tok)
    if any(mask[1 : SEQ + 1]):  # truncation may leave nothing to train on: such a conversation is dropped
      rendered.append(tuple(tokens[: SEQ + 1]))
  assert len(rendered) > 30
  batches = list(
      sft_data.make_sft_dataset(cfg, tok, split='validation', seq_len=SEQ, batch_size=BATCH, seed=0, repeat=False)
  )
  for b in batches:
    assert set(b) == set(sft_data.FEATURES) and all(v.shape == (BATCH, SEQ) for v in b.values())
    assert all(b[k].dtype == np.int32 for k in ('inputs', 'targets', 'segment_ids', 'positions'))
    assert b['weights'].dtype == np.float32
  segs = _segments(batches)
  # Every segment is exactly one (possibly truncated) conversation, from <s>, and each appears once: nothing is
  # split across rows, and since attention is limited to a segment, no conversation sees another.
  assert sorted(s[0] for s in segs) == sorted(rendered)
  for tokens, targets, weights, positions in segs:
    assert tokens[0] == tok.bos_id
    np.testing.assert_array_equal(positions, np.arange(len(targets)))
    np.testing.assert_array_equal(targets, tokens[1:])
    np.testing.assert_array_equal(weights, _reference_mask(list(tokens), tok)[1:])
    assert weights.sum() > 0
  packed = sum(b['segment_ids'].max(axis=1).sum() for b in batches)
  assert packed > len(batches) * BATCH  # several conversations share rows


def test_attention_mask_never_crosses_conversations(cfg, tok):
  it = iter(sft_data.make_sft_dataset(cfg, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=1))
  bos = tok.bos_id
  for _ in range(5):
    b = next(it)
    for seg, inputs in zip(b['segment_ids'], b['inputs']):
      allowed = (seg[:, None] == seg[None, :]) & (seg[:, None] > 0) & np.tri(SEQ, dtype=bool)
      # Conversation index of each position, from where <s> starts a conversation (independent of segment ids).
      conv_of = np.cumsum(inputs == bos)
      q, k = np.nonzero(allowed)
      assert np.all(conv_of[q] == conv_of[k])
      starts = np.flatnonzero(np.diff(seg, prepend=-1))
      assert np.all(inputs[starts[seg[starts] > 0]] == bos)  # every segment starts a conversation


@pytest.mark.parametrize('policy', ['truncate', 'drop'])
def test_overlong_conversations(cfg, tok, policy):
  c = cfg.copy_and_resolve_references()
  c.overlong = policy
  seq = 100
  val = [x for _, ds in sft_data.load_sources(c, 'validation') for x in ds]
  lengths = [len(chat.render_for_training(x, tok)[0]) for x in val]
  n_long = sum(n - 1 > seq for n in lengths)
  assert 0 < n_long < len(val)
  stats = sft_data.sft_stats(c, tok, 'validation', seq)
  assert stats['conversations'] == len(val) and stats['overlong'] == n_long
  segs = _segments(
      sft_data.make_sft_dataset(c, tok, split='validation', seq_len=seq, batch_size=BATCH, seed=0, repeat=False)
  )
  kept = len(val) - stats['dropped']
  assert len(segs) == kept
  if policy == 'drop':
    assert stats['dropped'] == n_long and max(len(s[1]) for s in segs) < seq + 1
  else:
    assert stats['dropped'] <= n_long and sum(len(s[1]) == seq for s in segs) >= n_long - stats['dropped']
  assert stats['trained_tokens'] == sum(int(s[2].sum()) for s in segs)


def test_resume_is_exact_through_json(cfg, tok):
  make = lambda: iter(sft_data.make_sft_dataset(cfg, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=7))
  it = make()
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_process_shards_partition_validation(cfg, tok):
  tokens = lambda p: sorted(
      s[0]
      for s in _segments(
          sft_data.make_sft_dataset(
              cfg,
              tok,
              split='validation',
              seq_len=SEQ,
              batch_size=BATCH,
              seed=0,
              process_index=p,
              process_count=2,
              repeat=False,
          )
      )
  )
  a, b = tokens(0), tokens(1)
  everything = sorted(
      s[0]
      for s in _segments(
          sft_data.make_sft_dataset(cfg, tok, split='validation', seq_len=SEQ, batch_size=BATCH, seed=0, repeat=False)
      )
  )
  assert sorted(a + b) == everything and a and b


def test_mixture_counts_spec_kinds_and_world(cfg):
  mix = sft_data.default_mixture(cfg, 0)
  assert len(mix) == 180 and mix == sft_data.default_mixture(cfg, 0)
  for c in mix:
    chat.validate(c)
  c = cfg.copy_and_resolve_references()
  c.sources = 'identity:12;reasoning@2'
  loaded = [
      (s, len(tr) + len(va))
      for (s, tr), (_, va) in zip(sft_data.load_sources(c, 'train'), sft_data.load_sources(c, 'validation'))
  ]
  assert [(s.kind, s.weight, n) for s, n in loaded] == [('identity', 1.0, 12), ('reasoning', 2.0, 60)]
  # The facts generator and the pretraining source describe the same world.
  spec = sft_data.pretraining_source(cfg)
  world = facts.world_from_config(facts.parse_world_spec(spec.split(':', 1)[1]))
  assert [e.name for e in world.known] == [e.name for e in facts.world_from_config(cfg.world).known]
  c.sources = 'generated:3'
  with pytest.raises(ValueError, match='no argument'):
    sft_data.load_sources(c, 'train')
  c.sources, c.overlong = 'identity', 'nope'
  with pytest.raises(ValueError, match='overlong'):
    sft_data.make_sft_dataset(c, None, split='train', seq_len=8, batch_size=1, seed=0)


def test_all_dropped_is_an_error(cfg, tok):
  c = cfg.copy_and_resolve_references()
  c.sources, c.overlong = 'reasoning', 'drop'
  with pytest.raises(ValueError, match='none of the first'):
    sft_data.make_sft_dataset(c, tok, split='train', seq_len=4, batch_size=2, seed=0)


def test_replay_is_pretraining_text_with_its_split_and_every_target_trained(cfg, tok):
  # replay:facts holds exactly the pretraining source's documents of the same split (so SFT adds no text about
  # anyone that pretraining did not already have), and each is rendered as pretraining renders it.
  data = sources.default_data_config()
  data.sources = sft_data.pretraining_source(cfg)
  for split in ('train', 'validation'):
    want = [str(d) for _, ds in sources.load_sources(data, split) for d in ds]
    c = cfg.copy_and_resolve_references()
    c.sources = 'identity@1;replay:facts@1'
    (_, ident), (spec, replay) = sft_data.load_sources(c, split)
    assert (spec.kind, spec.arg) == ('replay', 'facts')
    assert list(replay) == want and len(want) > 0
    assert all(isinstance(x, list) for x in ident)
  people = sft_data.replay_documents(cfg, 'people')
  assert (
      len(people) == cfg.world.num_extras
      and facts.extra_documents(facts.world_from_config(cfg.world), cfg.world.num_extras) == people
  )
  with pytest.raises(ValueError, match='expected one of'):
    sft_data.replay_documents(cfg, 'nope')
  c = cfg.copy_and_resolve_references()
  c.sources = 'identity@1;replay:facts@1'
  segs = _segments(
      list(sft_data.make_sft_dataset(c, tok, split='validation', seq_len=SEQ, batch_size=BATCH, seed=0, repeat=False))
  )
  docs = {
      tuple(tok.encode(d, bos=True, eos=True)[: SEQ + 1]) for d in sft_data.replay_documents(c, 'facts', 'validation')
  }
  replayed = [s for s in segs if s[0] in docs]
  assert len(replayed) == len(docs)
  for _, targets, weights, _ in replayed:
    np.testing.assert_array_equal(weights, np.ones(len(targets)))  # all of it, as pretraining trains
  # ... while conversations in the same batches keep their assistant-only masks.
  others = [s for s in segs if s[0] not in docs]
  assert others and all(w.sum() < len(w) for _, _, w, _ in others)
