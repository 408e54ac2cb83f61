r"""Chat with a run in the terminal: tokens stream as they are sampled; tool calls and results are shown dimmed.

  python -m experiments.chat --workdir=runs/sft_tiny --system="You are terse." --temperature=0.7
  echo "What is 2+3?" | python -m experiments.chat --workdir=runs/sft_tiny      # non-interactive: one turn per line

Commands: /reset (forget the conversation, keep the system prompt), /quit (or end of input). Tools: --tools lists
them (calculator, search); search indexes --search_source (a data source spec, e.g. files:/crawl/*.jsonl.gz).
When the conversation outgrows the context, the oldest turns are dropped.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from absl import app
from absl import flags

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to load.")
_SYSTEM = flags.DEFINE_string("system", "", "System prompt ('' = none).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 50, "0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "1 = off.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 256, "Most tokens per assistant turn.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (each turn uses seed + turn number).")
_TOOLS = flags.DEFINE_list("tools", ["calculator"], "Tools the model may call: calculator, search ('' = none).")
_SEARCH_SOURCE = flags.DEFINE_string(
    "search_source",
    "",
    "Documents for the search tool: a data source spec; '' = the "
    "run's own search_index/ (SFT runs) or else 'stdlib'.",
)
_COLOR = flags.DEFINE_enum("color", "auto", ["auto", "always", "never"], "Dim tool calls with ANSI codes.")

DIM, RESET = "\x1b[2m", "\x1b[0m"


def build_tools(names: list[str], search_source: str, workdir: str = "") -> list[Any]:
  import os  # pylint: disable=g-import-not-at-top
  from nanolm_jax.tools import calculator, search  # pylint: disable=g-import-not-at-top

  tools = []
  for name in (n.strip() for n in names):
    if not name:
      continue
    if name == "calculator":
      tools.append(calculator.Calculator())
    elif name == "search":
      index = os.path.join(workdir, "search_index") if workdir else ""
      if not search_source and index and os.path.isdir(index):  # what the SFT run trained and evaluated with
        import json  # pylint: disable=g-import-not-at-top

        cfg_path = os.path.join(workdir, "config.json")
        scfg = json.load(open(cfg_path)).get("sft", {}).get("search", {}) if os.path.exists(cfg_path) else {}
        tools.append(search.Search.from_files(index, k=int(scfg.get("top_k", 3)), fuzzy=bool(scfg.get("fuzzy", True))))
      else:
        tools.append(search.Search.from_sources(search_source or "stdlib"))
    else:
      raise ValueError(f"unknown tool {name!r} in --tools; choose from calculator, search")
  return tools


def system_prompt(system: str, tools: list[Any]) -> str:
  """The user's system prompt, plus the search tool's declaration when it is on (SFT teaches the model to search
  only when a system message declares the tool, as in the evaluation)."""
  searching = [t for t in tools if t.name == "search"]
  if not searching:
    return system
  from nanolm_jax.posttrain import chat_eval  # pylint: disable=g-import-not-at-top

  return "\n".join(filter(None, [system, chat_eval.tools_prompt(searching)]))


class ChatSession:
  """A conversation kept as token segments (exactly what the model saw), rendered with nanolm_jax.chat."""

  def __init__(
      self,
      engine: engine_lib.Engine,
      tokenizer: Any,
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


def main(argv):
  del argv
  from nanolm_jax import metrics  # pylint: disable=g-import-not-at-top
  from nanolm_jax import runs  # pylint: disable=g-import-not-at-top

  metrics.quiet_library_logs()
  try:
    if not _WORKDIR.value:
      raise ValueError("--workdir is required")
    sampling = engine_lib.SamplingParams(
        temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, max_new_tokens=_MAX_NEW.value
    ).validate()
    tools = build_tools(_TOOLS.value, _SEARCH_SOURCE.value, _WORKDIR.value)
    run = runs.load_run(_WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  color = _COLOR.value == "always" or (_COLOR.value == "auto" and sys.stdout.isatty())
  eng = engine_lib.Engine(run.model, run.params, run.tokenizer, tools=tools, chunk_steps=4)
  session = ChatSession(
      eng, run.tokenizer, sampling, system=system_prompt(_SYSTEM.value, tools), seed=_SEED.value, color=color
  )
  try:
    repl(session, sys.stdin, interactive=sys.stdin.isatty())
  except KeyboardInterrupt:
    pass
  sys.stdout.write("\n" if sys.stdin.isatty() else "")


if __name__ == "__main__":
  app.run(main)
