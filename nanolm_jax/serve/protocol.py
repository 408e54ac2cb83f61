"""Request side of the OpenAI API: limits, the error type, and validation of request bodies.

Bodies are parsed by hand rather than with pydantic models so that every bad input gets OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}` with a message naming the field. Checks run in a fixed order, so a
body with several problems always reports the same one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from typing import Any, Mapping, Sequence

import fastapi
from fastapi import responses

from nanolm_jax import chat as chat_lib
from nanolm_jax import tokenizer as tokenizer_lib

_MAX_STOP_STRINGS = 4


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-server caps; every request is bounded in size, length and time."""

  max_tokens_limit: int = 512  # largest max_tokens a request may ask for
  max_prompt_tokens: int | None = None  # None: the model's context minus one
  max_batch: int = 16  # completions per engine call (and per request: n x prompts)
  max_queue: int = 256  # completions waiting; beyond it requests get 429
  max_body_bytes: int = 1 << 20
  max_json_depth: int = 32  # nesting of arrays / objects in a body (the API needs 5); deeper is a 400
  request_timeout_s: float = 300.0
  batch_wait_s: float = 0.01  # how long the batcher waits for concurrent requests to join a call
  chunk_steps: int = 4  # decode steps between streamed updates (engine chunk)
  pad_to_batch: bool = False  # every engine call max_batch rows wide: fewer compiled shapes
  default_completion_tokens: int = 16  # /v1/completions max_tokens default, as OpenAI's
  slots: int = 32  # rows decoding at once in the continuous batcher (a power of two); more wait in the queue
  keepalive_s: float = 10.0  # an SSE stream idle this long (queued, compiling) gets a `: keep-alive` comment


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
    return responses.JSONResponse(error_body(self.message, self.type, self.param, self.code), status_code=self.status)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
  return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --- body and fields ----------------------------------------------------------------------------------------------


# A JSON string (escapes included): its brackets are text, not nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes) -> int:
  """The deepest nesting of arrays / objects in a JSON text, found without parsing it (so without recursion).

  Malformed text gets some number; json.loads reports what is wrong with it afterwards.
  """
  steps = (1 if b in (b"[", b"{") else -1 for b in _BRACKETS.findall(_JSON_STRING.sub(b'""', raw)))
  return max(itertools.accumulate(steps, initial=0))


