"""The record every crawl stage passes along, and the verdict a stage returns.

A stage is a pure function ``Document -> StageResult``: it either keeps the document (possibly with new text or
metadata) or drops it with a reason. Runners (local, Beam) only compose stages; they never look inside one.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Document:
  """One web page on its way through the pipeline.

  id: WARC-Record-ID (or a derived stable id); unique within a crawl.
  url: the target URI of the response record.
  text: HTML before extraction, plain text after it.
  metadata: url/date/warc file/language/scores/... - JSON-serialisable values only.
  """

  id: str
  url: str
  text: str
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageResult:
  """A stage's verdict: keep ``doc`` (possibly modified) or drop it, ``reason`` naming the rule that fired."""

  doc: Document | None
  reason: str | None = None
  # True when the record could not be processed at all (bad bytes, a crash, a timeout) rather than judged and dropped:
  # the report keeps errored and dropped apart so that in = kept + dropped + errored always holds.
  error: bool = False

  @property
  def kept(self) -> bool:
    return self.doc is not None


def keep(doc: Document) -> StageResult:
  return StageResult(doc=doc)


def drop(reason: str) -> StageResult:
  return StageResult(doc=None, reason=reason)


def errored(reason: str) -> StageResult:
  return StageResult(doc=None, reason=reason, error=True)
