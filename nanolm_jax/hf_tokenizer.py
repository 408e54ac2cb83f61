"""Hugging Face tokenizers both ways: `HFTokenizer` (tokenizer.json behind our Tokenizer interface) and `spm_to_hf`.

Import: a run folder made from a Hugging Face model keeps the model's tokenizer files (tokenizer.json,
tokenizer_config.json, ...); `runs.load_tokenizer` returns an `HFTokenizer` for it. Such a vocabulary (GPT-2's, say)
has none of the nanolm_jax chat tokens, so imported models are for base-model prompting: `special_id('<|user|>')`
raises KeyError. Like ours, `encode` never turns text into a special token ('<|endoftext|>' in the text stays text).

Export: `spm_to_hf` rebuilds our sentencepiece model as a `tokenizers` pipeline that gives identical ids: the same
vocabulary, BPE merges ranked by sentencepiece's piece scores, byte fallback, spaces escaped to U+2581 and no
pre-tokenizer (sentencepiece does not split on whitespace either), '\\n' and the control symbols as added tokens.
One deliberate difference: Hugging Face tokenizers match special tokens in text ('<|user|>' -> its id, which chat
templates rely on) while our `encode` treats them as text; `tokenizer(text, split_special_tokens=True)` gives ours.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, processors

from nanolm_jax import fs
from nanolm_jax import tokenizer as tokenizer_lib

# tokenizer files copied with an imported model. tokenizer.model (a foreign sentencepiece model) is left out on
# purpose: runs.load_tokenizer would take it for ours.
TOKENIZER_FILES = (
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'added_tokens.json',
    'vocab.json',
    'merges.txt',
)
_SPACE = '\u2581'
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def token_content(value: Any) -> str | None:
  """A special token entry of tokenizer_config.json: a string, an AddedToken dict, or null."""
  if isinstance(value, dict):
    return value.get('content')
  return value if isinstance(value, str) else None


def _bytes_to_unicode() -> dict[str, int]:
  """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte value."""
  bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return {chr(c): b for b, c in zip(bs, cs)}


def _has_component(node: Any, kind: str) -> bool:
  """Whether a tokenizer.json pipeline component (possibly a Sequence) contains one of type `kind`."""
  if not isinstance(node, dict):
    return False
  if node.get('type') == kind:
    return True
  return any(_has_component(n, kind) for key in ('decoders', 'pretokenizers', 'normalizers') for n in node.get(key, []))


class HFTokenizer:
  """A Hugging Face `tokenizers` tokenizer with nanolm_jax's Tokenizer interface (see tokenizer.Tokenizer)."""

  def __init__(
      self,
      tok: tokenizers.Tokenizer,
      bos: str | None = None,
      eos: str | None = None,
      pad: str | None = None,
      unk: str | None = None,
  ):
    self._tok = tok
    self._tok.encode_special_tokens = True  # text never becomes a control token, as with ours

    def tid(content: str | None) -> int | None:
      return None if content is None else tok.token_to_id(content)

    eos_id = tid(eos)
    # GPT-2 style vocabularies have one '<|endoftext|>' for everything; with no bos, documents start with eos.
    self._bos = tid(bos) if tid(bos) is not None else eos_id
    self._eos = eos_id
    self._pad = tid(pad) if tid(pad) is not None else eos_id
    self._dropped_ids = frozenset(i for i in (self._bos, self._eos, self._pad) if i is not None)
    self._special_ids = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
    # As in ours: the other special tokens (chat markers, if any), without bos/eos/pad/unk.
    unk = tid(unk) if unk is not None else None
    self.special_tokens: dict[str, int] = {
        t.content: i
        for i, t in sorted(tok.get_added_tokens_decoder().items())
        if t.special and i not in self._dropped_ids and i != unk
    }
    self._token_bytes: np.ndarray | None = None

  @classmethod
  def load(cls, directory: str) -> HFTokenizer:
    """Loads tokenizer.json; bos/eos/pad come from tokenizer_config.json, else special_tokens_map.json."""
    path = fs.join(directory, 'tokenizer.json')
    if not fs.exists(path):
      raise FileNotFoundError(f'{directory} has no tokenizer.json')
    tok = tokenizers.Tokenizer.from_str(fs.read_text(path))
    names: dict[str, str | None] = {'bos_token': None, 'eos_token': None, 'pad_token': None, 'unk_token': None}
    for fname in ('special_tokens_map.json', 'tokenizer_config.json'):  # the latter wins
      fpath = fs.join(directory, fname)
      if fs.exists(fpath):
        meta = json.loads(fs.read_text(fpath))
        for key in names:
          if token_content(meta.get(key)) is not None:
            names[key] = token_content(meta.get(key))
    return cls(tok, bos=names['bos_token'], eos=names['eos_token'], pad=names['pad_token'], unk=names['unk_token'])

  # --- ids ---------------------------------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def _required(self, value: int | None, what: str) -> int:
    if value is None:
      raise ValueError(f'this tokenizer defines no {what} token (tokenizer_config.json has no {what}_token)')
    return value

  @property
  def bos_id(self) -> int:
    return self._required(self._bos, 'bos')

  @property
  def eos_id(self) -> int:
    return self._required(self._eos, 'eos')

  @property
  def pad_id(self) -> int:
    return self._required(self._pad, 'pad')

  def special_id(self, name: str) -> int:
    """Id of a special token other than bos/eos/pad/unk ('user' or '<|user|>'); KeyError when there is none."""
    key = name if name.startswith('<') else f'<|{name}|>'
    if key not in self.special_tokens:
      raise KeyError(
          f'{name!r} is not a special token of this imported tokenizer (it has {list(self.special_tokens)}):'
          ' models imported from Hugging Face are for base-model prompting; the nanolm_jax chat format '
          'needs a tokenizer with its chat tokens (train one, or fine-tune with an extended vocabulary)'
      )
    return self.special_tokens[key]

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(int(i))

  # --- text <-> ids ------------------------------------------------------------------------------------------------

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
    """Token ids of `text` (no special tokens from the text itself), with the requested bos/eos."""
    ids = self._tok.encode(text, add_special_tokens=False).ids
    if bos:
      ids.insert(0, self.bos_id)
    if eos:
      ids.append(self.eos_id)
    return ids

  def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
    out = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
    for ids in out:
      if bos:
        ids.insert(0, self.bos_id)
      if eos:
        ids.append(self.eos_id)
    return out

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
    """Text of `ids`; bos/eos/pad are dropped, other special tokens appear by name unless `skip_special`."""
    ids = [int(i) for i in ids if int(i) not in self._dropped_ids]
    return self._tok.decode(ids, skip_special_tokens=skip_special)

  # --- measurements -------------------------------------------------------------------------------------------------

  def token_bytes(self) -> np.ndarray:
    """int32 (V,): UTF-8 bytes each token stands for (special tokens 0, byte-fallback pieces 1)."""
    if self._token_bytes is None:
      spec = json.loads(self._tok.to_str())
      byte_level = _has_component(spec.get('decoder'), 'ByteLevel')
      inverse = _bytes_to_unicode() if byte_level else {}
      specials = self._special_ids
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size):
        piece = self._tok.id_to_token(i)
        if piece is None or i in specials:
          continue
        if byte_level:
          out[i] = sum(1 if c in inverse else len(c.encode('utf-8')) for c in piece)
        elif len(piece) == 6 and piece.startswith('<0x') and piece.endswith('>'):
          out[i] = 1
        else:
          out[i] = len(piece.replace(_SPACE, ' ').encode('utf-8'))
      out.flags.writeable = False
      self._token_bytes = out
    return self._token_bytes

  def bytes_per_token(self, texts: Sequence[str]) -> float:
    texts = list(texts)
    n_bytes = sum(len(t.encode('utf-8')) for t in texts)
    return n_bytes / max(sum(len(ids) for ids in self.encode_batch(texts)), 1)

  def visualize(self, text: str, color: bool | None = None) -> str:
    """`text` with token boundaries shown (ANSI colours on a terminal, else [brackets])."""
    if color is None:
      color = sys.stdout.isatty()
    enc = self._tok.encode(text, add_special_tokens=False)
    out = []
    for k, (start, end) in enumerate(enc.offsets):
      surface = text[start:end].replace('\n', '\\n\n')
      out.append(f'\x1b[{(41, 42, 43, 44, 45, 46)[k % 6]};30m{surface}\x1b[0m' if color else f'[{surface}]')
    return ''.join(out)


