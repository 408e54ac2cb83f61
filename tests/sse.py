"""A streaming chat client for the server tests: reads the SSE events of one /v1/chat/completions request."""

import json

import httpx


async def stream_chat(http: httpx.AsyncClient, url: str, body: dict, hang_up: bool = False):
  """(text, finish_reason, saw [DONE]) of a streamed chat completion; with hang_up, the client leaves after the
  first event (the connection closes) and (None, None, False) comes back."""
  text, reason, done = "", None, False
  async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
    assert r.status_code == 200, await r.aread()
    async for line in r.aiter_lines():
      if not line.startswith("data: "):
        continue
      if line == "data: [DONE]":
        done = True
        continue
      choice = json.loads(line[6:])["choices"][0]
      text += choice["delta"].get("content") or ""
      reason = choice["finish_reason"] or reason
      if hang_up:
        return None, None, False
  return text, reason, done
