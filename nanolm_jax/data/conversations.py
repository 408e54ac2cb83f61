"""Conversation datasets: JSONL files in the common chat formats, TFDS datasets and generators, mixed by a spec.

Every record becomes the project's message list (see nanolm_jax.chat)::

  [{"role": "system"|"user"|"assistant"|"tool", "content": str, ("tool_calls": [{"name", "arguments"}]), ...}]

Accepted record formats (detected per record, so one file may mix them):

  OpenAI / HF UltraChat-200k   {"messages": [{"role": ..., "content": ...}, ...], ...}; content may be a list of
                               {"type": "text", "text": ...} parts; OpenAI tool_calls ({"function": {"name",
                               "arguments"}}) are flattened; a tool message without a name gets its call's name.
  ShareGPT                     {"conversations": [{"from": "human"|"gpt"|"system"|"tool"|..., "value": ...}, ...]}
  UltraChat (raw)              {"data": [user, assistant, user, assistant, ...]}

Role aliases (human, gpt, model, function, observation, ...) map to the four roles; anything else is an error. Each
conversation must then pass ``chat.validate`` (roles in order, non-empty content, ends with an assistant message).

Spec grammar (``sft.data.sources``), like the pretraining one: ``KIND[:ARG][@WEIGHT]`` separated by ';'::

  generated                          the default synthetic mixture (nanolm_jax.data.sft_data)
  identity:500@2;reasoning@1         one generator (ARG overrides its count), weighted
  jsonl:/data/chats/*.jsonl@0.5      JSONL / JSONL.gz files matched by a glob
  tfds:NAME[/CONFIG][:VERSION]       a TFDS dataset with a 'messages' / 'conversations' / 'data' feature

Generator kinds are whatever the caller registers (``load_sources(..., generators=...)``). The validation split holds
``val_fraction`` of the conversations by a stable hash of their content (duplicates land on the same side); TFDS
datasets use their 'validation' split when they have one, else a stable hash of the record index.

Bad input: a JSONL line that is not JSON, has an unknown role, roles out of order or empty content is counted and
skipped, with its line number and reason in a warning; a file with no valid conversation is a ValueError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import gzip
import json
from typing import Any

from absl import logging
import grain
import numpy as np

from nanolm_jax import chat
from nanolm_jax import fs
from nanolm_jax.data import sources as sources_lib
from nanolm_jax.data import stdlib_corpus

Conversation = list[dict[str, Any]]
Generator = Callable[[str], Sequence[Conversation]]  # ARG of the spec entry ('' when absent) -> conversations
FILE_KINDS = ('jsonl', 'tfds')
SPLITS = ('train', 'validation')
_MAX_REPORTED = 10  # bad lines named individually per file; the rest only counted

ROLE_ALIASES = {
    'system': 'system',
    'user': 'user',
    'human': 'user',
    'assistant': 'assistant',
    'gpt': 'assistant',
    'chatgpt': 'assistant',
    'model': 'assistant',
    'bard': 'assistant',
    'bing': 'assistant',
    'tool': 'tool',
    'function': 'tool',
    'observation': 'tool',
    'ipython': 'tool',
    'function_response': 'tool',
}


class ConversationError(ValueError):
  """A record that cannot be turned into a valid conversation; the message says why."""


# --- one record -> one conversation -----------------------------------------------------------------------------------


def _decode(x: Any) -> Any:
  """bytes -> str and numpy containers -> lists, recursively (what TFDS records hold)."""
  if isinstance(x, bytes):
    return x.decode('utf-8', errors='replace')
  if isinstance(x, np.ndarray):
    return [_decode(v) for v in x.tolist()] if x.ndim else _decode(x.item())
  if isinstance(x, Mapping):
    return {k: _decode(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_decode(v) for v in x]
  return x


def _content(value: Any, i: int) -> str:
  if value is None:
    return ''
  if isinstance(value, str):
    return value
  if isinstance(value, list):  # OpenAI content parts
    texts = []
    for part in value:
      if isinstance(part, Mapping) and part.get('type', 'text') == 'text' and isinstance(part.get('text'), str):
        texts.append(part['text'])
      else:
        kind = part.get('type') if isinstance(part, Mapping) else type(part).__name__
        raise ConversationError(f'message {i}: unsupported content part {kind!r} (only text)')
    return ''.join(texts)
  raise ConversationError(f'message {i}: content must be a string, got {type(value).__name__}')


def _tool_call(call: Any, i: int) -> dict[str, str]:
  if isinstance(call, Mapping) and isinstance(call.get('function'), Mapping):
    call = call['function']  # OpenAI: {"id", "type": "function", "function": {"name", "arguments"}}
  if not isinstance(call, Mapping) or not isinstance(call.get('name'), str) or not call['name']:
    raise ConversationError(f'message {i}: tool call needs a name, got {call!r:.80}')
  args = call.get('arguments', '')
  return {'name': call['name'], 'arguments': args if isinstance(args, str) else json.dumps(args, sort_keys=True)}


def _role(raw: Any, i: int) -> str:
  role = ROLE_ALIASES.get(raw.lower() if isinstance(raw, str) else raw)
  if role is None:
    raise ConversationError(f'message {i}: unknown role {raw!r}')
  return role


def _messages(items: Any) -> Conversation:
  """OpenAI-style message list (role/content), or ShareGPT turns (from/value), normalised."""
  if isinstance(items, Mapping) and items and all(isinstance(v, list) for v in items.values()):
    keys = list(items)  # columnar (TFDS Sequence of dicts): {"role": [...], "content": [...]}
    items = [dict(zip(keys, row)) for row in zip(*(items[k] for k in keys))]
  if not isinstance(items, list) or not items:
    raise ConversationError('no messages')
  out: Conversation = []
  for i, m in enumerate(items):
    if not isinstance(m, Mapping):
      raise ConversationError(f'message {i}: not an object')
    if 'from' in m and 'role' not in m:  # ShareGPT
      if m['from'] == 'function_call':  # a tool call: JSON {"name", "arguments"}
        try:
          call = _tool_call(json.loads(m.get('value') or ''), i)
        except json.JSONDecodeError:
          raise ConversationError(f'message {i}: function_call value is not JSON') from None
        if out and out[-1]['role'] == 'assistant' and not out[-1].get('tool_calls'):
          out[-1]['tool_calls'] = [call]
        else:
          out.append({'role': 'assistant', 'content': '', 'tool_calls': [call]})
        continue
      msg = {'role': _role(m['from'], i), 'content': _content(m.get('value'), i)}
    else:
      msg = {'role': _role(m.get('role'), i), 'content': _content(m.get('content'), i)}
      calls = m.get('tool_calls') or []
      if calls:
        if not isinstance(calls, list):
          raise ConversationError(f'message {i}: tool_calls must be a list')
        msg['tool_calls'] = [_tool_call(c, i) for c in calls]
    if msg['role'] == 'tool':
      name = m.get('name')
      if not name and out and out[-1].get('tool_calls'):
        name = out[-1]['tool_calls'][0]['name']  # OpenAI tool messages carry tool_call_id instead
      if name:
        msg['name'] = name
    out.append(msg)
  return out


def normalize(record: Any) -> Conversation:
  """One JSON record (any accepted format) -> a validated conversation; ConversationError says why not."""
  record = _decode(record)
  if not isinstance(record, Mapping):
    raise ConversationError(f'record is a {type(record).__name__}, not an object')
  if 'messages' in record:
    value = record['messages']
  elif 'conversations' in record or 'conversation' in record:
    value = record.get('conversations', record.get('conversation'))
  elif 'data' in record:
    data = record['data']
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
      raise ConversationError('"data" must be a list of strings (user, assistant, ...)')
    value = [{'role': ('user', 'assistant')[k % 2], 'content': t} for k, t in enumerate(data)]
  else:
    raise ConversationError(f'no "messages", "conversations" or "data" field (keys: {sorted(record)[:8]})')
  if isinstance(value, str):  # a JSON-encoded feature
    try:
      value = json.loads(value)
    except json.JSONDecodeError:
      raise ConversationError('messages field is a string that is not JSON') from None
  messages = _messages(value)
  try:
    chat.validate(messages)
  except chat.ChatFormatError as e:
    raise ConversationError(str(e)) from None
  return messages


def conversation_key(conversation: Sequence[Mapping[str, Any]]) -> str:
  """Canonical JSON of a conversation: equal conversations have equal keys (used for the stable split)."""
  return json.dumps(list(conversation), sort_keys=True, ensure_ascii=False)


# --- JSONL files ---------------------------------------------------------------------------------------------------


def read_jsonl_records(
    path: str, parse: Callable[[Any], Any], errors: tuple[type[Exception], ...]
) -> tuple[list[Any], list[tuple[int, str]]]:
  """(parse(record) of each good line, [(line number, reason) of each skipped line]) of one .jsonl / .jsonl.gz file.

  A line is skipped when it is not JSON or ``parse`` raises one of ``errors`` (the reason is the message); blank
  lines are ignored; a truncated .gz keeps what was readable and names the line where it broke."""
  out, bad = [], []
  with fs.open_file(path, 'r', errors='replace') as f:
    line_no = 0
    while True:
      try:
        line = next(f)
      except StopIteration:
        break
      except (EOFError, OSError) as e:  # a truncated .gz: keep what was readable
        bad.append((line_no + 1, f'file truncated or corrupt ({e})'))
        break
      line_no += 1
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        bad.append((line_no, f'not JSON ({e.msg})'))
        continue
      try:
        out.append(parse(record))
      except errors as e:
        bad.append((line_no, str(e)))
  return out, bad


def warn_bad_lines(path: str, bad: Sequence[tuple[int, str]], what: str) -> None:
  """One warning naming a file's skipped lines (the first few with their reasons), when there are any."""
  if bad:
    shown = '; '.join(f'line {n}: {why}' for n, why in bad[:_MAX_REPORTED])
    more = f' (and {len(bad) - _MAX_REPORTED} more)' if len(bad) > _MAX_REPORTED else ''
    logging.warning('%s: skipped %d malformed %s line(s): %s%s', path, len(bad), what, shown, more)