async def read_json(request: fastapi.Request, limit: int, max_depth: int = 32) -> dict[str, Any]:
  """The body as a JSON object; 413 past `limit` bytes (checked while reading, whatever Content-Length says).

  Nesting deeper than `max_depth` is a 400 before parsing: Python's json recursion would otherwise raise
  RecursionError (a 500 that also broke the client's keep-alive connection).
  """
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
  raw = b"".join(chunks)
  depth = json_depth(raw)
  if depth > max_depth:
    raise ApiError(400, f"the request body nests arrays / objects {depth} deep; the limit is {max_depth}")
  try:
    body = json.loads(raw)
  except (ValueError, UnicodeDecodeError) as e:
    raise ApiError(400, f"could not parse the request body as JSON: {e}") from None
  if not isinstance(body, dict):
    raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
  return body


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def get_int(body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
  value = body.get(name)
  if value is None:
    return default
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if not is_int(value):
    raise ApiError(400, f"{name} must be an integer, got {value!r}", param=name)
  if value < lo or (hi is not None and value > hi):
    bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    raise ApiError(400, f"{name} must be {bound}, got {value}", param=name)
  return value


def get_float(body: Mapping[str, Any], name: str, default: float) -> float:
  value = body.get(name)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ApiError(400, f"{name} must be a finite number, got {value!r}", param=name)
  return float(value)


def get_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
  value = body.get(name)
  if value is None:
    return default
  if not isinstance(value, bool):
    raise ApiError(400, f"{name} must be true or false, got {value!r}", param=name)
  return value


# --- settings both endpoints share --------------------------------------------------------------------------------


@dataclasses.dataclass
class RequestOptions:
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


def parse_request_options(
    body: Mapping[str, Any], model_id: str, limits: Limits, max_tokens_keys: Sequence[str]
) -> RequestOptions:
  """The shared settings; `max_tokens_keys` in order of preference (chat's newer name first)."""
  model = body.get("model")
  if model is not None and model != model_id:
    raise ApiError(
        404,
        f"The model {model!r} does not exist; this server serves {model_id!r} (GET /v1/models)",
        param="model",
        code="model_not_found",
    )
  temperature = get_float(body, "temperature", 1.0)
  if not 0 <= temperature <= 2:
    raise ApiError(400, f"temperature must be between 0 and 2 (0 = greedy), got {temperature}", param="temperature")
  top_p = get_float(body, "top_p", 1.0)
  if not 0 < top_p <= 1:
    raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", param="top_p")
  top_k = get_int(body, "top_k", 0, -1)  # extension; -1 (vLLM's "off") is accepted as 0
  n = get_int(body, "n", 1, 1, limits.max_batch)
  max_tokens = _parse_max_tokens(body, limits, max_tokens_keys)
  stop = _parse_stop(body)
  seed = body.get("seed")
  if seed is not None and not is_int(seed):
    raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
  stream = get_bool(body, "stream", False)
  stream_options = body.get("stream_options")
  if stream_options is not None and not isinstance(stream_options, dict):
    raise ApiError(400, f"stream_options must be an object, got {stream_options!r}", param="stream_options")
  include_usage = bool((stream_options or {}).get("include_usage", False))
  _reject_output_changing_knobs(body)
  return RequestOptions(temperature, top_p, max(top_k, 0), n, max_tokens, stop, seed, stream, include_usage)


def _parse_max_tokens(body: Mapping[str, Any], limits: Limits, keys: Sequence[str]) -> int | None:
  for key in keys:
    if body.get(key) is not None:
      max_tokens = get_int(body, key, None, 1)
      if max_tokens > limits.max_tokens_limit:
        raise ApiError(400, f"{key} is {max_tokens}, above this server's limit of {limits.max_tokens_limit}", param=key)
      return max_tokens
  return None


def _parse_stop(body: Mapping[str, Any]) -> tuple[str, ...]:
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
  return stop


def _reject_output_changing_knobs(body: Mapping[str, Any]) -> None:
  # Ignoring these would silently return text the client did not ask for; neutral values are harmless.
  for key in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
    if body.get(key) not in (None, 0, 0.0, 1.0 if key == "repetition_penalty" else 0):
      raise ApiError(400, f"{key} is not supported by this server (leave it unset or neutral)", param=key)
  if body.get("logit_bias"):
    raise ApiError(400, "logit_bias is not supported by this server", param="logit_bias")


def fit_max_tokens(
    prompts: Sequence[Sequence[int]], requested: int | None, default: int, param: str, *, context: int, max_prompt: int
) -> int:
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


# --- /v1/completions ----------------------------------------------------------------------------------------------


def parse_completion_logprobs(body: Mapping[str, Any], n: int) -> bool:
  """Whether the sampled tokens' logprobs are wanted; rejects the options this server cannot honour."""
  logprobs = get_int(body, "logprobs", None, 0)
  if logprobs:
    raise ApiError(
        400,
        "logprobs > 0 (top alternatives) is not supported; use logprobs=0 for the sampled tokens' " "logprobs",
        param="logprobs",
    )
  if body.get("echo"):
    raise ApiError(400, "echo is not supported by this server", param="echo")
  if body.get("suffix"):
    raise ApiError(400, "suffix is not supported by this server", param="suffix")
  best_of = get_int(body, "best_of", None, 1)
  if best_of not in (None, 1, n):
    raise ApiError(400, "best_of is not supported (leave it unset or equal to n)", param="best_of")
  return logprobs is not None


def completion_prompts(body: Mapping[str, Any], tokenizer: tokenizer_lib.Tokenizer) -> list[list[int]]:
  """The prompts as token ids: a string, a list of strings, token ids, or a list of token-id lists."""
  prompt = body.get("prompt")
  if prompt is None:
    raise ApiError(400, "prompt is required (a string, a list of strings, or token ids)", param="prompt")
  if isinstance(prompt, str):
    prompt = [prompt]
  if not isinstance(prompt, list) or not prompt:
    raise ApiError(400, "prompt must be a string, a non-empty list of strings, or token ids", param="prompt")
  if all(is_int(t) for t in prompt):
    prompt = [prompt]
  out = []
  for item in prompt:
    if isinstance(item, str):
      out.append(tokenizer.encode(item, bos=True))
    elif isinstance(item, list) and item and all(is_int(t) for t in item):
      bad = [t for t in item if not 0 <= t < tokenizer.vocab_size]
      if bad:
        raise ApiError(400, f"prompt token ids must be in [0, {tokenizer.vocab_size}), got {bad[:5]}", param="prompt")
      out.append(list(item))
    else:
      raise ApiError(
          400, f"each prompt must be a string or a non-empty list of token ids, got {item!r}", param="prompt"
      )
  return out


def check_completion_count(num_prompts: int, n: int, max_batch: int) -> None:
  if num_prompts * n > max_batch:
    raise ApiError(
        400,
        f"{num_prompts} prompts x n={n} asks for {num_prompts * n} completions; the limit "
        f"per request is {max_batch}",
        param="n",
    )


# --- /v1/chat/completions -----------------------------------------------------------------------------------------


def parse_chat_logprobs(body: Mapping[str, Any], n: int, max_batch: int) -> bool:
  """Whether the sampled tokens' logprobs are wanted; also bounds n (a chat request has one prompt)."""
  want_logprobs = get_bool(body, "logprobs", False)
  if get_int(body, "top_logprobs", None, 0):
    raise ApiError(
        400,
        "top_logprobs > 0 is not supported; logprobs=true gives the sampled tokens' logprobs",
        param="top_logprobs",
    )
  if n > max_batch:
    raise ApiError(400, f"n={n} is above the limit of {max_batch} per request", param="n")
  return want_logprobs


def chat_prompt(body: Mapping[str, Any], tokenizer: tokenizer_lib.Tokenizer) -> list[int]:
  """The request's messages rendered for the assistant's next turn."""
  messages = to_chat_messages(body.get("messages"))
  try:
    return chat_lib.render_for_completion(messages, tokenizer)
  except chat_lib.ChatFormatError as e:
    raise ApiError(400, f"messages: {e}", param="messages") from None


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


def _tool_calls(calls: Any, role: str, i: int) -> list[dict[str, str]]:
  """An assistant message's OpenAI function tool calls as nanolm_jax.chat's {name, arguments}."""
  if role != "assistant" or not isinstance(calls, list):
    raise ApiError(
        400,
        f"messages[{i}].tool_calls: only assistant messages carry a list of tool calls",
        param=f"messages[{i}].tool_calls",
    )
  converted = []
  for call in calls:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
      raise ApiError(
          400,
          f"messages[{i}].tool_calls: expected {{type: function, function: {{name, arguments}}}}" f", got {call!r}",
          param=f"messages[{i}].tool_calls",
      )
    converted.append({"name": function["name"], "arguments": str(function.get("arguments") or "")})
  return converted


def to_chat_messages(messages: Any) -> list[dict[str, Any]]:
  """OpenAI chat messages -> nanolm_jax.chat messages ('developer' is 'system'; function tool calls map over)."""
  if not isinstance(messages, list) or not messages:
    raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
  out = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict):
      raise ApiError(400, f"messages[{i}] must be an object, got {message!r}", param=f"messages[{i}]")
    role = message.get("role")
    role = "system" if role == "developer" else role
    if role not in chat_lib.ROLES:
      raise ApiError(
          400,
          f"messages[{i}].role {message.get('role')!r} is not one of {list(chat_lib.ROLES) + ['developer']}",
          param=f"messages[{i}].role",
      )
    converted: dict[str, Any] = {"role": role, "content": _content_text(message.get("content"), i)}
    calls = message.get("tool_calls") or []
    if calls:
      converted["tool_calls"] = _tool_calls(calls, role, i)
    if role == "tool" and isinstance(message.get("name"), str):
      converted["name"] = message["name"]
    out.append(converted)
  return out