# --- our sentencepiece model -> tokenizers ----------------------------------------------------------------------------


# sentencepiece_model.proto field numbers. The generated sentencepiece_model_pb2 needs a newer protobuf runtime than
# the one tensorflow-datasets pins, so the few fields used here are read straight from the wire format.
_BPE, _UNIGRAM = 2, 1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    b = buf[pos]
    pos += 1
    value |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
  """(field number, value) of a serialized message: varints as int, fixed32 as its 4 bytes, the rest as bytes."""
  out, pos = [], 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos : pos + 8], pos + 8
    elif wire == 2:
      n, pos = _varint(buf, pos)
      value, pos = buf[pos : pos + n], pos + n
    elif wire == 5:
      value, pos = buf[pos : pos + 4], pos + 4
    else:
      raise ValueError(f'not a sentencepiece model: wire type {wire}')
    out.append((number, value))
  return out


def _int32(v: int) -> int:
  return v - (1 << 64) if v >= 1 << 63 else v


def _parse_spm(model_proto: bytes) -> dict[str, Any]:
  """The pieces and the trainer / normaliser settings spm_to_hf needs, with the proto's defaults."""
  m: dict[str, Any] = {
      'pieces': [],
      'model_type': _UNIGRAM,
      'treat_whitespace_as_suffix': False,
      'byte_fallback': False,
      'bos_id': 1,
      'precompiled_charsmap': b'',
      'add_dummy_prefix': True,
      'remove_extra_whitespaces': True,
      'escape_whitespaces': True,
  }
  for number, value in _fields(model_proto):
    if number == 1:  # SentencePiece {piece = 1; score = 2; type = 3 [default NORMAL]}
      piece, score, ptype = '', 0.0, _NORMAL
      for n, v in _fields(value):
        if n == 1:
          piece = v.decode('utf-8')
        elif n == 2:
          score = float(np.frombuffer(v, '<f4')[0])
        elif n == 3:
          ptype = v
      m['pieces'].append((piece, score, ptype))
    elif number == 2:  # TrainerSpec
      names = {3: 'model_type', 24: 'treat_whitespace_as_suffix', 35: 'byte_fallback', 41: 'bos_id'}
      for n, v in _fields(value):
        if n in names:
          m[names[n]] = _int32(v) if n == 41 else (bool(v) if n in (24, 35) else v)
    elif number == 3:  # NormalizerSpec
      names = {2: 'precompiled_charsmap', 3: 'add_dummy_prefix', 4: 'remove_extra_whitespaces', 5: 'escape_whitespaces'}
      for n, v in _fields(value):
        if n in names:
          m[names[n]] = bytes(v) if n == 2 else bool(v)
  return m


