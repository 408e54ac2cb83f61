"""Text sources named by a spec string, as random-access grain datasets of documents (str).

Spec grammar (config ``data.sources``): sources separated by ';', each ``KIND[:ARG][@WEIGHT]``::

  stdlib                                   the embedded corpus (nanolm_jax.data.stdlib_corpus), weight 1
  stdlib@0.7;files:/crawl/*.jsonl.gz@0.3   70% / 30% of *documents* (not tokens) when training
  tfds:wikipedia/20230601.en               any TFDS dataset with a 'text' feature, read via tfds.data_source
  facts[:seed=0,num_known=40,...]          biographies of the synthetic fact world's known people (synthetic.facts)
  people[:seed=0,num_extras=3000,...]      one biography each of the fact world's one-off people (copying practice)
  arithmetic[:count=20000,max_steps=3,...] worked arithmetic word problems (synthetic.reasoning), answer last

KIND is split off at the first ':' and WEIGHT at the last '@' (so paths may contain ':' but not '@').

* stdlib: its own train/validation split; prepared under ``data.data_dir`` on first use.
* tfds:NAME[/CONFIG][:VERSION]: prepared (array_record) under ``data.data_dir`` when first asked; a dataset that
  cannot be prepared offline must already be there. Validation is its 'validation' split if it has one, else
  ``data.val_fraction`` of 'train' held out by a stable hash of the record index.
* files:GLOB: ``.jsonl``/``.jsonl.gz`` hold one ``{"text": ...}`` object per line (the crawl pipeline's output; lines
  that are not such objects are counted, logged and skipped); ``.txt``/``.txt.gz`` are one document per file (no
  splitting on blank lines: packing splits long documents anyway, and a file is the natural unit of a held-out
  document). ``data.val_fraction`` of the documents go to validation by a stable hash of their text, so duplicates
  land on the same side and the split does not change when files are renamed or reordered.

* facts[:ARG]: ARG is '' (defaults), a seed, or KEY=INT items of ``facts.default_world_config()``; 'train' holds
  ``repeats`` varied biographies per known person and ``qa_repeats`` question/answer documents about each of the
  first ``num_qa`` of them (mixed training), 'validation' one biography in a held-out phrasing each.

* people[:ARG]: the same ARG as facts; 'train' holds one biography of each of the world's ``num_extras`` one-off
  people (``facts.extra_people``), 'validation' one of ``num_extras // 20`` others. A name seen once cannot be
  memorised, only copied from earlier in its document: this is what teaches a small model to copy a new name (it
  is a separate source so that its weight does not dilute the known people's biographies).
* arithmetic[:ARG]: ARG is '' (defaults), a count, or KEY=INT items of ``reasoning.default_corpus_config()``;
  'train' holds ``count`` problems with worked solutions, 'validation' ``count // 20`` others (another seed). The
  plain-text counterpart of the SFT reasoning data, as synthetic math is part of real pretraining mixes: a small
  model that has never seen a worked sum in pretraining learns arithmetic from a few thousand SFT examples poorly.

Bad specs, missing files and empty sources raise ValueError naming the problem, before any training work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import json
import math
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np

from nanolm_jax import fs
from nanolm_jax.data import stdlib_corpus
from nanolm_jax.data.tfds_compat import tfds
from nanolm_jax.synthetic import facts
from nanolm_jax.synthetic import reasoning

SPLITS = ('train', 'validation')
FILE_SUFFIXES = ('.jsonl', '.jsonl.gz', '.txt', '.txt.gz')


def default_data_config() -> ml_collections.ConfigDict:
  """The ``data`` block every config embeds."""
  return ml_collections.ConfigDict(
      {
          'sources': 'stdlib',  # see the module docstring for the grammar
          'data_dir': '',  # TFDS data dir; '' = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)
          'val_fraction': 0.05,  # held-out fraction for sources without a validation split
          'num_workers': 0,  # grain worker processes (0 = in the main process)
          'num_threads': 2,  # grain read-ahead threads; more only add GIL contention on a 2-core machine
      }
  )


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One parsed ``KIND[:ARG][@WEIGHT]`` entry."""

  kind: str
  arg: str
  weight: float

  def __str__(self) -> str:
    return f'{self.kind}{":" + self.arg if self.arg else ""}@{self.weight:g}'


