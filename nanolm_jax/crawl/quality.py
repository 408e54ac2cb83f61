"""Heuristic quality filters of the FineWeb recipe: Gopher repetition, Gopher quality, C4 lines, FineWeb custom.

Each filter is its own stage (``make_*_stage(cfg)``) with its own ``default_*_config()`` carrying datatrove's
published defaults; they follow datatrove's filters rule by rule, including its duplicate n-gram character
fraction (words joined without spaces, greedy skip past a repeated n-gram) and its case-sensitive stop-word count.
Every drop names the rule: "gopher_rep:<rule>", "gopher_qual:<rule>", "c4:<rule>", "fineweb:<rule>".

Tokenisation: datatrove uses NLTK/spaCy English word tokenizers, which need model data we cannot fetch. ``words``
below is a regex approximation: word runs (with inner apostrophes/hyphens) and each punctuation mark as its own
token; ``sentences`` splits after . ! ? followed by whitespace. Counts differ from spaCy's only at the margins.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Callable

import ml_collections

from nanolm_jax.crawl.types import Document, StageResult, drop, keep

_WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*|\.\.\.|[^\w\s]")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"'”)\]]*\s+")
# datatrove.utils.text.PUNCTUATION: a token made only of these is a "symbol", not a word.
PUNCTUATION_SET = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
)


def words(text: str) -> list[str]:
  """Regex English word tokenizer (see module doc)."""
  return _WORD_RE.findall(text)


def sentences(text: str) -> list[str]:
  return [s for s in _SENT_SPLIT.split(text.strip()) if s.strip()]


def _replace_text(doc: Document, text: str, **metadata) -> Document:
  return Document(id=doc.id, url=doc.url, text=text, metadata=dict(doc.metadata, **metadata))


def _cfg_dict(cfg) -> dict[str, Any]:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


# ---------------------------------------------------------------- Gopher repetition (Rae et al. 2021, table A1).


def default_gopher_repetition_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.dup_line_frac = 0.3
  cfg.dup_para_frac = 0.3
  cfg.dup_line_char_frac = 0.2
  cfg.dup_para_char_frac = 0.2
  cfg.top_n_grams = [[2, 0.2], [3, 0.18], [4, 0.16]]
  cfg.dup_n_grams = [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
  return cfg


def find_duplicates(items: list[str]) -> tuple[int, int]:
  """(number of repeated items, characters in them), counting every occurrence after the first."""
  seen, dup_items, dup_chars = set(), 0, 0
  for item in items:
    if item in seen:
      dup_items += 1
      dup_chars += len(item)
    else:
      seen.add(item)
  return dup_items, dup_chars


def top_ngram_chars(tokens: list[str], n: int) -> int:
  """Characters covered by the most frequent n-gram: len(" ".join(ngram)) * count."""
  counts = collections.Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
  if not counts:
    return 0
  gram, count = counts.most_common(1)[0]
  return len(gram) * count


def duplicate_ngram_chars(tokens: list[str], n: int) -> int:
  """Characters in repeated n-grams; after a repeat the scan jumps n words so overlaps are not double counted."""
  seen, chars, i = set(), 0, 0
  while i < len(tokens) - n + 1:
    gram = "".join(tokens[i : i + n])
    if gram in seen:
      chars += len(gram)
      i += n
    else:
      seen.add(gram)
      i += 1
  return chars


def gopher_repetition_reason(text: str, cfg: dict[str, Any]) -> str | None:
  if not text.strip():
    return "empty"
  paragraphs = re.split(r"\n{2,}", text.strip())
  n_dup, dup_chars = find_duplicates(paragraphs)
  if cfg["dup_para_frac"] and n_dup / len(paragraphs) > cfg["dup_para_frac"]:
    return "dup_para_frac"
  if cfg["dup_para_char_frac"] and dup_chars / len(text) > cfg["dup_para_char_frac"]:
    return "dup_para_char_frac"
  lines = re.split(r"\n+", text)
  n_dup, dup_chars = find_duplicates(lines)
  if cfg["dup_line_frac"] and n_dup / len(lines) > cfg["dup_line_frac"]:
    return "dup_line_frac"
  if cfg["dup_line_char_frac"] and dup_chars / len(text) > cfg["dup_line_char_frac"]:
    return "dup_line_char_frac"
  tokens = words(text)
  for n, frac in cfg["top_n_grams"]:
    if top_ngram_chars(tokens, n) / len(text) > frac:
      return f"top_{n}_gram"
  for n, frac in cfg["dup_n_grams"]:
    if duplicate_ngram_chars(tokens, n) / len(text) > frac:
      return f"duplicated_{n}_n_grams"
  return None


class _ReasonStage:
  """A stage that drops with ``<prefix>:<reason>`` when ``fn(text, cfg)`` names a rule (picklable)."""

  def __init__(self, prefix: str, fn: Callable[[str, dict[str, Any]], str | None], cfg: dict[str, Any]):
    self.prefix, self.fn, self.cfg = prefix, fn, cfg

  def __call__(self, doc: Document) -> StageResult:
    reason = self.fn(doc.text, self.cfg)
    return drop(f"{self.prefix}:{reason}") if reason else keep(doc)


def make_gopher_repetition_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return _ReasonStage("gopher_rep", gopher_repetition_reason, _cfg_dict(cfg))


# ---------------------------------------------------------------- Gopher quality.


def default_gopher_quality_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.min_doc_words = 50
  cfg.max_doc_words = 100_000
  cfg.min_avg_word_length = 3
  cfg.max_avg_word_length = 10
  cfg.max_symbol_word_ratio = 0.1
  cfg.max_bullet_lines_ratio = 0.9
  cfg.max_ellipsis_lines_ratio = 0.3
  cfg.max_non_alpha_words_ratio = 0.8
  cfg.min_stop_words = 2
  cfg.stop_words = ["the", "be", "to", "of", "and", "that", "have", "with"]
  return cfg


def gopher_quality_reason(text: str, cfg: dict[str, Any]) -> str | None:
  tokens = words(text)
  non_symbol = [w for w in tokens if any(ch not in PUNCTUATION_SET for ch in w)]
  n_words = len(non_symbol)
  if not tokens or (cfg["min_doc_words"] and n_words < cfg["min_doc_words"]):
    return "short_doc"
  if cfg["max_doc_words"] and n_words > cfg["max_doc_words"]:
    return "long_doc"
  if not non_symbol:
    return "short_doc"
  avg_len = sum(len(w) for w in non_symbol) / n_words
  if cfg["min_avg_word_length"] and avg_len < cfg["min_avg_word_length"]:
    return "below_avg_threshold"
  if cfg["max_avg_word_length"] and avg_len > cfg["max_avg_word_length"]:
    return "above_avg_threshold"
  # As datatrove: the symbol ratios divide by all tokens, the word-count rules use non-symbol words.
  n_tokens = len(tokens)
  if cfg["max_symbol_word_ratio"] and text.count("#") / n_tokens > cfg["max_symbol_word_ratio"]:
    return "too_many_hashes"
  if cfg["max_symbol_word_ratio"] and (text.count("...") + text.count("…")) / n_tokens > cfg["max_symbol_word_ratio"]:
    return "too_many_ellipsis"
  lines = text.splitlines() or [""]
  bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines)
  if cfg["max_bullet_lines_ratio"] and bullets / len(lines) > cfg["max_bullet_lines_ratio"]:
    return "too_many_bullets"
  ellipsis_lines = sum(s.rstrip().endswith(("...", "…")) for s in lines)
  if cfg["max_ellipsis_lines_ratio"] and ellipsis_lines / len(lines) > cfg["max_ellipsis_lines_ratio"]:
    return "too_many_end_ellipsis"
  alpha = sum(any(c.isalpha() for c in w) for w in tokens)
  if cfg["max_non_alpha_words_ratio"] and alpha / n_tokens < cfg["max_non_alpha_words_ratio"]:
    return "below_alpha_threshold"
  stop_words = set(cfg["stop_words"])
  if cfg["min_stop_words"] and sum(w in stop_words for w in tokens) < cfg["min_stop_words"]:
    return "enough_stop_words"
  return None


def make_gopher_quality_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return _ReasonStage("gopher_qual", gopher_quality_reason, _cfg_dict(cfg))


# ---------------------------------------------------------------- C4 (Raffel et al. 2020; datatrove C4QualityFilter).

_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


def default_c4_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.remove_citations = True
  cfg.filter_no_terminal_punct = True
  cfg.min_num_sentences = 5  # -1 disables
  cfg.min_words_per_line = 3  # -1 disables
  cfg.max_word_length = 1000  # -1 disables
  cfg.filter_lorem_ipsum = True
  cfg.filter_javascript = True
  cfg.filter_curly_bracket = True
  cfg.filter_policy = True
  # C4's "bad words" page filter: off by default as in FineWeb; a list file (one word per line) turns it on.
  cfg.filter_badwords = False
  cfg.badwords_file = ""
  return cfg


class C4Filter:
  """The c4 stage: drops whole pages (lorem ipsum, curly bracket, too few sentences, bad words) and removes lines."""

  def __init__(self, cfg: dict[str, Any]):
    self.cfg = cfg
    self.badwords_re = None
    if cfg["filter_badwords"] and cfg["badwords_file"]:
      with open(cfg["badwords_file"], encoding="utf-8") as f:
        bad = sorted({l.strip().lower() for l in f if l.strip() and not l.startswith("#")}, key=len, reverse=True)
      if bad:
        self.badwords_re = re.compile(r"(?:\W|^)(?:{})(?:\W|$)".format("|".join(re.escape(w) for w in bad)))

  def __call__(self, doc: Document) -> StageResult:
    cfg = self.cfg
    if self.badwords_re is not None and self.badwords_re.search(doc.text.lower()):
      return drop("c4:badwords")
    kept, n_sentences, lines = [], 0, doc.text.splitlines()
    for line in lines:
      line = line.strip()
      line_words = line.split()
      if cfg["max_word_length"] != -1 and any(len(w) > cfg["max_word_length"] for w in line_words):
        continue
      if cfg["remove_citations"]:
        line = _CITATION_RE.sub("", line)
      if cfg["filter_no_terminal_punct"] and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
        continue
      if len(line_words) < cfg["min_words_per_line"]:
        continue
      lower = line.lower()
      if cfg["filter_lorem_ipsum"] and "lorem ipsum" in lower:
        return drop("c4:lorem_ipsum")
      if cfg["filter_javascript"] and "javascript" in lower:
        continue
      if cfg["filter_curly_bracket"] and "{" in line:
        return drop("c4:curly_bracket")
      if cfg["filter_policy"] and any(p in lower for p in _POLICY_SUBSTRINGS):
        continue
      n_sentences += len(sentences(line))
      kept.append(line)
    if n_sentences < cfg["min_num_sentences"]:
      return drop("c4:too_few_sentences")
    return keep(_replace_text(doc, "\n".join(kept).strip(), c4_lines_removed=len(lines) - len(kept)))


def make_c4_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return C4Filter(_cfg_dict(cfg))


# ---------------------------------------------------------------- FineWeb custom filters (Penedo et al. 2024).


def default_fineweb_quality_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.line_punct_thr = 0.12
  cfg.line_punct_exclude_zero = False
  cfg.short_line_thr = 0.67
  cfg.short_line_length = 30
  cfg.char_duplicates_ratio = 0.01
  cfg.new_line_ratio = 0.3
  return cfg


_STOP_CHARS = (".", "'", '"', "!", "?")


def fineweb_quality_reason(text: str, cfg: dict[str, Any]) -> str | None:
  lines = text.split("\n")
  ratio = sum(1 for l in lines if l.endswith(_STOP_CHARS)) / len(lines)
  if ratio <= cfg["line_punct_thr"] and not (ratio == 0 and cfg["line_punct_exclude_zero"]):
    return "line_punct_ratio"
  ratio = sum(1 for l in lines if len(l) <= cfg["short_line_length"]) / len(lines)
  if ratio >= cfg["short_line_thr"]:
    return "short_line_ratio"
  n_chars = len(text.replace("\n", ""))
  dup_chars = find_duplicates([l for l in lines if l.strip()])[1]
  if n_chars and dup_chars / n_chars >= cfg["char_duplicates_ratio"]:
    return "char_dup_ratio"
  n_words = len(words(text))
  if not n_words or text.count("\n") / n_words > cfg["new_line_ratio"]:
    return "list_ratio"
  return None


def make_fineweb_quality_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return _ReasonStage("fineweb", fineweb_quality_reason, _cfg_dict(cfg))


# Names used by stages.py: one (default_config, make_stage) pair per filter.
STAGES = {
    "gopher_repetition": (default_gopher_repetition_config, make_gopher_repetition_stage),
    "gopher_quality": (default_gopher_quality_config, make_gopher_quality_stage),
    "c4": (default_c4_config, make_c4_stage),
    "fineweb_quality": (default_fineweb_quality_config, make_fineweb_quality_stage),
}
