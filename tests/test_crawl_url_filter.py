"""Tests for the URL filter: each rule drops what it should and keeps what it should not touch."""

import pickle
import socket

import pytest

from nanolm_jax.crawl import url_filter
from nanolm_jax.crawl.types import Document


def _stage(**overrides):
  cfg = url_filter.default_config()
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return url_filter.make_stage(cfg)


def _run(stage, url):
  return stage(Document(id="1", url=url, text="<p>x</p>", metadata={"url": url}))


@pytest.fixture(scope="module")
def default_stage():
  return _stage()


@pytest.mark.parametrize(
    "url,reason",
    [
        ("https://www.casino-jackpot-online.com/news/1", "url:blocked_domain"),
        ("https://casino-jackpot-online.com/", "url:blocked_domain"),
        ("https://shop.casino-jackpot-online.com/a", "url:blocked_domain"),
        ("http://www.dailyhobbyist.com/blocked/example-page", "url:blocked_url"),
        ("https://dailyhobbyist.com/blocked/example-page/", "url:blocked_url"),
        ("https://www.site.com/xxx/clip-1", "url:banned_word"),
        ("https://www.site.com/Porn/list", "url:banned_word"),
        ("https://www.site.com/adult/dating/tips", "url:soft_banned_words"),
        ("https://www.site.com/videos/hotpornclips0", "url:banned_subword"),
    ],
)
def test_drops(default_stage, url, reason):
  result = _run(default_stage, url)
  assert not result.kept and result.reason == reason and not result.error


@pytest.mark.parametrize(
    "url",
    [
        "https://www.casino-guide.com/news/1",  # a different registered domain
        "https://www.dailyhobbyist.com/blocked/other-page",  # not the listed URL
        "https://www.site.com/xxxl-shirts/blue",  # 'xxxl' is a word, not 'xxx'
        "https://www.site.com/adult/education/classes",  # one soft word is below the threshold of 2
        "https://www.site.com/article/popcorn-recipes",  # no banned subword once punctuation goes
        "https://www.site.com/guides/vegetable-gardening",
    ],
)
def test_keeps(default_stage, url):
  assert _run(default_stage, url).kept


def test_subdomain_rule_blocks_only_that_host():
  stage = _stage(extra_domains=["blog.example.org"])
  assert _run(stage, "https://blog.example.org/post").reason == "url:blocked_subdomain"
  assert _run(stage, "https://www.example.org/post").kept


def test_soft_threshold_is_configurable():
  assert _run(_stage(soft_word_threshold=1), "https://www.site.com/adult/education").reason == ("url:soft_banned_words")


def test_ut1_directory_and_files(tmp_path):
  cat = tmp_path / "ut1" / "adult"
  cat.mkdir(parents=True)
  (cat / "domains").write_text("# comment\nbad-domain.net\n10.20.30.40\n")
  (cat / "urls").write_text("www.fine-site.com/bad/page.html\n")
  (tmp_path / "d.txt").write_text("other-bad.org\n")
  stage = _stage(
      blocklist_dirs=[str(tmp_path / "ut1")], domain_files=[str(tmp_path / "d.txt")], use_default_lists=False
  )
  assert _run(stage, "http://www.bad-domain.net/x").reason == "url:blocked_domain"
  assert _run(stage, "http://10.20.30.40/x").reason == "url:blocked_subdomain"
  assert _run(stage, "https://fine-site.com/bad/page.html").reason == "url:blocked_url"
  assert _run(stage, "https://other-bad.org/").reason == "url:blocked_domain"
  assert _run(stage, "https://fine-site.com/good/page.html").kept
  # Defaults were switched off, so default-list words pass.
  assert _run(stage, "https://www.site.com/xxx/clip").kept


def test_tldextract_works_offline(monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("network access attempted")

  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(socket.socket, "connect", no_network)
  stage = _stage()
  assert stage.tld.extract_str("https://a.b.example.co.uk/x").top_domain_under_public_suffix == "example.co.uk"
  assert _run(stage, "https://www.casino-jackpot-online.com/").reason == "url:blocked_domain"


def test_picklable_and_equivalent(default_stage):
  clone = pickle.loads(pickle.dumps(default_stage))
  assert len(pickle.dumps(default_stage)) < 10_000  # lists are reloaded, not shipped
  for url in ("https://www.site.com/xxx/a", "https://www.site.com/ok"):
    assert _run(clone, url) == _run(default_stage, url)


def test_document_without_url_is_kept(default_stage):
  assert default_stage(Document(id="1", url="", text="x")).kept
