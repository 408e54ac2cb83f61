"""Base-model prompting: few-shot templates that make a pretrained (not chat-tuned) model act as an assistant.

A base model continues documents, so we show it the start of a document in which a helpful assistant answers
questions — a transcript with a few worked exchanges — and let it write the next answer. The engine stops it at the
next turn marker (STOP_STRINGS), i.e. before it starts writing the human's next line itself.
"""

from __future__ import annotations

from typing import Sequence

HUMAN, ASSISTANT = "Human", "Assistant"
STOP_STRINGS = ("\nHuman:", "\nUser:", "\n\nHuman", "\n\n\n")

DEFAULT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "What does the len() function do in Python?",
        "len() returns the number of items in a container, such as the characters of a string or the elements of a "
        "list. For example, len([1, 2, 3]) is 3.",
    ),
    (
        "How do I open a file for reading?",
        'Use the built-in open() with mode "r", ideally in a with statement so the file is closed for you:\n'
        'with open("notes.txt") as f:\n    text = f.read()',
    ),
    (
        "What is a dictionary?",
        'A dictionary (dict) maps keys to values. You create one with braces, like {"a": 1}, and look a value up '
        'with its key: d["a"] gives 1.',
    ),
)

PREAMBLE = (
    "The following is a conversation between a curious human and a helpful, knowledgeable AI assistant. "
    "The assistant answers questions about Python and programming accurately and concisely.\n\n"
)


def few_shot_prompt(
    question: str,
    examples: Sequence[tuple[str, str]] = DEFAULT_EXAMPLES,
    preamble: str = PREAMBLE,
    history: Sequence[tuple[str, str]] = (),
) -> str:
  """The transcript up to 'Assistant:' for `question`; `history` holds earlier (question, answer) turns."""
  if not question.strip():
    raise ValueError("few_shot_prompt: the question is empty")
  parts = [preamble]
  for q, a in (*examples, *history):
    parts.append(f"{HUMAN}: {q.strip()}\n{ASSISTANT}: {a.strip()}\n\n")
  parts.append(f"{HUMAN}: {question.strip()}\n{ASSISTANT}:")
  return "".join(parts)


def clean_answer(text: str) -> str:
  """The model's answer without a trailing partial turn marker or surrounding whitespace."""
  for s in STOP_STRINGS:
    i = text.find(s)
    if i >= 0:
      text = text[:i]
  return text.strip()
