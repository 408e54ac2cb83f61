"""OpenAI-compatible HTTP API and web chat for a run folder (FastAPI).

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (both with
`stream: true` as server-sent events: `data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`), GET / (the web chat page),
GET /health (queue, batch-size counters, limits).

Bodies are parsed by hand rather than with pydantic models so that every bad input gets OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}` with a message naming the field. Extensions and limits:
`top_k` (0 = off), per-server caps on max_tokens, prompt tokens, completions per request, queue size (429 when full),
body size (413) and time per request (504 / an error event). Unsupported knobs that would change the output
(penalties, logit_bias, top alternatives in logprobs, echo, suffix) are rejected rather than ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import fastapi
from fastapi import responses
from starlette import exceptions as starlette_exceptions

from nanolm_jax import chat as chat_lib
from nanolm_jax import engine as engine_lib
from nanolm_jax.serve import batcher as batcher_lib

log = logging.getLogger(__name__)

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_MAX_STOP_STRINGS = 4


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-server caps; every request is bounded in size, length and time."""

  max_tokens_limit: int = 512  # largest max_tokens a request may ask for
  max_prompt_tokens: int | None = None  # None: the model's context minus one
  max_batch: int = 16  # completions per engine call (and per request: n x prompts)
  max_queue: int = 256  # completions waiting; beyond it requests get 429
  max_body_bytes: int = 1 << 20
  request_timeout_s: float = 300.0
  batch_wait_s: float = 0.01  # how long the batcher waits for concurrent requests to join a call
  chunk_steps: int = 4  # decode steps between streamed updates (engine chunk)
  pad_to_batch: bool = False  # every engine call max_batch rows wide: fewer compiled shapes
  default_completion_tokens: int = 16  # /v1/completions max_tokens default, as OpenAI's


class ApiError(Exception):
  """An error answered as OpenAI's error JSON."""

  def __init__(
      self,
      status: int,
      message: str,
      param: str | None = None,
      type_: str = "invalid_request_error",
      code: str | None = None,
  ):
    super().__init__(message)
    self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code

  def response(self) -> responses.JSONResponse:
    return responses.JSONResponse(_error_body(self.message, self.type, self.param, self.code), status_code=self.status)


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
  return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --- request parsing ----------------------------------------------------------------------------------------------