def split_spec(spec: str, kinds: Sequence[str], what: str = 'data.sources') -> list[tuple[str, SourceSpec]]:
  """``KIND[:ARG][@WEIGHT];...`` -> (entry text, SourceSpec) pairs; ValueError naming the first malformed entry."""
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f'{what} is empty ({spec!r}); e.g. "stdlib" or "stdlib@0.7;files:/x/*.jsonl.gz@0.3".')
  out = []
  for part in (p.strip() for p in spec.split(';')):
    if not part:
      continue
    body, weight = part, 1.0
    if '@' in part:
      body, weight_str = part.rsplit('@', 1)
      try:
        weight = float(weight_str)
      except ValueError:
        raise ValueError(f'Source {part!r}: weight {weight_str!r} after "@" is not a number.') from None
      if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f'Source {part!r}: weight must be a positive number, got {weight_str!r}.')
    kind, _, arg = body.partition(':')
    kind, arg = kind.strip(), arg.strip()
    if kind not in kinds:
      raise ValueError(f'Source {part!r}: unknown kind {kind!r}; expected one of {tuple(kinds)}.')
    out.append((part, SourceSpec(kind, arg, weight)))
  if not out:
    raise ValueError(f'{what} {spec!r} names no source.')
  return out


def parse_sources(spec: str) -> list[SourceSpec]:
  """Parses a spec string; raises ValueError on anything malformed (each kind checks its own argument)."""
  out = []
  for part, src in split_spec(spec, tuple(KINDS)):
    try:
      KINDS[src.kind].check(src.arg)
    except ValueError as e:
      raise ValueError(f'Source {part!r}: "{src.kind}" {e}') from None
    out.append(src)
  return out


def fingerprint(data_cfg: ml_collections.ConfigDict) -> list[Any]:
  """What the sources' documents depend on beyond the spec text (files' sizes and mtimes, the resolved fact world,
  the Python version of the stdlib corpus): part of every cache key derived from the data, e.g. the tokenizer's."""
  return [KINDS[s.kind].fingerprint(s) for s in parse_sources(data_cfg.sources) if KINDS[s.kind].fingerprint]


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')


def _hash_fractions(keys: np.ndarray) -> np.ndarray:
  """splitmix64 of uint64 ``keys`` mapped to [0, 1): a fast, platform-independent stable hash."""
  with np.errstate(over='ignore'):
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


class _TextField:
  """Record -> str for dict records whose ``field`` is bytes or str (a class, not a lambda, so it pickles)."""

  def __init__(self, field: str):
    self.field = field

  def __call__(self, record: Any) -> str:
    value = record[self.field]
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


class _IndexedSource:
  """A view of ``parent`` at ``indices`` (random access, picklable)."""

  def __init__(self, parent: Sequence[Any], indices: np.ndarray):
    self._parent = parent
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> Any:
    return self._parent[int(self._indices[i])]


def tfds_records(spec: SourceSpec, data_dir: str, val_fraction: float, split: str) -> Any:
  """The ``split`` records of TFDS dataset ``spec.arg`` (random access, array_record); without a validation split,
  ``val_fraction`` of 'train' is held out by a stable hash of the record index. ValueError names what is missing."""
  try:
    splits = tfds.data_source(spec.arg, data_dir=data_dir or None, builder_kwargs={'file_format': 'array_record'})
  except Exception as e:  # anything from "not found" to "no network": all mean this source is unusable
    reason = str(e).strip().split('\n')[0][:300]  # tfds appends the list of all known datasets
    raise ValueError(
        f'Source {spec}: cannot open TFDS dataset {spec.arg!r} in data_dir={data_dir or "(tfds default)"} '
        f'({type(e).__name__}: {reason}). Prepare it first (array_record format) if it needs downloading.'
    ) from e
  if 'train' not in splits:
    raise ValueError(f'Source {spec}: TFDS dataset has no "train" split (has {sorted(splits)}).')
  if 'validation' in splits:
    records = splits[split]
  else:
    records = splits['train']
    held_out = _hash_fractions(np.arange(len(records), dtype=np.uint64)) < val_fraction
    records = _IndexedSource(records, np.flatnonzero(held_out if split == 'validation' else ~held_out))
  if len(records) == 0:
    raise ValueError(f'Source {spec}: no records in the {split} split.')
  return records


