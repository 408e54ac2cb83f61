"""What happened to every record: per-stage counts, drop reasons, histograms, and the report files.

``Stats`` is plain counters, so per-file stats merge by addition in any order (local workers, Beam combiners) and the
totals do not depend on how the work was split. ``write_report`` checks the accounting identity
``input_records == kept + dropped + errored`` before writing ``report.json`` and the funnel chart.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import urllib.parse
from typing import Any, Iterable, Mapping

from nanolm_jax.crawl.types import Document, StageResult

READ_STAGE = "read"
URL_FILTER_STAGE = "url_filter"
REPORT_JSON = "report.json"
FUNNEL_PNG = "funnel.png"
_TOP = 20


class AccountingError(AssertionError):
  """The counts do not add up: some record was lost or counted twice."""


@dataclasses.dataclass
class StageStats:
  docs_in: int = 0
  docs_out: int = 0
  chars_in: int = 0
  chars_out: int = 0
  dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  errored: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def merge(self, other: "StageStats") -> None:
    self.docs_in += other.docs_in
    self.docs_out += other.docs_out
    self.chars_in += other.chars_in
    self.chars_out += other.chars_out
    self.dropped.update(other.dropped)
    self.errored.update(other.errored)

  def to_dict(self) -> dict[str, Any]:
    return {
        "docs_in": self.docs_in,
        "docs_out": self.docs_out,
        "chars_in": self.chars_in,
        "chars_out": self.chars_out,
        "dropped": dict(sorted(self.dropped.items())),
        "errored": dict(sorted(self.errored.items())),
    }


def domain_of(url: str) -> str:
  try:
    host = urllib.parse.urlsplit(url).hostname or ""
  except ValueError:
    return ""
  return host.removeprefix("www.")


class Stats:
  """Mergeable counters for one file, one worker or the whole run."""

  def __init__(self):
    self.stages: dict[str, StageStats] = {}
    self.languages = collections.Counter()
    self.blocked_domains = collections.Counter()
    self.pii = collections.Counter()
    self.cluster_sizes: dict[str, collections.Counter] = {}

  def stage(self, name: str) -> StageStats:
    if name not in self.stages:
      self.stages[name] = StageStats()
    return self.stages[name]

  def record(self, name: str, result: StageResult, doc_in: Document | None) -> None:
    """Counts one stage verdict; ``doc_in`` is None for the reader, whose input is a raw record."""
    st = self.stage(name)
    st.docs_in += 1
    st.chars_in += len(doc_in.text) if doc_in is not None else 0
    if result.kept:
      st.docs_out += 1
      st.chars_out += len(result.doc.text)
    elif result.error:
      st.errored[result.reason or f"{name}:error"] += 1
    else:
      st.dropped[result.reason or f"{name}:dropped"] += 1
      if name == URL_FILTER_STAGE and doc_in is not None:
        self.blocked_domains[domain_of(doc_in.url)] += 1

  def record_kept(self, doc: Document) -> None:
    """Histograms over the documents that reach the output."""
    self.languages[str(doc.metadata.get("language", "unknown"))] += 1
    pii = doc.metadata.get("pii")
    if isinstance(pii, Mapping):
      self.pii.update({k: int(v) for k, v in pii.items() if isinstance(v, (int, float))})

  def record_clusters(self, name: str, sizes: Mapping[int, int]) -> None:
    hist = self.cluster_sizes.setdefault(name, collections.Counter())
    hist.update({int(k): int(v) for k, v in sizes.items()})

  def merge(self, other: "Stats") -> "Stats":
    for name, st in other.stages.items():
      self.stage(name).merge(st)
    self.languages.update(other.languages)
    self.blocked_domains.update(other.blocked_domains)
    self.pii.update(other.pii)
    for name, hist in other.cluster_sizes.items():
      self.record_clusters(name, hist)
    return self

  def to_dict(self) -> dict[str, Any]:
    return {
        "stages": {name: st.to_dict() for name, st in self.stages.items()},
        "languages": dict(self.languages.most_common()),
        "blocked_domains": dict(self.blocked_domains.most_common()),
        "pii": dict(sorted(self.pii.items())),
        "cluster_sizes": {k: {str(s): n for s, n in sorted(v.items())} for k, v in self.cluster_sizes.items()},
    }

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Stats":
    out = cls()
    for name, st in d.get("stages", {}).items():
      out.stages[name] = StageStats(
          st["docs_in"],
          st["docs_out"],
          st["chars_in"],
          st["chars_out"],
          collections.Counter(st["dropped"]),
          collections.Counter(st["errored"]),
      )
    out.languages.update(d.get("languages", {}))
    out.blocked_domains.update(d.get("blocked_domains", {}))
    out.pii.update(d.get("pii", {}))
    for name, hist in d.get("cluster_sizes", {}).items():
      out.record_clusters(name, {int(k): v for k, v in hist.items()})
    return out


def merge_all(stats: Iterable[Stats]) -> Stats:
  out = Stats()
  for s in stats:
    out.merge(s)
  return out


def build_report(
    stats: Stats, stage_order: Iterable[str], kept: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
  """The report dict; raises AccountingError unless every record is kept, dropped or errored exactly once.

  stage_order: the stages in pipeline order (only those that ran are listed); kept: documents actually written.
  """
  names = [n for n in stage_order if n in stats.stages]
  unknown = set(stats.stages) - set(names)
  if unknown:
    raise AccountingError(f"stages missing from stage_order: {sorted(unknown)}")
  stages = []
  for name in names:
    st = stats.stages[name]
    if st.docs_in != st.docs_out + sum(st.dropped.values()) + sum(st.errored.values()):
      raise AccountingError(f"stage {name}: docs_in={st.docs_in} != out + dropped + errored ({st.to_dict()})")
    stages.append({"name": name, **st.to_dict()})
  for prev, cur in zip(stages, stages[1:]):
    if prev["docs_out"] != cur["docs_in"]:
      raise AccountingError(
          f"stage {cur['name']} got {cur['docs_in']} docs but {prev['name']} passed " f"{prev['docs_out']}"
      )
  input_records = stages[0]["docs_in"] if stages else 0
  dropped = sum(sum(s["dropped"].values()) for s in stages)
  errored = sum(sum(s["errored"].values()) for s in stages)
  if stages and stages[-1]["docs_out"] != kept:
    raise AccountingError(f"{kept} documents written but the last stage passed {stages[-1]['docs_out']}")
  if input_records != kept + dropped + errored:
    raise AccountingError(f"input_records={input_records} != kept={kept} + dropped={dropped} + errored={errored}")
  d = stats.to_dict()
  report = {
      "input_records": input_records,
      "kept": kept,
      "dropped": dropped,
      "errored": errored,
      "chars_kept": stages[-1]["chars_out"] if stages else 0,
      "stages": stages,
      "languages": d["languages"],
      "top_blocked_domains": dict(list(d["blocked_domains"].items())[:_TOP]),
      "cluster_sizes": d["cluster_sizes"],
      "pii": d["pii"],
  }
  report.update(extra or {})
  return report


def check_accounting(report: Mapping[str, Any]) -> None:
  """Re-checks a report (e.g. one read back from disk)."""
  if report["input_records"] != report["kept"] + report["dropped"] + report["errored"]:
    raise AccountingError(f"in != kept + dropped + errored in {dict(report)}")


def format_summary(report: Mapping[str, Any]) -> str:
  """A terminal table: one line per stage, then the totals and histograms."""
  lines = [f"{'stage':<18}{'in':>9}{'out':>9}{'dropped':>9}{'errored':>9}{'kept%':>8}{'chars out':>13}  top reasons"]
  for s in report["stages"]:
    drops = sum(s["dropped"].values())
    errs = sum(s["errored"].values())
    pct = 100.0 * s["docs_out"] / s["docs_in"] if s["docs_in"] else 100.0
    reasons = collections.Counter(s["dropped"]) + collections.Counter(s["errored"])
    top = ", ".join(f"{r}={n}" for r, n in reasons.most_common(3))
    lines.append(
        f"{s['name']:<18}{s['docs_in']:>9}{s['docs_out']:>9}{drops:>9}{errs:>9}{pct:>7.1f}%"
        f"{s['chars_out']:>13}  {top}"
    )
  lines.append(
      f"records in: {report['input_records']}  kept: {report['kept']}  dropped: {report['dropped']}  "
      f"errored: {report['errored']}  chars kept: {report['chars_kept']}"
  )

  def hist(title: str, d: Mapping[str, Any], n: int = 8) -> None:
    if d:
      lines.append(f"{title}: " + ", ".join(f"{k}={v}" for k, v in list(d.items())[:n]))

  hist("languages", report["languages"])
  hist("top blocked domains", report["top_blocked_domains"])
  for name, sizes in report["cluster_sizes"].items():
    hist(f"{name} cluster sizes (size=clusters)", sizes)
  hist("pii replaced", report["pii"])
  return "\n".join(lines)


def plot_funnel(report: Mapping[str, Any], path: str) -> str:
  """Horizontal bars: documents left after each stage."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # headless: workers and CI have no display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  labels = ["input records"] + [s["name"] for s in report["stages"]]
  values = [report["input_records"]] + [s["docs_out"] for s in report["stages"]]
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
  bars = ax.barh(range(len(values)), values, color="tab:blue")
  ax.set_yticks(range(len(values)), labels)
  ax.invert_yaxis()
  top = max(values) if values and max(values) else 1
  for bar, v in zip(bars, values):
    ax.text(
        bar.get_width() + 0.01 * top,
        bar.get_y() + bar.get_height() / 2,
        f"{v} ({100.0 * v / top:.0f}%)",
        va="center",
        fontsize=8,
    )
  ax.set_xlim(0, top * 1.2)
  ax.set_xlabel("documents")
  ax.set_title("Crawl funnel: documents left after each stage")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_report(report: Mapping[str, Any], out_dir: str) -> tuple[str, str]:
  """Writes report.json and funnel.png into ``out_dir``; returns their paths."""
  check_accounting(report)
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, REPORT_JSON)
  tmp = json_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
  os.replace(tmp, json_path)
  return json_path, plot_funnel(report, os.path.join(out_dir, FUNNEL_PNG))
