"""Tests for stage assembly, and the demo crawl through every stage."""

import collections
import pickle

import pytest

from nanolm_jax.crawl import demo, stages, warc
from nanolm_jax.crawl.types import Document


def test_order_and_keys():
  built = stages.build_stages(stages.default_stages_config())
  assert [n for n, _ in built["pre_dedup"]] == [
      "url_filter",
      "extract",
      "langid",
      "gopher_repetition",
      "gopher_quality",
      "c4",
      "fineweb_quality",
  ]
  assert [n for n, _ in built["post_dedup"]] == ["pii"]


def test_every_sub_config_has_enabled_and_disabled_stages_are_left_out():
  cfg = stages.default_stages_config()
  for name in stages.PRE_DEDUP + stages.POST_DEDUP:
    assert cfg[name].enabled is True
  cfg.langid.enabled = False
  cfg.pii.enabled = False
  built = stages.build_stages(cfg)
  assert "langid" not in [n for n, _ in built["pre_dedup"]] and built["post_dedup"] == []


def test_stages_pickle():
  built = stages.build_stages(stages.default_stages_config())
  clone = pickle.loads(pickle.dumps(built))
  assert [n for n, _ in clone["pre_dedup"]] == [n for n, _ in built["pre_dedup"]]


def test_run_document_reports_the_stopping_stage():
  def boom(doc):
    raise RuntimeError("x")

  doc = Document(id="1", url="https://www.site.com/xxx/a", text="<p>hi</p>")
  built = stages.build_stages(stages.default_stages_config())
  result, name = stages.run_document(doc, built["pre_dedup"])
  assert name == "url_filter" and result.reason == "url:banned_word"
  result, name = stages.run_document(doc, [("boom", boom)])
  assert result.error and result.reason == "boom:exception" and name == "boom"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  paths = demo.write_demo_crawl(str(tmp_path_factory.mktemp("demo")))
  built = stages.build_stages(stages.default_stages_config())
  chain = built["pre_dedup"] + built["post_dedup"]
  read, outcomes = [], []
  for path in paths:
    for res in warc.read_warc(path):
      read.append(res)
      if res.kept:
        outcomes.append((res.doc, *stages.run_document(res.doc, chain)))
  return paths, read, outcomes


def test_demo_accounting(demo_run):
  paths, read, outcomes = demo_run
  # 4 files x 80 responses; the last file's final response is cut off and reported as one error.
  assert len(read) == 4 * 80
  assert sum(r.error for r in read) == 1 and read[-1].reason == "read:truncated"
  kept = [o for o in outcomes if o[1].kept]
  dropped = [o for o in outcomes if not o[1].kept and not o[1].error]
  errored = [o for o in outcomes if o[1].error]
  assert len(kept) + len(dropped) + len(errored) == sum(r.kept for r in read)
  assert not errored


def test_every_stage_acts_on_the_demo(demo_run):
  _, read, outcomes = demo_run
  by_stage = collections.Counter(name for _, res, name in outcomes if not res.kept)
  for name in stages.PRE_DEDUP:
    assert by_stage[name] > 0, name
  read_reasons = {r.reason for r in read if not r.kept}
  assert {"read:not_html", "read:empty", "read:binary", "read:truncated"} <= read_reasons
  reasons = {res.reason for _, res, _ in outcomes if not res.kept}
  for r in (
      "lang:de",
      "lang:fr",
      "lang:es",
      "c4:lorem_ipsum",
      "c4:curly_bracket",
      "c4:too_few_sentences",
      "gopher_qual:short_doc",
      "gopher_qual:too_many_hashes",
      "fineweb:short_line_ratio",
      "fineweb:char_dup_ratio",
      "url:blocked_domain",
      "url:banned_word",
      "url:soft_banned_words",
      "url:banned_subword",
      "extract:empty",
  ):
    assert r in reasons, r
  assert any(reason.startswith("gopher_rep:") for reason in reasons)
  # C4 also removes lines without dropping pages (headings, the 'enable JavaScript' line).
  assert any(res.kept and res.doc.metadata["c4_lines_removed"] > 0 for _, res, _ in outcomes)


def test_english_articles_survive_clean_and_pii_is_replaced(demo_run):
  _, _, outcomes = demo_run
  articles = [(doc, res) for doc, res, _ in outcomes if "/article/" in doc.url and "/adult/" not in doc.url]
  survived = [res.doc for _, res in articles if res.kept]
  assert len(survived) >= 0.9 * len(articles) and len(survived) > 150
  for doc in survived:
    assert doc.metadata["language"] == "en" and doc.metadata["language_score"] >= 0.65
    assert "cookie" not in doc.text.lower() and "Popular posts" not in doc.text and "<p>" not in doc.text
  pii_docs = [d for d in survived if d.metadata["pii"]["email"]]
  assert pii_docs and all("<EMAIL>" in d.text and "@" not in d.text for d in pii_docs)
  assert sum(d.metadata["pii"]["ip"] for d in survived) >= 4 and sum(d.metadata["pii"]["phone"] for d in survived) >= 4
  assert any("192.168.1.20" in d.text for d in pii_docs)  # private address left alone


def test_duplicates_reach_dedup(demo_run):
  _, _, outcomes = demo_run
  texts = collections.Counter(res.doc.text for _, res, _ in outcomes if res.kept)
  assert any(n >= 2 for n in texts.values())  # exact duplicates are left for the dedup stage
  assert sum(1 for doc, res, _ in outcomes if res.kept and "/syndicated/" in doc.url) >= 6