def read_jsonl(path: str) -> tuple[list[Conversation], list[tuple[int, str]]]:
  """(conversations, [(line number, reason) of each skipped line]) of one .jsonl / .jsonl.gz file."""
  return read_jsonl_records(path, normalize, (ConversationError,))


def load_jsonl(paths: Iterable[str]) -> list[Conversation]:
  """The conversations of ``paths`` in order; bad lines are warned about; a file with none valid is a ValueError."""
  out = []
  for path in paths:
    convs, bad = read_jsonl(path)
    warn_bad_lines(path, bad, 'conversation')
    if not convs:
      first = f'; first problem: line {bad[0][0]}: {bad[0][1]}' if bad else ''
      raise ValueError(f'{path} holds no valid conversation ({len(bad)} bad line(s){first}).')
    out.extend(convs)
  return out


def write_jsonl(path: str, conversations: Iterable[Sequence[Mapping[str, Any]]]) -> int:
  """Writes conversations as OpenAI-format lines ({"messages": [...]}) atomically; returns how many."""
  lines = [json.dumps({'messages': list(conv)}, ensure_ascii=False) + '\n' for conv in conversations]
  data = ''.join(lines).encode('utf-8')
  fs.write_bytes(path, gzip.compress(data, mtime=0) if path.endswith('.gz') else data)
  return len(lines)


