"""Tests for nanolm_jax.tokenizer."""

import json
import os

import numpy as np
import pytest
import sentencepiece as spm

from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.data import sources
from nanolm_jax.tokenizer import SentencePieceTokenizer
from nanolm_jax.data import tokenizer_training

TRICKY = [
    'Hello  world!\n    def f(x):\n\treturn 12345 + x  # comment',
    'Unicode: café, naïve, 日本語, emoji 🙂🚀, math ∑∫, RTL שלום',
    '  leading and trailing spaces  \n\n\n',
    'Windows\r\nline endings and a NUL \x00 and bell \x07',
    '<|user|> pretend <|assistant|> role <|end|> markers </s> <s> <pad>',
    '',
]


@pytest.fixture(scope='module')
def data_cfg(tmp_path_factory):
  cfg = sources.default_data_config()
  cfg.data_dir = str(tmp_path_factory.mktemp('tfds'))
  return cfg


@pytest.fixture(scope='module')
def train_texts(data_cfg):
  return list(sources.iter_texts(data_cfg, 'train'))


@pytest.fixture(scope='module')
def tok(train_texts, tmp_path_factory):
  return SentencePieceTokenizer.train(train_texts, 1024, str(tmp_path_factory.mktemp('tok') / 'tok.model'))


def test_default_tokenizer_config():
  cfg = tokenizer_training.default_tokenizer_config()
  assert set(cfg) == {'path', 'model_type', 'character_coverage', 'max_train_bytes'} and cfg.path == ''


def test_id_layout(tok):
  sp = spm.SentencePieceProcessor(model_proto=tok.model_proto)
  assert [sp.id_to_piece(i) for i in range(4)] == ['<pad>', '<unk>', '<s>', '</s>']
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 2, 3, 1024)
  assert list(tok.special_tokens) == list(tokenizer_lib.SPECIAL_TOKENS)
  assert list(tok.special_tokens.values()) == list(range(4, 4 + len(tokenizer_lib.SPECIAL_TOKENS)))
  assert all(sp.is_control(i) for i in tok.special_tokens.values())
  newline = 4 + len(tokenizer_lib.SPECIAL_TOKENS)
  assert sp.id_to_piece(newline) == '\n'
  assert [sp.id_to_piece(newline + 1 + b) for b in range(256)] == [f'<0x{b:02X}>' for b in range(256)]
  assert tokenizer_lib.NUM_RESERVED == newline + 1 + 256
  assert tok.special_id('assistant') == tok.special_id('<|assistant|>') == 6
  with pytest.raises(KeyError):
    tok.special_id('<|nope|>')


@pytest.mark.parametrize('text', TRICKY)
def test_roundtrip_is_lossless_and_never_emits_control_ids(tok, text):
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  control = {0, 1, 2, 3} | set(tok.special_tokens.values())
  assert not control & set(ids)
  assert tok.encode(text, bos=True, eos=True) == [2] + ids + [3]


def test_newline_and_digits(tok):
  ids = tok.encode('a\nb\n\n2024')
  pieces = [tok.id_to_piece(i) for i in ids]
  assert pieces.count('\n') == 3 and pieces[-4:] == ['2', '0', '2', '4']


def test_decode_specials(tok):
  ids = [tok.bos_id, tok.special_id('user')] + tok.encode('hi there') + [tok.special_id('end'), tok.eos_id, 0]
  assert tok.decode(ids) == '<|user|>hi there<|end|>'
  assert tok.decode(ids, skip_special=True) == 'hi there'
  assert tok.decode(np.array(tok.encode('x y'))) == 'x y'


def test_encode_batch_matches_encode(tok):
  assert tok.encode_batch(TRICKY, bos=True) == [tok.encode(t, bos=True) for t in TRICKY]


def test_token_bytes_sum_to_utf8_length(tok, train_texts):
  tb = tok.token_bytes()
  assert tb.shape == (1024,) and tb.dtype == np.int32
  assert (tb[: tokenizer_lib.NUM_RESERVED - 256] == [0] * 20 + [1]).all()  # control tokens 0, '\n' 1
  assert (tb[tokenizer_lib.NUM_RESERVED - 256 : tokenizer_lib.NUM_RESERVED] == 1).all()
  for text in TRICKY + train_texts[:50]:
    assert tb[tok.encode(text, bos=True, eos=True)].sum() == len(text.encode('utf-8'))


def test_bytes_per_token(tok, data_cfg):
  val = list(sources.iter_texts(data_cfg, 'validation'))
  expected = sum(len(t.encode()) for t in val) / sum(len(tok.encode(t)) for t in val)
  assert tok.bytes_per_token(val) == pytest.approx(expected)
  assert 2.0 < expected < 4.0  # real compression, far from 1 byte/token


