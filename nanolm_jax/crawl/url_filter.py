"""URL filter: drops pages by domain, exact URL and URL words, following datatrove's URLFilter.

Rules in order (the first that fires names the drop):
  url:blocked_domain     registered domain (eTLD+1, by tldextract) is blocklisted
  url:blocked_subdomain  full host is blocklisted
  url:blocked_url        exact URL (scheme and trailing '/' ignored, as UT1 lists them) is blocklisted
  url:banned_word        a URL word (split on non-alphanumerics) is hard-banned
  url:soft_banned_words  at least ``soft_word_threshold`` distinct soft-banned words
  url:banned_subword     a banned substring occurs in the lowercased alphanumeric-only URL

Lists: small defaults ship in ``nanolm_jax/crawl/lists``; a full UT1 blocklist is added through ``blocklist_dirs``
(UT1 layout: ``<dir>/<category>/domains`` and ``<dir>/<category>/urls``) or single files.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit

import ml_collections

from nanolm_jax.crawl.types import Document, StageResult, drop, keep

LISTS_DIR = os.path.join(os.path.dirname(__file__), "lists")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def default_config() -> ml_collections.ConfigDict:
  """datatrove URLFilter defaults (soft_word_threshold=2, integrated lists on)."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.soft_word_threshold = 2
  cfg.use_default_lists = True
  # UT1-style directories and categories: reads <dir>/<category>/domains and <dir>/<category>/urls when present.
  cfg.blocklist_dirs = []
  cfg.blocklist_categories = ["adult"]
  # Extra single files: one domain (or one URL) per line.
  cfg.domain_files = []
  cfg.url_files = []
  cfg.extra_domains = []
  cfg.extra_urls = []
  cfg.extra_banned_words = []
  cfg.extra_banned_subwords = []
  cfg.extra_soft_banned_words = []
  return cfg


def read_list(path: str, normalize: bool = False) -> set[str]:
  """Reads a one-entry-per-line list; '#' comments and blank lines are skipped."""
  out = set()
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      out.add(_NON_ALNUM.sub("", line).lower() if normalize else line.lower())
  return out


def normalize_url(url: str) -> str:
  """Scheme-less, lowercased-host form used by UT1 'urls' lists: ``host/path?query`` without a trailing '/'."""
  url = url.strip()
  if "://" in url:
    url = url.split("://", 1)[1]
  host, sep, rest = url.partition("/")
  return (host.lower() + sep + rest).rstrip("/")


def _strip_www(s: str) -> str:
  return s[4:] if s.startswith("www.") else s


class URLFilter:
  """The url_filter stage; picklable (only the config travels, lists are reloaded on unpickling)."""

  def __init__(self, cfg: dict[str, Any]):
    self._cfg = dict(cfg)
    self._build()

  def __getstate__(self) -> dict[str, Any]:
    return {"_cfg": self._cfg}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self._cfg = state["_cfg"]
    self._build()

  def _build(self) -> None:
    import tldextract  # pylint: disable=g-import-not-at-top

    cfg = self._cfg
    domains, urls = set(), set()
    banned, subwords, soft = set(), set(), set()
    if cfg["use_default_lists"]:
      domains |= read_list(os.path.join(LISTS_DIR, "blocked_domains.txt"))
      urls |= read_list(os.path.join(LISTS_DIR, "blocked_urls.txt"))
      banned |= read_list(os.path.join(LISTS_DIR, "banned_words.txt"), normalize=True)
      subwords |= read_list(os.path.join(LISTS_DIR, "banned_subwords.txt"), normalize=True)
      soft |= read_list(os.path.join(LISTS_DIR, "soft_banned_words.txt"), normalize=True)
    for d in cfg["blocklist_dirs"]:
      for cat in cfg["blocklist_categories"]:
        for name, target in (("domains", domains), ("urls", urls)):
          path = os.path.join(d, cat, name)
          if os.path.exists(path):
            target |= read_list(path)
    for path in cfg["domain_files"]:
      domains |= read_list(path)
    for path in cfg["url_files"]:
      urls |= read_list(path)
    domains |= {d.strip().lower() for d in cfg["extra_domains"]}
    urls |= {u.strip() for u in cfg["extra_urls"]}
    banned |= {_NON_ALNUM.sub("", w).lower() for w in cfg["extra_banned_words"]}
    subwords |= {_NON_ALNUM.sub("", w).lower() for w in cfg["extra_banned_subwords"]}
    soft |= {_NON_ALNUM.sub("", w).lower() for w in cfg["extra_soft_banned_words"]}
    self.domains = {_strip_www(d) for d in domains}
    self.urls = {_strip_www(normalize_url(u)) for u in urls}
    self.banned_words = banned - {""}
    self.soft_banned_words = soft - {""}
    subwords -= {""}
    # One alternation regex: re scans the URL once, like datatrove's Aho-Corasick automaton; longest first so that
    # overlapping entries cannot hide each other.
    self.subword_re = (
        re.compile("|".join(re.escape(w) for w in sorted(subwords, key=len, reverse=True))) if subwords else None
    )
    # The bundled public-suffix snapshot only: no suffix_list_urls means no fetch, cache_dir=None means no disk cache.
    self.tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

  def check(self, url: str) -> str | None:
    """Returns the drop reason for ``url`` or None when it passes."""
    if not url:
      return None
    host = (urlsplit(url).hostname or "").lower() if "://" in url else url.split("/", 1)[0].lower()
    ext = self.tld.extract_str(url) if hasattr(self.tld, "extract_str") else self.tld(url)
    registered = (
        ext.top_domain_under_public_suffix
        if hasattr(ext, "top_domain_under_public_suffix")
        else (ext.registered_domain)
    )
    if registered and registered in self.domains:
      return "url:blocked_domain"
    if host and _strip_www(host) in self.domains:
      return "url:blocked_subdomain"
    if _strip_www(normalize_url(url)) in self.urls:
      return "url:blocked_url"
    words = {w.lower() for w in _NON_ALNUM.split(url) if w}
    if words & self.banned_words:
      return "url:banned_word"
    if len(words & self.soft_banned_words) >= self._cfg["soft_word_threshold"]:
      return "url:soft_banned_words"
    if self.subword_re is not None and self.subword_re.search(_NON_ALNUM.sub("", url).lower()):
      return "url:banned_subword"
    return None

  def __call__(self, doc: Document) -> StageResult:
    reason = self.check(doc.url or doc.metadata.get("url", ""))
    return drop(reason) if reason else keep(doc)


def make_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return URLFilter(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
