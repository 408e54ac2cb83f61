"""The OpenAI-compatible server, driven by the official `openai` client against uvicorn on a free 127.0.0.1 port."""

import asyncio
import dataclasses
import http.client
import json
import socket
import threading
import time

import httpx
import openai
import pytest

from nanolm_jax import engine as engine_lib
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import runs
from nanolm_jax import trainer
from nanolm_jax.serve import app as app_lib
from nanolm_jax.serve import batcher as batcher_lib
from nanolm_jax.serve import protocol
from tests import sse
from tests.conftest import make_config
from tests.conftest import tiny_overrides

# Compiles dominate the test time, so every generating test uses the same shapes: engine calls padded to 8 rows,
# 8 new tokens, prompts of 17-24 tokens (one prompt bucket and one cache bucket of the 64-token context).
MAX_TOKENS = 8
LIMITS = app_lib.Limits(
    max_tokens_limit=32,
    max_batch=8,
    max_queue=64,
    max_body_bytes=64 << 10,
    request_timeout_s=120,
    batch_wait_s=0.05,
    pad_to_batch=True,
)

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow
PROMPTS = ["The function returns a list of values", "A list of values is returned by the function"]
_RUN_DIRS: dict[str, str] = {}


def tiny_run_dir(tmp_path_factory, small_corpus: str, small_tokenizer: str) -> str:
  """A run folder trained for two steps, shared by the server tests of this session (browser test included)."""
  if "run" not in _RUN_DIRS:
    workdir = str(tmp_path_factory.mktemp("serve") / "tiny_chat")
    overrides = tiny_overrides(small_corpus, small_tokenizer) | {
        "train.steps": 2,
        "train.checkpoint_every": 2,
        "train.eval_every": 2,
        "train.eval_batches": 1,
    }
    trainer.train(make_config("tiny", **overrides), workdir, pretraining.build(None))
    _RUN_DIRS["run"] = workdir
  return _RUN_DIRS["run"]


class ServerThread:
  """uvicorn serving `app` on a free 127.0.0.1 port from a daemon thread."""

  def __init__(self, app):
    import uvicorn  # pylint: disable=g-import-not-at-top

    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.app = app
    self.url = f"http://127.0.0.1:{self.port}"
    self.server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
    )
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  def __enter__(self) -> "ServerThread":
    self.thread.start()
    deadline = time.monotonic() + 30
    while not self.server.started:
      if time.monotonic() > deadline or not self.thread.is_alive():
        raise RuntimeError("uvicorn did not start")
      time.sleep(0.02)
    return self

  def __exit__(self, *exc) -> None:
    self.server.should_exit = True
    self.thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_corpus, small_tokenizer):
  run = runs.load_run(tiny_run_dir(tmp_path_factory, small_corpus, small_tokenizer))
  with ServerThread(app_lib.create_app(run, LIMITS)) as s:
    yield s


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=120, max_retries=0)


HELLO = [{"role": "user", "content": "Hi! What can you do?"}]


def test_models_list_names_the_run(client):
  assert [m.id for m in client.models.list().data] == ["tiny_chat"]
  assert client.models.retrieve("tiny_chat").id == "tiny_chat"
  with pytest.raises(openai.NotFoundError):
    client.models.retrieve("gpt-4")


def test_completions_text_usage_and_logprobs(client):
  out = client.completions.create(
      model="tiny_chat", prompt=PROMPTS, n=2, max_tokens=MAX_TOKENS, temperature=0.7, logprobs=0
  )
  assert [c.index for c in out.choices] == [0, 1, 2, 3]
  for c in out.choices:
    assert isinstance(c.text, str)
    assert c.finish_reason in ("stop", "length")
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) <= MAX_TOKENS
    assert all(x <= 0 for x in lp.token_logprobs)
  assert 0 < out.usage.completion_tokens <= 4 * MAX_TOKENS
  assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_completion_stop_string_cuts_the_text(client):
  full = client.completions.create(model="tiny_chat", prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0)
  text = full.choices[0].text
  assert len(text) >= 3, f"greedy text too short to pick a stop string from: {text!r}"
  stop = text[1:3]
  cut = client.completions.create(
      model="tiny_chat", prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0, stop=[stop]
  )
  assert cut.choices[0].text == text[: text.find(stop)]
  assert cut.choices[0].finish_reason == "stop"


def test_chat_completion(client):
  out = client.chat.completions.create(model="tiny_chat", messages=HELLO, max_tokens=MAX_TOKENS, temperature=0.8)
  (choice,) = out.choices
  assert choice.message.role == "assistant"
  assert isinstance(choice.message.content, str)
  assert choice.finish_reason in ("stop", "length")
  assert 0 < out.usage.completion_tokens <= MAX_TOKENS
  assert out.usage.prompt_tokens > 5


