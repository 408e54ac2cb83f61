"""OpenAI response bodies and stream chunks for /v1/completions and /v1/chat/completions."""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator, Sequence

from nanolm_jax.serve import generation as generation_lib
from nanolm_jax.serve import streaming


@dataclasses.dataclass(frozen=True)
class _Reply:
  """What every body and chunk of one response shares."""

  id: str
  created: int
  model: str
  want_logprobs: bool
  prompts: Sequence[Sequence[int]]

  def _head(self, object_: str) -> dict[str, Any]:
    return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

  def _usage_chunk(self, object_: str, choices: Sequence[streaming.Choice]) -> dict[str, Any]:
    return self._head(object_) | {"choices": [], "usage": streaming.usage(choices, self.prompts)}


class CompletionReply(_Reply):
  """A text completion: one choice per prompt x n."""

  def _chunk(self, choice: streaming.Choice, text: str, final: bool) -> dict[str, Any]:
    return self._head("text_completion") | {
        "choices": [
            {
                "index": choice.index,
                "text": text,
                "logprobs": choice.completion_logprobs() if final and self.want_logprobs else None,
                "finish_reason": choice.reason() if final else None,
            }
        ],
    }

  async def events(self, generation: generation_lib.Generation, include_usage: bool) -> AsyncIterator[str]:
    done = set()
    async for choice in generation.updates(self.want_logprobs):
      text = choice.delta()
      final = choice.settled(self.want_logprobs)
      if (text or final) and choice.index not in done:
        yield streaming.sse(self._chunk(choice, text, final))
      if final:
        done.add(choice.index)
    if include_usage:
      yield streaming.sse(self._usage_chunk("text_completion", generation.choices))

  def body(self, choices: Sequence[streaming.Choice]) -> dict[str, Any]:
    return self._head("text_completion") | {
        "choices": [
            {
                "index": choice.index,
                "text": choice.text,
                "logprobs": choice.completion_logprobs() if self.want_logprobs else None,
                "finish_reason": choice.reason(),
            }
            for choice in choices
        ],
        "usage": streaming.usage(choices, self.prompts),
    }


class ChatReply(_Reply):
  """A chat completion: n assistant messages, with tool calls parsed out of the content."""

  def _chunk(self, choice: streaming.Choice, delta: dict[str, Any], final: bool) -> dict[str, Any]:
    return self._head("chat.completion.chunk") | {
        "system_fingerprint": None,
        "choices": [
            {
                "index": choice.index,
                "delta": delta,
                "logprobs": choice.chat_logprobs() if final and self.want_logprobs else None,
                "finish_reason": choice.reason() if final else None,
            }
        ],
    }

  async def events(self, generation: generation_lib.Generation, include_usage: bool) -> AsyncIterator[str]:
    # OpenAI opens every choice with its role before any content.
    for choice in generation.choices:
      yield streaming.sse(self._chunk(choice, {"role": "assistant", "content": ""}, False))
    done = set()
    async for choice in generation.updates(self.want_logprobs):
      if choice.index in done:
        continue
      text = choice.delta()
      final = choice.settled(self.want_logprobs)
      if text:
        yield streaming.sse(self._chunk(choice, {"content": text}, False))
      if final:
        calls = choice.tool_calls()
        if calls:
          tool_calls = [dict(call, index=i) for i, call in enumerate(calls)]
          yield streaming.sse(self._chunk(choice, {"tool_calls": tool_calls}, False))
        yield streaming.sse(self._chunk(choice, {}, True))
        done.add(choice.index)
    if include_usage:
      yield streaming.sse(self._usage_chunk("chat.completion.chunk", generation.choices))

  def body(self, choices: Sequence[streaming.Choice]) -> dict[str, Any]:
    out = []
    for choice in choices:
      message: dict[str, Any] = {"role": "assistant", "content": choice.text}
      calls = choice.tool_calls()
      if calls:
        message["tool_calls"] = calls
      out.append(
          {
              "index": choice.index,
              "message": message,
              "logprobs": choice.chat_logprobs() if self.want_logprobs else None,
              "finish_reason": choice.reason(),
          }
      )
    return self._head("chat.completion") | {
        "system_fingerprint": None,
        "choices": out,
        "usage": streaming.usage(choices, self.prompts),
    }
