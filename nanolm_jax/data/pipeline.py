"""Language-model batches: documents -> tokens -> packed rows of seq_len -> batches (grain).

Per document the tokens are ``[bos] + ids + [eos]``; inputs are tokens[:-1] and targets tokens[1:], computed before
packing, so no target ever predicts across a document boundary. Rows are packed with grain's concat-then-split (no
padding except at the very end of a finite pass; a long document continues in the next row). Per row:

  segment_ids  1, 2, 3, ... per document piece in the row, 0 on padding
  positions    0, 1, 2, ... restarting at every segment, including a document continued from the previous row
  weights      1.0 where there is a real target, 0.0 on padding

Sharding: process p of n reads records p::n of each source, and ``batch_size`` is the per-process batch. Training
(split='train') shuffles documents with ``seed`` and, with ``repeat``, reshuffles every epoch; several sources are
mixed by weight per document. Validation is read in stored order, sources concatenated, and with ``repeat=False`` it
ends after one pass, the last batch padded with all-zero rows (weights 0) instead of being dropped.

The iterator of the returned dataset supports ``get_state()``/``set_state()``; states are JSON-serialisable and a
restored iterator continues exactly where the saved one was. ``data.num_workers > 0`` tokenizes and packs in grain
worker processes (``mp_prefetch``); those need absl flags parsed (run under ``absl.app.run``) and give a different
(still deterministic) order than ``num_workers=0``, so keep it fixed within a run.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import grain
import ml_collections
import numpy as np

from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import sources as sources_lib

FEATURES = ('inputs', 'targets', 'segment_ids', 'positions', 'weights')


class _TokenizeDocument:
  """str -> {'inputs', 'targets'} int32 arrays of len(ids) + 1; holds only the model bytes, so it pickles."""

  def __init__(self, model_proto: bytes):
    self._model_proto = model_proto
    self._tok = None

  def __getstate__(self) -> dict[str, Any]:
    return {'_model_proto': self._model_proto, '_tok': None}

  def __call__(self, text: str) -> dict[str, np.ndarray]:
    if self._tok is None:
      self._tok = tokenizer_lib.SentencePieceTokenizer(self._model_proto)
    tokens = np.asarray(self._tok.encode(text, bos=True, eos=True), np.int32)
    return {'inputs': tokens[:-1], 'targets': tokens[1:]}


class FinishBatch:
  """Renames packing outputs, sets weights (a packed per-token 'weights' field, e.g. SFT's loss mask, else 1) to 0
  on padding, and pads a short final batch up to ``batch_size`` rows."""

  def __init__(self, batch_size: int):
    self._batch_size = batch_size

  def __call__(self, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    segment_ids = b['targets_segment_ids']
    out = {
        'inputs': b['inputs'],
        'targets': b['targets'],
        'segment_ids': segment_ids,
        'positions': b['targets_positions'],
        'weights': np.where(segment_ids != 0, b.get('weights', 1.0), 0).astype(np.float32),
    }
    missing = self._batch_size - segment_ids.shape[0]
    if missing:
      out = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
    return out


def _tuples_to_lists(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _tuples_to_lists(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_tuples_to_lists(v) for v in x]
  return x


def _restore_slices(x: Any) -> Any:
  """Undoes JSON's tuple -> list on packing states: grain compares ``remainder_slices`` values with tuples."""
  if isinstance(x, dict):
    return {
        k: ({f: tuple(s) for f, s in v.items()} if k == 'remainder_slices' else _restore_slices(v))
        for k, v in x.items()
    }
  if isinstance(x, list):
    return [_restore_slices(v) for v in x]
  return x


class _JsonStateIterator(grain.DatasetIterator):
  """Passes elements through; get_state/set_state speak plain JSON types (lists, not tuples)."""

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return _tuples_to_lists(self._parent.get_state())

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(_restore_slices(copy.deepcopy(state)))

  def close(self) -> None:
    close = getattr(self._parent, 'close', None)
    if close is not None:
      close()


class _JsonStateDataset(grain.IterDataset):

  def __iter__(self) -> _JsonStateIterator:
    return _JsonStateIterator(self._parent.__iter__())


def document_dataset(
    data_cfg: ml_collections.ConfigDict,
    *,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
) -> grain.MapDataset:
  """This process's documents (str) in reading order: sharded, shuffled/repeated for 'train', mixed by weight."""
  return shard_shuffle_mix(
      sources_lib.load_sources(data_cfg, split),
      split=split,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      repeat=repeat,
  )


def shard_shuffle_mix(
    sources: Sequence[tuple[Any, grain.MapDataset]],
    *,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
    what: str = 'documents',
) -> grain.MapDataset:
  """(spec, records) per source -> this process's records: its shard of each source, shuffled (train) and
  repeated per source, then mixed by the specs' weights (validation without repeat: concatenated)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in [0, process_count={process_count}).')
  parts, weights = [], []
  for k, (spec, ds) in enumerate(sources):
    ds = ds[process_index::process_count]
    if len(ds) == 0:
      raise ValueError(f'Source {spec}: no {split} {what} for process {process_index} of {process_count}.')
    if split == 'train':
      ds = ds.shuffle(seed=(seed * 1_000_003 + k) % 2**32)  # one stream per source; repeat() reseeds per epoch
    if repeat:
      ds = ds.repeat()
    parts.append(ds)
    weights.append(spec.weight)
  if len(parts) == 1:
    return parts[0]
  if split == 'validation' and not repeat:
    return grain.MapDataset.concatenate(parts)
  return grain.MapDataset.mix(parts, weights)


def make_lm_dataset(
    data_cfg: ml_collections.ConfigDict,
    tokenizer: tokenizer_lib.Tokenizer,
    *,
    split: str,
    seq_len: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
) -> grain.IterDataset:
  """Packed LM batches: dicts of FEATURES, each (batch_size, seq_len); int32 except weights (float32)."""
  if seq_len < 1 or batch_size < 1:
    raise ValueError(f'seq_len={seq_len} and batch_size={batch_size} must be positive.')
  docs = document_dataset(
      data_cfg, split=split, seed=seed, process_index=process_index, process_count=process_count, repeat=repeat
  )
  tokens = docs.map(_TokenizeDocument(tokenizer.model_proto))

  def pack(ds: grain.IterDataset) -> grain.IterDataset:
    return grain.experimental.ConcatThenSplitIterDataset(ds, length_struct={'inputs': seq_len, 'targets': seq_len})

  return batched(tokens, pack, data_cfg, batch_size)


def batched(
    examples: grain.MapDataset,
    pack: Callable[[grain.IterDataset], grain.IterDataset],
    data_cfg: ml_collections.ConfigDict,
    batch_size: int,
) -> grain.IterDataset:
  """The tail every packed dataset shares: read ahead, pack, batch, finish (weights, padding), optional worker
  processes, JSON iterator states. ``data_cfg`` gives ``num_threads`` and ``num_workers``."""
  ds = examples.to_iter_dataset(grain.ReadOptions(num_threads=int(data_cfg.num_threads), prefetch_buffer_size=64))
  ds = pack(ds).batch(batch_size, drop_remainder=False).map(FinishBatch(batch_size))
  num_workers = int(data_cfg.get('num_workers', 0) or 0)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return _JsonStateDataset(ds)


def padding_like(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A batch of padding rows (weights 0) shaped like ``batch``: contributes nothing to a loss or an eval sum."""
  return {k: np.zeros_like(v) for k, v in batch.items()}


class ShardedBatches:
  """Several data shards read side by side: each batch holds every shard's next batch, shard after shard.

  A process that reads shards i*k .. i*k+k-1 of n*k then builds exactly the rows that k processes reading one shard
  each would, so a run's global batches do not depend on how many processes read them. A finite (validation)
  stream pads a shard that ran out with padding rows until every shard has.
  """

  def __init__(self, datasets: Sequence[Any]):
    self._datasets = list(datasets)

  def __iter__(self) -> _ShardedIterator:
    return _ShardedIterator([iter(d) for d in self._datasets])


class _ShardedIterator:

  def __init__(self, iterators: list[Any]):
    self._its = iterators
    self._done = [False] * len(iterators)

  def __iter__(self) -> _ShardedIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = []
    for j, it in enumerate(self._its):
      part = None
      if not self._done[j]:
        try:
          part = next(it)
        except StopIteration:
          self._done[j] = True
      parts.append(part)
    real = [p for p in parts if p is not None]
    if not real:
      raise StopIteration
    parts = [p if p is not None else padding_like(real[0]) for p in parts]
    return {k: np.concatenate([p[k] for p in parts]) for k in real[0]}

  def get_state(self) -> dict[str, Any]:
    return {'shards': [it.get_state() for it in self._its], 'done': list(self._done)}

  def set_state(self, state: dict[str, Any]) -> None:
    if len(state['shards']) != len(self._its):
      raise ValueError(f"data state holds {len(state['shards'])} shards but this process reads {len(self._its)}")
    for it, s in zip(self._its, state['shards']):
      it.set_state(s)
    self._done = list(state['done'])
