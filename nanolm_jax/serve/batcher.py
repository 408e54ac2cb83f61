"""Batches concurrent generation requests on one background thread: continuously, or into engine calls.

A request becomes rows (one per prompt x sample). `Batcher.submit` puts all of a request's rows on a bounded queue or
none (`QueueFull`, the server's 429). The worker thread waits a few milliseconds for company, then takes the oldest
row and every queued row that can share its engine call, up to `max_batch`:

  * sampling params are per prompt in the engine, so temperature / top-k / top-p / max_tokens may differ freely;
  * stop tokens and stop strings are per call in the engine, so they must match (chat rows vs completion rows);
  * a request with an explicit seed runs as its own call: the engine draws row r's token t from
    fold_in(fold_in(seed, r), t), so the same seed gives the same completions only at the same row positions.

With `pad_to_batch`, every call is padded to `max_batch` rows with one-token copies of its first row, so the engine
sees one batch shape and a server compiles once per prompt/cache bucket instead of once per batch size as well
(worth it where compiles are slow: large models, small CPUs).

`ContinuousBatcher` (the server's default) replaces the call-at-a-time worker with a continuous.SlotDecoder: rows
join the running decode at the next chunk boundary and leave it when done or cancelled (`cancel`: a client that
disconnected or timed out), every row with its own stop tokens, stop strings, sampler and seed. `Batcher` remains for
backends that run whole calls (`backend.run(rows)`: tests' scripted backends, benchmarks' before/after).

Tokens stream back through each row's `emit` (`TokenEvent`) as the engine reports them after each decode chunk;
`DoneEvent` carries the engine's `Completion` (finish reason, logprobs) when the call returns.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import threading
import time
from typing import Any, Callable, Hashable, Sequence

from nanolm_jax import continuous
from nanolm_jax import engine as engine_lib

log = logging.getLogger(__name__)


class QueueFull(Exception):
  """The queue cannot take the request's rows; the caller should retry later (HTTP 429)."""


class Stopped(Exception):
  """The batcher was shut down."""


@dataclasses.dataclass(frozen=True)
class TokenEvent:
  """One new token of a row, in order."""

  token: int


@dataclasses.dataclass(frozen=True)
class TokensEvent:
  """Several new tokens of a row, in order (a decode chunk's worth: one wake-up of the request, not one per token)."""

  tokens: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DoneEvent:
  """End of a row: the engine's Completion, or an error message when the call failed."""

  completion: engine_lib.Completion | None = None
  error: str | None = None


Event = TokenEvent | TokensEvent | DoneEvent


@dataclasses.dataclass(eq=False)
class Row:
  """One completion to generate. `emit` is called from the worker thread and must not block.

  group: rows with a group (a seeded request) only share an engine call with rows of the same group.
  """

  prompt: Sequence[int]
  sampling: engine_lib.SamplingParams
  emit: Callable[[Event], None]
  stop_tokens: tuple[int, ...] = ()
  stop_strings: tuple[str, ...] = ()
  seed: int | None = None
  group: Hashable = None
  index: int = 0  # the row's place in its request: a seeded row draws as Engine.generate's row `index`
  cancelled: bool = False  # set by the request (client gone, timeout); the row stops at the next chunk boundary

  @property
  def key(self) -> tuple[Any, ...]:
    return (self.stop_tokens, self.stop_strings, self.group)


@dataclasses.dataclass
class BatcherStats:
  """Counters for /health; batch sizes show whether concurrent requests really share engine calls."""

  batches: int = 0
  rows: int = 0
  rejected: int = 0
  failed_batches: int = 0
  max_batch_seen: int = 0
  batch_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  # Continuous batching: decode slots, how many hold a row now, rows that joined / were cancelled, decode chunks.
  slots: int = 0
  slots_in_use: int = 0
  joins: int = 0
  cancelled: int = 0
  chunks: int = 0

  def as_dict(self) -> dict[str, Any]:
    return {
        "slots": self.slots,
        "slots_in_use": self.slots_in_use,
        "joins": self.joins,
        "cancelled": self.cancelled,
        "chunks": self.chunks,
        "batches": self.batches,
        "rows": self.rows,
        "rejected": self.rejected,
        "failed_batches": self.failed_batches,
        "max_batch_seen": self.max_batch_seen,
        "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
    }


class EngineBackend:
  """Runs one batch of compatible rows as one Engine.generate call, streaming tokens to each row."""

  def __init__(self, eng: engine_lib.Engine):
    self.engine = eng

  @property
  def max_len(self) -> int:
    return self.engine.cfg.max_len

  def run(self, rows: Sequence[Row]) -> None:
    first = rows[0]
    seed = first.seed if first.seed is not None else secrets.randbits(31)

    def on_token(r: int, token: int, text_delta: str, generated: bool) -> None:
      del text_delta, generated  # the server detokenizes itself (content without special tokens)
      rows[r].emit(TokenEvent(int(token)))

    outs = self.engine.generate(
        [r.prompt for r in rows],
        [r.sampling for r in rows],
        n=1,
        seed=seed,
        stop_tokens=first.stop_tokens,
        stop_strings=first.stop_strings,
        on_token=on_token,
    )
    for r, c in zip(rows, outs):
      r.emit(DoneEvent(completion=c))