def spm_to_hf(model_proto: bytes) -> tokenizers.Tokenizer:
  """An equivalent `tokenizers.Tokenizer` for a sentencepiece BPE or unigram model (as nanolm_jax trains them).

  Raises ValueError for normaliser settings this translation does not reproduce exactly.
  """
  m = _parse_spm(model_proto)
  if m['remove_extra_whitespaces']:
    raise ValueError('remove_extra_whitespaces=True is not reproduced; nanolm_jax tokenizers keep spaces')
  if m['treat_whitespace_as_suffix']:
    raise ValueError('treat_whitespace_as_suffix=True is not supported')
  pieces = m['pieces']
  vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
  unk = next(p for p, _, t in pieces if t == _UNKNOWN)
  byte_fallback = m['byte_fallback']

  if m['model_type'] == _BPE:
    # sentencepiece merges the adjacent pair whose concatenation is the highest-scoring piece; as a ranked merge
    # list that is every split of every normal piece into two pieces, ordered by the merged piece's score.
    merges = []
    for i, (piece, score, ptype) in enumerate(pieces):
      if ptype != _NORMAL or len(piece) < 2:
        continue
      for k in range(1, len(piece)):
        left, right = piece[:k], piece[k:]
        if left in vocab and right in vocab:
          merges.append((-score, i, vocab[left], vocab[right], left, right))
    merges.sort()
    model = models.BPE(
        vocab=vocab, merges=[(a, b) for *_, a, b in merges], unk_token=unk, fuse_unk=True, byte_fallback=byte_fallback
    )
  elif m['model_type'] == _UNIGRAM:
    # Byte and control pieces must not match literal text ('<0x41>'); sentencepiece never matches them either.
    model = models.Unigram(
        [(p, s if t in (_NORMAL, _USER_DEFINED) else -1e9) for p, s, t in pieces],
        unk_id=vocab[unk],
        byte_fallback=byte_fallback,
    )
  else:
    raise ValueError(f'sentencepiece model type {m["model_type"]} is not supported (only BPE and unigram)')

  tok = tokenizers.Tokenizer(model)
  norm = []
  if m['precompiled_charsmap']:
    norm.append(normalizers.Precompiled(m['precompiled_charsmap']))
  if m['add_dummy_prefix']:
    norm.append(normalizers.Prepend(_SPACE))
  if m['escape_whitespaces']:
    norm.append(normalizers.Replace(' ', _SPACE))
  if norm:
    tok.normalizer = normalizers.Sequence(norm)
  dec = [decoders.Replace(_SPACE, ' ')]
  if byte_fallback:
    dec.append(decoders.ByteFallback())
  dec.append(decoders.Fuse())
  if m['add_dummy_prefix']:
    dec.append(decoders.Strip(' ', 1, 0))
  tok.decoder = decoders.Sequence(dec)
  # Control pieces (and unk) are special; user-defined pieces ('\n') are always split out first, unnormalised.
  tok.add_special_tokens(
      [tokenizers.AddedToken(p, special=True, normalized=False) for p, _, t in pieces if t in (_CONTROL, _UNKNOWN)]
  )
  tok.add_tokens(
      [tokenizers.AddedToken(p, special=False, normalized=False) for p, _, t in pieces if t == _USER_DEFINED]
  )
  bos_id = m['bos_id']
  if 0 <= bos_id < len(pieces):
    bos = pieces[bos_id][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f'{bos} $A', pair=f'{bos} $A {bos} $B', special_tokens=[(bos, bos_id)]
    )
  return tok


