"""HTML -> plain text extraction (trafilatura by default, resiliparse as the fast alternative).

Defaults follow datatrove's ``Trafilatura(favour_precision=True, timeout=1)``: precision mode, no comments, no
tables, no images, one second per document. One deviation: trafilatura's ``deduplicate`` is off, because its
process-wide LRU cache makes a page's output depend on the pages seen before it (so results would differ between
the local runner and Beam); duplicate removal is the dedup stage's job.

Time limit: in the main thread the call is interrupted by ``signal.setitimer(ITIMER_REAL)`` + SIGALRM (the handler
raises, any previous handler / timer is restored). Python only runs the handler between bytecodes, so a long single
C call (lxml parsing one huge page) overruns until it returns; the reader's max_bytes bounds that. Outside the main
thread (signals cannot be used there, e.g. in some Beam workers) the call runs to completion and is then errored
as a timeout if it took longer than the limit, so the verdict is the same, only the time is not saved.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable

import ml_collections

from nanolm_jax.crawl.types import Document, StageResult, drop, errored, keep


class ExtractTimeout(Exception):
  """Raised inside the extractor when the time limit fires."""


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.extractor = "trafilatura"  # or "resiliparse"
  cfg.timeout_s = 1.0
  cfg.favor_precision = True
  cfg.include_comments = False
  cfg.include_tables = False
  cfg.include_images = False
  cfg.deduplicate = False
  # resiliparse main-content heuristics (its closest equivalent of trafilatura's boilerplate removal).
  cfg.main_content = True
  return cfg


def _trafilatura(html: str, url: str, cfg: dict[str, Any]) -> str | None:
  import trafilatura  # pylint: disable=g-import-not-at-top

  return trafilatura.extract(
      html,
      url=url or None,
      favor_precision=cfg["favor_precision"],
      include_comments=cfg["include_comments"],
      include_tables=cfg["include_tables"],
      include_images=cfg["include_images"],
      deduplicate=cfg["deduplicate"],
  )


def _resiliparse(html: str, url: str, cfg: dict[str, Any]) -> str | None:
  del url
  from resiliparse.extract.html2text import extract_plain_text  # pylint: disable=g-import-not-at-top

  return extract_plain_text(
      html,
      preserve_formatting=True,
      main_content=cfg["main_content"],
      list_bullets=True,
      alt_texts=cfg["include_images"],
      links=False,
      form_fields=False,
      noscript=False,
      comments=cfg["include_comments"],
  )


_EXTRACTORS = {"trafilatura": _trafilatura, "resiliparse": _resiliparse}


def _raise_timeout(signum, frame):
  del signum, frame
  raise ExtractTimeout()


def run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
  """Runs ``fn()``; raises ExtractTimeout if it takes longer than ``timeout_s`` (see module doc for how)."""
  if not timeout_s or timeout_s <= 0:
    return fn()
  if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
    start = time.monotonic()
    out = fn()
    if time.monotonic() - start > timeout_s:
      raise ExtractTimeout()
    return out
  start = time.monotonic()
  old_handler = signal.signal(signal.SIGALRM, _raise_timeout)
  old_timer = signal.setitimer(signal.ITIMER_REAL, timeout_s)
  try:
    return fn()
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old_handler)
    if old_timer[0] > 0:
      # Someone else's timer was running: give it back what is left of it.
      signal.setitimer(signal.ITIMER_REAL, max(old_timer[0] - (time.monotonic() - start), 1e-3), old_timer[1])


class Extractor:
  """The extract stage: replaces ``doc.text`` (HTML) with the extracted plain text."""

  def __init__(self, cfg: dict[str, Any]):
    if cfg["extractor"] not in _EXTRACTORS:
      raise ValueError(f"unknown extractor {cfg['extractor']!r}; expected one of {sorted(_EXTRACTORS)}")
    self._cfg = dict(cfg)
    self._fn = _EXTRACTORS[cfg["extractor"]]

  def __call__(self, doc: Document) -> StageResult:
    try:
      text = run_with_timeout(lambda: self._fn(doc.text, doc.url, self._cfg), self._cfg["timeout_s"])
    except ExtractTimeout:
      return errored("extract:timeout")
    except Exception:  # pylint: disable=broad-except  # a parser crash on one page must not stop the run.
      return errored("extract:failed")
    text = (text or "").strip()
    if not text:
      return drop("extract:empty")
    metadata = dict(doc.metadata, extractor=self._cfg["extractor"])
    return keep(Document(id=doc.id, url=doc.url, text=text, metadata=metadata))


def make_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return Extractor(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
