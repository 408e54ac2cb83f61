"""Tests for nanolm_jax.data.sources: spec parsing, files/tfds/stdlib loading, splits and mixing."""

import gzip
import hashlib
import json
import logging

import numpy as np
import pytest

from nanolm_jax.data import sources
from nanolm_jax.data import stdlib_corpus
from nanolm_jax.data.tfds_compat import tfds


class NanolmTrainOnly(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset with only a 'train' split, to exercise the deterministic hold-out."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(400):
      yield i, {'text': f'document number {i}'}


def _cfg(spec, data_dir='', val_fraction=0.05):
  cfg = sources.default_data_config()
  cfg.sources, cfg.data_dir, cfg.val_fraction = spec, data_dir, val_fraction
  return cfg


def _write_jsonl(path, rows, gz=False):
  opener = gzip.open if gz else open
  with opener(path, 'wt', encoding='utf-8') as f:
    for row in rows:
      f.write(row if isinstance(row, str) else json.dumps(row))
      f.write('\n')


def test_default_data_config():
  assert sources.default_data_config().to_dict() == {
      'sources': 'stdlib',
      'data_dir': '',
      'val_fraction': 0.05,
      'num_workers': 0,
      'num_threads': 2,
  }


def test_parse_sources():
  got = sources.parse_sources('stdlib@0.7; files:/a:b/*.jsonl.gz@0.3;tfds:wikipedia/20230601.en:1.0.0')
  assert got == [
      sources.SourceSpec('stdlib', '', 0.7),
      sources.SourceSpec('files', '/a:b/*.jsonl.gz', 0.3),
      sources.SourceSpec('tfds', 'wikipedia/20230601.en:1.0.0', 1.0),
  ]


@pytest.mark.parametrize(
    'spec,message',
    [
        ('', 'empty'),
        (';;', 'names no source'),
        ('web', 'unknown kind'),
        ('stdlib@', 'not a number'),
        ('stdlib@0', 'positive'),
        ('stdlib@nan', 'positive'),
        ('stdlib:x', 'no argument'),
        ('files', 'needs an argument'),
        ('tfds@2', 'needs an argument'),
    ],
)
def test_bad_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    sources.parse_sources(spec)


def test_arithmetic_source_splits():
  cfg = sources.default_data_config()
  cfg.sources = 'arithmetic:count=40'
  train, val = list(sources.load_texts(cfg, 'train')), list(sources.load_texts(cfg, 'validation'))
  assert len(train) == 40 and len(val) == 2 and all('The answer is' in d for d in train + val)


def test_hash_fractions_match_reference_splitmix64():
  def splitmix64(x):
    m = 2**64 - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return (z ^ (z >> 31)) >> 11

  keys = np.array([0, 1, 2, 12345, 2**40], np.uint64)
  np.testing.assert_array_equal(sources._hash_fractions(keys), [splitmix64(int(k)) / 2**53 for k in keys])


def test_files_formats_split_and_bad_lines(tmp_path, caplog):
  docs = [f'jsonl document {i}' for i in range(60)]
  _write_jsonl(tmp_path / 'a.jsonl', [{'text': d} for d in docs[:30]] + ['{not json', '[1, 2]', {'text': 5}, {'x': 1}])
  _write_jsonl(tmp_path / 'b.jsonl.gz', [{'text': d, 'url': 'u'} for d in docs[30:]] + [{'text': '   '}], gz=True)
  (tmp_path / 'c.txt').write_text('a text file\n\nis one document\n')
  with gzip.open(tmp_path / 'd.txt.gz', 'wt') as f:
    f.write('gzipped text file')
  all_docs = docs + ['a text file\n\nis one document\n', 'gzipped text file']
  cfg = _cfg(f'files:{tmp_path}/*', val_fraction=0.2)
  with caplog.at_level(logging.WARNING):
    train = list(sources.load_texts(cfg, 'train'))
  assert 'Skipped 4 malformed JSONL lines' in caplog.text
  val = list(sources.load_texts(cfg, 'validation'))
  expected_val = [d for d in all_docs if int(hashlib.blake2b(d.encode(), digest_size=8).hexdigest(), 16) / 2**64 < 0.2]
  assert val == expected_val and 0 < len(val) < 30
  assert train == [d for d in all_docs if d not in expected_val]


def test_truncated_gzip_keeps_readable_documents(tmp_path, caplog):
  _write_jsonl(tmp_path / 'full.jsonl.gz', [{'text': f'document {i} ' * 20} for i in range(200)], gz=True)
  data = (tmp_path / 'full.jsonl.gz').read_bytes()
  (tmp_path / 'cut.jsonl.gz').write_bytes(data[: len(data) // 2])
  cfg = _cfg(f'files:{tmp_path}/cut.jsonl.gz', val_fraction=0.0)
  with caplog.at_level(logging.WARNING):
    docs = list(sources.load_texts(cfg, 'train'))
  assert 'truncated or corrupt' in caplog.text
  assert 0 < len(docs) < 200 and docs == [f'document {i} ' * 20 for i in range(len(docs))]


def test_tiny_files_source_still_gets_one_validation_document(tmp_path):
  _write_jsonl(tmp_path / 'a.jsonl', [{'text': 'one'}, {'text': 'two'}])
  cfg = _cfg(f'files:{tmp_path}/a.jsonl', val_fraction=0.01)
  train, val = list(sources.load_texts(cfg, 'train')), list(sources.load_texts(cfg, 'validation'))
  assert len(train) == 1 and len(val) == 1 and set(train + val) == {'one', 'two'}
  with pytest.raises(ValueError, match='no documents in the validation split'):
    sources.load_texts(_cfg(f'files:{tmp_path}/a.jsonl', val_fraction=0.0), 'validation')


def test_files_errors(tmp_path):
  with pytest.raises(ValueError, match='matches no files'):
    sources.load_texts(_cfg(f'files:{tmp_path}/*.jsonl'), 'train')
  (tmp_path / 'x.csv').write_text('a,b')
  with pytest.raises(ValueError, match='unsupported type'):
    sources.load_texts(_cfg(f'files:{tmp_path}/*'), 'train')
  _write_jsonl(tmp_path / 'e.jsonl', ['garbage', {'text': ''}])
  with pytest.raises(ValueError, match='hold no documents'):
    sources.load_texts(_cfg(f'files:{tmp_path}/e.jsonl'), 'train')
  with pytest.raises(ValueError, match='split must be one of'):
    sources.load_texts(_cfg(f'files:{tmp_path}/e.jsonl'), 'test')


def test_mixing_by_weight_for_train_and_concatenation_for_validation(tmp_path):
  _write_jsonl(tmp_path / 'a.jsonl', [{'text': f'a{i}'} for i in range(300)])
  _write_jsonl(tmp_path / 'b.jsonl', [{'text': f'b{i}'} for i in range(300)])
  cfg = _cfg(f'files:{tmp_path}/a.jsonl@3;files:{tmp_path}/b.jsonl@1')
  mixed = list(sources.load_texts(cfg, 'train'))
  n_a = sum(t.startswith('a') for t in mixed)
  assert n_a == 3 * (len(mixed) - n_a)  # exactly 3:1, stopping when 'a' runs out
  assert len(set(mixed)) == len(mixed)
  val_a = list(sources.load_texts(_cfg(f'files:{tmp_path}/a.jsonl'), 'validation'))
  val_b = list(sources.load_texts(_cfg(f'files:{tmp_path}/b.jsonl'), 'validation'))
  assert list(sources.load_texts(cfg, 'validation')) == val_a + val_b
  assert list(sources.iter_texts(cfg, 'validation', max_bytes=1)) == val_a[:1]


def test_tfds_source_holds_out_by_index_hash_without_validation_split(tmp_path):
  cfg = _cfg('tfds:nanolm_train_only', data_dir=str(tmp_path), val_fraction=0.1)
  train, val = list(sources.load_texts(cfg, 'train')), list(sources.load_texts(cfg, 'validation'))
  records = tfds.data_source('nanolm_train_only', split='train', data_dir=str(tmp_path), download=False)
  everything = [records[i]['text'].decode() for i in range(len(records))]
  assert sorted(train + val) == sorted(everything) and not set(train) & set(val)
  held = sources._hash_fractions(np.arange(len(everything), dtype=np.uint64)) < 0.1
  assert val == [t for t, h in zip(everything, held) if h]
  assert 10 < len(val) < 80


def test_tfds_errors(tmp_path):
  with pytest.raises(ValueError, match='cannot open TFDS dataset'):
    sources.load_texts(_cfg('tfds:no_such_dataset_xyz', data_dir=str(tmp_path)), 'train')


@pytest.mark.slow
def test_stdlib_source_uses_its_own_split(tmp_path):
  cfg = _cfg('stdlib', data_dir=str(tmp_path))
  val = list(sources.load_texts(cfg, 'validation'))
  expected = stdlib_corpus.split_documents(stdlib_corpus.collect_documents())['validation']
  assert sorted(val) == sorted(t for _, t in expected)
  assert sources.corpus_stats(cfg, 'validation') == {
      'documents': len(expected),
      'bytes': sum(len(t.encode()) for _, t in expected),
  }
  # Through the tfds: kind too, since the builder is registered and has a validation split.
  assert sorted(sources.load_texts(_cfg('tfds:stdlib_corpus', data_dir=str(tmp_path)), 'validation')) == sorted(val)
