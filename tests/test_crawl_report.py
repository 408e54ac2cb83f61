"""Tests for nanolm_jax.crawl.report: counts, the accounting identity, merging and the written files."""

import json
import random

import pytest

from nanolm_jax.crawl import report
from nanolm_jax.crawl.types import Document, drop, errored, keep


def _run(seed: int, n: int = 200) -> tuple[report.Stats, int]:
  """Simulates read -> url_filter -> quality on random verdicts; returns (stats, kept)."""
  rng = random.Random(seed)
  stats, kept = report.Stats(), 0
  for i in range(n):
    doc = Document(
        id=str(i),
        url=f"http://www.d{i % 5}.com/x",
        text="x" * rng.randint(1, 50),
        metadata={"language": rng.choice(["en", "fr"]), "pii": {"email": 1}},
    )
    r = rng.random()
    res = errored("read:bad_gzip") if r < 0.05 else keep(doc)
    stats.record("read", res, None)
    if not res.kept:
      continue
    res = drop("url_filter:blocklist") if rng.random() < 0.2 else keep(doc)
    stats.record("url_filter", res, doc)
    if not res.kept:
      continue
    res = drop("quality:short") if rng.random() < 0.3 else keep(doc)
    stats.record("quality", res, doc)
    if res.kept:
      stats.record_kept(doc)
      kept += 1
  return stats, kept


def test_accounting_identity_and_totals():
  stats, kept = _run(0)
  rep = report.build_report(stats, ["read", "url_filter", "quality"], kept)
  assert rep["input_records"] == 200
  assert rep["input_records"] == rep["kept"] + rep["dropped"] + rep["errored"]
  assert rep["errored"] == rep["stages"][0]["errored"]["read:bad_gzip"]
  assert (
      rep["dropped"]
      == rep["stages"][1]["dropped"]["url_filter:blocklist"] + rep["stages"][2]["dropped"]["quality:short"]
  )
  assert sum(rep["languages"].values()) == kept and rep["pii"] == {"email": kept}
  assert sum(rep["top_blocked_domains"].values()) == rep["stages"][1]["dropped"]["url_filter:blocklist"]
  assert all(not d.startswith("www.") for d in rep["top_blocked_domains"])


def test_broken_accounting_is_caught():
  stats, kept = _run(1)
  with pytest.raises(report.AccountingError):
    report.build_report(stats, ["read", "url_filter", "quality"], kept + 1)
  stats.stage("quality").docs_in += 1  # a doc counted in but never out
  with pytest.raises(report.AccountingError):
    report.build_report(stats, ["read", "url_filter", "quality"], kept)
  with pytest.raises(report.AccountingError):
    report.check_accounting({"input_records": 3, "kept": 1, "dropped": 1, "errored": 0})


def test_merge_is_order_independent_and_round_trips():
  parts = [_run(s, 50) for s in range(4)]
  a = report.merge_all(p[0] for p in parts)
  b = report.merge_all(report.Stats.from_dict(json.loads(json.dumps(p[0].to_dict()))) for p in reversed(parts))
  a.record_clusters("minhash_dedup", {2: 3})
  b.record_clusters("minhash_dedup", {2: 1})
  b.record_clusters("minhash_dedup", {2: 2})
  assert a.to_dict() == b.to_dict()


def test_write_report_files_and_summary(tmp_path):
  stats, kept = _run(2)
  rep = report.build_report(stats, ["read", "url_filter", "quality"], kept)
  json_path, png_path = report.write_report(rep, str(tmp_path))
  assert json.load(open(json_path)) == rep
  assert open(png_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  text = report.format_summary(rep)
  for name in ("read", "url_filter", "quality", "kept:"):
    assert name in text
