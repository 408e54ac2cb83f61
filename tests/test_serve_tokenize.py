"""POST /v1/tokenize and GET /tokenizer: the run's own tokenizer, token by token, bounded like every request."""

import pytest
from fastapi import testclient

from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import app as app_lib
from tests import test_serve

TEXT = "The function returns a list of values.\nÄpfel kosten 3 €"


class _NoModel:
  """Tokenizing needs no model: a backend that is never called keeps the test free of training and compiles."""

  max_len = 64

  def run(self, rows):
    raise AssertionError(f"tokenize ran the model on {len(rows)} rows")


@pytest.fixture(scope="module")
def client_and_run(small_tokenizer):
  tok = tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)
  run = runs.Run(workdir="tiny_chat", cfg=None, model=None, params=None, tokenizer=tok)
  with testclient.TestClient(app_lib.create_app(run, test_serve.LIMITS, backend=_NoModel())) as client:
    yield client, run


def test_tokenize_matches_the_tokenizer(client_and_run):
  client, run = client_and_run
  r = client.post("/v1/tokenize", json={"text": TEXT})
  assert r.status_code == 200, r.text
  body = r.json()
  ids = run.tokenizer.encode(TEXT)
  assert [t["id"] for t in body["tokens"]] == ids
  assert body["count"] == len(ids) and body["bytes"] == len(TEXT.encode("utf-8"))
  assert body["bytes_per_token"] == pytest.approx(len(TEXT.encode("utf-8")) / len(ids))
  assert body["vocab_size"] == run.tokenizer.vocab_size and body["model"] == "tiny_chat"
  # each token's text is its piece, "▁" shown as a space; a character outside the vocabulary shows as its bytes
  pieces = [t["text"] for t in body["tokens"]]
  assert pieces == [run.tokenizer.id_to_piece(i).replace("\u2581", " ") for i in ids]
  assert pieces[-3:] == ["<0xE2>", "<0x82>", "<0xAC>"]  # "€" = E2 82 AC in UTF-8 (not in the tiny vocabulary)
  # where no character fell back to bytes, the pieces spell the text (sentencepiece's dummy prefix aside)
  ascii_text = TEXT.split("Ä")[0]
  ascii_tokens = client.post("/v1/tokenize", json={"text": ascii_text}).json()["tokens"]
  assert "".join(t["text"] for t in ascii_tokens).lstrip(" ") == ascii_text
  assert client.post("/v1/tokenize", json={"text": ""}).json()["count"] == 0


@pytest.mark.parametrize("body", [{}, {"text": 3}, {"text": ["a"]}])
def test_tokenize_rejects_a_missing_or_non_string_text(client_and_run, body):
  r = client_and_run[0].post("/v1/tokenize", json=body)
  assert r.status_code == 400 and r.json()["error"]["param"] == "text"


def test_tokenize_body_is_bounded(client_and_run):
  r = client_and_run[0].post("/v1/tokenize", json={"text": "a" * (test_serve.LIMITS.max_body_bytes + 1)})
  assert r.status_code == 413


def test_tokenizer_page_is_self_contained(client_and_run):
  r = client_and_run[0].get("/tokenizer")
  assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
  assert "v1/tokenize" in r.text and "<script>" in r.text
  assert 'src="http' not in r.text and 'href="http' not in r.text  # no CDN assets
