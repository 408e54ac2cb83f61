"""The server's continuous batcher: joins mid-decode, cancellation on disconnect, 64 concurrent streams, keep-alive.

A random-weight tiny model (tests/test_engine.py's) with the small test tokenizer: no training, so these stay fast.
"""

import asyncio
import dataclasses
import threading
import time

import httpx
import pytest

from tests import sse

from nanolm_jax import chat as chat_lib
from nanolm_jax import engine as E
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import app as app_lib
from nanolm_jax.serve import batcher as batcher_lib
from nanolm_jax.serve import streaming
from tests.test_engine import _shared
from tests.test_serve import ServerThread

HELLO = [{"role": "user", "content": "Hi! What can you do?"}]
LIMITS = app_lib.Limits(
    max_tokens_limit=40, max_batch=4, max_queue=128, slots=16, chunk_steps=2, batch_wait_s=0.02, request_timeout_s=120
)


@pytest.fixture(scope="module")
def run(small_tokenizer):
  m, params = _shared("tiny")
  return runs.Run("random_tiny", None, m, params, tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer))


@pytest.fixture(scope="module")
def server(run):
  with ServerThread(app_lib.create_app(run, LIMITS)) as s:
    yield s


class _Rows:
  """Rows whose events are collected, with a signal per row when it ends."""

  def __init__(self):
    self.tokens, self.done, self.ended = {}, {}, {}

  def row(self, key, prompt, sampling, **kw):
    self.tokens[key], self.ended[key] = [], threading.Event()

    def emit(ev):
      if isinstance(ev, batcher_lib.TokensEvent):
        self.tokens[key].extend(ev.tokens)
      else:
        self.done[key] = ev
        self.ended[key].set()

    return batcher_lib.Row(prompt, sampling, emit, **kw)


def test_joining_row_gets_its_solo_completion_and_cancelling_frees_the_slot(run):
  eng = E.Engine(run.model, run.params, run.tokenizer, chunk_steps=2)
  batcher = batcher_lib.ContinuousBatcher(eng, slots=2, max_new_tokens=32, batch_wait_s=0)
  rows, long_sp = _Rows(), E.SamplingParams(temperature=0.0, max_new_tokens=30)
  sampled = E.SamplingParams(temperature=1.0, max_new_tokens=8)
  prompt = chat_lib.render_for_completion(HELLO, run.tokenizer)
  try:
    a = rows.row("a", prompt[:5], long_sp)
    batcher.submit([a])
    deadline = time.monotonic() + 60
    while len(rows.tokens["a"]) < 2 and time.monotonic() < deadline:
      time.sleep(0.005)
    seeded = [rows.row(f"b{i}", prompt, sampled, seed=42, index=i) for i in range(2)]
    batcher.submit(seeded)  # one joins a's running decode, the other waits for a slot
    time.sleep(0.05)
    batcher.cancel([a])  # a's slot goes to the waiting row
    for key in ("a", "b0", "b1"):
      assert rows.ended[key].wait(60)
    assert rows.done["a"].error == "cancelled" and len(rows.tokens["a"]) < 30
    solo = eng.generate([prompt], sampled, n=2, seed=42)
    for i in range(2):
      assert rows.done[f"b{i}"].completion.tokens == solo[i].tokens == rows.tokens[f"b{i}"]
    stats = batcher.stats.as_dict()
    assert stats["cancelled"] == 1 and stats["joins"] == 3 and stats["slots_in_use"] == 0
  finally:
    batcher.close()


async def _stream(http, url, i, hang_up):
  body = {"model": "random_tiny", "messages": HELLO, "max_tokens": 40, "stream": True, "temperature": 0.0}
  return (i, *await sse.stream_chat(http, url, body, hang_up))


def test_64_concurrent_streams_with_disconnects(server):
  want = httpx.post(
      server.url + "/v1/chat/completions",
      json={"model": "random_tiny", "messages": HELLO, "max_tokens": 40, "temperature": 0.0},
      timeout=120,
  ).json()["choices"][0]
  assert want["finish_reason"] == "length", want  # long enough that a hang-up lands mid-row

  async def main():
    async with httpx.AsyncClient(timeout=httpx.Timeout(120), limits=httpx.Limits(max_connections=80)) as http:
      return await asyncio.wait_for(
          asyncio.gather(*(_stream(http, server.url, i, hang_up=i % 4 == 1) for i in range(64))), 240
      )

  results = asyncio.run(main())
  finished = [r for r in results if r[0] % 4 != 1]
  assert len(finished) == 48
  assert all(done and reason == "length" and text == want["message"]["content"] for _, text, reason, done in finished)
  deadline = time.monotonic() + 30
  while True:  # the hung-up rows are cancelled at a chunk boundary; every slot ends free
    health = httpx.get(server.url + "/health", timeout=10).json()
    stats = health["batcher"]
    if stats["slots_in_use"] == 0 and health["queued"] == 0 or time.monotonic() > deadline:
      break
    time.sleep(0.05)
  assert health["status"] == "ok" and stats["slots_in_use"] == 0 and health["queued"] == 0
  assert stats["cancelled"] >= 1 and stats["failed_batches"] == 0 and stats["max_batch_seen"] > 1
  assert stats["joins"] >= 49  # the reference and the 48 finished streams at least


class _SlowBackend:
  """A call-at-a-time backend that is silent for a while (a queue or a compile), then answers one token."""

  max_len = 64

  def run(self, rows):
    time.sleep(0.6)
    for r in rows:
      r.emit(batcher_lib.TokenEvent(300))
      r.emit(batcher_lib.DoneEvent(E.Completion(0, 0, [300], [0.0], [0.0], [True], "x", "length")))


def test_idle_stream_gets_keepalive_comments(run):
  limits = dataclasses.replace(LIMITS, keepalive_s=0.1)
  with ServerThread(app_lib.create_app(run, limits, backend=_SlowBackend())) as s:
    body = {"model": "random_tiny", "prompt": "Hi", "max_tokens": 1, "stream": True}
    with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
      lines = [line for line in r.iter_lines() if line]
  first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
  assert lines[:first_data] and all(line == streaming.KEEPALIVE.strip() for line in lines[:first_data])
  assert lines[-1] == "data: [DONE]"