def export_spm(model_proto: bytes, out_dir: str, model_max_length: int | None = None) -> None:
  """Writes tokenizer.json + tokenizer_config.json + special_tokens_map.json for our sentencepiece model."""
  tok = spm_to_hf(model_proto)
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, 'tokenizer.json'))
  names = {
      'bos_token': tok.id_to_token(tokenizer_lib.BOS_ID),
      'eos_token': tok.id_to_token(tokenizer_lib.EOS_ID),
      'pad_token': tok.id_to_token(tokenizer_lib.PAD_ID),
      'unk_token': tok.id_to_token(tokenizer_lib.UNK_ID),
  }
  specials = {**names, 'additional_special_tokens': list(tokenizer_lib.SPECIAL_TOKENS)}
  config = {
      'tokenizer_class': 'PreTrainedTokenizerFast',
      **specials,
      'add_bos_token': True,
      'add_eos_token': False,
      'clean_up_tokenization_spaces': False,
      'model_max_length': model_max_length or 1_000_000_000,
      'added_tokens_decoder': {
          str(i): {
              'content': t.content,
              'lstrip': False,
              'normalized': False,
              'rstrip': False,
              'single_word': False,
              'special': t.special,
          }
          for i, t in sorted(tok.get_added_tokens_decoder().items())
      },
  }
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, 'special_tokens_map.json'), 'w', encoding='utf-8') as f:
    json.dump(specials, f, indent=2, ensure_ascii=False)
