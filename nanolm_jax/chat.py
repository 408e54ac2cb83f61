"""The chat format: the project's one definition of how a conversation becomes tokens and back.

Used by the chat CLI, the server, SFT (render_for_training) and RL / eval (render_for_completion + parse_completion).

Messages are dicts::

  {"role": "system", "content": str}                       optional, first only
  {"role": "user", "content": str}
  {"role": "assistant", "content": str, "tool_calls": [{"name": str, "arguments": str}]}   tool_calls optional
  {"role": "tool", "name": str, "content": str}             the result of the preceding assistant tool call

Token layout (B = <s>, each <|x|> one reserved special token)::

  B <|start|><|system|>You are terse.<|end|>
    <|start|><|user|>What is 2+3?<|end|>
    <|start|><|assistant|>Let me compute.<|tool_call_start|>calculator: 2+3<|tool_call_end|>
    <|tool_result_start|>5<|tool_result_end|>It is 5.<|end|>

A tool call ends the assistant segment without <|end|>: the engine intercepts <|tool_call_end|>, runs the tool, forces
the result tokens and the model continues the *same* turn (no new header). So an assistant message holds at most one
tool call (after its content), must be followed by the matching tool message, and that by an assistant message that
continues the turn. A tool call's text is ``name: arguments``.

render_for_training masks (0) everything the model should not learn to produce — <s>, role headers, system / user
messages, tool results — and trains (1) assistant text, tool calls, and the assistant's closing <|end|> (so it learns
to stop). Each segment is encoded separately; text never produces special ids (tokenizer.encode), so user text cannot
inject a role marker.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nanolm_jax import tokenizer as tokenizer_lib

ROLES = ("system", "user", "assistant", "tool")
Message = Mapping[str, Any]


class ChatFormatError(ValueError):
  """A conversation that does not follow the format; the message names the offending message and rule."""


def _ids(tok: tokenizer_lib.Tokenizer) -> dict[str, int]:
  names = (
      "system",
      "user",
      "assistant",
      "tool",
      "start",
      "end",
      "tool_call_start",
      "tool_call_end",
      "tool_result_start",
      "tool_result_end",
  )
  return {n: tok.special_id(n) for n in names}


def stop_tokens(tok: tokenizer_lib.Tokenizer) -> tuple[int, ...]:
  """Tokens that end an assistant turn: <|end|> (and eos, which a base model may emit)."""
  return (tok.special_id("end"), tok.eos_id)


def format_tool_call(name: str, arguments: str) -> str:
  return f"{name}: {arguments}"


def parse_tool_call(text: str) -> tuple[str, str]:
  """'name: arguments' -> (name, arguments); ChatFormatError when there is no 'name:' prefix."""
  name, sep, args = text.partition(":")
  name = name.strip()
  if not sep or not name or not name.replace("_", "").isalnum():
    raise ChatFormatError(f"tool call {text[:80]!r} is not of the form 'name: arguments'")
  return name, args.strip()


def validate(messages: Sequence[Message], *, for_completion: bool = False) -> None:
  """Raises ChatFormatError naming the first problem (unknown role, order, empty content, bad tool call)."""
  if not messages:
    raise ChatFormatError("conversation is empty")
  prev = None  # role of the previous message, "assistant_call" for an assistant message with a tool call
  for i, m in enumerate(messages):
    role = m.get("role") if isinstance(m, Mapping) else None
    if role not in ROLES:
      raise ChatFormatError(f"message {i}: unknown role {role!r}; expected one of {ROLES}")
    content = m.get("content", "")
    if not isinstance(content, str):
      raise ChatFormatError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
    calls = m.get("tool_calls") or []
    if role != "assistant" and calls:
      raise ChatFormatError(f"message {i} ({role}): only assistant messages may have tool_calls")
    if role == "system":
      if i != 0:
        raise ChatFormatError(f"message {i}: a system message may only come first")
    elif role == "user":
      if prev not in (None, "system", "assistant"):
        raise ChatFormatError(f"message {i}: user message after {prev!r}; roles must alternate user/assistant")
    elif role == "assistant":
      if prev not in ("user", "tool"):
        raise ChatFormatError(
            f"message {i}: assistant message after {prev or 'nothing'!r}; it must follow a user " "or tool message"
        )
      if len(calls) > 1:
        raise ChatFormatError(
            f"message {i}: an assistant message holds at most one tool call (the next call comes "
            "after the first one's result, in a new assistant message)"
        )
      for c in calls:
        if not isinstance(c, Mapping) or not isinstance(c.get("name"), str) or not c["name"]:
          raise ChatFormatError(f"message {i}: tool call needs a non-empty 'name', got {c!r}")
        parse_tool_call(format_tool_call(c["name"], str(c.get("arguments", ""))))
    elif role == "tool":
      if prev != "assistant_call":
        raise ChatFormatError(f"message {i}: tool message must follow an assistant message with a tool call")
      called = messages[i - 1]["tool_calls"][0]["name"]
      if m.get("name") not in (None, called):
        raise ChatFormatError(
            f"message {i}: tool message name {m.get('name')!r} does not match the call " f"to {called!r}"
        )
    if not content.strip() and not calls and role != "tool":
      raise ChatFormatError(f"message {i} ({role}): empty content")
    prev = "assistant_call" if calls else role
  if prev == "system":
    raise ChatFormatError("conversation has only a system message")
  if prev == "assistant_call":
    raise ChatFormatError(f"message {len(messages) - 1}: the conversation ends with a tool call and no tool result")
  if for_completion and prev == "assistant":
    raise ChatFormatError(
        "render_for_completion: the conversation already ends with an assistant message; it must "
        "end with a user or tool message"
    )
  if not for_completion and prev != "assistant":
    raise ChatFormatError(f"render_for_training: the conversation must end with an assistant message, not {prev!r}")


def _render(messages: Sequence[Message], tok: tokenizer_lib.Tokenizer) -> tuple[list[int], list[int]]:
  s = _ids(tok)
  tokens, mask = [tok.bos_id], [0]

  def add(ids, m):
    tokens.extend(ids)
    mask.extend([m] * len(ids))

  prev_role = None
  for m in messages:
    role, content = m["role"], m.get("content", "")
    if role in ("system", "user"):
      add([s["start"], s[role]] + tok.encode(content) + [s["end"]], 0)
    elif role == "tool":
      add([s["tool_result_start"]] + tok.encode(content) + [s["tool_result_end"]], 0)
    else:
      if prev_role != "tool":  # a continuation after a tool result has no header: the turn goes on
        add([s["start"], s["assistant"]], 0)
      add(tok.encode(content), 1)
      calls = m.get("tool_calls") or []
      for c in calls:
        add(
            [s["tool_call_start"]]
            + tok.encode(format_tool_call(c["name"], str(c.get("arguments", ""))))
            + [s["tool_call_end"]],
            1,
        )
      if not calls:
        add([s["end"]], 1)
    prev_role = role
  return tokens, mask


def render_for_training(messages: Sequence[Message], tok: tokenizer_lib.Tokenizer) -> tuple[list[int], list[int]]:
  """(tokens, loss_mask): mask 1 on assistant text, tool calls and the assistant's <|end|>; 0 elsewhere."""
  validate(messages)
  return _render(messages, tok)


