"""Preference pairs: (prompt, chosen, rejected) read from the common formats, rendered into padded token batches.

A pair's prompt is a chat conversation (nanolm_jax.chat messages) ending where the assistant's reply would start (a
user or tool message); chosen and rejected are the two candidate assistant replies (plain strings), chosen preferred.

Accepted record formats (detected per record, so one file may mix them):

  TRL explicit prompt     {"prompt": P, "chosen": C, "rejected": R}: each plain text (P a user message, C / R
                          assistant replies) or a list of chat messages in any format conversations.normalize reads.
                          A chosen / rejected list that repeats the prompt's messages first (UltraFeedback-binarized)
                          has them dropped.
  TRL implicit prompt     {"chosen": [messages], "rejected": [messages]}: two whole conversations sharing a prefix.
  Anthropic HH            {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}: two transcripts.

In every format chosen and rejected become two whole conversations; their common leading messages are the prompt and
each must then hold exactly one more message, an assistant reply (its text is the reply; a reply that ends in a tool
call is refused). Two conversations that differ earlier (HH transcripts with different prompts) are an error. An
optional numeric "margin" field is kept (the Bradley-Terry margin; 0 when absent).

Bad input: a JSONL line that is not JSON or not a valid pair is counted and skipped, its line number and reason
logged and returned in the stats; a glob that matches nothing, or files with no valid pair, is a ValueError.

Rendering (render_pair, pair_batch): each side is rendered with the project's chat template as the whole conversation
prompt + [reply], so the reply's tokens are its text and the closing <|end|>; the reward is read at that <|end|>.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import gzip
import json
import math
import numbers
import re
from typing import Any

from absl import logging
import numpy as np

from nanolm_jax import chat
from nanolm_jax import fs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import conversations as conversations_lib
from nanolm_jax.data import sources as sources_lib

Conversation = list[dict[str, Any]]
_MAX_REPORTED = 10  # bad lines named individually in the log and the stats; the rest only counted
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


class PreferenceError(ValueError):
  """A record that cannot be turned into a preference pair; the message says why."""


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  """A prompt conversation and two assistant replies to it, ``chosen`` preferred over ``rejected``."""

  prompt: Conversation
  chosen: str
  rejected: str
  margin: float = 0.0

  def conversation(self, side: str) -> Conversation:
    """The prompt followed by the ``side`` ('chosen' or 'rejected') reply as an assistant message."""
    if side not in ("chosen", "rejected"):
      raise ValueError(f"side must be 'chosen' or 'rejected', got {side!r}")
    return [*self.prompt, {"role": "assistant", "content": getattr(self, side)}]

  def to_record(self) -> dict[str, Any]:
    """The TRL conversational explicit-prompt record (what write_jsonl writes; from_record reads it back)."""
    out = {"prompt": list(self.prompt), "chosen": self.conversation("chosen")[-1:]}
    out["rejected"] = self.conversation("rejected")[-1:]
    if self.margin:
      out["margin"] = self.margin
    return out


# --- one record -> one pair ------------------------------------------------------------------------------------------


def _rows(value: Any) -> Any:
  """A columnar message list (TFDS Sequence of dicts: {"role": [...], "content": [...]}) -> a list of dicts."""
  if isinstance(value, Mapping) and value and all(isinstance(v, list) for v in value.values()):
    keys = list(value)
    return [dict(zip(keys, row)) for row in zip(*(value[k] for k in keys))]
  return value


def _side(value: Any, role: str, what: str) -> list[Any]:
  """Plain text -> one ``role`` message; a message list as it is (normalised later)."""
  value = _rows(value)
  if isinstance(value, str):
    return [{"role": role, "content": value}]
  if isinstance(value, list) and value:
    return value
  raise PreferenceError(f'"{what}" must be text or a non-empty list of messages, got {type(value).__name__}')


def _message_key(m: Any) -> tuple[str, Any]:
  if not isinstance(m, Mapping):
    return ("", m)
  role = m.get("role", m.get("from"))
  return (role.lower() if isinstance(role, str) else str(role), m.get("content", m.get("value")))


def _drop_repeated_prompt(prompt: list[Any], side: list[Any]) -> list[Any]:
  n = len(prompt)
  if len(side) > n and [_message_key(m) for m in side[:n]] == [_message_key(m) for m in prompt]:
    return side[n:]
  return side


def _hh_transcript(text: Any, what: str) -> list[dict[str, str]]:
  """'\\n\\nHuman: q\\n\\nAssistant: a ...' -> messages (user / assistant)."""
  if not isinstance(text, str):
    raise PreferenceError(f'"{what}" must be text (an HH transcript) when there is no "prompt"')
  parts = _HH_TURN.split(text)
  if len(parts) < 3:
    raise PreferenceError(f'"{what}" has no "Human:" / "Assistant:" turns and the record has no "prompt"')
  if parts[0].strip():
    raise PreferenceError(f'"{what}" has text before its first "Human:" turn: {parts[0][:40]!r}')
  roles = {"Human": "user", "Assistant": "assistant"}
  return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


def _conversation(messages: list[Any], what: str) -> Conversation:
  try:
    return conversations_lib.normalize({"messages": messages})
  except conversations_lib.ConversationError as e:
    raise PreferenceError(f"{what}: {e}") from None


def _split(conv_c: Conversation, conv_r: Conversation) -> tuple[Conversation, str, str]:
  """Two conversations -> (common prompt, chosen reply, rejected reply)."""
  k = 0
  while k < min(len(conv_c), len(conv_r)) - 1 and conv_c[k] == conv_r[k]:
    k += 1
  if len(conv_c) != k + 1 or len(conv_r) != k + 1:
    raise PreferenceError(
        f"chosen and rejected differ before their last message (first difference at message {k}); they must share "
        "the prompt and differ only in the final assistant reply"
    )
  for what, conv in (("chosen", conv_c), ("rejected", conv_r)):
    if conv[k]["role"] != "assistant" or conv[k].get("tool_calls"):
      raise PreferenceError(f"{what}: the reply (message {k}) must be a plain assistant message")
  return conv_c[:k], conv_c[k]["content"], conv_r[k]["content"]


def _margin(record: Mapping[str, Any]) -> float:
  margin = record.get("margin", 0.0)
  if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(margin):
    raise PreferenceError(f'"margin" must be a finite number, got {margin!r}')
  return float(margin)


def from_record(record: Any) -> PreferencePair:
  """One record in any accepted format -> a PreferencePair; PreferenceError says why not."""
  record = conversations_lib._decode(record)  # pylint: disable=protected-access  (bytes / numpy -> str / lists)
  if not isinstance(record, Mapping):
    raise PreferenceError(f"record is a {type(record).__name__}, not an object")
  if "chosen" not in record or "rejected" not in record:
    raise PreferenceError(f'no "chosen" and "rejected" fields (keys: {sorted(record)[:8]})')
  prompt = record.get("prompt")
  if prompt is None:
    if isinstance(record["chosen"], str):  # Anthropic HH: whole transcripts
      sides = [_hh_transcript(record[w], w) for w in ("chosen", "rejected")]
    else:  # TRL implicit prompt
      sides = [_side(record[w], "assistant", w) for w in ("chosen", "rejected")]
  else:
    prompt_msgs = _side(prompt, "user", "prompt")
    sides = [
        prompt_msgs + _drop_repeated_prompt(prompt_msgs, _side(record[w], "assistant", w))
        for w in ("chosen", "rejected")
    ]
  conv_c, conv_r = (_conversation(s, w) for s, w in zip(sides, ("chosen", "rejected")))
  prompt_conv, chosen, rejected = _split(conv_c, conv_r)
  return PreferencePair(prompt_conv, chosen, rejected, _margin(record))


# --- files -----------------------------------------------------------------------------------------------------------


def read_jsonl(path: str) -> tuple[list[PreferencePair], list[tuple[int, str]]]:
  """(pairs, [(line number, reason) of each skipped line]) of one .jsonl / .jsonl.gz file."""
  return conversations_lib.read_jsonl_records(path, from_record, (PreferenceError,))


def load_jsonl(pattern: str | Sequence[str]) -> tuple[list[PreferencePair], dict[str, Any]]:
  """The pairs of the files matching a glob (or of a list of paths), in order, and stats.

  stats: files, pairs, bad (skipped lines), bad_lines (up to 10 (path, line number, reason)). Raises ValueError
  when nothing matches, and before reading when a listed path does not exist; when no file holds a valid pair.
  """
  paths = fs.glob(pattern) if isinstance(pattern, str) else list(pattern)
  if not paths:
    raise ValueError(f"preference data: {pattern!r} matches no files.")
  for p in paths:
    if not fs.exists(p):
      raise ValueError(f"preference data: {p} does not exist.")
  out, bad_lines = [], []
  for path in paths:
    pairs, bad = read_jsonl(path)
    conversations_lib.warn_bad_lines(path, bad, "preference")
    bad_lines.extend((path, n, why) for n, why in bad)
    out.extend(pairs)
  if not out:
    first = f"; first problem: {bad_lines[0][0]} line {bad_lines[0][1]}: {bad_lines[0][2]}" if bad_lines else ""
    raise ValueError(f"preference data: {pattern!r} holds no valid pair ({len(bad_lines)} bad line(s){first}).")
  stats = {"files": len(paths), "pairs": len(out), "bad": len(bad_lines), "bad_lines": bad_lines[:_MAX_REPORTED]}
  return out, stats


def write_jsonl(path: str, pairs: Iterable[PreferencePair]) -> int:
  """Writes pairs as TRL conversational records (one JSON object a line; .gz compressed); returns how many."""
  lines = [json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in pairs]
  data = "".join(lines).encode("utf-8")
  fs.write_bytes(path, gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
  return len(lines)


def load_tfds(
    name: str, split: str, *, data_dir: str = "", val_fraction: float = 0.05
) -> tuple[list[PreferencePair], dict[str, Any]]:
  """The pairs of TFDS dataset ``name`` (array_record, prepared beforehand) in ``split``, and stats as load_jsonl's
  (bad_lines hold (name, record index, reason)). Without a validation split, ``val_fraction`` of 'train' is held out by
  a stable hash of the record index (sources.tfds_records)."""
  spec = sources_lib.SourceSpec("tfds", name, 1.0)
  records = sources_lib.tfds_records(spec, data_dir, val_fraction, split)
  out, bad = [], []
  for i in range(len(records)):
    try:
      out.append(from_record(records[i]))
    except PreferenceError as e:
      bad.append((name, i, str(e)))
  if bad:
    logging.warning("TFDS %s: skipped %d malformed preference record(s); first: %s", name, len(bad), bad[0])
  if not out:
    raise ValueError(f"TFDS {name} ({split}) holds no valid preference pair ({len(bad)} bad record(s)).")
  return out, {"files": 1, "pairs": len(out), "bad": len(bad), "bad_lines": bad[:_MAX_REPORTED]}


# --- tokens ----------------------------------------------------------------------------------------------------------

PADDINGS = ("right", "left")


def render_pair(pair: PreferencePair, tok: tokenizer_lib.Tokenizer, max_len: int) -> dict[str, Any] | None:
  """Token ids of a pair: {'prompt': ids, 'chosen': reply ids, 'rejected': reply ids, 'truncated': bool}, or None.

  Each side's row is prompt + reply: exactly chat.render_for_training(pair.conversation(side)), whose final
  assistant message is the reply (its text and the closing <|end|>, the row's last token). Both sides share the
  prompt ids. When prompt + the longer reply exceeds ``max_len``, the prompt is cut from the left, the same for both
  sides: <s> is kept and the oldest tokens after it are dropped (a cut may start mid-message); replies are never
  cut. A pair whose longer reply does not fit with <s> and the last two prompt tokens (the assistant header) is
  dropped (None).
  """
  prompt = chat.render_for_completion(pair.prompt, tok)
  replies = {}
  for side in ("chosen", "rejected"):
    tokens, _ = chat.render_for_training(pair.conversation(side), tok)
    if tokens[: len(prompt)] != prompt:
      raise chat.ChatFormatError(f"the rendered {side} conversation does not start with the rendered prompt")
    replies[side] = tokens[len(prompt) :]
  longest = max(len(r) for r in replies.values())
  truncated = len(prompt) + longest > max_len
  if truncated:
    keep = max_len - longest - 1  # prompt tokens kept after <s>
    if keep < min(2, len(prompt) - 1):
      return None
    prompt = prompt[:1] + prompt[len(prompt) - keep :]
  return {"prompt": prompt, **replies, "truncated": truncated}


def render_pairs(
    pairs: Sequence[PreferencePair], tok: tokenizer_lib.Tokenizer, max_len: int, what: str
) -> tuple[list[dict[str, Any]], np.ndarray]:
  """render_pair each pair at max_len -> (the rendered pairs that fit, their margins float32); the ones that cannot
  fit are dropped with a warning naming ``what`` (e.g. the file), and a ValueError when none fits."""
  rendered, margins = [], []
  for p in pairs:
    r = render_pair(p, tok, max_len)
    if r is not None:
      rendered.append(r)
      margins.append(p.margin)
  if not rendered:
    raise ValueError(f"no pair of {what} fits {max_len} tokens a side ({len(pairs)} read)")
  if len(rendered) < len(pairs):
    logging.warning("%s: dropped %d of %d pairs longer than %d tokens a side", what, len(pairs) - len(rendered),
                    len(pairs), max_len)  # fmt: skip
  return rendered, np.asarray(margins, np.float32)


class PairCursor:
  """A resumable position in endless shuffled epochs over n pairs: epoch e visits them in the permutation seeded by
  (seed, e). upcoming(k) peeks at the next k indices (into later epochs as needed), advance(k) moves past them;
  get_state / set_state ({"epoch", "index"}) let a trainer resume at the same pair."""

  def __init__(self, n: int, seed: int):
    self.n, self.seed, self.epoch, self.index = n, seed, 0, 0

  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.n)

  def upcoming(self, k: int) -> list[int]:
    out, epoch, index = [], self.epoch, self.index
    while len(out) < k:
      out.extend(int(i) for i in self._order(epoch)[index : index + k - len(out)])
      epoch, index = epoch + 1, 0
    return out

  def advance(self, k: int) -> None:
    self.index += k
    while self.index >= self.n:
      self.epoch, self.index = self.epoch + 1, self.index - self.n

  def take(self, k: int) -> list[int]:
    out = self.upcoming(k)
    self.advance(k)
    return out

  def get_state(self) -> dict[str, int]:
    return {"epoch": self.epoch, "index": self.index}

  def set_state(self, state: dict[str, int]) -> None:
    self.epoch, self.index = int(state["epoch"]), int(state["index"])


def row_batch(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, pad_id: int, *, padding: str = "right"
) -> dict[str, np.ndarray]:
  """(prompt ids, reply ids) rows -> tokens / segment_ids / positions / weights B x seq_len and last_index B, as
  ``pair_batch`` lays them out (weights 1 on the reply)."""
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
  longest = max((len(p) + len(a) for p, a in rows), default=0)
  if longest > seq_len:
    raise ValueError(f"a pair's row has {longest} tokens, more than seq_len={seq_len}; render with max_len=seq_len")
  b = len(rows)
  out = {
      "tokens": np.full((b, seq_len), pad_id, np.int32),
      "segment_ids": np.zeros((b, seq_len), np.int32),
      "positions": np.zeros((b, seq_len), np.int32),
      "last_index": np.zeros((b,), np.int32),
      "weights": np.zeros((b, seq_len), np.float32),
  }
  for i, (prompt, reply) in enumerate(rows):
    n = len(prompt) + len(reply)
    start = 0 if padding == "right" else seq_len - n
    out["tokens"][i, start : start + n] = [*prompt, *reply]
    out["segment_ids"][i, start : start + n] = 1
    out["positions"][i, start : start + n] = np.arange(n)
    out["weights"][i, start + len(prompt) : start + n] = 1.0
    out["last_index"][i] = start + n - 1
  return out


def pair_batch(
    rendered: Sequence[Mapping[str, Any]],
    seq_len: int,
    pad_id: int,
    *,
    margins: Sequence[float] | None = None,
    padding: str = "right",
) -> dict[str, np.ndarray]:
  """P rendered pairs -> one padded batch of B = 2P rows: rows 0..P-1 the chosen sides, rows P..2P-1 the rejected
  sides in the same order (TRL's layout: rewards_B[:P] vs rewards_B[P:] are the pairs).

    tokens        int32 B x seq_len, pad_id on padding ('right': after the row, 'left': before it)
    segment_ids   int32 B x seq_len, 1 on the row's tokens, 0 on padding (the attention mask)
    positions     int32 B x seq_len, 0, 1, ... from the row's first token; 0 on padding
    last_index    int32 B, the position of the row's last token (the reply's <|end|>): where a reward head reads
    weights       float32 B x seq_len, 1 on the reply's tokens (its text and <|end|>), 0 on prompt and padding.
                  Aligned with tokens: a token's log-prob comes from the logits one position earlier, so DPO sums
                  logp(tokens[:, 1:]) from logits[:, :-1] with weights[:, 1:].
    margin        float32 P, the pairs' Bradley-Terry margins (0 without ``margins``)
  """
  rows = [(r["prompt"], r["chosen"]) for r in rendered] + [(r["prompt"], r["rejected"]) for r in rendered]
  out = row_batch(rows, seq_len, pad_id, padding=padding)
  margin = np.zeros((len(rendered),), np.float32) if margins is None else np.asarray(margins, np.float32)
  if margin.shape != (len(rendered),):
    raise ValueError(f"margins has shape {margin.shape}, expected ({len(rendered)},)")
  out["margin"] = margin
  return out


def pack_pairs(
    rendered: Sequence[Mapping[str, Any]],
    seq_len: int,
    pad_id: int,
    rows: int,
    *,
    margins: Sequence[float] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
  """Rendered pairs, in order, packed whole into ``rows`` rows of ``seq_len`` -> (batch, pairs used).

  Each pair is two segments side by side in one row — prompt + chosen (segment 2k + 1), then prompt + rejected
  (2k + 2) for the row's k-th pair — so a row holds only whole pairs and a microbatch of rows only whole pairs.
  Pairs go first-fit into the rows in order; packing stops at the first pair that fits no row (it leads the next
  batch), so the pairs used are rendered[:used]. A pair longer than a row is an error.

    tokens / segment_ids / positions   int32 rows x seq_len (positions restart at each segment; 0 is padding)
    reward_side   int32 rows x seq_len: +1 at a chosen segment's last token, -1 at a rejected one's, 0 elsewhere
    margin        float32 rows x seq_len: the pair's Bradley-Terry margin at its chosen last token, 0 elsewhere
  """
  out = {
      "tokens": np.full((rows, seq_len), pad_id, np.int32),
      "segment_ids": np.zeros((rows, seq_len), np.int32),
      "positions": np.zeros((rows, seq_len), np.int32),
      "reward_side": np.zeros((rows, seq_len), np.int32),
      "margin": np.zeros((rows, seq_len), np.float32),
  }
  fill, pairs_in_row = [0] * rows, [0] * rows
  used = 0
  for i, r in enumerate(rendered):
    sides = [[*r["prompt"], *r["chosen"]], [*r["prompt"], *r["rejected"]]]
    need = sum(len(x) for x in sides)
    if need > seq_len:
      raise ValueError(f"pair {i} takes {need} tokens, more than a packed row of seq_len={seq_len}")
    row = next((j for j in range(rows) if fill[j] + need <= seq_len), None)
    if row is None:
      break
    for side, ids in zip((1, -1), sides):
      start, end = fill[row], fill[row] + len(ids)
      out["tokens"][row, start:end] = ids
      out["segment_ids"][row, start:end] = 2 * pairs_in_row[row] + (1 if side == 1 else 2)
      out["positions"][row, start:end] = np.arange(len(ids))
      out["reward_side"][row, end - 1] = side
      if side == 1 and margins is not None:
        out["margin"][row, end - 1] = margins[i]
      fill[row] = end
    pairs_in_row[row] += 1
    used = i + 1
  return out, used


def make_pair_batch(
    pairs: Sequence[PreferencePair], tok: tokenizer_lib.Tokenizer, seq_len: int, *, padding: str = "right"
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
  """render_pair each pair at max_len=seq_len and pair_batch the ones that fit; stats counts truncated and dropped
  pairs (a dropped pair has no rows, so the batch may hold fewer than 2 * len(pairs))."""
  kept, margins, stats = [], [], {"pairs": 0, "truncated": 0, "dropped": 0}
  for pair in pairs:
    r = render_pair(pair, tok, seq_len)
    if r is None:
      stats["dropped"] += 1
      continue
    kept.append(r)
    margins.append(pair.margin)
    stats["pairs"] += 1
    stats["truncated"] += int(r["truncated"])
  return pair_batch(kept, seq_len, tok.pad_id, margins=margins, padding=padding), stats
