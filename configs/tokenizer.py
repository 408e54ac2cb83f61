"""Tokenizer-training configs: `--config=configs/tokenizer.py:PRESET`, overrides as `--config.vocab_size=8192`.

Presets:
  default / tiny   4096 tokens: the CPU default, seconds on the embedded stdlib corpus.
  large            32768 tokens, for a real corpus (set `data.sources`); the stdlib corpus is too small for it.
  xl               65536 tokens.
"""

import ml_collections

from nanolm_jax.data import sources as sources_lib
from nanolm_jax.data import tokenizer_training

_VOCAB_SIZES = {'default': 4096, 'tiny': 4096, 'large': 32768, 'xl': 65536}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  preset = preset or 'default'
  if preset not in _VOCAB_SIZES:
    raise ValueError(f'Unknown tokenizer preset {preset!r}; choose from {sorted(_VOCAB_SIZES)}.')
  c = ml_collections.ConfigDict()
  c.vocab_size = _VOCAB_SIZES[preset]
  c.output = './runs/tokenizer/tokenizer.model'
  c.data = sources_lib.default_data_config()  # data.sources, data.data_dir, data.val_fraction, data.num_workers
  c.tokenizer = tokenizer_training.default_tokenizer_config()  # model_type, character_coverage, max_train_bytes
  if preset in ('large', 'xl'):
    c.tokenizer.max_train_bytes = 200_000_000
  return c