def _tfds(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  records = tfds_records(spec, data_cfg.data_dir, data_cfg.val_fraction, split)
  first = records[0]
  if not isinstance(first, dict) or 'text' not in first:
    raise ValueError(
        f'Source {spec}: records need a "text" feature, got {sorted(first) if isinstance(first, dict) else type(first)}.'
    )
  return grain.MapDataset.source(records).map(_TextField('text'))


def _file_suffix(path: str) -> str | None:
  for suffix in FILE_SUFFIXES:
    if path.endswith(suffix):
      return suffix
  return None


def _read_file(path: str) -> tuple[list[str], int]:
  """(documents, number of bad JSONL lines) of one file."""
  suffix = _file_suffix(path)
  with fs.open_file(path, 'r', errors='replace') as f:
    if suffix.startswith('.txt'):
      text = f.read()
      return ([text] if text.strip() else []), 0
    docs, bad = [], 0
    lines = iter(f)
    while True:
      try:
        line = next(lines)
      except StopIteration:
        break
      except (EOFError, OSError) as e:  # e.g. a .gz cut short by a crashed writer: keep what was readable
        logging.warning('%s is truncated or corrupt after %d documents (%s); using those.', path, len(docs), e)
        bad += 1
        break
      if not line.strip():
        continue
      try:
        text = json.loads(line)['text']
      except (ValueError, KeyError, TypeError, IndexError):
        bad += 1
        continue
      if not isinstance(text, str):
        bad += 1
      elif text.strip():
        docs.append(text)
    return docs, bad


@functools.lru_cache(maxsize=4)
def _read_files(files: tuple[tuple[str, int, int], ...]) -> tuple[str, ...]:
  """All documents of ``files`` ((path, size, mtime) triples, so edits invalidate the cache), in file order."""
  docs, bad_total = [], 0
  for path, _, _ in files:
    file_docs, bad = _read_file(path)
    if bad:
      logging.warning('Skipped %d malformed JSONL lines (not {"text": str} objects) in %s.', bad, path)
    docs.extend(file_docs)
    bad_total += bad
  if bad_total:
    logging.warning('Skipped %d malformed JSONL lines in total.', bad_total)
  return tuple(docs)


def matched_files(spec: SourceSpec) -> list[str]:
  """Sorted files matched by a files: source; ValueError when none match or one has an unsupported type."""
  paths = fs.glob(spec.arg)
  if not paths:
    raise ValueError(f'Source {spec}: glob {spec.arg!r} matches no files.')
  for path in paths:
    if _file_suffix(path) is None:
      raise ValueError(f'Source {spec}: {path} has an unsupported type; expected one of {FILE_SUFFIXES}.')
  return paths


def file_fingerprint(spec: SourceSpec) -> tuple[tuple[str, int, int], ...]:
  """(path, size, mtime_ns) of each matched file: changes whenever the source's content may have."""
  return tuple((p, *fs.stat(p)) for p in matched_files(spec))


def _files(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  docs = _read_files(file_fingerprint(spec))
  if not docs:
    raise ValueError(f'Source {spec}: the matched files hold no documents.')
  fractions = np.array([stdlib_corpus.stable_fraction(d) for d in docs])
  held_out = fractions < data_cfg.val_fraction
  if data_cfg.val_fraction > 0 and not held_out.any() and len(docs) > 1:
    held_out[np.argmin(fractions)] = True  # a tiny source still gets a (deterministic) validation document
  chosen = [d for d, h in zip(docs, held_out) if h == (split == 'validation')]
  if not chosen:
    raise ValueError(
        f'Source {spec}: no documents in the {split} split ({len(docs)} in total, '
        f'val_fraction={data_cfg.val_fraction}).'
    )
  return grain.MapDataset.source(chosen)


def _stdlib(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  del spec
  records = stdlib_corpus.load_split(split, data_dir=data_cfg.data_dir)
  return grain.MapDataset.source(records).map(_TextField('text'))


def _facts(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  del data_cfg
  cfg = facts.parse_world_spec(spec.arg)
  world = facts.world_from_config(cfg)
  docs = facts.pretraining_documents(world, cfg.repeats, split)
  docs += facts.qa_documents(world, cfg.num_qa, cfg.qa_repeats, split)
  if not docs:
    raise ValueError(f'Source {spec}: no documents (num_known and repeats must be positive).')
  return grain.MapDataset.source(docs)


def _people(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  del data_cfg
  cfg = facts.parse_world_spec(spec.arg)
  docs = facts.extra_documents(facts.world_from_config(cfg), cfg.num_extras, split)
  if not docs:
    raise ValueError(f'Source {spec}: no documents (num_extras must be positive).')
  return grain.MapDataset.source(docs)


def _arithmetic(spec: SourceSpec, data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  del data_cfg
  return grain.MapDataset.source(reasoning.corpus_documents(reasoning.parse_corpus_spec(spec.arg), split))


def _no_argument(arg: str) -> None:
  if arg:
    raise ValueError('takes no argument.')


def _needs(what: str) -> Callable[[str], None]:
  def check(arg: str) -> None:
    if not arg:
      raise ValueError(f'needs an argument, e.g. {what}.')

  return check


@dataclasses.dataclass(frozen=True)
class SourceKind:
  """One kind of pretraining source: how to load a split, what its content depends on, how to check its ARG."""

  load: Callable[[SourceSpec, ml_collections.ConfigDict, str], grain.MapDataset]
  check: Callable[[str], Any]  # raises ValueError on a bad ARG, before any work
  fingerprint: Callable[[SourceSpec], Any] | None = None  # None: the spec text says it all


def _world_fingerprint(spec: SourceSpec) -> str:
  return facts.world_spec(facts.parse_world_spec(spec.arg))


# Adding a kind is one entry here (and a line in the module docstring).
KINDS: dict[str, SourceKind] = {
    'stdlib': SourceKind(_stdlib, _no_argument, lambda spec: stdlib_corpus.python_tag()),
    'tfds': SourceKind(_tfds, _needs('"tfds:NAME"')),
    'files': SourceKind(
        _files,
        _needs('"files:GLOB"'),
        lambda spec: [list(f) for f in file_fingerprint(spec)],
    ),
    'facts': SourceKind(_facts, facts.parse_world_spec, _world_fingerprint),
    'people': SourceKind(_people, facts.parse_world_spec, _world_fingerprint),
    'arithmetic': SourceKind(
        _arithmetic,
        reasoning.parse_corpus_spec,
        lambda spec: reasoning.parse_corpus_spec(spec.arg).to_json(sort_keys=True),
    ),
}


def load_sources(data_cfg: ml_collections.ConfigDict, split: str) -> list[tuple[SourceSpec, grain.MapDataset]]:
  """Each source of ``data_cfg.sources`` with its ``split`` as a MapDataset of str, in spec order."""
  _check_split(split)
  out = []
  for spec in parse_sources(data_cfg.sources):
    ds = KINDS[spec.kind].load(spec, data_cfg, split)
    if len(ds) == 0:
      raise ValueError(f'Source {spec}: no documents in the {split} split.')
    out.append((spec, ds))
  return out


def load_texts(data_cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
  """The documents (str) of ``split`` of all sources, each at most once.

  One source: its documents in stored order. Several: for 'train' interleaved by weight with ``MapDataset.mix``,
  which stops where the first source runs out relative to its weight; for 'validation' all sources concatenated, so
  every held-out document is there.
  """
  loaded = load_sources(data_cfg, split)
  if len(loaded) == 1:
    return loaded[0][1]
  if split == 'validation':
    return grain.MapDataset.concatenate([ds for _, ds in loaded])
  return grain.MapDataset.mix([ds for _, ds in loaded], [spec.weight for spec, _ in loaded])


def iter_texts(
    data_cfg: ml_collections.ConfigDict, split: str = 'train', max_bytes: int | None = None
) -> Iterator[str]:
  """The documents of ``load_texts`` in order, stopping once ``max_bytes`` UTF-8 bytes have been yielded."""
  total = 0
  for text in load_texts(data_cfg, split):
    if max_bytes is not None and total >= max_bytes:
      return
    total += len(text.encode('utf-8'))
    yield text


def corpus_stats(data_cfg: ml_collections.ConfigDict, split: str) -> dict[str, float]:
  """{'documents': n, 'bytes': UTF-8 bytes} of ``load_texts(data_cfg, split)``."""
  n = nbytes = 0
  for text in load_texts(data_cfg, split):
    n += 1
    nbytes += len(text.encode('utf-8'))
  return {'documents': n, 'bytes': nbytes}
