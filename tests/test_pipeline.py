"""Tests for nanolm_jax.data.pipeline: packing semantics, determinism, resumption, sharding, eval padding."""

import collections
import json

import numpy as np
import pytest

from nanolm_jax.data import pipeline
from nanolm_jax.data import sources
from nanolm_jax.tokenizer import SentencePieceTokenizer

SEQ, BATCH = 64, 4


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A files source of documents of very different lengths (some longer than several rows)."""
  d = tmp_path_factory.mktemp('corpus')
  rng = np.random.default_rng(0)
  words = 'the of and a to in is you that it he was for on are as with his they at be this from'.split()
  docs = [f'doc{i} ' + ' '.join(rng.choice(words, size=int(rng.integers(1, 120)))) for i in range(200)]
  with open(d / 'docs.jsonl', 'w') as f:
    for doc in docs:
      f.write(json.dumps({'text': doc}) + '\n')
  cfg = sources.default_data_config()
  cfg.sources, cfg.val_fraction = f'files:{d}/docs.jsonl', 0.2
  return cfg


@pytest.fixture(scope='module')
def tok(corpus):
  return SentencePieceTokenizer.train(sources.iter_texts(corpus, 'train'), 320)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _segments(batches):
  """(inputs, targets, positions) per segment piece, in stream order."""
  out = []
  for b in batches:
    for r in range(b['inputs'].shape[0]):
      seg = b['segment_ids'][r]
      for s in range(1, seg.max() + 1):
        m = seg == s
        out.append((b['inputs'][r][m], b['targets'][r][m], b['positions'][r][m]))
  return out


def test_validation_pass_reconstructs_documents_exactly(corpus, tok):
  docs = list(sources.load_texts(corpus, 'validation'))
  batches = list(
      pipeline.make_lm_dataset(corpus, tok, split='validation', seq_len=SEQ, batch_size=BATCH, seed=0, repeat=False)
  )
  for b in batches:
    assert set(b) == set(pipeline.FEATURES)
    assert all(v.shape == (BATCH, SEQ) for v in b.values())
    assert all(b[k].dtype == np.int32 for k in ('inputs', 'targets', 'segment_ids', 'positions'))
    assert b['weights'].dtype == np.float32
    np.testing.assert_array_equal(b['weights'], (b['segment_ids'] > 0).astype(np.float32))
    np.testing.assert_array_equal(b['inputs'][b['segment_ids'] == 0], 0)  # padding is pad_id
  pieces = _segments(batches)
  for inputs, _, positions in pieces:
    np.testing.assert_array_equal(positions, np.arange(len(inputs)))  # restart at 0, also for continuations
  # Glue the pieces back into documents: a document starts at its bos input and ends at its eos target.
  rebuilt, cur_in, cur_tg = [], [], []
  for inputs, targets, _ in pieces:
    cur_in.extend(inputs)
    cur_tg.extend(targets)
    if targets[-1] == tok.eos_id:
      rebuilt.append((cur_in, cur_tg))
      cur_in, cur_tg = [], []
  assert not cur_in
  assert len(rebuilt) == len(docs)
  for (inputs, targets), doc in zip(rebuilt, docs):
    tokens = [tok.bos_id] + tok.encode(doc) + [tok.eos_id]
    assert inputs == tokens[:-1] and targets == tokens[1:]
  # The last batch is padded with empty rows rather than dropped.
  rows = sum(int((b['segment_ids'].max(axis=1) > 0).sum()) for b in batches)
  assert len(batches) == -(-rows // BATCH)


def test_no_target_crosses_a_document(corpus, tok):
  it = iter(pipeline.make_lm_dataset(corpus, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=3))
  for b in _take(it, 10):
    seg, inputs, targets = b['segment_ids'], b['inputs'], b['targets']
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    # Inside a segment the next input is this target; a bos input only ever starts a segment.
    np.testing.assert_array_equal(targets[:, :-1][same], inputs[:, 1:][same])
    assert not (inputs[:, 1:][same] == tok.bos_id).any()
    assert not (targets == tok.bos_id).any()


def test_deterministic_seeded_and_resumable(corpus, tok):
  ds = pipeline.make_lm_dataset(corpus, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=7)
  a, b = iter(ds), iter(ds)
  first = _take(a, 30)
  for x, y in zip(first, _take(b, 30)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other = next(iter(pipeline.make_lm_dataset(corpus, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=8)))
  assert not np.array_equal(other['inputs'], first[0]['inputs'])
  for n in (1, 13, 30):  # resume at several points, some mid-document
    it = iter(ds)
    _take(it, n)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 12)
    restored = iter(ds)
    restored.set_state(state)
    for x, y in zip(expected, _take(restored, 12)):
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_epochs_are_reshuffled_and_complete(corpus):
  train = list(sources.load_texts(corpus, 'train'))
  docs = pipeline.document_dataset(corpus, split='train', seed=1)
  epoch1 = [docs[i] for i in range(len(train))]
  epoch2 = [docs[i] for i in range(len(train), 2 * len(train))]
  assert sorted(epoch1) == sorted(epoch2) == sorted(train)
  assert epoch1 != epoch2 and epoch1 != train


def test_sharding_partitions_documents(corpus, tok):
  val = list(sources.load_texts(corpus, 'validation'))
  counts = []
  for p in range(3):
    docs = list(
        pipeline.document_dataset(corpus, split='validation', seed=0, process_index=p, process_count=3, repeat=False)
    )
    assert docs == val[p::3]
    batches = list(
        pipeline.make_lm_dataset(
            corpus,
            tok,
            split='validation',
            seq_len=SEQ,
            batch_size=2,
            seed=0,
            process_index=p,
            process_count=3,
            repeat=False,
        )
    )
    counts.append(sum(int((b['inputs'] == tok.bos_id).sum()) for b in batches))
  assert counts == [len(val[p::3]) for p in range(3)]
  train = set(sources.load_texts(corpus, 'train'))
  shards = [
      list(pipeline.document_dataset(corpus, split='train', seed=0, process_index=p, process_count=2, repeat=False))
      for p in range(2)
  ]
  assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == train
  with pytest.raises(ValueError, match='process_index'):
    pipeline.document_dataset(corpus, split='train', seed=0, process_index=2, process_count=2)


def test_mixture_weights_count_documents(tmp_path, tok):
  for name in 'ab':
    with open(tmp_path / f'{name}.jsonl', 'w') as f:
      for i in range(50):
        f.write(json.dumps({'text': f'{name} {i}'}) + '\n')
  cfg = sources.default_data_config()
  cfg.sources = f'files:{tmp_path}/a.jsonl@0.75;files:{tmp_path}/b.jsonl@0.25'
  docs = pipeline.document_dataset(cfg, split='train', seed=0)
  first = collections.Counter(docs[i][0] for i in range(400))  # several epochs of 'a': repeated before mixing
  assert first == {'a': 300, 'b': 100}


def test_bad_sources_fail_before_any_work(tok, tmp_path):
  cfg = sources.default_data_config()
  cfg.sources = f'files:{tmp_path}/missing/*.jsonl'
  with pytest.raises(ValueError, match='matches no files'):
    pipeline.make_lm_dataset(cfg, tok, split='train', seq_len=SEQ, batch_size=BATCH, seed=0)
