"""OpenAI-compatible HTTP API and web chat for a run folder (FastAPI).

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (both with
`stream: true` as server-sent events: `data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`), GET / (the web chat page),
GET /health (queue, slots in use, joins, cancellations, batch-size counters, limits), GET /tokenizer (the tokenizer
page) and POST /v1/tokenize (tokenize).

Bodies are parsed by hand rather than with pydantic models so that every bad input gets OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}` with a message naming the field. Extensions and limits:
`top_k` (0 = off), per-server caps on max_tokens, prompt tokens, completions per request, queue size (429 when full),
body size (413) and time per request (504 / an error event). Unsupported knobs that would change the output
(penalties, logit_bias, top alternatives in logprobs, echo, suffix) are rejected rather than ignored.

Layout: protocol (limits, errors, request validation), generation (requests to batcher rows and back), streaming
(tokens to safe-to-send text, SSE framing), replies (OpenAI response shapes); this module wires them to routes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from typing import Any, Sequence

import fastapi
from fastapi import responses
from starlette import exceptions as starlette_exceptions

from nanolm_jax import chat as chat_lib
from nanolm_jax import engine as engine_lib
from nanolm_jax.serve import batcher as batcher_lib
from nanolm_jax.serve import generation as generation_lib
from nanolm_jax.serve import protocol
from nanolm_jax.serve import replies
from nanolm_jax.serve import streaming
from nanolm_jax.serve import tokenize as tokenize_lib

# The public surface predates the split into modules; callers import these from here.
Limits = protocol.Limits
ApiError = protocol.ApiError
to_chat_messages = protocol.to_chat_messages
_Choice = streaming.Choice

log = logging.getLogger(__name__)

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class _Server:
  """What the routes share: the run's tokenizer, one batcher over one engine, and the limits."""

  def __init__(self, run: Any, limits: Limits, model_id: str | None, backend: Any):
    self.limits = limits
    self.tokenizer = tokenizer = run.tokenizer
    self.model_id = model_id or os.path.basename(os.path.normpath(run.workdir)) or "nanolm"
    if backend is None:  # continuous batching over one engine
      engine = engine_lib.Engine(run.model, run.params, tokenizer, chunk_steps=limits.chunk_steps)
      backend = self.batcher = batcher_lib.ContinuousBatcher(
          engine,
          slots=limits.slots,
          max_batch=limits.max_batch,
          max_queue=limits.max_queue,
          batch_wait_s=limits.batch_wait_s,
          max_new_tokens=limits.max_tokens_limit,
      )
    else:  # a backend that runs whole calls
      self.batcher = batcher_lib.Batcher(
          backend,
          max_batch=limits.max_batch,
          max_queue=limits.max_queue,
          batch_wait_s=limits.batch_wait_s,
          pad_to_batch=limits.pad_to_batch,
      )
    self.backend = backend
    self.context = backend.max_len
    self.max_prompt = min(limits.max_prompt_tokens or self.context - 1, self.context - 1)
    self.created = int(time.time())
    # A chat turn also ends at the end of a tool call: the client runs the tool and sends its result.
    self.chat_stops = tuple(dict.fromkeys(chat_lib.stop_tokens(tokenizer) + (tokenizer.special_id("tool_call_end"),)))
    self.completion_stops = (tokenizer.eos_id,)

  @contextlib.asynccontextmanager
  async def lifespan(self, _app: fastapi.FastAPI):
    yield
    self.batcher.close()

  # Route handlers carry no return annotation: FastAPI would take one as a response model and re-validate the body.

  def _model_card(self) -> dict[str, Any]:
    return {
        "id": self.model_id,
        "object": "model",
        "created": self.created,
        "owned_by": "nanolm_jax",
        "context_length": self.context,
    }

  async def list_models(self):
    return {"object": "list", "data": [self._model_card()]}

  async def get_model(self, name: str):
    if name != self.model_id:
      raise ApiError(404, f"The model {name!r} does not exist", param="model", code="model_not_found")
    return self._model_card()

  async def health(self):
    return {
        "status": "ok",
        "model": self.model_id,
        "queued": self.batcher.queued,
        "batcher": self.batcher.stats.as_dict(),
        "limits": dataclasses.asdict(self.limits) | {"max_prompt_tokens": self.max_prompt, "context": self.context},
    }

  async def index(self):
    with open(os.path.join(_STATIC, "index.html"), encoding="utf-8") as f:
      return f.read()

  async def tokenizer_page(self):
    with open(os.path.join(_STATIC, "tokenizer.html"), encoding="utf-8") as f:
      return f.read()

  async def tokenize(self, request: fastapi.Request):
    body = await protocol.read_json(request, self.limits.max_body_bytes, self.limits.max_json_depth)
    return tokenize_lib.tokenize(self.tokenizer, body, self.model_id)

  def _fit_max_tokens(self, prompts: Sequence[Sequence[int]], requested: int | None, default: int, param: str) -> int:
    return protocol.fit_max_tokens(prompts, requested, default, param, context=self.context, max_prompt=self.max_prompt)

  def _start(self, job: generation_lib.Job) -> generation_lib.Generation:
    return generation_lib.start(self.batcher, self.tokenizer, job, self.limits.request_timeout_s)

  async def completions(self, request: fastapi.Request):
    body = await protocol.read_json(request, self.limits.max_body_bytes, self.limits.max_json_depth)
    options = protocol.parse_request_options(body, self.model_id, self.limits, ("max_tokens",))
    want_logprobs = protocol.parse_completion_logprobs(body, options.n)
    prompts = protocol.completion_prompts(body, self.tokenizer)
    protocol.check_completion_count(len(prompts), options.n, self.limits.max_batch)
    max_tokens = self._fit_max_tokens(prompts, options.max_tokens, self.limits.default_completion_tokens, "prompt")
    generation = self._start(generation_lib.Job(prompts, options, max_tokens, self.completion_stops, is_chat=False))
    reply = replies.CompletionReply(f"cmpl-{uuid.uuid4().hex}", int(time.time()), self.model_id, want_logprobs, prompts)
    if options.stream:
      return streaming.event_stream(reply.events(generation, options.include_usage), self.limits.keepalive_s)
    await generation.wait(want_logprobs)
    return reply.body(generation.choices)

  async def chat_completions(self, request: fastapi.Request):
    body = await protocol.read_json(request, self.limits.max_body_bytes, self.limits.max_json_depth)
    options = protocol.parse_request_options(body, self.model_id, self.limits, ("max_completion_tokens", "max_tokens"))
    want_logprobs = protocol.parse_chat_logprobs(body, options.n, self.limits.max_batch)
    prompts = [protocol.chat_prompt(body, self.tokenizer)]
    max_tokens = self._fit_max_tokens(prompts, options.max_tokens, self.limits.max_tokens_limit, "messages")
    generation = self._start(generation_lib.Job(prompts, options, max_tokens, self.chat_stops, is_chat=True))
    reply = replies.ChatReply(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.model_id, want_logprobs, prompts)
    if options.stream:
      return streaming.event_stream(reply.events(generation, options.include_usage), self.limits.keepalive_s)
    await generation.wait(want_logprobs)
    return reply.body(generation.choices)


