"""Our sentencepiece model as a `tokenizers` pipeline gives sentencepiece's ids; HFTokenizer keeps our interface."""

import json
import random

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizer tests need the 'hf' extra: pip install -e .[hf]")

# pylint: disable=g-import-not-at-top,wrong-import-position
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import hf_tokenizer

TEXTS = (
    "",
    " ",
    "  leading and trailing  ",
    "a     run    of spaces",
    "\n",
    "\n\n\n",
    "line\nbreaks\r\nand\ttabs\t\t",
    "digits 0123456789 and 3.14159e-10, 1,000,000",
    "x = [i ** 2 for i in range(10)]  # squares\n    return x",
    "héllo wörld — naïve café, 中文字符, 日本語, emoji 😀🎉, Ωμέγα",
    "\u00a0nbsp\u3000ideographic\u2003em",
    "ﬁ ligature Ⅻ ½",
    "a\u2581literal\u2581lower\u2581one",
    "<0x41> is not a byte token",
    "def f(self):\n        '''Docstring.'''\n\n\n        pass\n",
)


@pytest.fixture(scope="module")
def ours(small_tokenizer) -> tokenizer_lib.Tokenizer:
  return tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("hf_tok"))
  hf_tokenizer.export_spm(ours.model_proto, out, model_max_length=64)
  return out


def _corpus(small_corpus) -> list[str]:
  with open(small_corpus.split(":", 1)[1]) as f:
    return [json.loads(line)["text"] for line in f]


def test_spm_to_hf_gives_sentencepiece_ids(ours, small_corpus):
  hf = hf_tokenizer.spm_to_hf(ours.model_proto)
  hf.encode_special_tokens = True  # our encode treats '<s>', '<|user|>' as text
  rng = random.Random(0)
  docs = _corpus(small_corpus)
  alphabet = list("abcxyz  \n\t019.,:()_=*'\"éü中😀\u2581") + [
      "   ",
      "\n    ",
      "the ",
      "<0x41>",
      "<s>",
      "<|user|>",
      "\r\n",
  ]
  texts = list(TEXTS) + docs[:40]
  texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(400)]
  for _ in range(200):  # slices at arbitrary offsets, so pieces are cut mid-word
    d = rng.choice(docs)
    i = rng.randrange(len(d))
    texts.append(d[i : i + rng.randint(1, 300)])
  for t in texts:
    assert hf.encode(t, add_special_tokens=False).ids == ours.encode(t), repr(t)
  for t in TEXTS:
    assert hf.decode(ours.encode(t)) == ours.decode(ours.encode(t)), repr(t)


def test_special_tokens_in_text_match_only_by_default(ours, exported):
  """HF tokenizers match special tokens in text (chat templates need that); split_special_tokens gives ours."""
  transformers = pytest.importorskip("transformers", reason="needs the 'hf' extra")
  tok = transformers.AutoTokenizer.from_pretrained(exported)
  text = "<|user|>hi<|end|>\n<unk> <pad></s>"
  assert tok(text, add_special_tokens=False)["input_ids"][:3] == [ours.special_id("user")] + ours.encode("hi")
  assert tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] == ours.encode(text)


def test_autotokenizer_loads_the_export(ours, exported):
  transformers = pytest.importorskip("transformers", reason="needs the 'hf' extra")
  tok = transformers.AutoTokenizer.from_pretrained(exported)
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (ours.bos_id, ours.eos_id, ours.pad_id)
  assert tok.convert_tokens_to_ids(list(tokenizer_lib.SPECIAL_TOKENS)) == [
      ours.special_id(n) for n in tokenizer_lib.SPECIAL_TOKENS
  ]
  assert len(tok) == ours.vocab_size
  for t in TEXTS:
    assert tok(t, add_special_tokens=False)["input_ids"] == ours.encode(t), repr(t)
    assert tok(t)["input_ids"] == ours.encode(t, bos=True)
    assert tok.decode(ours.encode(t)) == ours.decode(ours.encode(t))


def test_hftokenizer_on_our_export_has_our_interface(ours, exported):
  tok = hf_tokenizer.HFTokenizer.load(exported)
  # Both implement the Tokenizer protocol (every member present), which is all the rest of the code relies on.
  assert isinstance(tok, tokenizer_lib.Tokenizer) and isinstance(ours, tokenizer_lib.Tokenizer)
  assert not isinstance(object(), tokenizer_lib.Tokenizer)
  assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (
      ours.vocab_size,
      ours.bos_id,
      ours.eos_id,
      ours.pad_id,
  )
  assert tok.special_tokens == ours.special_tokens
  assert tok.special_id("assistant") == ours.special_id("assistant")
  np.testing.assert_array_equal(tok.token_bytes(), ours.token_bytes())
  for t in TEXTS:
    assert tok.encode(t, bos=True, eos=True) == ours.encode(t, bos=True, eos=True)
    assert tok.encode_batch([t, t], bos=True) == [ours.encode(t, bos=True)] * 2
  ids = ours.encode("x", bos=True) + [ours.special_id("user")] + ours.encode("hi\n", eos=True)
  assert tok.decode(ids) == ours.decode(ids) == "x<|user|>hi\n"
  assert tok.decode(ids, skip_special=True) == ours.decode(ids, skip_special=True) == "xhi\n"


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory, small_corpus) -> str:
  """A GPT-2-style folder: byte-level BPE tokenizer.json and a tokenizer_config.json naming '<|endoftext|>'."""
  bl = tokenizers.ByteLevelBPETokenizer()
  bl.train_from_iterator(
      _corpus(small_corpus)[:100], vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False
  )
  d = tmp_path_factory.mktemp("gpt2_tok")
  bl.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(
      json.dumps({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>", "special": True}})
  )
  return str(d)


def test_hftokenizer_on_a_byte_level_vocabulary(byte_level):
  tok = hf_tokenizer.HFTokenizer.load(byte_level)
  eot = tok.eos_id
  assert tok.id_to_piece(eot) == "<|endoftext|>"
  assert tok.bos_id == tok.pad_id == eot  # no pad token: pad falls back to eos
  assert not tok.special_tokens  # like ours, special_tokens leaves out bos/eos/pad/unk
  with pytest.raises(KeyError, match="base-model prompting"):
    tok.special_id("user")
  for t in TEXTS + ("text with <|endoftext|> inside",):
    ids = tok.encode(t)
    assert eot not in ids  # text never becomes a control token
    assert tok.decode(ids) == t
    assert tok.decode([eot] + ids + [eot]) == t
    # bytes per token, checked against the UTF-8 length of the text they spell
    assert int(tok.token_bytes()[ids].sum()) == len(t.encode("utf-8")), repr(t)
  assert tok.token_bytes()[eot] == 0
  assert "[" in tok.visualize("a b", color=False)
