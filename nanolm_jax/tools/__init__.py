"""Tools the assistant can call during generation (see engine.Engine(tools=...) and chat.py for the call format).

A tool is a name, a one-line description, and `__call__(arguments: str) -> str` that never raises and never runs
unbounded: the work (`run`) happens in a worker thread with a time limit, and the output is cut to a size bound.
Errors come back as text ("error: ...") so the model sees them as the call's result.
"""

from __future__ import annotations

import abc

import threading


class Tool(abc.ABC):
  """Base class: subclasses set name / description and implement run(arguments) -> str (may raise)."""

  name: str = ""
  description: str = ""

  def __init__(self, *, timeout_s: float = 2.0, max_output_chars: int = 1000, max_argument_chars: int = 1000):
    self.timeout_s = float(timeout_s)
    self.max_output_chars = int(max_output_chars)
    self.max_argument_chars = int(max_argument_chars)

  @abc.abstractmethod
  def run(self, arguments: str) -> str:
    """The tool's work on its argument string; may raise (the bounded __call__ turns errors into text)."""

  def __call__(self, arguments: str) -> str:
    """The bounded call: run() in a thread with a time limit; output truncated; errors as 'error: ...' text."""
    if len(arguments) > self.max_argument_chars:
      return f"error: arguments longer than {self.max_argument_chars} characters"
    box: dict[str, object] = {}

    def work():
      try:
        box["out"] = str(self.run(arguments))
      except Exception as e:  # pylint: disable=broad-except
        box["err"] = f"error: {e}"

    # A daemon thread: one that overruns cannot be killed, but it is abandoned and cannot keep the process alive.
    t = threading.Thread(target=work, daemon=True, name=f"tool-{self.name}")
    t.start()
    t.join(self.timeout_s)
    if t.is_alive():
      return f"error: {self.name} timed out after {self.timeout_s:g}s"
    out = box.get("out", box.get("err", "error: no result"))
    if len(out) > self.max_output_chars:
      out = out[: self.max_output_chars - 3] + "..."
    return out


def describe(tools) -> str:
  """One line per tool, for a system prompt: 'name: description'."""
  return "\n".join(f"{t.name}: {t.description}" for t in tools)
