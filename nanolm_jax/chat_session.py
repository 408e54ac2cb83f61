"""A chat session with a run: the conversation as token segments, streamed replies with tool calls shown dimmed,
the tools a session may use, and the read-eval loop of the terminal chat (experiments/chat.py is its main).

When the conversation outgrows the context, the oldest turns are dropped.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence, TextIO

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import fs
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import tools as tools_lib
from nanolm_jax.data import sources
from nanolm_jax.synthetic import search_data
from nanolm_jax.tools import calculator
from nanolm_jax.tools import search

DIM, RESET = "\x1b[2m", "\x1b[0m"


def search_from_sources(spec: str, max_bytes: int | None = 20_000_000, **kwargs) -> search.Search:
  """A search tool over the documents of a data source spec (nanolm_jax.data.sources), e.g. 'stdlib' or
  'files:/crawl/*.jsonl.gz' (the first `max_bytes` of its train split)."""
  cfg = sources.default_data_config()
  cfg.sources = spec
  return search.Search(sources.iter_texts(cfg, "train", max_bytes=max_bytes), **kwargs)


def build_tools(names: Sequence[str], search_source: str = "", workdir: str = "") -> list[tools_lib.Tool]:
  """The named tools. search: over `search_source` (a data source spec) when given, else the run's own
  search_index/ with the settings SFT trained it with, else the stdlib corpus."""
  tools = []
  for name in (n.strip() for n in names):
    if not name:
      continue
    if name == "calculator":
      tools.append(calculator.Calculator())
    elif name == "search":
      index = runs.search_index_dir(workdir) if workdir else ""
      if not search_source and index and fs.isdir(index):  # what the SFT run trained and evaluated with
        settings = runs.search_settings(workdir)
        tools.append(search.Search.from_files(index, k=settings["top_k"], fuzzy=settings["fuzzy"]))
      else:
        tools.append(search_from_sources(search_source or "stdlib"))
    else:
      raise ValueError(f"unknown tool {name!r} in --tools; choose from calculator, search")
  return tools


def system_prompt(system: str, tools: list[Any]) -> str:
  """The user's system prompt, plus the search tool's declaration when it is on (SFT teaches the model to search
  only when a system message declares the tool, as in the evaluation)."""
  searching = [t for t in tools if t.name == "search"]
  if not searching:
    return system
  return "\n".join(filter(None, [system, search_data.tools_prompt(searching)]))


class ChatSession:
  """A conversation kept as token segments (exactly what the model saw), rendered with nanolm_jax.chat."""

  def __init__(
      self,
      engine: engine_lib.Engine,
      tokenizer: tokenizer_lib.Tokenizer,
      sampling: engine_lib.SamplingParams,
      *,
      system: str = "",
      seed: int = 0,
      out: TextIO = sys.stdout,
      color: bool = False,
  ):
    self.engine, self.tok, self.sampling = engine, tokenizer, sampling
    self.system, self.seed, self.out, self.color = system, seed, out, color
    self.turns: list[list[int]] = []  # each: user segment + the assistant's tokens
    self.turn_count = 0
    self._in_call = False
    # Every chat marker, spares included: only the tool markers are shown (dimmed), as words.
    self._special = {i: name.strip("<|>") for name, i in getattr(tokenizer, "special_tokens", {}).items()}

  def reset(self) -> None:
    """Forgets the conversation; the seed sequence starts over too, so a reset session replays deterministically."""
    self.turns = []
    self.turn_count = 0

  def _prefix(self) -> list[int]:
    if not self.system:
      return [self.tok.bos_id]
    msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": "x"}]
    full = chat.render_for_completion(msgs, self.tok)
    user = chat.render_for_completion(msgs[1:], self.tok)
    return full[: len(full) - len(user) + 1]  # bos + the system segment

  def _user_segment(self, text: str) -> list[int]:
    return chat.render_for_completion([{"role": "user", "content": text}], self.tok)[1:]  # without bos

  def _dim(self, s: str) -> str:
    return f"{DIM}{s}{RESET}" if self.color and s else s

  def _on_token(self, row: int, token: int, delta: str, generated: bool) -> None:
    del row
    name = self._special.get(token)
    if name == "tool_call_start":
      text = self._dim("\n[tool call: ")
    elif name == "tool_call_end":
      text = self._dim("]")
    elif name == "tool_result_start":
      text = self._dim("\n[tool result: ")
    elif name == "tool_result_end":
      text = self._dim("]\n")
    elif name is not None or token == self.tok.eos_id:
      text = ""
    else:
      text = delta if generated and not self._in_call else self._dim(delta)
    if name == "tool_call_start":
      self._in_call = True
    elif name == "tool_call_end":
      self._in_call = False
    self.out.write(text)
    self.out.flush()

  def ask(self, text: str) -> engine_lib.Completion:
    """Streams the assistant's reply to `text` to out; returns the completion."""
    prefix, user = self._prefix(), self._user_segment(text)
    ctx = self.engine.cfg.max_len
    room = max(1, min(self.sampling.max_new_tokens, ctx // 2))
    while self.turns and len(prefix) + sum(map(len, self.turns)) + len(user) + room > ctx:
      self.turns.pop(0)  # forget the oldest exchange
    prompt = prefix + [t for turn in self.turns for t in turn] + user
    self._in_call = False
    out = self.engine.generate(
        [prompt],
        self.sampling,
        seed=self.seed + self.turn_count,
        stop_tokens=chat.stop_tokens(self.tok),
        on_token=self._on_token,
        truncate_prompt=True,
    )[0]
    self.out.write("\n")
    self.out.flush()
    reply = list(out.tokens)
    if not reply or reply[-1] != self.tok.special_id("end"):
      reply.append(self.tok.special_id("end"))  # close a cut-off turn so the next one starts cleanly
    self.turns.append(user + reply)
    self.turn_count += 1
    return out


def repl(session: ChatSession, stdin: TextIO, interactive: bool) -> None:
  """Reads lines until /quit or end of input; /reset clears the conversation."""
  while True:
    if interactive:
      session.out.write("> ")
      session.out.flush()
    line = stdin.readline()
    if not line:
      break
    line = line.strip()
    if not line:
      continue
    if line == "/quit":
      break
    if line == "/reset":
      session.reset()
      session.out.write("(conversation reset)\n")
      continue
    if line.startswith("/"):
      session.out.write(f"unknown command {line.split()[0]}; commands: /reset, /quit\n")
      continue
    session.ask(line)