def test_chat_streamed_matches_non_streamed_greedy(client):
  ref = client.chat.completions.create(model="tiny_chat", messages=HELLO, max_tokens=MAX_TOKENS, temperature=0)
  stream = client.chat.completions.create(
      model="tiny_chat",
      messages=HELLO,
      max_tokens=MAX_TOKENS,
      temperature=0,
      stream=True,
      stream_options={"include_usage": True},
  )
  chunks = list(stream)
  assert chunks[0].choices[0].delta.role == "assistant"
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
  assert text == ref.choices[0].message.content
  assert reasons == [ref.choices[0].finish_reason]
  assert chunks[-1].usage.completion_tokens == ref.usage.completion_tokens
  assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_greedy_and_seeded_sampling_are_deterministic(client):
  def ask(**kw):
    return client.chat.completions.create(model="tiny_chat", messages=HELLO, max_tokens=MAX_TOKENS, **kw)

  assert ask(temperature=0).choices[0].message.content == ask(temperature=0).choices[0].message.content
  a, b = ask(temperature=1.0, seed=123, n=2), ask(temperature=1.0, seed=123, n=2)
  assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_index_page_is_self_contained(server):
  r = httpx.get(server.url + "/", timeout=10)
  assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
  assert "/v1/chat/completions" in r.text and "<script>" in r.text
  assert 'src="http' not in r.text and 'href="http' not in r.text  # no CDN assets
  health = httpx.get(server.url + "/health", timeout=10).json()
  assert health["status"] == "ok" and health["model"] == "tiny_chat"


@pytest.mark.parametrize(
    "kwargs, param, fragment",
    [
        ({"temperature": -0.5}, "temperature", "between 0 and 2"),
        ({"top_p": 0.0}, "top_p", "(0, 1]"),
        ({"top_p": 1.5}, "top_p", "(0, 1]"),
        ({"max_tokens": 33}, "max_tokens", "limit of 32"),
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "wizard"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages", "empty content"),
        ({"n": 9}, "n", "between 1 and 8"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"extra_body": {"top_k": -3}}, "top_k", ">= -1"),
        ({"extra_body": {"top_logprobs": 3}, "logprobs": True}, "top_logprobs", "not supported"),
    ],
)
def test_bad_chat_input_is_a_400_naming_the_field(client, kwargs, param, fragment):
  kw = {"model": "tiny_chat", "messages": HELLO, "max_tokens": MAX_TOKENS} | kwargs
  with pytest.raises(openai.BadRequestError) as e:
    client.chat.completions.create(**kw)
  assert e.value.status_code == 400
  assert e.value.body["type"] == "invalid_request_error"
  assert e.value.body["param"] == param
  assert fragment in e.value.body["message"]


def test_unknown_model_is_a_404(client):
  with pytest.raises(openai.NotFoundError) as e:
    client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=MAX_TOKENS)
  assert e.value.body["code"] == "model_not_found" and "tiny_chat" in e.value.body["message"]


def test_prompt_longer_than_the_limit_is_a_400(client):
  with pytest.raises(openai.BadRequestError) as e:
    client.completions.create(model="tiny_chat", prompt="word " * 200, max_tokens=MAX_TOKENS)
  assert e.value.body["code"] == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError) as e:
    # 40 prompt tokens + 30 new is within both per-field limits but not the model's 64-token context.
    client.completions.create(model="tiny_chat", prompt=[300] * 40, max_tokens=30)
  assert "context is 64 tokens" in e.value.body["message"] and e.value.body["param"] == "max_tokens"


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "could not parse"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"messages": HELLO, "stream": "yes"}).encode(), 400, "stream must be true or false"),
        (json.dumps({"messages": HELLO, "pad": "x" * (70 << 10)}).encode(), 413, "limit"),
    ],
)
def test_malformed_bodies(server, body, status, fragment):
  r = httpx.post(
      server.url + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=30
  )
  assert r.status_code == status
  assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw, depth",
    [
        (b"", 0),
        (b"{}", 1),
        (b'{"a": [1, [2, {"b": 3}]], "c": {}}', 4),
        (b'{"a": "[[[{{{"}', 1),  # brackets inside a string are text
        (b'{"a": "x\\"[[[", "b": [[]]}', 3),  # an escaped quote does not end the string
        (b"[" * 5000, 5000),
    ],
)
def test_json_depth_counts_nesting_outside_strings(raw, depth):
  assert protocol.json_depth(raw) == depth


