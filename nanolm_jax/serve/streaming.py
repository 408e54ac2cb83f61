"""Per-choice accumulation of streamed tokens into text, and server-sent-event framing.

A `Choice` turns one row's tokens into the text a client may see so far; `event_stream` wraps a generator of SSE
frames into the response, ending every stream with `data: [DONE]` even after an error.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, AsyncIterator, Sequence

from fastapi import responses

from nanolm_jax import chat as chat_lib
from nanolm_jax import engine as engine_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import batcher as batcher_lib
from nanolm_jax.serve import protocol


class Choice:
  """Detokenizes one row's tokens as they stream, applying stop tokens, stop strings and max_tokens.

  Text is streamed only up to a safe point: never a trailing incomplete UTF-8 character, never a suffix that could
  still turn into a stop string. For chat, tokens from <|tool_call_start|> on are a tool call, not content.
  """

  def __init__(
      self,
      index: int,
      tokenizer: tokenizer_lib.Tokenizer,
      stop_tokens: Sequence[int],
      stop: Sequence[str],
      max_tokens: int,
      is_chat: bool,
      prompt_tokens: int,
  ):
    self.index, self.tokenizer, self.stop_tokens, self.stop = index, tokenizer, frozenset(stop_tokens), tuple(stop)
    self.max_tokens, self.is_chat, self.prompt_tokens = max_tokens, is_chat, prompt_tokens
    self.ids: list[int] = []
    self.stop_token: int | None = None
    self.text = ""  # content text so far (cut at a stop string once one is found)
    self.sent = ""  # the prefix of `text` already streamed
    self.finish_reason: str | None = None
    self.completion: engine_lib.Completion | None = None
    self.error: str | None = None
    self._call_start = tokenizer.special_id("tool_call_start") if is_chat else None
    self._calls: list[dict[str, Any]] | None = None

  def _content_ids(self) -> list[int]:
    if self._call_start is not None and self._call_start in self.ids:
      return self.ids[: self.ids.index(self._call_start)]
    return self.ids

  def _decode(self) -> str:
    # Chat content never shows special tokens; raw completions show them by name, like engine.Completion.text.
    return self.tokenizer.decode(self._content_ids(), skip_special=self.is_chat)

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
    completion = self.completion = event.completion
    if completion is None:
      self.finish_reason = self.finish_reason or "error"
      return
    if self.finish_reason is None:  # e.g. the context ran out before a stop condition the host saw
      tokens = list(completion.tokens)
      if isinstance(completion.stop, int) and tokens and tokens[-1] == completion.stop:
        self.stop_token = tokens.pop()
      self.ids = tokens
      text = self._decode()
      cuts = [text.find(s) for s in self.stop if s in text]
      self.text = text[: min(cuts)] if cuts else text
      self.finish_reason = completion.finish_reason

  def settled(self, wait_for_engine: bool) -> bool:
    """Whether nothing more will change: stopped, and (when logprobs are wanted) the engine's Completion is in."""
    return self.finish_reason is not None and (self.completion is not None or not wait_for_engine)

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
    for message in chat_lib.parse_completion(ids, self.tokenizer):
      for call in message.get("tool_calls") or []:
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", "")},
            }
        )
    # Cached only once finished (until then the ids still grow), so that every later call returns the same call ids.
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
        (self.tokenizer.decode([t]), float(lp))
        for t, lp in zip(self.completion.tokens[:n], self.completion.logprobs[:n])
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


def usage(choices: Sequence[Choice], prompts: Sequence[Sequence[int]]) -> dict[str, int]:
  prompt_tokens = sum(len(p) for p in prompts)
  completion_tokens = sum(choice.completion_tokens for choice in choices)
  return {
      "prompt_tokens": prompt_tokens,
      "completion_tokens": completion_tokens,
      "total_tokens": prompt_tokens + completion_tokens,
  }


# --- server-sent events -------------------------------------------------------------------------------------------


def sse(obj: Any) -> str:
  return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


KEEPALIVE = ": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies and idle timeouts see traffic


async def with_keepalive(frames: AsyncIterator[str], every_s: float) -> AsyncIterator[str]:
  """frames, with KEEPALIVE whenever none came for every_s seconds (waiting in the queue, a compile)."""
  it = aiter(frames)
  nxt = None
  try:
    while True:
      nxt = asyncio.ensure_future(anext(it))
      while not (await asyncio.wait({nxt}, timeout=every_s))[0]:
        yield KEEPALIVE
      try:
        frame = nxt.result()
      except StopAsyncIteration:
        return
      yield frame
  finally:
    # The client went away: stop the pending frame (its cancellation unwinds the request, which cancels its rows),
    # or close the idle frame generator so that it unwinds now rather than when collected.
    if nxt is not None and not nxt.done():
      nxt.cancel()
    else:
      await it.aclose()


async def _guarded(frames: AsyncIterator[str]) -> AsyncIterator[str]:
  """Errors after the stream started become an error event (the status line is already sent)."""
  try:
    async for frame in frames:
      yield frame
  except protocol.ApiError as e:
    yield sse(protocol.error_body(e.message, e.type, e.param, e.code))
  yield "data: [DONE]\n\n"


class _EventResponse(responses.StreamingResponse):
  """Closes its frames when the response ends, also when Starlette abandons them (client disconnect): the request
  unwinds now, cancelling its rows, rather than whenever the generator is collected."""

  async def __call__(self, scope, receive, send) -> None:
    try:
      await super().__call__(scope, receive, send)
    finally:
      try:
        await self.body_iterator.aclose()
      except RuntimeError:  # still running: its cancellation is unwinding it
        pass


def event_stream(frames: AsyncIterator[str], keepalive_s: float = 0.0) -> responses.StreamingResponse:
  """The SSE response for frames (keep-alive comments every keepalive_s idle seconds when > 0)."""
  # No-cache and no proxy buffering: each chunk must reach the client as soon as it is generated.
  frames = _guarded(frames)
  return _EventResponse(
      with_keepalive(frames, keepalive_s) if keepalive_s > 0 else frames,
      media_type="text/event-stream",
      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
  )
