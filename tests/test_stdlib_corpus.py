"""Tests for nanolm_jax.data.stdlib_corpus: the docstring corpus and its TFDS builder."""

import hashlib
import inspect
import json
import os

import pytest

from nanolm_jax.data import stdlib_corpus
from nanolm_jax.data.tfds_compat import tfds

# Builds the embedded corpus (TFDS array_record) from scratch: left out of the inner loop, always in CI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def docs():
  return stdlib_corpus.collect_documents()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tfds'))
  stdlib_corpus.builder(d).download_and_prepare()
  return d


def test_documents_are_sorted_unique_long_and_deterministic(docs):
  keys = [k for k, _ in docs]
  assert keys == sorted(keys) and len(set(keys)) == len(keys)
  assert len({t for _, t in docs}) == len(docs)
  assert all(len(t) >= stdlib_corpus.MIN_CHARS for _, t in docs)
  assert stdlib_corpus.collect_documents() == docs
  # Both sources contribute, and the length threshold is what drops documents: with half of it, every extra
  # document is one the full threshold rejects.
  assert {k.split(':')[0] for k, _ in docs} == {'stdlib', 'pydoc_topics'}
  looser = stdlib_corpus.collect_documents(min_chars=stdlib_corpus.MIN_CHARS // 2)
  extra = {t for _, t in looser} - {t for _, t in docs}
  assert extra and all(len(t) < stdlib_corpus.MIN_CHARS for t in extra)
  assert {t for _, t in docs} <= {t for _, t in looser}


def test_docstrings_match_the_imported_objects(docs):
  import json as json_module  # pylint: disable=g-import-not-at-top
  import textwrap  # pylint: disable=g-import-not-at-top

  by_key = dict(docs)
  # ast-parsed docstrings equal what inspect reads from the live objects.
  assert by_key['stdlib:json.dumps'] == stdlib_corpus.clean_text(inspect.getdoc(json_module.dumps))
  assert by_key['stdlib:textwrap.TextWrapper'] == stdlib_corpus.clean_text(inspect.getdoc(textwrap.TextWrapper))


def test_pydoc_topics_included(docs):
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  by_key = dict(docs)
  assert by_key['pydoc_topics:assert'] == stdlib_corpus.clean_text(topics.topics['assert'])


def test_skipped_packages_absent(docs):
  modules = {k.split(':', 1)[1].split('.')[0] for k, _ in docs if k.startswith('stdlib:')}
  assert not modules & {'test', 'idlelib', 'tkinter', 'turtledemo', 'antigravity', 'this', 'site-packages'}
  assert {'json', 'collections', 'argparse'} <= modules


def test_clean_text():
  assert stdlib_corpus.clean_text('  a  \n\n\n\n b \t\n') == 'a\n\n b'


def test_stable_fraction_is_blake2b_based_and_split_follows_it(docs):
  key = 'stdlib:json.dumps'
  expected = int(hashlib.blake2b(key.encode(), digest_size=8).hexdigest(), 16) / 2**64
  assert stdlib_corpus.stable_fraction(key) == expected
  splits = stdlib_corpus.split_documents(docs)
  assert len(splits['train']) + len(splits['validation']) == len(docs)
  assert all(stdlib_corpus.stable_fraction(k) < stdlib_corpus.VALIDATION_FRACTION for k, _ in splits['validation'])
  assert 0.01 < len(splits['validation']) / len(docs) < 0.06


def test_builder_writes_array_record_readable_by_data_source(docs, data_dir):
  version_dir = os.path.join(data_dir, 'stdlib_corpus', stdlib_corpus.python_tag(), '1.0.0')
  assert any('array_record' in f for f in os.listdir(version_dir))
  expected = stdlib_corpus.split_documents(docs)
  for split in ('train', 'validation'):
    ds = tfds.data_source('stdlib_corpus', split=split, data_dir=data_dir, download=False)
    got = {ds[i]['source'].decode(): ds[i]['text'].decode() for i in range(len(ds))}
    assert got == dict(expected[split])
  with open(os.path.join(version_dir, 'dataset_info.json')) as f:
    assert json.load(f)['fileFormat'] == 'array_record'