def _ignore(event: Event) -> None:
  del event


class _RowQueue:
  """The bounded row queue both batchers share: all-or-nothing submit, cancel, close; a worker thread drains it."""

  def _init_queue(
      self,
      max_batch: int,
      max_queue: int,
      batch_wait_s: float,
      stats: BatcherStats,
      name: str,
      loop: Callable[[], None],
  ):
    """Sets up the queue and starts `loop` (the batcher's worker) on its own thread."""
    if max_batch < 1 or max_queue < 1:
      raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
    self.max_batch, self.max_queue, self.batch_wait_s, self.stats = max_batch, max_queue, batch_wait_s, stats
    self._queue: list[Row] = []
    self._cond = threading.Condition()
    self._stopped = False
    self._thread = threading.Thread(target=loop, name=name, daemon=True)
    self._thread.start()

  @property
  def queued(self) -> int:
    return len(self._queue)

  def submit(self, rows: Sequence[Row]) -> None:
    """Queues all rows of a request, or none of them (QueueFull / Stopped)."""
    if len(rows) > self.max_batch:
      raise ValueError(f"a request may ask for at most {self.max_batch} completions, got {len(rows)}")
    with self._cond:
      if self._stopped:
        raise Stopped("the server is shutting down")
      if len(self._queue) + len(rows) > self.max_queue:
        self.stats.rejected += 1
        raise QueueFull(
            f"the request queue is full ({len(self._queue)} of {self.max_queue} completions waiting); " "retry later"
        )
      self._queue.extend(rows)
      self._cond.notify()

  def cancel(self, rows: Sequence[Row]) -> None:
    """Drops the rows still queued (a running engine call finishes its rows: their events go unread)."""
    with self._cond:
      for r in rows:
        r.cancelled = True
      kept = [r for r in self._queue if not r.cancelled]
      self.stats.cancelled += len(self._queue) - len(kept)
      self._queue = kept

  def close(self, timeout: float = 30.0) -> None:
    """Stops taking work; queued rows end with an error, the running batch finishes."""
    with self._cond:
      self._stopped = True
      pending, self._queue = self._queue, []
      self._cond.notify_all()
    for r in pending:
      r.emit(DoneEvent(error="the server is shutting down"))
    self._thread.join(timeout)


class Batcher(_RowQueue):
  """A bounded row queue drained by one worker thread into `backend.run` (one engine call at a time)."""

  def __init__(
      self,
      backend: Any,
      max_batch: int = 16,
      max_queue: int = 256,
      batch_wait_s: float = 0.01,
      pad_to_batch: bool = False,
  ):
    self.backend = backend
    self.pad_to_batch = pad_to_batch
    self._init_queue(max_batch, max_queue, batch_wait_s, BatcherStats(), "nanolm-batcher", self._loop)

  def _take(self) -> list[Row]:
    with self._cond:
      while not self._queue and not self._stopped:
        self._cond.wait()
      # A short wait lets requests that arrive together share the call.
      deadline = time.monotonic() + self.batch_wait_s
      while len(self._queue) < self.max_batch and not self._stopped:
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._cond.wait(left)
      if self._stopped:
        return []
      key = self._queue[0].key
      take, keep = [], []
      for r in self._queue:
        (take if r.key == key and len(take) < self.max_batch else keep).append(r)
      self._queue = keep
      return take

  def _padded(self, rows: list[Row]) -> list[Row]:
    if not self.pad_to_batch or len(rows) >= self.max_batch:
      return rows
    # Same prompt (no extra prefill row), same key, one greedy token; appended so real rows keep their positions.
    r = rows[0]
    pad = dataclasses.replace(r, sampling=engine_lib.SamplingParams(temperature=0.0, max_new_tokens=1), emit=_ignore)
    return rows + [pad] * (self.max_batch - len(rows))

  def _loop(self) -> None:
    while True:
      rows = self._take()
      if not rows:
        return
      self.stats.batches += 1
      self.stats.rows += len(rows)
      self.stats.batch_sizes[len(rows)] += 1
      self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(rows))
      try:
        self.backend.run(self._padded(rows))
      except Exception as e:  # pylint: disable=broad-except
        # One bad batch must not kill the server: its rows end with an error and the worker goes on.
        self.stats.failed_batches += 1
        log.exception("generation failed for a batch of %d rows", len(rows))
        for r in rows:
          r.emit(DoneEvent(error=f"generation failed: {type(e).__name__}: {e}"))


