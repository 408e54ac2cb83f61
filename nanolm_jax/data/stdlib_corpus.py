"""The embedded default corpus: English prose that ships with every CPython.

Documents are the standard library's docstrings (modules, classes, functions and methods; found by ``ast``-parsing the
stdlib's ``.py`` sources, so nothing is imported or executed) plus the ``pydoc_data.topics`` help pages. Both depend on
the Python version (3.11 and 3.12 ship different docstrings), so the TFDS builder has one config per interpreter
version (``stdlib_corpus/py311``) and a corpus is only comparable between runs on the same minor version.

Everything is deterministic: files are walked in sorted order, duplicates (e.g. ``_pyio`` copying ``io``) keep the
first key in sorted order, and a document goes to 'validation' iff a stable hash of its key falls below
``VALIDATION_FRACTION``.

Usage::

  ds = load_split('train', data_dir=...)  # random-access sequence of {'text': bytes, 'source': bytes}
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Iterator, Sequence
import hashlib
import os
import re
import sys
import sysconfig
from typing import Any

from nanolm_jax.data.tfds_compat import tfds

MIN_CHARS = 200  # Shorter docstrings are mostly one-line summaries: little prose, lots of boilerplate.
VALIDATION_FRACTION = 0.03
# Directories never parsed: tests (huge, not prose), GUI/IDE code, vendored wheels, third-party packages.
_SKIP_DIRS = frozenset(
    {
        'site-packages',
        'dist-packages',
        'test',
        'tests',
        'idle_test',
        'idlelib',
        'tkinter',
        'turtledemo',
        '__pycache__',
        '_bundled',
        '__phello__',
        'lib-dynload',
    }
)
# Modules with import-time side effects; ast parsing would be harmless, but they hold no prose either.
_SKIP_MODULES = frozenset({'antigravity', 'this', '__hello__'})
_BLANK_RUN = re.compile(r'\n{3,}')


def python_tag() -> str:
  """'py311' for CPython 3.11: the builder config name, since the corpus differs between versions."""
  return f'py{sys.version_info.major}{sys.version_info.minor}'


def stable_fraction(key: str) -> float:
  """A hash of ``key`` mapped to [0, 1); unlike ``hash()`` it is the same in every process and Python version."""
  digest = hashlib.blake2b(key.encode('utf-8'), digest_size=8).digest()
  return int.from_bytes(digest, 'big') / 2.0**64


def clean_text(text: str) -> str:
  """Strips trailing spaces per line and collapses runs of blank lines (docstrings are already dedented)."""
  lines = [line.rstrip() for line in text.strip().splitlines()]
  return _BLANK_RUN.sub('\n\n', '\n'.join(lines))


def _module_name(root: str, path: str) -> str:
  rel = os.path.relpath(path, root)[: -len('.py')].replace(os.sep, '.')
  return rel[: -len('.__init__')] if rel.endswith('.__init__') else rel


def _docstrings(tree: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
  """Yields (qualified name, cleaned docstring) for a module and its classes/functions, depth first."""
  doc = ast.get_docstring(tree, clean=True)
  if doc:
    yield prefix, clean_text(doc)
  for child in getattr(tree, 'body', ()):
    if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      yield from _docstrings(child, f'{prefix}.{child.name}')


def iter_stdlib_docstrings(stdlib_dir: str | None = None) -> Iterator[tuple[str, str]]:
  """Yields (key, text) for every stdlib docstring, in sorted file order; files that fail to parse are skipped."""
  root = stdlib_dir or sysconfig.get_path('stdlib')
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith('config-'))
    for filename in sorted(filenames):
      if not filename.endswith('.py'):
        continue
      path = os.path.join(dirpath, filename)
      module = _module_name(root, path)
      if module in _SKIP_MODULES:
        continue
      try:
        with open(path, 'rb') as f:
          tree = ast.parse(f.read(), filename=path)
      except (SyntaxError, ValueError, OSError):  # e.g. deliberately broken files kept as test data
        continue
      for name, text in _docstrings(tree, module):
        yield f'stdlib:{name}', text


def iter_pydoc_topics() -> Iterator[tuple[str, str]]:
  """Yields (key, text) for the ``help('topic')`` pages; the module is a plain dict literal, safe to import."""
  try:
    from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  except ImportError:  # some distributions strip it
    return
  for name in sorted(topics.topics):
    yield f'pydoc_topics:{name}', clean_text(topics.topics[name])


def collect_documents(min_chars: int = MIN_CHARS, stdlib_dir: str | None = None) -> list[tuple[str, str]]:
  """All corpus documents as sorted, de-duplicated (key, text) pairs of at least ``min_chars`` characters."""
  docs = [(k, t) for k, t in iter_stdlib_docstrings(stdlib_dir) if len(t) >= min_chars]
  docs += [(k, t) for k, t in iter_pydoc_topics() if len(t) >= min_chars]
  docs.sort()
  seen = set()
  unique = []
  for key, text in docs:
    if text not in seen:
      seen.add(text)
      unique.append((key, text))
  return unique


def split_of(key: str, validation_fraction: float = VALIDATION_FRACTION) -> str:
  return 'validation' if stable_fraction(key) < validation_fraction else 'train'


def split_documents(
    docs: Sequence[tuple[str, str]], validation_fraction: float = VALIDATION_FRACTION
) -> dict[str, list[tuple[str, str]]]:
  """{'train': [...], 'validation': [...]}, each in the input order."""
  out = collections.defaultdict(list)
  for key, text in docs:
    out[split_of(key, validation_fraction)].append((key, text))
  return {'train': out['train'], 'validation': out['validation']}


class StdlibCorpus(tfds.core.GeneratorBasedBuilder):
  """Standard-library docstrings and pydoc topics of the running Python, as train/validation text."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Docstrings >= 200 chars + pydoc topics; 3% validation by key hash.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name=python_tag(),
          description=f'Corpus of the Python {sys.version_info.major}.{sys.version_info.minor} stdlib.',
      )
  ]

  def __init__(self, **kwargs: Any):
    kwargs.setdefault('file_format', 'array_record')  # random access via tfds.data_source, no TensorFlow needed
    super().__init__(**kwargs)
    self._splits_cache: dict[str, list[tuple[str, str]]] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({'text': tfds.features.Text(), 'source': tfds.features.Text()}),
        description=__doc__,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict[str, str]]]]:
    del dl_manager  # nothing to download
    splits = split_documents(collect_documents())
    return {name: self._generate_examples(docs) for name, docs in splits.items()}

  def _generate_examples(self, docs: list[tuple[str, str]]) -> Iterator[tuple[str, dict[str, str]]]:
    for key, text in docs:
      yield key, {'text': text, 'source': key}


def builder(data_dir: str = '') -> StdlibCorpus:
  """The builder for this interpreter's config; ``data_dir`` '' means TFDS's default (~/tensorflow_datasets)."""
  return StdlibCorpus(data_dir=data_dir or None)


def load_split(split: str, data_dir: str = '') -> Sequence[dict[str, Any]]:
  """Random-access records {'text': bytes, 'source': bytes} of ``split``, preparing the dataset on first use."""
  b = builder(data_dir)
  b.download_and_prepare()  # a no-op once the array_record files exist
  return b.as_data_source(split=split)