async def _read_json(request: fastapi.Request, limit: int) -> dict[str, Any]:
  """The body as a JSON object; 413 past `limit` bytes (checked while reading, whatever Content-Length says)."""
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > limit:
    raise ApiError(
        413,
        f"request body is {declared} bytes; the limit is {limit}",
        type_="invalid_request_error",
        code="request_too_large",
    )
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
    chunks.append(chunk)
  try:
    body = json.loads(b"".join(chunks))
  except (ValueError, UnicodeDecodeError) as e:
    raise ApiError(400, f"could not parse the request body as JSON: {e}") from None
  if not isinstance(body, dict):
    raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
  return body


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _get_int(body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
  x = body.get(name)
  if x is None:
    return default
  if isinstance(x, float) and x.is_integer():
    x = int(x)
  if not _is_int(x):
    raise ApiError(400, f"{name} must be an integer, got {x!r}", param=name)
  if x < lo or (hi is not None and x > hi):
    bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    raise ApiError(400, f"{name} must be {bound}, got {x}", param=name)
  return x


def _get_float(body: Mapping[str, Any], name: str, default: float) -> float:
  x = body.get(name)
  if x is None:
    return default
  if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
    raise ApiError(400, f"{name} must be a finite number, got {x!r}", param=name)
  return float(x)


def _get_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
  x = body.get(name)
  if x is None:
    return default
  if not isinstance(x, bool):
    raise ApiError(400, f"{name} must be true or false, got {x!r}", param=name)
  return x


@dataclasses.dataclass
class _Common:
  """Settings shared by both endpoints, validated."""

  temperature: float
  top_p: float
  top_k: int
  n: int
  max_tokens: int | None
  stop: tuple[str, ...]
  seed: int | None
  stream: bool
  include_usage: bool


def _parse_common(body: Mapping[str, Any], model_id: str, limits: Limits, max_tokens_keys: Sequence[str]) -> _Common:
  model = body.get("model")
  if model is not None and model != model_id:
    raise ApiError(
        404,
        f"The model {model!r} does not exist; this server serves {model_id!r} (GET /v1/models)",
        param="model",
        code="model_not_found",
    )
  temperature = _get_float(body, "temperature", 1.0)
  if not 0 <= temperature <= 2:
    raise ApiError(400, f"temperature must be between 0 and 2 (0 = greedy), got {temperature}", param="temperature")
  top_p = _get_float(body, "top_p", 1.0)
  if not 0 < top_p <= 1:
    raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
  top_k = _get_int(body, "top_k", 0, -1)  # extension; -1 (vLLM's "off") is accepted as 0
  n = _get_int(body, "n", 1, 1, limits.max_batch)
  max_tokens = None
  for key in max_tokens_keys:
    if body.get(key) is not None:
      max_tokens = _get_int(body, key, None, 1)
      if max_tokens > limits.max_tokens_limit:
        raise ApiError(400, f"{key} is {max_tokens}, above this server's limit of {limits.max_tokens_limit}", param=key)
      break
  stop = body.get("stop")
  if stop is None:
    stop = ()
  elif isinstance(stop, str):
    stop = (stop,)
  elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
    stop = tuple(stop)
  else:
    raise ApiError(400, f"stop must be a string or a list of strings, got {stop!r}", param="stop")
  if len(stop) > _MAX_STOP_STRINGS or any(not s for s in stop):
    raise ApiError(400, f"stop takes at most {_MAX_STOP_STRINGS} non-empty strings, got {list(stop)!r}", param="stop")
  seed = body.get("seed")
  if seed is not None and not _is_int(seed):
    raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
  stream = _get_bool(body, "stream", False)
  opts = body.get("stream_options")
  if opts is not None and not isinstance(opts, dict):
    raise ApiError(400, f"stream_options must be an object, got {opts!r}", param="stream_options")
  include_usage = bool((opts or {}).get("include_usage", False))
  for key in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
    if body.get(key) not in (None, 0, 0.0, 1.0 if key == "repetition_penalty" else 0):
      raise ApiError(400, f"{key} is not supported by this server (leave it unset or neutral)", param=key)
  if body.get("logit_bias"):
    raise ApiError(400, "logit_bias is not supported by this server", param="logit_bias")
  return _Common(temperature, top_p, max(top_k, 0), n, max_tokens, stop, seed, stream, include_usage)


def _content_text(content: Any, i: int) -> str:
  """OpenAI content: a string, null, or a list of {"type": "text", "text": ...} parts."""
  if content is None:
    return ""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    parts = []
    for part in content:
      if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        raise ApiError(
            400,
            f'messages[{i}].content: only text parts ({{"type": "text", "text": ...}}) are ' f"supported, got {part!r}",
            param=f"messages[{i}].content",
        )
      parts.append(part["text"])
    return "".join(parts)
  raise ApiError(
      400,
      f"messages[{i}].content must be a string or a list of text parts, got " f"{type(content).__name__}",
      param=f"messages[{i}].content",
  )


def to_chat_messages(messages: Any) -> list[dict[str, Any]]:
  """OpenAI chat messages -> nanolm_jax.chat messages ('developer' is 'system'; function tool calls map over)."""
  if not isinstance(messages, list) or not messages:
    raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
  out = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise ApiError(400, f"messages[{i}] must be an object, got {m!r}", param=f"messages[{i}]")
    role = m.get("role")
    role = "system" if role == "developer" else role
    if role not in chat_lib.ROLES:
      raise ApiError(
          400,
          f"messages[{i}].role {m.get('role')!r} is not one of {list(chat_lib.ROLES) + ['developer']}",
          param=f"messages[{i}].role",
      )
    msg: dict[str, Any] = {"role": role, "content": _content_text(m.get("content"), i)}
    calls = m.get("tool_calls") or []
    if calls:
      if role != "assistant" or not isinstance(calls, list):
        raise ApiError(
            400,
            f"messages[{i}].tool_calls: only assistant messages carry a list of tool calls",
            param=f"messages[{i}].tool_calls",
        )
      conv = []
      for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
          raise ApiError(
              400,
              f"messages[{i}].tool_calls: expected {{type: function, function: {{name, arguments}}}}" f", got {c!r}",
              param=f"messages[{i}].tool_calls",
          )
        conv.append({"name": fn["name"], "arguments": str(fn.get("arguments") or "")})
      msg["tool_calls"] = conv
    if role == "tool" and isinstance(m.get("name"), str):
      msg["name"] = m["name"]
    out.append(msg)
  return out


# --- per-completion state -----------------------------------------------------------------------------------------


class _Choice:
  """Detokenizes one row's tokens as they stream, applying stop tokens, stop strings and max_tokens.

  Text is streamed only up to a safe point: never a trailing incomplete UTF-8 character, never a suffix that could
  still turn into a stop string. For chat, tokens from <|tool_call_start|> on are a tool call, not content.
  """

  def __init__(
      self,
      index: int,
      tok: Any,
      stop_tokens: Sequence[int],
      stop: Sequence[str],
      max_tokens: int,
      is_chat: bool,
      prompt_tokens: int,
  ):
    self.index, self.tok, self.stop_tokens, self.stop = index, tok, frozenset(stop_tokens), tuple(stop)
    self.max_tokens, self.is_chat, self.prompt_tokens = max_tokens, is_chat, prompt_tokens
    self.ids: list[int] = []
    self.stop_token: int | None = None
    self.text = ""  # content text so far (cut at a stop string once one is found)
    self.sent = ""  # the prefix of `text` already streamed
    self.finish_reason: str | None = None
    self.completion: engine_lib.Completion | None = None
    self.error: str | None = None
    self._call_start = tok.special_id("tool_call_start") if is_chat else None
    self._calls: list[dict[str, Any]] | None = None

  def _content_ids(self) -> list[int]:
    if self._call_start is not None and self._call_start in self.ids:
      return self.ids[: self.ids.index(self._call_start)]
    return self.ids

  def _decode(self) -> str:
    # Chat content never shows special tokens; raw completions show them by name, like engine.Completion.text.
    return self.tok.decode(self._content_ids(), skip_special=self.is_chat)

  def add_token(self, token: int) -> None:
    if self.finish_reason is not None:
      return
    if token in self.stop_tokens:
      self.stop_token, self.finish_reason = token, "stop"
      self.text = self._decode()
      return
    self.ids.append(token)
    text = self._decode()
    cuts = [text.find(s) for s in self.stop if s in text]
    if cuts:
      self.text, self.finish_reason = text[: min(cuts)], "stop"
    else:
      self.text = text
      if len(self.ids) >= self.max_tokens:
        self.finish_reason = "length"

  def finish(self, event: batcher_lib.DoneEvent) -> None:
    """The engine's final word: authoritative tokens, reason and logprobs."""
    self.error = event.error
    c = self.completion = event.completion
    if c is None:
      self.finish_reason = self.finish_reason or "error"
      return
    if self.finish_reason is None:  # e.g. the context ran out before a stop condition the host saw
      tokens = list(c.tokens)
      if isinstance(c.stop, int) and tokens and tokens[-1] == c.stop:
        self.stop_token = tokens.pop()
      self.ids = tokens
      text = self._decode()
      cuts = [text.find(s) for s in self.stop if s in text]
      self.text = text[: min(cuts)] if cuts else text
      self.finish_reason = c.finish_reason

  def delta(self) -> str:
    """New text that is safe to stream now (everything once finished)."""
    end = len(self.text)
    if self.finish_reason is None:
      while end > len(self.sent) and self.text[end - 1] == "\ufffd":
        end -= 1
      for s in self.stop:  # hold back a suffix that may be the start of a stop string
        for k in range(min(len(s) - 1, end), 0, -1):
          if self.text[end - k : end] == s[:k]:
            end -= k
            break
    if not self.text.startswith(self.sent) or end <= len(self.sent):
      return ""
    out, self.sent = self.text[len(self.sent) : end], self.text[:end]
    return out

  @property
  def completion_tokens(self) -> int:
    return len(self.ids) + (self.stop_token is not None)

  def tool_calls(self) -> list[dict[str, Any]]:
    """OpenAI tool calls parsed from the row (chat only; fixed once the row is finished)."""
    if not self.is_chat or self._call_start not in self.ids:
      return []
    if self._calls is not None:
      return self._calls
    ids = self.ids + ([self.stop_token] if self.stop_token is not None else [])
    calls = []
    for m in chat_lib.parse_completion(ids, self.tok):
      for c in m.get("tool_calls") or []:
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c.get("arguments", "")},
            }
        )
    if self.finish_reason is not None:
      self._calls = calls[:1]
    return calls[:1]

  def reason(self) -> str:
    if self.tool_calls():
      return "tool_calls"
    return self.finish_reason if self.finish_reason in ("stop", "length") else "stop"

  def _token_logprobs(self) -> list[tuple[str, float]]:
    if self.completion is None:
      return []
    n = self.completion_tokens
    return [
        (self.tok.decode([t]), float(lp)) for t, lp in zip(self.completion.tokens[:n], self.completion.logprobs[:n])
    ]

  def chat_logprobs(self) -> dict[str, Any]:
    return {
        "content": [
            {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8")), "top_logprobs": []}
            for s, lp in self._token_logprobs()
        ]
    }

  def completion_logprobs(self) -> dict[str, Any]:
    pairs = self._token_logprobs()
    offsets, pos = [], 0
    for s, _ in pairs:
      offsets.append(pos)
      pos += len(s)
    return {
        "tokens": [s for s, _ in pairs],
        "token_logprobs": [lp for _, lp in pairs],
        "top_logprobs": None,
        "text_offset": offsets,
    }


# --- the app ------------------------------------------------------------------------------------------------------


def _sse(obj: Any) -> str:
  return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(
    run: Any, limits: Limits | None = None, *, model_id: str | None = None, backend: Any = None
) -> fastapi.FastAPI:
  """The server for a loaded run (runs.Run: model, params, tokenizer). `backend` replaces the engine (tests)."""
  limits = limits or Limits()
  tok = run.tokenizer
  model_id = model_id or os.path.basename(os.path.normpath(run.workdir)) or "nanolm"
  if backend is None:
    backend = batcher_lib.EngineBackend(engine_lib.Engine(run.model, run.params, tok, chunk_steps=limits.chunk_steps))
  context = backend.max_len
  max_prompt = min(limits.max_prompt_tokens or context - 1, context - 1)
  batcher = batcher_lib.Batcher(
      backend,
      max_batch=limits.max_batch,
      max_queue=limits.max_queue,
      batch_wait_s=limits.batch_wait_s,
      pad_to_batch=limits.pad_to_batch,
  )
  created = int(time.time())
  chat_stops = tuple(dict.fromkeys(chat_lib.stop_tokens(tok) + (tok.special_id("tool_call_end"),)))
  completion_stops = (tok.eos_id,)

  @contextlib.asynccontextmanager
  async def lifespan(_):
    yield
    batcher.close()

  app = fastapi.FastAPI(title="nanolm_jax", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
  app.state.batcher, app.state.backend, app.state.limits, app.state.model_id = batcher, backend, limits, model_id
  app.state.tokenizer, app.state.chat_stops = tok, chat_stops

  @app.exception_handler(ApiError)
  async def _api_error(_, e: ApiError):
    return e.response()

  @app.exception_handler(starlette_exceptions.HTTPException)
  async def _http_error(_, e: starlette_exceptions.HTTPException):
    return responses.JSONResponse(_error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)

  @app.exception_handler(Exception)
  async def _server_error(_, e: Exception):
    log.exception("unhandled error")
    return responses.JSONResponse(_error_body(f"internal error: {type(e).__name__}", "server_error"), status_code=500)

  def model_card() -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "nanolm_jax", "context_length": context}

  @app.get("/v1/models")
  async def list_models():
    return {"object": "list", "data": [model_card()]}

  @app.get("/v1/models/{name:path}")
  async def get_model(name: str):
    if name != model_id:
      raise ApiError(404, f"The model {name!r} does not exist", param="model", code="model_not_found")
    return model_card()

  @app.get("/health")
  async def health():
    return {
        "status": "ok",
        "model": model_id,
        "queued": batcher.queued,
        "batcher": batcher.stats.as_dict(),
        "limits": dataclasses.asdict(limits) | {"max_prompt_tokens": max_prompt, "context": context},
    }

  @app.get("/", response_class=responses.HTMLResponse)
  async def index():
    with open(os.path.join(_STATIC, "index.html"), encoding="utf-8") as f:
      return f.read()

  def check_lengths(prompts: Sequence[Sequence[int]], requested: int | None, default: int, param: str) -> int:
    """max_tokens for the request: as asked (if it fits the context) or the default clipped to the room left."""
    longest = max(len(p) for p in prompts)
    if longest > max_prompt:
      raise ApiError(
          400,
          f"the prompt is {longest} tokens; this server accepts at most {max_prompt}",
          param=param,
          code="context_length_exceeded",
      )
    room = context - longest
    if requested is None:
      return max(1, min(default, room))
    if requested > room:
      raise ApiError(
          400,
          f"this model's context is {context} tokens; the prompt takes {longest} and max_tokens asks "
          f"for {requested} more ({longest + requested} in all)",
          param="max_tokens",
          code="context_length_exceeded",
      )
    return requested

  async def generate(
      prompts: Sequence[Sequence[int]], c: _Common, max_tokens: int, stop_tokens: tuple[int, ...], is_chat: bool
  ):
    """Submits the rows; returns (choices, updates): updates(wait_for_engine) yields each choice as it changes.

    A choice is done when the host saw it stop (stop token / string, max_tokens), or, with wait_for_engine (logprobs
    wanted), when the engine's Completion arrived.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    choices, rows = [], []
    sampling = engine_lib.SamplingParams(
        temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, max_new_tokens=max_tokens
    )
    group = uuid.uuid4().hex if c.seed is not None else None

    def emitter(idx: int) -> Callable[[batcher_lib.Event], None]:
      def emit(ev):
        try:
          loop.call_soon_threadsafe(events.put_nowait, (idx, ev))
        except RuntimeError:  # the event loop is gone (server shutting down)
          pass

      return emit

    for p in prompts:
      for _ in range(c.n):
        idx = len(choices)
        choices.append(_Choice(idx, tok, stop_tokens, c.stop, max_tokens, is_chat, len(p)))
        rows.append(
            batcher_lib.Row(
                prompt=p,
                sampling=sampling,
                emit=emitter(idx),
                stop_tokens=stop_tokens,
                stop_strings=c.stop,
                seed=c.seed,
                group=group,
            )
        )
    try:
      batcher.submit(rows)
    except batcher_lib.QueueFull as e:
      raise ApiError(429, str(e), type_="rate_limit_error", code="queue_full") from None
    except batcher_lib.Stopped as e:
      raise ApiError(503, str(e), type_="server_error") from None
    deadline = time.monotonic() + limits.request_timeout_s

    async def updates(wait_for_engine: bool) -> AsyncIterator[_Choice]:
      pending = set(range(len(choices)))
      while pending:
        left = deadline - time.monotonic()
        try:
          idx, ev = await asyncio.wait_for(events.get(), timeout=max(left, 0.0))
        except (asyncio.TimeoutError, TimeoutError):
          raise ApiError(
              504,
              f"generation did not finish within {limits.request_timeout_s:g} s",
              type_="server_error",
              code="timeout",
          ) from None
        ch = choices[idx]
        if idx not in pending:
          continue
        if isinstance(ev, batcher_lib.TokenEvent):
          ch.add_token(ev.token)
        else:
          ch.finish(ev)
          if ch.error is not None:
            raise ApiError(500, ch.error, type_="server_error")
        if ch.finish_reason is not None and (ch.completion is not None or not wait_for_engine):
          pending.discard(idx)
        yield ch

    return choices, updates

  def usage(choices: Sequence[_Choice], prompts: Sequence[Sequence[int]]) -> dict[str, int]:
    p = sum(len(x) for x in prompts)
    c = sum(ch.completion_tokens for ch in choices)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

  def streaming(body_iter: AsyncIterator[str]) -> responses.StreamingResponse:
    return responses.StreamingResponse(
        body_iter, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )

  async def guarded(gen: AsyncIterator[str]) -> AsyncIterator[str]:
    """Errors after the stream started become an error event (the status line is already sent)."""
    try:
      async for s in gen:
        yield s
    except ApiError as e:
      yield _sse(_error_body(e.message, e.type, e.param, e.code))
    yield "data: [DONE]\n\n"

  # --- /v1/completions ---

  def completion_prompts(body: Mapping[str, Any]) -> list[list[int]]:
    p = body.get("prompt")
    if p is None:
      raise ApiError(400, "prompt is required (a string, a list of strings, or token ids)", param="prompt")
    if isinstance(p, str):
      p = [p]
    if not isinstance(p, list) or not p:
      raise ApiError(400, "prompt must be a string, a non-empty list of strings, or token ids", param="prompt")
    if all(_is_int(t) for t in p):
      p = [p]
    out = []
    for x in p:
      if isinstance(x, str):
        out.append(tok.encode(x, bos=True))
      elif isinstance(x, list) and x and all(_is_int(t) for t in x):
        bad = [t for t in x if not 0 <= t < tok.vocab_size]
        if bad:
          raise ApiError(400, f"prompt token ids must be in [0, {tok.vocab_size}), got {bad[:5]}", param="prompt")
        out.append(list(x))
      else:
        raise ApiError(400, f"each prompt must be a string or a non-empty list of token ids, got {x!r}", param="prompt")
    return out

  @app.post("/v1/completions")
  async def completions(request: fastapi.Request):
    body = await _read_json(request, limits.max_body_bytes)
    c = _parse_common(body, model_id, limits, ("max_tokens",))
    logprobs = _get_int(body, "logprobs", None, 0)
    if logprobs:
      raise ApiError(
          400,
          "logprobs > 0 (top alternatives) is not supported; use logprobs=0 for the sampled tokens' " "logprobs",
          param="logprobs",
      )
    for key in ("echo",):
      if body.get(key):
        raise ApiError(400, f"{key} is not supported by this server", param=key)
    if body.get("suffix"):
      raise ApiError(400, "suffix is not supported by this server", param="suffix")
    best_of = _get_int(body, "best_of", None, 1)
    if best_of not in (None, 1, c.n):
      raise ApiError(400, "best_of is not supported (leave it unset or equal to n)", param="best_of")
    prompts = completion_prompts(body)
    if len(prompts) * c.n > limits.max_batch:
      raise ApiError(
          400,
          f"{len(prompts)} prompts x n={c.n} asks for {len(prompts) * c.n} completions; the limit "
          f"per request is {limits.max_batch}",
          param="n",
      )
    max_tokens = check_lengths(prompts, c.max_tokens, limits.default_completion_tokens, "prompt")
    want_lp = logprobs is not None
    choices, updates = await generate(prompts, c, max_tokens, completion_stops, is_chat=False)
    rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(ch: _Choice, text: str, final: bool) -> dict[str, Any]:
      return {
          "id": rid,
          "object": "text_completion",
          "created": now,
          "model": model_id,
          "choices": [
              {
                  "index": ch.index,
                  "text": text,
                  "logprobs": ch.completion_logprobs() if final and want_lp else None,
                  "finish_reason": ch.reason() if final else None,
              }
          ],
      }

    if c.stream:

      async def events():
        done = set()
        async for ch in updates(want_lp):
          text = ch.delta()
          final = ch.finish_reason is not None and (ch.completion is not None or not want_lp)
          if (text or final) and ch.index not in done:
            yield _sse(chunk(ch, text, final))
          if final:
            done.add(ch.index)
        if c.include_usage:
          yield _sse(
              {
                  "id": rid,
                  "object": "text_completion",
                  "created": now,
                  "model": model_id,
                  "choices": [],
                  "usage": usage(choices, prompts),
              }
          )

      return streaming(guarded(events()))

    async for _ in updates(want_lp):
      pass
    return {
        "id": rid,
        "object": "text_completion",
        "created": now,
        "model": model_id,
        "choices": [
            {
                "index": ch.index,
                "text": ch.text,
                "logprobs": ch.completion_logprobs() if want_lp else None,
                "finish_reason": ch.reason(),
            }
            for ch in choices
        ],
        "usage": usage(choices, prompts),
    }

  # --- /v1/chat/completions ---

  @app.post("/v1/chat/completions")
  async def chat_completions(request: fastapi.Request):
    body = await _read_json(request, limits.max_body_bytes)
    c = _parse_common(body, model_id, limits, ("max_completion_tokens", "max_tokens"))
    want_lp = _get_bool(body, "logprobs", False)
    if _get_int(body, "top_logprobs", None, 0):
      raise ApiError(
          400,
          "top_logprobs > 0 is not supported; logprobs=true gives the sampled tokens' logprobs",
          param="top_logprobs",
      )
    if c.n > limits.max_batch:
      raise ApiError(400, f"n={c.n} is above the limit of {limits.max_batch} per request", param="n")
    messages = to_chat_messages(body.get("messages"))
    try:
      prompt = chat_lib.render_for_completion(messages, tok)
    except chat_lib.ChatFormatError as e:
      raise ApiError(400, f"messages: {e}", param="messages") from None
    prompts = [prompt]
    max_tokens = check_lengths(prompts, c.max_tokens, limits.max_tokens_limit, "messages")
    choices, updates = await generate(prompts, c, max_tokens, chat_stops, is_chat=True)
    rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(ch: _Choice, delta: dict[str, Any], final: bool) -> dict[str, Any]:
      return {
          "id": rid,
          "object": "chat.completion.chunk",
          "created": now,
          "model": model_id,
          "system_fingerprint": None,
          "choices": [
              {
                  "index": ch.index,
                  "delta": delta,
                  "logprobs": ch.chat_logprobs() if final and want_lp else None,
                  "finish_reason": ch.reason() if final else None,
              }
          ],
      }

    if c.stream:

      async def events():
        for ch in choices:
          yield _sse(chunk(ch, {"role": "assistant", "content": ""}, False))
        done = set()
        async for ch in updates(want_lp):
          if ch.index in done:
            continue
          text = ch.delta()
          final = ch.finish_reason is not None and (ch.completion is not None or not want_lp)
          if text:
            yield _sse(chunk(ch, {"content": text}, False))
          if final:
            calls = ch.tool_calls()
            if calls:
              yield _sse(chunk(ch, {"tool_calls": [dict(x, index=i) for i, x in enumerate(calls)]}, False))
            yield _sse(chunk(ch, {}, True))
            done.add(ch.index)
        if c.include_usage:
          yield _sse(
              {
                  "id": rid,
                  "object": "chat.completion.chunk",
                  "created": now,
                  "model": model_id,
                  "choices": [],
                  "usage": usage(choices, prompts),
              }
          )

      return streaming(guarded(events()))

    async for _ in updates(want_lp):
      pass
    out = []
    for ch in choices:
      msg: dict[str, Any] = {"role": "assistant", "content": ch.text}
      calls = ch.tool_calls()
      if calls:
        msg["tool_calls"] = calls
      out.append(
          {
              "index": ch.index,
              "message": msg,
              "logprobs": ch.chat_logprobs() if want_lp else None,
              "finish_reason": ch.reason(),
          }
      )
    return {
        "id": rid,
        "object": "chat.completion",
        "created": now,
        "model": model_id,
        "system_fingerprint": None,
        "choices": out,
        "usage": usage(choices, prompts),
    }

  return app


def warmup(app: fastapi.FastAPI, max_tokens: int = 4, timeout_s: float = 600.0) -> None:
  """Runs one short greedy chat turn through the batcher (blocking), so the first request does not pay for compiles."""
  tok = app.state.tokenizer
  done = threading.Event()
  row = batcher_lib.Row(
      prompt=chat_lib.render_for_completion([{"role": "user", "content": "Hello!"}], tok),
      sampling=engine_lib.SamplingParams(temperature=0.0, max_new_tokens=max_tokens),
      emit=lambda ev: done.set() if isinstance(ev, batcher_lib.DoneEvent) else None,
      stop_tokens=app.state.chat_stops,
  )
  app.state.batcher.submit([row])
  if not done.wait(timeout_s):
    log.warning("warm-up did not finish within %.0f s", timeout_s)