def render_for_completion(messages: Sequence[Message], tok: tokenizer_lib.Tokenizer) -> list[int]:
  """Tokens that prompt the next assistant turn: ends with <|start|><|assistant|> (or a tool result to continue)."""
  validate(messages, for_completion=True)
  tokens, _ = _render(messages, tok)
  if messages[-1]["role"] == "user":
    tokens += [tok.special_id("start"), tok.special_id("assistant")]
  return tokens


def parse_completion(tokens: Sequence[int], tok: tokenizer_lib.Tokenizer) -> list[dict[str, Any]]:
  """Generated tokens (after the assistant header) -> the assistant / tool messages they spell.

  Tool calls and forced results become {"role": "assistant", ..., "tool_calls": [...]} and {"role": "tool", ...};
  generation stops at <|end|> (or eos). A malformed tool call is kept as assistant text. Never raises.
  """
  s = _ids(tok)
  inv = {v: k for k, v in s.items()}
  out: list[dict[str, Any]] = []
  text_ids: list[int] = []
  mode, span = "text", []  # mode: text | call | result
  pending_call: str | None = None

  def flush_text(call=None):
    msg = {"role": "assistant", "content": tok.decode(text_ids, skip_special=True)}
    if call is not None:
      msg["tool_calls"] = [call]
    out.append(msg)
    text_ids.clear()

  for t in tokens:
    t = int(t)
    name = inv.get(t)
    if t == tok.eos_id or name == "end":
      break
    if mode == "text":
      if name == "tool_call_start":
        mode, span = "call", []
      elif name is None:
        text_ids.append(t)
    elif mode == "call":
      if name == "tool_call_end":
        call_text = tok.decode(span, skip_special=True)
        try:
          cname, args = parse_tool_call(call_text)
          flush_text({"name": cname, "arguments": args})
          pending_call = cname
        except ChatFormatError:
          text_ids.extend(tok.encode(call_text))
        mode = "text"
      elif name is None:
        span.append(t)
    if name == "tool_result_start" and mode != "call":
      mode, span = "result", []
    elif mode == "result":
      if name == "tool_result_end":
        out.append({"role": "tool", "name": pending_call or "", "content": tok.decode(span, skip_special=True)})
        mode, pending_call = "text", None
      elif name is None:
        span.append(t)
  if mode == "call":  # unterminated call: keep its text
    text_ids.extend(span)
  if text_ids or not out or out[-1]["role"] == "tool":
    flush_text()
  return out


def conversation_text(messages: Sequence[Message]) -> str:
  """A human-readable transcript (for logs)."""
  lines = []
  for m in messages:
    extra = "".join(f" [{c['name']}: {c.get('arguments', '')}]" for c in m.get("tool_calls") or [])
    lines.append(f"{m['role']}: {m.get('content', '')}{extra}")
  return "\n".join(lines)