class ContinuousBatcher(_RowQueue):
  """Batcher's API over a continuous.SlotDecoder: queued rows join the running decode at the next chunk boundary.

  Rows wait in a bounded queue (QueueFull beyond max_queue) until a slot is free; each worker iteration retires
  finished and cancelled rows, admits waiting ones and runs one decode chunk, streaming its tokens. An idle worker
  waits batch_wait_s for company before the first chunk, so requests that arrive together share one prefill.
  """

  def __init__(
      self,
      eng: engine_lib.Engine,
      slots: int = 32,
      max_batch: int = 16,
      max_queue: int = 256,
      batch_wait_s: float = 0.01,
      max_new_tokens: int = 0,
  ):
    self.engine = eng
    self._new_decoder = lambda: continuous.SlotDecoder(eng, slots, max_new_tokens)
    self.decoder = self._new_decoder()
    self._live: dict[Row, continuous.Request] = {}  # rows in the decoder, for cancellation
    self._flush: dict[Row, Callable[[], None]] = {}  # emits a live row's tokens of the last chunk
    self._done_before: dict[str, int] = {}  # counters of decoders replaced after a failure
    self._init_queue(
        max_batch, max_queue, batch_wait_s, BatcherStats(slots=self.decoder.slots), "nanolm-continuous", self._loop
    )

  @property
  def max_len(self) -> int:
    return self.engine.cfg.max_len

  def _request(self, row: Row, seed: int) -> continuous.Request:
    pending: list[int] = []  # the chunk's tokens, emitted together when the row's turn in the chunk ends

    def on_token(token: int, text_delta: str, generated: bool) -> None:
      del text_delta, generated  # the server detokenizes itself
      pending.append(int(token))

    def flush() -> None:
      if pending:
        row.emit(TokensEvent(tuple(pending)))
        pending.clear()

    def on_done(c: engine_lib.Completion) -> None:
      flush()
      self._live.pop(row, None)
      self._flush.pop(row, None)
      if c.finish_reason == "cancelled":
        self.stats.cancelled += 1
        row.emit(DoneEvent(error="cancelled"))
      else:
        row.emit(DoneEvent(completion=c))

    self._flush[row] = flush
    return continuous.Request(
        row.prompt,
        row.sampling,
        seed=seed,
        row=row.index,
        stop_tokens=row.stop_tokens,
        stop_strings=row.stop_strings,
        on_token=on_token,
        on_done=on_done,
    )

  def _take(self) -> bool:
    """Moves queued rows into the decoder's free slots (waiting for company when idle); False once stopped."""
    dec = self.decoder
    with self._cond:
      while not self._queue and not dec.busy and not self._stopped:
        self._cond.wait()
      if not dec.busy:
        deadline = time.monotonic() + self.batch_wait_s
        while len(self._queue) < dec.slots and not self._stopped and time.monotonic() < deadline:
          self._cond.wait(max(deadline - time.monotonic(), 0))
      if self._stopped:
        return False
      # Cancelled rows give their slots back at the start of the next step, before it admits.
      free = dec.slots - dec.active - len(dec.waiting) + sum(r.cancelled for r in self._live)
      take, self._queue = self._queue[:free], self._queue[free:]
    seeds: dict[Hashable, int] = {}
    for row in take:
      seed = row.seed if row.seed is not None else seeds.setdefault(row.group or id(row), secrets.randbits(31))
      req = self._request(row, seed)
      try:
        dec.add(req)
      except ValueError as e:
        row.emit(DoneEvent(error=f"generation failed: {e}"))
        continue
      self._live[row] = req
    if take:
      self.stats.batches += 1
      self.stats.rows += len(take)
      self.stats.batch_sizes[len(take)] += 1
      self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(take))
    return True

  def _loop(self) -> None:
    while self._take():
      for row, req in list(self._live.items()):
        req.cancelled = req.cancelled or row.cancelled
      try:
        self.decoder.step()
      except Exception as e:  # pylint: disable=broad-except
        # A failed chunk must not kill the server: its rows end with an error, a fresh decoder goes on.
        self.stats.failed_batches += 1
        log.exception("decoding failed with %d rows", len(self._live))
        live, self._live, self._flush = self._live, {}, {}
        for row in live:
          row.emit(DoneEvent(error=f"generation failed: {type(e).__name__}: {e}"))
        self._done_before = {k: self._done_before.get(k, 0) + v for k, v in self.decoder.stats.items()}
        self.decoder = self._new_decoder()
      for flush in list(self._flush.values()):
        flush()
      self.stats.slots_in_use = self.decoder.active
      self.stats.joins = self._done_before.get("joins", 0) + self.decoder.stats["joins"]
      self.stats.chunks = self._done_before.get("chunks", 0) + self.decoder.stats["chunks"]
    for row in list(self._live):
      row.emit(DoneEvent(error="the server is shutting down"))
