"""SentencePiece BPE tokenizer with reserved chat/tool control tokens.

Layout of every model this module trains (ids are fixed, whatever the vocab size)::

  0 <pad>   1 <unk>   2 <s> (bos)   3 </s> (eos)
  4..19     SPECIAL_TOKENS: chat roles, message and tool-call/-result delimiters, spares (control symbols)
  20        '\\n' (user-defined, so a newline is always exactly one token)
  21..276   <0x00>..<0xFF> byte fallback: any text encodes, nothing becomes <unk>
  277..     learned BPE pieces

Normalisation is the identity, whitespace is kept as is (runs of spaces may merge into one piece, which suits code and
indented docstrings), no dummy prefix is added and digits are split, so ``decode(encode(text)) == text`` for any str.
Control symbols are never produced by ``encode``: the text '<|user|>' encodes as ordinary pieces, so user text cannot
inject a role marker; only ``special_id`` gives those ids.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from absl import logging
import numpy as np
import sentencepiece as spm

from nanolm_jax import fs

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = (
    '<|system|>',
    '<|user|>',
    '<|assistant|>',
    '<|tool|>',  # roles
    '<|start|>',
    '<|end|>',  # message delimiters: <|start|><|user|>...<|end|>
    '<|tool_call_start|>',
    '<|tool_call_end|>',  # a tool call the assistant emits
    '<|tool_result_start|>',
    '<|tool_result_end|>',  # what the tool returned
) + tuple(
    f'<|reserved_{i}|>' for i in range(6)
)  # spares, so new markers do not shift ids of trained models
USER_DEFINED = ('\n',)
NUM_BYTES = 256
NUM_RESERVED = 4 + len(SPECIAL_TOKENS) + len(USER_DEFINED) + NUM_BYTES  # ids before the first learned piece
# Bump when training settings change meaning, so cached models are not reused across incompatible versions.
FORMAT_VERSION = 1
# Characters rarer than this share of the training text are left to byte fallback (also the config's default).
DEFAULT_CHARACTER_COVERAGE = 0.9999
_MAX_SENTENCE_CHARS = 8192  # spm silently drops "sentences" longer than max_sentence_length, so chunk below it
_BLANK_RUN = re.compile(r'\n\s*\n')


def _training_sentences(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
  """Paragraphs of ``texts`` (spm learns within a "sentence"), chunked on line boundaries below spm's length cap."""
  total = 0
  for text in texts:
    if max_bytes and total >= max_bytes:
      return
    total += len(text.encode('utf-8'))
    for para in _BLANK_RUN.split(text):
      while len(para) > _MAX_SENTENCE_CHARS:
        cut = para.rfind('\n', 0, _MAX_SENTENCE_CHARS)
        cut = cut if cut > 0 else _MAX_SENTENCE_CHARS
        yield para[:cut]
        para = para[cut:]
      if para.strip():
        yield para


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of the code needs of a tokenizer: ids, specials, encode/decode and per-token byte lengths.

  Implemented by `SentencePieceTokenizer` (trained by this project) and `hf_tokenizer.HFTokenizer` (imported models).
  """

  @property
  def vocab_size(self) -> int:
    ...

  @property
  def bos_id(self) -> int:
    ...

  @property
  def eos_id(self) -> int:
    ...

  @property
  def pad_id(self) -> int:
    ...

  special_tokens: dict[str, int]

  def special_id(self, name: str) -> int:
    ...

  def id_to_piece(self, i: int) -> str:
    ...

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    ...

  def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
    ...

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
    ...

  def token_bytes(self) -> np.ndarray:
    ...

  def bytes_per_token(self, texts: Iterable[str]) -> float:
    ...

  def visualize(self, text: str, color: bool | None = None) -> str:
    ...


class SentencePieceTokenizer:
  """A SentencePiece model plus the project's special-token conventions (implements `Tokenizer`)."""

  def __init__(self, model_proto: bytes):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.model_proto = model_proto
    self.special_tokens: dict[str, int] = {}
    for name in SPECIAL_TOKENS:
      i = self._sp.piece_to_id(name)
      if self._sp.id_to_piece(i) != name or not self._sp.is_control(i):
        raise ValueError(f'Not a nanolm_jax tokenizer: control symbol {name} is missing.')
      self.special_tokens[name] = i
    if (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id()) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError('Not a nanolm_jax tokenizer: pad/unk/bos/eos must be 0/1/2/3.')
    self._special_ids = frozenset(self.special_tokens.values())
    self._dropped_ids = frozenset((PAD_ID, BOS_ID, EOS_ID))
    self._token_bytes: np.ndarray | None = None

  # --- construction ---------------------------------------------------------------------------------------------

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      vocab_size: int,
      model_path: str | None = None,
      *,
      model_type: str = 'bpe',
      character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
      max_train_bytes: int | None = None,
      num_threads: int | None = None,
  ) -> SentencePieceTokenizer:
    """Trains on ``texts`` (all of them, up to ``max_train_bytes``) and writes ``model_path`` if given.

    Deterministic: the same texts and settings give a byte-identical model. Raises ValueError when ``vocab_size``
    cannot hold the reserved tokens plus the corpus alphabet, or exceeds what the corpus can supply.
    """
    if vocab_size <= NUM_RESERVED:
      raise ValueError(
          f'vocab_size={vocab_size} is too small: {NUM_RESERVED} ids are reserved (4 pad/unk/bos/eos, '
          f'{len(SPECIAL_TOKENS)} special, {len(USER_DEFINED)} newline, {NUM_BYTES} bytes) before any learned piece.'
      )
    proto = io.BytesIO()
    start = time.perf_counter()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_training_sentences(texts, max_train_bytes),
          model_writer=proto,
          model_type=model_type,
          vocab_size=vocab_size,
          character_coverage=character_coverage,
          byte_fallback=True,
          split_digits=True,
          pad_id=PAD_ID,
          unk_id=UNK_ID,
          bos_id=BOS_ID,
          eos_id=EOS_ID,
          control_symbols=list(SPECIAL_TOKENS),
          user_defined_symbols=list(USER_DEFINED),
          normalization_rule_name='identity',  # lossless: no NFKC, no whitespace collapsing
          remove_extra_whitespaces=False,
          add_dummy_prefix=False,
          allow_whitespace_only_pieces=True,
          input_sentence_size=0,  # use every sentence: sampling would make the model depend on spm's RNG
          shuffle_input_sentence=False,
          max_sentence_length=4 * _MAX_SENTENCE_CHARS,  # bytes; a chunk of 8192 chars has at most 4x that
          num_threads=num_threads or min(os.cpu_count() or 1, 8),
          minloglevel=2,
      )
    except RuntimeError as e:
      raise ValueError(f'SentencePiece training failed for vocab_size={vocab_size}: {e}') from e
    logging.info('Trained a %d-piece %s tokenizer in %.1fs.', vocab_size, model_type, time.perf_counter() - start)
    tok = cls(proto.getvalue())
    if model_path:
      tok.save(model_path)
    return tok

  @classmethod
  def load(cls, path: str) -> SentencePieceTokenizer:
    """Loads a ``.model`` file written by ``save``/``train``."""
    return cls(fs.read_bytes(path))

  def save(self, path: str) -> None:
    fs.write_bytes(path, self.model_proto)  # atomic: concurrent writers never leave a torn file

  # --- ids ---------------------------------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def pad_id(self) -> int:
    return PAD_ID

  def special_id(self, name: str) -> int:
    """Id of a special token, e.g. special_id('<|assistant|>'); the brackets may be omitted ('assistant')."""
    key = name if name.startswith('<|') else f'<|{name}|>'
    if key not in self.special_tokens:
      raise KeyError(f'Unknown special token {name!r}; known: {list(self.special_tokens)}')
    return self.special_tokens[key]

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  # --- text <-> ids ------------------------------------------------------------------------------------------------

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Token ids of ``text``; never contains special/control ids other than the requested bos/eos."""
    ids = self._sp.encode(text)
    if bos:
      ids.insert(0, BOS_ID)
    if eos:
      ids.append(EOS_ID)
    return ids

  def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
    """``encode`` for each text (one C++ call, so cheaper per text)."""
    ids = self._sp.encode(list(texts), add_bos=bos, add_eos=eos)
    return ids

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
    """Text of ``ids``. pad/bos/eos are dropped; chat specials appear by name ('<|user|>') unless ``skip_special``."""
    ids = [int(i) for i in ids]
    if not self._special_ids.intersection(ids):
      return self._sp.decode(ids)  # spm drops control ids (pad/bos/eos) itself
    parts, run = [], []
    for i in ids:
      if i in self._special_ids:
        parts.append(self._sp.decode(run))
        run = []
        if not skip_special:
          parts.append(self._sp.id_to_piece(i))
      else:
        run.append(i)
    parts.append(self._sp.decode(run))
    return ''.join(parts)

  # --- measurements -------------------------------------------------------------------------------------------------

  def token_bytes(self) -> np.ndarray:
    """int32 (V,): UTF-8 bytes each token stands for (bytes pieces 1, control/unk 0); for bits per byte."""
    if self._token_bytes is None:
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size):
        if self._sp.is_control(i) or self._sp.is_unknown(i):
          continue
        if self._sp.is_byte(i):
          out[i] = 1
        else:
          out[i] = len(self._sp.id_to_piece(i).replace('\u2581', ' ').encode('utf-8'))
      out.flags.writeable = False
      self._token_bytes = out
    return self._token_bytes

  def bytes_per_token(self, texts: Iterable[str]) -> float:
    """Compression: total UTF-8 bytes / total tokens (no bos/eos) over ``texts``."""
    texts = list(texts)
    n_bytes = sum(len(t.encode('utf-8')) for t in texts)
    n_tokens = sum(len(ids) for ids in self.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)

  def visualize(self, text: str, color: bool | None = None) -> str:
    """``text`` with token boundaries shown: alternating ANSI backgrounds, or [brackets] when not colouring.

    ``color`` None means colour only when stdout is a terminal. Newlines show as '\\n' (then a real line break) and
    byte-fallback tokens by their piece (<0xC3>), since a lone byte of a multi-byte character is not text.
    """
    if color is None:
      color = sys.stdout.isatty()
    out = []
    for k, i in enumerate(self.encode(text)):
      piece = self._sp.id_to_piece(i)
      surface = piece if self._sp.is_byte(i) else piece.replace('\u2581', ' ').replace('\n', '\\n\n')
      if color:
        out.append(f'\x1b[{(41, 42, 43, 44, 45, 46)[k % 6]};30m{surface}\x1b[0m')
      else:
        out.append(f'[{surface}]')
    return ''.join(out)
