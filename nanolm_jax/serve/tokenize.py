"""POST /v1/tokenize: the run's tokenizer on a text, token by token (what the /tokenizer page colours).

    {"text": "Hello world"} -> {"model", "tokens": [{"id", "text", "bytes"}...], "count", "bytes", "bytes_per_token"}

A token's "text" is what it stands for: a sentencepiece piece with "▁" shown as a space, a byte-fallback piece by
its name (<0xC3>: one byte of a multi-byte character is not text), other tokenizers' single-token decode. The body
is bounded by the server's Limits.max_body_bytes like every other request, so the token count is too.
"""

from __future__ import annotations

from typing import Any

from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.serve import protocol


def token_text(tok: tokenizer_lib.Tokenizer, i: int) -> str:
  if isinstance(tok, tokenizer_lib.SentencePieceTokenizer):
    return tok.id_to_piece(i).replace("\u2581", " ")
  return tok.decode([i])


def tokenize(tok: tokenizer_lib.Tokenizer, body: dict[str, Any], model_id: str) -> dict[str, Any]:
  """The response body; ApiError 400 naming "text" when it is missing or not a string."""
  text = body.get("text")
  if not isinstance(text, str):
    raise protocol.ApiError(400, f"'text' must be a string, got {type(text).__name__}", param="text")
  ids = tok.encode(text)
  n_bytes = len(text.encode("utf-8"))
  return {
      "object": "tokenization",
      "model": model_id,
      "tokens": [{"id": int(i), "text": token_text(tok, i)} for i in ids],
      "count": len(ids),
      "bytes": n_bytes,
      "bytes_per_token": n_bytes / len(ids) if ids else None,
      "vocab_size": int(tok.vocab_size),
  }