def matched_files(spec: sources_lib.SourceSpec) -> list[str]:
  paths = fs.glob(spec.arg)
  if not paths:
    raise ValueError(f'Source {spec}: glob {spec.arg!r} matches no files.')
  for p in paths:
    if not p.endswith(('.jsonl', '.jsonl.gz')):
      raise ValueError(f'Source {spec}: {p} is not .jsonl or .jsonl.gz.')
  return paths


# --- specs, splits, sources ------------------------------------------------------------------------------------------


def parse_spec(spec: str, generator_kinds: Iterable[str] = ()) -> list[sources_lib.SourceSpec]:
  """``KIND[:ARG][@WEIGHT];...`` -> SourceSpecs; kinds are jsonl, tfds and ``generator_kinds``."""
  kinds = tuple(FILE_KINDS) + tuple(generator_kinds)
  out = []
  for part, src in sources_lib.split_spec(spec, kinds, what='conversation sources spec'):
    if src.kind in FILE_KINDS and not src.arg:
      raise ValueError(
          f'Source {part!r}: "{src.kind}" needs an argument ' f'(a {"glob" if src.kind == "jsonl" else "name"}).'
      )
    out.append(src)
  return out


def split_conversations(conversations: Sequence[Conversation], split: str, val_fraction: float) -> list[Conversation]:
  """The ``split`` side of a stable content-hash split (a source of >1 conversation always has a validation one)."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  fractions = np.array([stdlib_corpus.stable_fraction(conversation_key(c)) for c in conversations])
  held_out = fractions < val_fraction
  if val_fraction > 0 and not held_out.any() and len(conversations) > 1:
    held_out = fractions <= fractions.min()  # all copies of the chosen conversation
  return [c for c, h in zip(conversations, held_out) if h == (split == 'validation')]


class _Normalize:
  """TFDS record -> conversation, or None when it is malformed (then filtered out); picklable."""

  def __init__(self, spec: str):
    self.spec = spec
    self.bad = 0

  def __call__(self, record: Any) -> Conversation | None:
    try:
      return normalize({k: v for k, v in record.items() if k in ('messages', 'conversations', 'conversation', 'data')})
    except ConversationError as e:
      self.bad += 1
      if self.bad & (self.bad - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
        logging.warning('Source %s: skipped %d malformed record(s); latest: %s', self.spec, self.bad, e)
      return None


def _is_conversation(x: Any) -> bool:
  return x is not None


def _tfds(spec: sources_lib.SourceSpec, data_dir: str, val_fraction: float, split: str) -> grain.MapDataset:
  records = sources_lib.tfds_records(spec, data_dir, val_fraction, split)
  first = records[0]
  if not isinstance(first, Mapping) or not {'messages', 'conversations', 'conversation', 'data'} & set(first):
    raise ValueError(
        f'Source {spec}: records need a "messages", "conversations" or "data" feature, got '
        f'{sorted(first) if isinstance(first, Mapping) else type(first).__name__}.'
    )
  return grain.MapDataset.source(records).map(_Normalize(str(spec))).filter(_is_conversation)


def load_sources(
    sources_spec: str,
    split: str,
    *,
    val_fraction: float,
    generators: Mapping[str, Generator] | None = None,
    split_sources: Mapping[str, Callable[[str, str], Sequence[Any]]] | None = None,
    data_dir: str = '',
) -> list[tuple[sources_lib.SourceSpec, grain.MapDataset]]:
  """Each source of ``sources_spec`` with its ``split`` as a MapDataset of conversations, in spec order.

  ``generators`` maps generator kinds to a function of the spec's ARG returning conversations (all splits; this
  splits them by content hash); ``split_sources`` maps kinds to a function of (ARG, split) returning that split's
  records as they are (e.g. replayed pretraining documents, which keep pretraining's own split). MapDatasets from
  TFDS may hold None for malformed records (skip them).
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  generators = dict(generators or {})
  split_sources = dict(split_sources or {})
  out = []
  for spec in parse_spec(sources_spec, [*generators, *split_sources]):
    if spec.kind == 'tfds':
      ds = _tfds(spec, data_dir, val_fraction, split)
    elif spec.kind in split_sources:
      records = list(split_sources[spec.kind](spec.arg, split))
      if not records:
        raise ValueError(f'Source {spec}: no records in the {split} split.')
      ds = grain.MapDataset.source(records)
    else:
      if spec.kind == 'jsonl':
        convs = load_jsonl(matched_files(spec))
      else:
        convs = list(generators[spec.kind](spec.arg))
        if not convs:
          raise ValueError(f'Source {spec}: the generator produced no conversations.')
      chosen = split_conversations(convs, split, val_fraction)
      if not chosen:
        raise ValueError(
            f'Source {spec}: no conversations in the {split} split ({len(convs)} in total, '
            f'val_fraction={val_fraction}).'
        )
      ds = grain.MapDataset.source(chosen)
    out.append((spec, ds))
  return out