def test_deeply_nested_body_is_a_400_and_the_connection_stays_usable(server):
  deep = b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
  conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
  try:
    conn.request("POST", "/v1/chat/completions", body=deep, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 400 and "5001 deep" in body["error"]["message"], body
    sock = conn.sock
    assert sock is not None, "the server closed the keep-alive connection after the bad request"
    conn.request("GET", "/v1/models")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["data"]
    assert conn.sock is sock  # same connection, not a silent reconnect
  finally:
    conn.close()


def test_unknown_path_is_an_openai_style_404(server):
  r = httpx.get(server.url + "/v1/nothing", timeout=10)
  assert r.status_code == 404 and "message" in r.json()["error"]


async def _stream_chat(http: httpx.AsyncClient, url: str, i: int) -> tuple[str, str | None, bool]:
  body = {
      "model": "tiny_chat",
      "messages": HELLO,
      "max_tokens": MAX_TOKENS,
      "stream": True,
      "temperature": 0.0 if i % 2 else 0.9,
      "top_k": 20 if i % 3 == 0 else 0,
  }
  return await sse.stream_chat(http, url, body)


def test_fifty_concurrent_streams_complete_and_share_batches(server):
  before = dict(server.app.state.batcher.stats.batch_sizes)

  async def main():
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120), limits=limits) as http:
      return await asyncio.wait_for(asyncio.gather(*(_stream_chat(http, server.url, i) for i in range(50))), 240)

  results = asyncio.run(main())
  assert len(results) == 50
  assert all(done and reason in ("stop", "length") for _, reason, done in results)
  greedy = {text for i, (text, _, _) in enumerate(results) if i % 2}
  assert len(greedy) == 1  # greedy rows agree whatever batch they landed in
  after = server.app.state.batcher.stats.batch_sizes
  new = {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
  assert sum(k * v for k, v in new.items()) == 50
  assert max(new) > 1, new  # concurrent requests really shared engine calls


class _BlockingBackend:
  """A backend whose calls wait for a release, to fill the queue deterministically."""

  max_len = 64

  def __init__(self):
    self.release = threading.Event()

  def run(self, rows):
    self.release.wait(30)
    for r in rows:
      r.emit(batcher_lib.DoneEvent(error="released"))


def test_full_queue_is_a_429(server):
  backend = _BlockingBackend()
  run = runs.Run(workdir="blocked", cfg=None, model=None, params=None, tokenizer=server.app.state.tokenizer)
  app = app_lib.create_app(run, app_lib.Limits(max_queue=2, max_batch=2, batch_wait_s=0), backend=backend)
  sampling = engine_lib.SamplingParams(max_new_tokens=1)
  batcher = app.state.batcher
  try:
    batcher.submit([batcher_lib.Row([1], sampling, lambda ev: None)])  # taken by the worker, which then blocks
    deadline = time.monotonic() + 10
    while batcher.queued and time.monotonic() < deadline:
      time.sleep(0.01)
    batcher.submit([batcher_lib.Row([1], sampling, lambda ev: None) for _ in range(2)])  # the queue is now full
    with ServerThread(app) as s:
      c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", timeout=30, max_retries=0)
      with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="blocked", messages=HELLO, max_tokens=1)
      assert "queue is full" in e.value.body["message"]
      backend.release.set()
  finally:
    backend.release.set()


class _Tok:
  """Characters as tokens (ids = code points + 100), enough for the streaming detokenizer."""

  eos_id = 3

  def special_id(self, name):
    return {"tool_call_start": 10, "tool_call_end": 11}[name]

  def decode(self, ids, skip_special=False):
    del skip_special
    return "".join(chr(i - 100) for i in ids if i >= 100)


def test_streamed_text_never_shows_a_stop_string_prefix_that_turns_into_the_stop():
  ch = app_lib._Choice(0, _Tok(), stop_tokens=(3,), stop=("wor",), max_tokens=50, is_chat=False, prompt_tokens=1)
  sent = []
  for c in "hello world":
    ch.add_token(ord(c) + 100)
    sent.append(ch.delta())
    if ch.finish_reason:
      break
  assert "".join(sent) == "hello " and ch.finish_reason == "stop"
  assert "w" not in "".join(sent[:-1])  # the 'w' was held back until the stop string was decided