def test_bigger_vocab_compresses_better(tok, train_texts, data_cfg):
  big = SentencePieceTokenizer.train(train_texts, 4096)
  val = list(sources.iter_texts(data_cfg, 'validation'))
  assert big.bytes_per_token(val) > tok.bytes_per_token(val) + 0.5


def test_training_is_deterministic_and_max_bytes_caps(train_texts):
  a = SentencePieceTokenizer.train(train_texts[:300], 512)
  b = SentencePieceTokenizer.train(train_texts[:300], 512)
  assert a.model_proto == b.model_proto
  c = SentencePieceTokenizer.train(
      train_texts[:300] + ['zzqx ' * 1000] * 50,
      512,
      max_train_bytes=sum(len(t.encode()) for t in train_texts[:299]) + 1,
  )
  assert c.model_proto == a.model_proto  # the extra texts lie beyond the cap


def test_vocab_size_errors(train_texts):
  with pytest.raises(ValueError, match='too small'):
    SentencePieceTokenizer.train(train_texts[:10], tokenizer_lib.NUM_RESERVED)
  with pytest.raises(ValueError, match='SentencePiece training failed'):
    SentencePieceTokenizer.train(['tiny corpus'] * 3, 4096)


def test_save_load_and_foreign_model(tok, tmp_path, train_texts):
  tok.save(str(tmp_path / 'a.model'))
  loaded = SentencePieceTokenizer.load(str(tmp_path / 'a.model'))
  assert loaded.encode(TRICKY[1]) == tok.encode(TRICKY[1])
  foreign = tmp_path / 'foreign'
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(train_texts[:200]), model_prefix=str(foreign), vocab_size=300, minloglevel=2
  )
  with pytest.raises(ValueError, match='Not a nanolm_jax tokenizer'):
    SentencePieceTokenizer.load(str(foreign) + '.model')


def test_visualize(tok):
  text = 'The quick brown fox'
  bracketed = tok.visualize(text, color=False)
  assert bracketed.startswith('[') and bracketed.count('[') == len(tok.encode(text))
  assert bracketed.replace('[', '').replace(']', '') == text
  colored = tok.visualize(text, color=True)
  assert colored.count('\x1b[0m') == len(tok.encode(text))


def test_get_or_train_tokenizer(tmp_path, monkeypatch, data_cfg):
  monkeypatch.setenv('NANOLM_CACHE', str(tmp_path / 'cache'))
  tok_cfg = tokenizer_training.default_tokenizer_config()
  tok_cfg.max_train_bytes = 300_000
  first = tokenizer_training.get_or_train_tokenizer(tok_cfg, data_cfg, 512, str(tmp_path / 'run1'))
  cached = os.listdir(tmp_path / 'cache' / 'tokenizers')
  assert len(cached) == 1 and cached[0].endswith('.model')
  assert (tmp_path / 'run1' / 'tokenizer.model').read_bytes() == first.model_proto
  expected = SentencePieceTokenizer.train(sources.iter_texts(data_cfg, 'train', max_bytes=300_000), 512)
  assert first.model_proto == expected.model_proto

  def no_training(*args, **kwargs):
    raise AssertionError('should have used the cache')

  monkeypatch.setattr(SentencePieceTokenizer, 'train', no_training)
  second = tokenizer_training.get_or_train_tokenizer(tok_cfg, data_cfg, 512, str(tmp_path / 'run2'))
  assert second.model_proto == first.model_proto
  # The run directory's copy wins over the cache, and tok_cfg.path over both.
  other = tmp_path / 'other.model'
  SentencePieceTokenizer.save(expected, str(other))
  (tmp_path / 'run2' / 'tokenizer.model').write_bytes(first.model_proto)
  tok_cfg.path = str(other)
  assert tokenizer_training.get_or_train_tokenizer(tok_cfg, data_cfg, 512, str(tmp_path / 'run2')).vocab_size == 512
  with pytest.raises(ValueError, match='model.vocab_size is 300'):
    tokenizer_training.get_or_train_tokenizer(tok_cfg, data_cfg, 300, str(tmp_path / 'run3'))


def test_cache_key_depends_on_settings_and_file_contents(tmp_path, data_cfg):
  tok_cfg = tokenizer_training.default_tokenizer_config()
  base = tokenizer_training.cache_key(tok_cfg, data_cfg, 4096)
  assert base == tokenizer_training.cache_key(tok_cfg, data_cfg, 4096)
  assert base != tokenizer_training.cache_key(tok_cfg, data_cfg, 8192)
  path = tmp_path / 'a.jsonl'
  path.write_text(json.dumps({'text': 'one'}) + '\n')
  files_cfg = sources.default_data_config()
  files_cfg.sources = f'files:{path}'
  k1 = tokenizer_training.cache_key(tok_cfg, files_cfg, 4096)
  path.write_text(json.dumps({'text': 'one'}) + '\n' + json.dumps({'text': 'two'}) + '\n')
  assert tokenizer_training.cache_key(tok_cfg, files_cfg, 4096) != k1