async def _api_error(_, e: ApiError):
  return e.response()


async def _http_error(_, e: starlette_exceptions.HTTPException):
  # FastAPI's own errors (404 route, 405 method) in OpenAI's shape too, so clients parse one error format.
  return responses.JSONResponse(protocol.error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)


async def _server_error(_, e: Exception):
  # The type name only: a traceback or message could leak paths or request contents.
  log.exception("unhandled error")
  return responses.JSONResponse(
      protocol.error_body(f"internal error: {type(e).__name__}", "server_error"), status_code=500
  )


def create_app(
    run: Any, limits: Limits | None = None, *, model_id: str | None = None, backend: Any = None
) -> fastapi.FastAPI:
  """The server for a loaded run (runs.Run: model, params, tokenizer). `backend` replaces the engine (tests)."""
  server = _Server(run, limits or Limits(), model_id, backend)
  app = fastapi.FastAPI(title="nanolm_jax", lifespan=server.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
  app.state.batcher, app.state.backend, app.state.limits = server.batcher, server.backend, server.limits
  app.state.model_id, app.state.tokenizer, app.state.chat_stops = server.model_id, server.tokenizer, server.chat_stops

  app.add_exception_handler(ApiError, _api_error)
  app.add_exception_handler(starlette_exceptions.HTTPException, _http_error)
  app.add_exception_handler(Exception, _server_error)

  app.get("/v1/models")(server.list_models)
  app.get("/v1/models/{name:path}")(server.get_model)
  app.get("/health")(server.health)
  app.get("/", response_class=responses.HTMLResponse)(server.index)
  app.get("/tokenizer", response_class=responses.HTMLResponse)(server.tokenizer_page)
  app.post("/v1/tokenize")(server.tokenize)
  app.post("/v1/completions")(server.completions)
  app.post("/v1/chat/completions")(server.chat_completions)
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
