r"""Trains the SentencePiece tokenizer and reports its compression.

python -m experiments.train_tokenizer                                   # 4096 tokens on the embedded stdlib corpus
python -m experiments.train_tokenizer --compare_vocab_sizes=1024,4096,16384
python -m experiments.train_tokenizer --config=configs/tokenizer.py:large --config.data.sources='files:/c/*.jsonl.gz'
python -m experiments.train_tokenizer --visualize="Some text to look at."
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import sources as sources_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config',
    os.path.join(os.path.dirname(configs.__file__), 'tokenizer.py'),
    'Tokenizer config (configs/tokenizer.py).',
)
_COMPARE = flags.DEFINE_list('compare_vocab_sizes', [], 'Also train these vocab sizes and tabulate bytes/token.')
_VISUALIZE = flags.DEFINE_string(
    'visualize',
    'The tokenizer splits text into 4096 pieces; rare words, like "sesquipedalian", fall apart.',
    'Text whose token boundaries are shown at the end.',
)


def _train(cfg, vocab_size: int, output: str | None) -> tuple[tokenizer_lib.Tokenizer, float]:
  start = time.perf_counter()
  tok = tokenizer_lib.SentencePieceTokenizer.train(
      sources_lib.iter_texts(cfg.data, 'train', max_bytes=cfg.tokenizer.max_train_bytes or None),
      vocab_size,
      output,
      model_type=cfg.tokenizer.model_type,
      character_coverage=cfg.tokenizer.character_coverage,
  )
  return tok, time.perf_counter() - start


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset open at INFO; the report below says it all
  cfg = _CONFIG.value
  for split in sources_lib.SPLITS:
    stats = sources_lib.corpus_stats(cfg.data, split)
    print(f'{split:>10}: {stats["documents"]:6d} documents, {stats["bytes"] / 1e6:6.2f} MB  ({cfg.data.sources})')
  val_texts = list(sources_lib.iter_texts(cfg.data, 'validation'))

  tok, seconds = _train(cfg, cfg.vocab_size, cfg.output)
  print(f'\nTrained {tok.vocab_size} tokens in {seconds:.1f}s -> {os.path.abspath(cfg.output)}')
  print(f'validation bytes/token: {tok.bytes_per_token(val_texts):.3f}')

  if _COMPARE.value:
    print('\n vocab  bytes/token  train s')
    for size in sorted(int(v) for v in _COMPARE.value):
      try:
        other, seconds = _train(cfg, size, None)
      except ValueError as e:  # e.g. more pieces than the corpus can supply
        print(f'{size:6d}  {"-":>11}  {"-":>7}  ({str(e).splitlines()[0][:120]})')
        continue
      print(f'{size:6d}  {other.bytes_per_token(val_texts):11.3f}  {seconds:7.1f}')

  ids = tok.encode(_VISUALIZE.value)
  print(f'\n{len(ids)} tokens for {len(_VISUALIZE.value.encode("utf-8"))} bytes:')
  print(tok.visualize(_VISUALIZE.value))


if __name__ == '__main__':
  app.run(main)
