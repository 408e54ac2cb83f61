"""The bridge between a request on the event loop and its rows on the batcher's worker thread.

The worker calls each row's `emit` from its own thread; `Generation` hands those events to the event loop through a
queue and applies them to the request's `Choice`s, under the request's deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from typing import AsyncIterator, Callable, Sequence

from nanolm_jax import engine as engine_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import batcher as batcher_lib
from nanolm_jax.serve import protocol
from nanolm_jax.serve import streaming


@dataclasses.dataclass(frozen=True)
class Job:
  """What one request asks to generate: `options.n` completions of each prompt."""

  prompts: Sequence[Sequence[int]]
  options: protocol.RequestOptions
  max_tokens: int
  stop_tokens: tuple[int, ...]
  is_chat: bool


class Generation:
  """One request's completions as they arrive; create it on the event loop, then `start` it."""

  def __init__(self, timeout_s: float):
    self.choices: list[streaming.Choice] = []
    self._timeout_s = timeout_s
    self._loop = asyncio.get_running_loop()
    self._events: asyncio.Queue = asyncio.Queue()
    self._deadline = math.inf
    self._batcher: batcher_lib.Batcher | None = None
    self._rows: Sequence[batcher_lib.Row] = ()

  def emitter(self, index: int) -> Callable[[batcher_lib.Event], None]:
    """The `emit` for row `index`: called on the worker thread, so it only schedules the event on the loop."""

    def emit(event: batcher_lib.Event) -> None:
      try:
        self._loop.call_soon_threadsafe(self._events.put_nowait, (index, event))
      except RuntimeError:  # the event loop is gone (server shutting down)
        pass

    return emit

  def start(self, batcher: batcher_lib.Batcher, rows: Sequence[batcher_lib.Row]) -> None:
    """Queues all rows (or none); the request's time limit runs from here."""
    self._batcher, self._rows = batcher, rows
    try:
      batcher.submit(rows)
    except batcher_lib.QueueFull as e:
      raise protocol.ApiError(429, str(e), type_="rate_limit_error", code="queue_full") from None
    except batcher_lib.Stopped as e:
      raise protocol.ApiError(503, str(e), type_="server_error") from None
    self._deadline = time.monotonic() + self._timeout_s

  async def updates(self, wait_for_engine: bool) -> AsyncIterator[streaming.Choice]:
    """Yields each choice as it changes, until all are settled (see `Choice.settled`)."""
    pending = set(range(len(self.choices)))
    try:
      async for choice in self._settle(pending, wait_for_engine):
        yield choice
    finally:
      # A client that went away (closed stream), a timeout or an error: free the rows' decode slots.
      if pending and self._rows:
        self._batcher.cancel(self._rows)

  async def _settle(self, pending: set[int], wait_for_engine: bool) -> AsyncIterator[streaming.Choice]:
    while pending:
      left = self._deadline - time.monotonic()
      try:
        index, event = await asyncio.wait_for(self._events.get(), timeout=max(left, 0.0))
      except (asyncio.TimeoutError, TimeoutError):
        raise protocol.ApiError(
            504,
            f"generation did not finish within {self._timeout_s:g} s",
            type_="server_error",
            code="timeout",
        ) from None
      choice = self.choices[index]
      if index not in pending:
        continue
      if isinstance(event, batcher_lib.TokenEvent):
        choice.add_token(event.token)
      elif isinstance(event, batcher_lib.TokensEvent):
        for token in event.tokens:
          choice.add_token(token)
      else:
        choice.finish(event)
        if choice.error is not None:
          raise protocol.ApiError(500, choice.error, type_="server_error")
      if choice.settled(wait_for_engine):
        pending.discard(index)
      yield choice

  async def wait(self, wait_for_engine: bool) -> None:
    """Runs to the end without streaming."""
    async for _ in self.updates(wait_for_engine):
      pass


def start(batcher: batcher_lib.Batcher, tokenizer: tokenizer_lib.Tokenizer, job: Job, timeout_s: float) -> Generation:
  """Submits the job's rows (n per prompt, in order) to the batcher; must run on the event loop."""
  options = job.options
  generation = Generation(timeout_s)
  sampling = engine_lib.SamplingParams(
      temperature=options.temperature, top_k=options.top_k, top_p=options.top_p, max_new_tokens=job.max_tokens
  )
  # A seeded request's row i draws as row i of a solo engine call (continuous batcher), or runs as one engine call of
  # its own (call-at-a-time batcher): either way the same seed gives the same tokens.
  group = uuid.uuid4().hex if options.seed is not None else None
  rows = []
  for prompt in job.prompts:
    for _ in range(options.n):
      index = len(generation.choices)
      generation.choices.append(
          streaming.Choice(
              index, tokenizer, job.stop_tokens, options.stop, job.max_tokens, job.is_chat, prompt_tokens=len(prompt)
          )
      )
      rows.append(
          batcher_lib.Row(
              prompt=prompt,
              sampling=sampling,
              emit=generation.emitter(index),
              stop_tokens=job.stop_tokens,
              stop_strings=options.stop,
              seed=options.seed,
              group=group,
              index=len(rows),
          )
      )
  generation.start(batcher, rows)
  return generation
