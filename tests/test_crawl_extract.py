"""Tests for text extraction: boilerplate goes, empty pages drop, the time limit holds."""

import pickle
import threading
import time

import pytest

from nanolm_jax.crawl import demo, extract
from nanolm_jax.crawl.types import Document

_ARTICLE = (
    "Gardening in a small yard takes patience, but the rewards arrive every summer. "
    "Most people discover that soil health matters more than expensive tools. "
)
_PAGE = f"""<html><head><title>Guide</title><script>var tracking = 1;</script></head><body>
<div id="cookie-banner"><p>This website uses cookies. Accept our cookie policy to continue.</p></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop</a></li></ul></nav></header>
<main><article><h1>A guide to small gardens</h1>
<p>{_ARTICLE * 3}</p><p>{_ARTICLE * 2} The first season is always the hardest one.</p></article>
<aside><h3>Popular posts</h3><ul><li><a href="/1">Ten tools every beginner should own</a></li></ul></aside></main>
<footer><p>Copyright 2024 Example Media. All rights reserved.</p></footer></body></html>"""


def _stage(**overrides):
  cfg = extract.default_config()
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return extract.make_stage(cfg)


def _doc(html):
  return Document(id="1", url="https://e.com/a", text=html, metadata={"url": "https://e.com/a"})


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extracts_article_without_boilerplate(extractor):
  result = _stage(extractor=extractor)(_doc(_PAGE))
  assert result.kept
  text = result.doc.text
  assert "soil health matters" in text and "The first season is always the hardest one." in text
  for chrome in ("Popular posts", "Ten tools", "All rights reserved", "tracking", "<p>"):
    assert chrome not in text, chrome
  assert result.doc.metadata["extractor"] == extractor and result.doc.metadata["url"] == "https://e.com/a"


def test_trafilatura_defaults_follow_datatrove():
  cfg = extract.default_config()
  assert (cfg.extractor, cfg.favor_precision, cfg.include_comments, cfg.include_tables, cfg.timeout_s) == (
      "trafilatura",
      True,
      False,
      False,
      1.0,
  )


def test_tables_are_left_out_by_default_and_kept_on_request():
  table = "<table><tr><td>Tomato yield per plant was about four kilograms in the sunny beds.</td></tr></table>"
  html = _PAGE.replace("</article>", table + "</article>")
  assert "four kilograms" not in _stage()(_doc(html)).doc.text
  assert "four kilograms" in _stage(include_tables=True)(_doc(html)).doc.text


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_empty_page_is_dropped(extractor):
  html = "<html><head><script>render()</script></head><body><div id='root'></div></body></html>"
  # A generous limit: this checks the empty verdict, and a loaded 2-core CI worker once took > 1 s on the first
  # trafilatura call (reason 'extract:timeout'); the timeout has its own tests.
  result = _stage(extractor=extractor, timeout_s=30.0)(_doc(html))
  assert not result.kept and result.reason == "extract:empty" and not result.error


def test_demo_article_is_extracted():
  import random

  rng = random.Random(0)
  page = demo._html(
      "T", "site.com", demo._article_blocks(rng, demo._TOPICS[0], demo.article_paragraphs(rng, demo._TOPICS[0]))
  )
  text = _stage()(_doc(page)).doc.text
  assert "cookie" not in text.lower() and "Popular posts" not in text and len(text.split()) > 200


def _slow(html, url, cfg):
  deadline = time.monotonic() + 5
  while time.monotonic() < deadline:  # pure Python, so SIGALRM can interrupt it
    pass
  return "never"


def test_timeout_errors_in_main_thread(monkeypatch):
  monkeypatch.setitem(extract._EXTRACTORS, "trafilatura", _slow)
  start = time.monotonic()
  result = _stage(timeout_s=0.2)(_doc(_PAGE))
  assert time.monotonic() - start < 2
  assert not result.kept and result.error and result.reason == "extract:timeout"


def test_timeout_off_the_main_thread_is_judged_after_the_fact(monkeypatch):
  def slowish(html, url, cfg):
    time.sleep(0.3)
    return "text"

  monkeypatch.setitem(extract._EXTRACTORS, "trafilatura", slowish)
  out = {}
  t = threading.Thread(target=lambda: out.update(r=_stage(timeout_s=0.1)(_doc(_PAGE))))
  t.start()
  t.join()
  assert out["r"].reason == "extract:timeout" and out["r"].error


def test_fast_extraction_within_limit_restores_outer_timer():
  import signal

  signal.setitimer(signal.ITIMER_REAL, 50)
  try:
    assert _stage(timeout_s=5)(_doc(_PAGE)).kept
    remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    assert 40 < remaining <= 50
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def test_extractor_crash_is_an_error(monkeypatch):
  def boom(html, url, cfg):
    raise RuntimeError("parser died")

  monkeypatch.setitem(extract._EXTRACTORS, "trafilatura", boom)
  result = _stage()(_doc(_PAGE))
  assert result.error and result.reason == "extract:failed"


def test_unknown_extractor_is_rejected():
  with pytest.raises(ValueError):
    _stage(extractor="readability")


def test_picklable():
  stage = pickle.loads(pickle.dumps(_stage()))
  assert stage(_doc(_PAGE)).kept
