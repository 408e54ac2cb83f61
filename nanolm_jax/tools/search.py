"""Search tool: BM25 (the `bm25s` library) over a local document collection, returning the top-k snippets.

Documents come from a folder / glob of `.jsonl[.gz]` files of `{"text": ...}` objects (the crawl pipeline's output)
or `.txt[.gz]` files, from a data source spec (`stdlib`, `files:GLOB`; nanolm_jax.data.sources), or from a list of
strings. Documents are split into passages of about `passage_chars` on paragraph boundaries; a passage is the unit of
retrieval, so a snippet is the relevant part of a long document. Output is bounded (k snippets of at most
`snippet_chars` each, and Tool.max_output_chars overall).

`fuzzy=True` also indexes each word's character trigrams, so a misspelled query still finds the passage (a name
typed "Worra Forra" matches "Worra Foduth" on its shared trigrams), as typo-tolerant search engines do. The SFT
search index of made-up names uses it: a small model copies a rare name into its query imperfectly.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from nanolm_jax import fs
from nanolm_jax.tools import Tool

_PARAGRAPH = re.compile(r"\n\s*\n")
_WORD = re.compile(r"\w+")


def _bm25s() -> Any:
  """bm25s, imported on first use: importing it runs a JAX computation (when jax is installed), which would start
  the XLA backend before a multi-host run could call jax.distributed.initialize()."""
  import bm25s  # pylint: disable=g-import-not-at-top

  return bm25s


def fuzzy_terms(text: str) -> list[str]:
  """Lower-cased words without English stopwords, plus '#'-prefixed character trigrams of '^word$'."""
  out = []
  for w in _WORD.findall(text.lower()):
    if w in _bm25s().stopwords.STOPWORDS_EN:
      continue
    out.append(w)
    padded = f"^{w}$"
    out.extend("#" + padded[i : i + 3] for i in range(len(padded) - 2))
  return out


def split_passages(text: str, passage_chars: int = 600) -> list[str]:
  """Paragraph-aligned passages of at most about passage_chars (a longer paragraph is cut at whitespace)."""
  out, cur = [], ""
  for para in _PARAGRAPH.split(text):
    para = " ".join(para.split())
    while len(para) > passage_chars:
      cut = para.rfind(" ", 0, passage_chars)
      cut = cut if cut > 0 else passage_chars
      if cur:
        out.append(cur)
        cur = ""
      out.append(para[:cut])
      para = para[cut:].lstrip()
    if not para:
      continue
    if cur and len(cur) + 1 + len(para) > passage_chars:
      out.append(cur)
      cur = ""
    cur = f"{cur} {para}" if cur else para
  if cur:
    out.append(cur)
  return out


def read_documents(path_or_glob: str) -> Iterable[str]:
  """Texts of .jsonl[.gz] ({"text": ...} per line; other lines skipped) and .txt[.gz] files; a folder means all."""
  pattern = fs.join(path_or_glob, "**", "*") if fs.isdir(path_or_glob) else path_or_glob
  files = fs.glob(pattern)
  if not files:
    raise FileNotFoundError(f"no files match {path_or_glob}")
  for f in files:
    base = f[:-3] if f.endswith(".gz") else f
    if base.endswith(".jsonl"):
      with fs.open_file(f, "r", errors="replace") as fh:
        for line in fh:
          try:
            obj = json.loads(line)
          except json.JSONDecodeError:
            continue
          if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            yield obj["text"]
    elif base.endswith(".txt"):
      with fs.open_file(f, "r", errors="replace") as fh:
        yield fh.read()


class Search(Tool):
  """`search: how do generators work` -> the top-k passages, numbered."""

  name = "search"
  description = "searches a local document collection; the argument is a query in plain words"

  def __init__(
      self,
      texts: Iterable[str],
      *,
      k: int = 3,
      snippet_chars: int = 300,
      passage_chars: int = 600,
      max_passages: int = 200_000,
      fuzzy: bool = False,
      **tool_kwargs,
  ):
    super().__init__(**tool_kwargs)
    self.fuzzy = bool(fuzzy)
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    self.k, self.snippet_chars = int(k), int(snippet_chars)
    passages: list[str] = []
    for text in texts:
      passages.extend(split_passages(text, passage_chars))
      if len(passages) >= max_passages:
        passages = passages[:max_passages]
        break
    if not passages:
      raise ValueError("search index is empty: no documents with text")
    self.passages = passages
    self._bm25 = _bm25s().BM25()
    if self.fuzzy:
      self._bm25.index([fuzzy_terms(p) or ["\x00"] for p in passages], show_progress=False)
    else:
      corpus = _bm25s().tokenize(passages, stopwords="en", show_progress=False)
      if not corpus.vocab:
        raise ValueError("search index has no searchable words (every passage is only stopwords or punctuation)")
      self._bm25.index(corpus, show_progress=False)

  @classmethod
  def from_files(cls, path_or_glob: str, **kwargs) -> "Search":
    return cls(read_documents(path_or_glob), **kwargs)

  def search(self, query: str, k: int | None = None) -> list[tuple[float, str]]:
    """(score, passage) of the best matches, best first; passages with no query term are left out."""
    k = min(k or self.k, len(self.passages))
    if self.fuzzy:
      known = self._bm25.vocab_dict
      q = [[t for t in fuzzy_terms(query) if t in known]]
    else:
      q = _bm25s().tokenize([query], stopwords="en", return_ids=False, show_progress=False)
    if not q or not q[0]:
      return []
    docs, scores = self._bm25.retrieve(q, k=k, show_progress=False, n_threads=0, backend_selection="numpy")
    return [(float(s), self.passages[int(d)]) for d, s in zip(docs[0], scores[0]) if s > 0]

  def run(self, arguments: str) -> str:
    hits = self.search(arguments)
    if not hits:
      return "no results"
    lines = []
    for i, (_, passage) in enumerate(hits, 1):
      snippet = passage if len(passage) <= self.snippet_chars else passage[: self.snippet_chars - 3] + "..."
      lines.append(f"[{i}] {snippet}")
    return "\n".join(lines)