class _ScriptedBackend:
  """Replies with fixed tokens (cut at the row's stop tokens), recording each call's rows; no model."""

  max_len = 64

  def __init__(self, script):
    self.script, self.calls = script, []

  def run(self, rows):
    self.calls.append(list(rows))
    for r in rows:
      toks = []
      for t in self.script[: r.sampling.max_new_tokens]:
        toks.append(t)
        r.emit(batcher_lib.TokenEvent(t))
        if t in r.stop_tokens:
          break
      stopped = bool(toks) and toks[-1] in r.stop_tokens
      r.emit(
          batcher_lib.DoneEvent(
              engine_lib.Completion(
                  prompt_index=0,
                  sample_index=0,
                  tokens=toks,
                  logprobs=[-1.0] * len(toks),
                  sampling_logprobs=[-1.0] * len(toks),
                  generated_mask=[True] * len(toks),
                  text="",
                  finish_reason="stop" if stopped else "length",
                  stop=toks[-1] if stopped else None,
              )
          )
      )


@pytest.fixture
def scripted(server):
  """A server over a scripted backend that answers 'It is' then a calculator tool call."""
  tok = server.app.state.tokenizer
  script = (
      tok.encode("It is")
      + [tok.special_id("tool_call_start")]
      + tok.encode("calculator: 2+3")
      + [tok.special_id("tool_call_end")]
      + tok.encode(" never reached")
  )
  backend = _ScriptedBackend(script)
  run = runs.Run(workdir="scripted", cfg=None, model=None, params=None, tokenizer=tok)
  with ServerThread(app_lib.create_app(run, dataclasses.replace(LIMITS, max_queue=8), backend=backend)) as s:
    s.backend = backend
    yield s


def test_chat_tool_call_is_returned_openai_style(scripted):
  c = openai.OpenAI(base_url=scripted.url + "/v1", api_key="unused", timeout=30, max_retries=0)
  out = c.chat.completions.create(model="scripted", messages=HELLO, max_tokens=20, logprobs=True)
  (choice,) = out.choices
  assert choice.finish_reason == "tool_calls"
  assert choice.message.content == "It is"
  (call,) = choice.message.tool_calls
  assert (call.function.name, call.function.arguments) == ("calculator", "2+3")
  assert [x.logprob for x in choice.logprobs.content] == [-1.0] * out.usage.completion_tokens
  # The call and its result go back in as history, rendered by the chat format.
  follow = HELLO + [
      choice.message.model_dump(exclude_none=True),
      {"role": "tool", "tool_call_id": call.id, "content": "5"},
  ]
  again = c.chat.completions.create(model="scripted", messages=follow, max_tokens=20)
  assert again.choices[0].finish_reason == "tool_calls"
  streamed = list(c.chat.completions.create(model="scripted", messages=HELLO, max_tokens=20, stream=True))
  calls = [d.choices[0].delta.tool_calls for d in streamed if d.choices and d.choices[0].delta.tool_calls]
  assert calls[0][0].function.name == "calculator"
  assert "".join(d.choices[0].delta.content or "" for d in streamed if d.choices) == "It is"


def test_batcher_groups_compatible_rows_and_isolates_seeded_requests(scripted):
  batcher = scripted.app.state.batcher
  sampling = engine_lib.SamplingParams(max_new_tokens=1)
  done = threading.Semaphore(0)

  def row(**kw):
    return batcher_lib.Row([2, 5], sampling, lambda ev: isinstance(ev, batcher_lib.DoneEvent) and done.release(), **kw)

  blocker = threading.Event()
  run = scripted.backend.run
  scripted.backend.run = lambda rows: (blocker.wait(10), run(rows))  # hold the worker while the queue fills
  try:
    batcher.submit([row(stop_tokens=(3,))])
    time.sleep(0.2)
    batcher.submit([row(stop_tokens=(3,)), row(stop_tokens=(3, 9)), row(stop_tokens=(3,))])
    batcher.submit([row(stop_tokens=(3,), seed=1, group="a"), row(stop_tokens=(3,), seed=1, group="a")])
    with pytest.raises(batcher_lib.QueueFull):
      batcher.submit([row() for _ in range(4)])  # 5 + 4 > 8 queued: all or nothing
    assert batcher.queued == 5
  finally:
    blocker.set()
  for _ in range(6):
    assert done.acquire(timeout=30)
  calls = scripted.backend.calls[-4:]
  real = [[r for r in c if r.emit.__name__ != "_ignore"] for c in calls]  # pad_to_batch copies excluded
  assert [len(c) for c in real] == [1, 2, 1, 2]
  assert [c[0].stop_tokens for c in real] == [(3,), (3,), (3, 9), (3,)]
  assert all(r.group == "a" for r in real[3]) and all(len(c) == LIMITS.max_batch for c in calls)
