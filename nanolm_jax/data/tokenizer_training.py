"""Getting a run's tokenizer: reuse the run's copy, load a given model, or train one on the data sources (cached).

Training reads the 'train' split of ``data.sources`` (nanolm_jax.data.sources), so it lives with the data; the
tokenizer itself (nanolm_jax.tokenizer) knows nothing of where its text came from.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging
import ml_collections
import sentencepiece as spm

from nanolm_jax import fs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import sources as sources_lib
from nanolm_jax.tokenizer import SentencePieceTokenizer


def default_tokenizer_config() -> ml_collections.ConfigDict:
  """The ``tokenizer`` block; the vocab size is ``model.vocab_size``, passed separately."""
  return ml_collections.ConfigDict(
      {
          'path': '',  # an existing .model to load instead of training one
          'model_type': 'bpe',  # or 'unigram'
          'character_coverage': tokenizer_lib.DEFAULT_CHARACTER_COVERAGE,  # rarer characters: byte fallback
          'max_train_bytes': 50_000_000,  # cap on training text (UTF-8 bytes), read in source order
      }
  )


# --- getting the tokenizer for a run ----------------------------------------------------------------------------------


def cache_dir() -> str:
  """Where trained tokenizers are cached: $NANOLM_CACHE/tokenizers, default ~/.cache/nanolm_jax/tokenizers."""
  root = os.environ.get('NANOLM_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'nanolm_jax')
  return os.path.join(root, 'tokenizers')


def cache_key(tok_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict, vocab_size: int) -> str:
  """Hash of everything that determines the trained model, including what the sources currently contain."""
  content = sources_lib.fingerprint(data_cfg)
  key = {
      'format': tokenizer_lib.FORMAT_VERSION,
      'sources': data_cfg.sources,
      'content': content,
      'val_fraction': data_cfg.val_fraction,
      'vocab_size': vocab_size,
      'model_type': tok_cfg.model_type,
      'character_coverage': tok_cfg.character_coverage,
      'max_train_bytes': tok_cfg.max_train_bytes,
      'specials': tokenizer_lib.SPECIAL_TOKENS,
      'sentencepiece': spm.__version__,
  }
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _checked(tok: SentencePieceTokenizer, vocab_size: int, where: str) -> SentencePieceTokenizer:
  if tok.vocab_size > vocab_size:
    raise ValueError(f'Tokenizer {where} has {tok.vocab_size} tokens but model.vocab_size is {vocab_size}.')
  if tok.vocab_size < vocab_size:
    logging.warning(
        'Tokenizer %s has %d tokens < model.vocab_size %d; the rest are unused.', where, tok.vocab_size, vocab_size
    )
  return tok


def get_or_train_tokenizer(
    tok_cfg: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict, vocab_size: int, workdir: str
) -> SentencePieceTokenizer:
  """The run's tokenizer: ``<workdir>/tokenizer.model`` (a resumed run), else ``tok_cfg.path``, else train one.

  Training uses the 'train' split of ``data_cfg.sources`` and is cached under ``cache_dir()`` by ``cache_key``; the
  model is then copied to ``<workdir>/tokenizer.model`` so a run directory is self-contained and resumes with the
  same tokenizer even if the sources change.
  """
  run_path = fs.join(workdir, 'tokenizer.model')
  if fs.exists(run_path):
    return _checked(SentencePieceTokenizer.load(run_path), vocab_size, run_path)
  if tok_cfg.path:
    # Copied into the run folder too, so the run stays loadable if the original moves.
    tok = _checked(SentencePieceTokenizer.load(tok_cfg.path), vocab_size, tok_cfg.path)
    tok.save(run_path)
    return tok
  cached = os.path.join(cache_dir(), cache_key(tok_cfg, data_cfg, vocab_size) + '.model')
  if os.path.exists(cached):
    logging.info('Using cached tokenizer %s', cached)
    tok = SentencePieceTokenizer.load(cached)
  else:
    logging.info('Training a %d-token tokenizer on %s', vocab_size, data_cfg.sources)
    tok = SentencePieceTokenizer.train(
        sources_lib.iter_texts(data_cfg, 'train', max_bytes=tok_cfg.max_train_bytes or None),
        vocab_size,
        cached,
        model_type=tok_cfg.model_type,
        character_coverage=tok_cfg.character_coverage,
    )
  fs.copy(cached, run_path)
  return _checked(tok, vocab_size, run_path)
