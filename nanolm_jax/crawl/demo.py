"""A small, deterministic demo crawl that exercises every crawl stage.

``write_demo_crawl`` writes a few WARC.gz files (warcinfo + request + response records) of synthetic but
real-looking pages: English articles wrapped in navigation, cookie banners, sidebars and footers, plus the kinds of
pages each filter exists for - near and exact duplicates, PII, SEO spam, short pages, other languages, blocklisted
domains and URL words, non-HTML responses, binary junk and a truncated file. Same seed, same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import os
import random
import uuid

from nanolm_jax.crawl import demo_content

_BASE_DATE = datetime.datetime(2024, 3, 1, 8, 0, 0)

# The tests build text from these two tables through this module.
_TOPICS = demo_content.TOPICS
_OTHER_LANGS = demo_content.OTHER_LANGS


@dataclasses.dataclass
class _Page:
  url: str
  body: bytes
  content_type: str = "text/html; charset=utf-8"
  status: str = "200 OK"
  kind: str = "article"


def _esc(s: str) -> str:
  return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fill(template: str, rng: random.Random, topic: dict) -> str:
  person, pron = rng.choice(demo_content.PEOPLE)
  expert, pron2 = rng.choice(demo_content.EXPERTS)
  s = template.format(
      topic=topic["topic"],
      activity=topic["activity"],
      gear=topic["gear"],
      thing=topic["thing"],
      person=person,
      pron=pron,
      expert=expert,
      pron2=pron2,
      place=rng.choice(demo_content.PLACES),
      month=rng.choice(demo_content.MONTHS),
      day=rng.choice(demo_content.DAYS),
      pct=rng.choice([30, 40, 45, 55, 60]),
      num=rng.choice([50, 80, 120, 150, 200]),
  )
  return s[0].upper() + s[1:]


def article_paragraphs(rng: random.Random, topic: dict, n_paras: int = 5) -> list[str]:
  """Fluent-looking English paragraphs: each template at most once, 4-6 sentences a paragraph."""
  templates = rng.sample(demo_content.TEMPLATES, min(len(demo_content.TEMPLATES), n_paras * 5))
  paras, i = [], 0
  for _ in range(n_paras):
    k = rng.randint(4, 6)
    paras.append(" ".join(_fill(t, rng, topic) for t in templates[i : i + k]))
    i += k
  return [p for p in paras if p]


def _html(
    title: str,
    site: str,
    blocks: list[str],
    lang: str = "en",
    charset: str = "utf-8",
    extra_head: str = "",
    chrome: bool = True,
) -> str:
  """Wraps content blocks (already HTML) in a page with typical boilerplate around the article."""
  nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in demo_content.NAV)
  side = "".join(f'<li><a href="/p/{i}">{_esc(s)}</a></li>' for i, s in enumerate(demo_content.SIDEBAR))
  head = (
      f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="{charset}">'
      f"<title>{_esc(title)} | {site}</title>{extra_head}"
      "<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments);}</script>"
      "<style>body{font-family:sans-serif}.cookie{position:fixed;bottom:0}</style></head>\n<body>\n"
  )
  if not chrome:
    return head + "\n".join(blocks) + "\n</body></html>\n"
  return (
      head + '<div class="cookie" id="cookie-banner"><p>This website uses cookies to improve your experience. '
      "See our cookie policy.</p><button>Accept all</button></div>\n"
      f'<header><a class="logo" href="/">{site}</a><nav><ul>{nav}</ul></nav>'
      '<form class="search"><input type="text" placeholder="Search"></form></header>\n'
      f"<main><article>\n<h1>{_esc(title)}</h1>\n"
      + "\n".join(blocks)
      + '\n<div class="share">Share: <a href="#">Facebook</a> <a href="#">Twitter</a> <a href="#">Email</a></div>'
      f'\n</article>\n<aside class="sidebar"><h3>Popular posts</h3><ul>{side}</ul></aside></main>\n'
      f'<footer><ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of use</a></li>'
      f'<li><a href="/contact">Contact us</a></li></ul><p>&copy; 2024 {site}. All rights reserved.</p></footer>'
      "\n</body></html>\n"
  )


def _article_blocks(rng: random.Random, topic: dict, paras: list[str], extra: list[str] = ()) -> list[str]:
  author = rng.choice(demo_content.AUTHORS)
  blocks = [f'<p class="byline">By {author}, {rng.randint(1, 28)} {rng.choice(demo_content.MONTHS)} 2024</p>']
  heads = iter(topic["heads"])
  for i, p in enumerate(paras):
    if i in (1, 3):
      blocks.append(f"<h2>{_esc(next(heads, 'More thoughts'))}</h2>")
    blocks.append(f"<p>{_esc(p)}</p>")
  blocks.extend(extra)
  if rng.random() < 0.3:
    blocks.append("<p>Please enable JavaScript in your browser to see the comments on this article.</p>")
  return blocks


def _article(rng: random.Random, site: str, slug: str, extra_paras: list[str] = ()) -> tuple[str, str, list[str]]:
  topic = rng.choice(demo_content.TOPICS)
  paras = article_paragraphs(rng, topic, rng.randint(5, 7)) + list(extra_paras)
  return f"https://www.{site}/{slug}", topic["title"], _article_blocks(rng, topic, paras)


class _FileBuilder:
  """Collects one WARC file's pages, all drawn from the file's one rng.

  The order of the draws is part of the output (same seed, same bytes): the page builders below draw a URL's slug
  before its page's body, and run in the order of _SPECIAL_PAGES.
  """

  def __init__(self, rng: random.Random, file_idx: int):
    self.rng = rng
    self.file_idx = file_idx
    self.pages: list[_Page] = []
    self._uid = 0
    self.site = rng.choice(demo_content.SITES)  # the home of most special pages

  def slug(self, word: str) -> str:
    self._uid += 1
    return f"{word}/{self.file_idx}-{self._uid}-{self.rng.randint(100, 999)}"

  def add(self, page: _Page) -> _Page:
    self.pages.append(page)
    return page

  def add_html(self, url: str, title: str, site: str, blocks: list[str], kind: str, **html_options) -> None:
    self.add(_Page(url, _html(title, site, blocks, **html_options).encode(), kind=kind))

  def add_article(self, url: str | None = None, extra_paras: list[str] = (), kind: str = "article") -> _Page:
    """A good article on a random site; ``url`` replaces its own (whose slug is drawn all the same)."""
    site = self.rng.choice(demo_content.SITES)
    own_url, title, blocks = _article(self.rng, site, self.slug("article"), extra_paras)
    return self.add(_Page(url or own_url, _html(title, site, blocks).encode("utf-8"), kind=kind))


# ---- special pages: each adds the page(s) one filter exists for -------------------------------------------------


def _near_duplicates(b: _FileBuilder) -> None:
  """One article republished on three sites with small edits (date, one sentence, footer)."""
  topic = demo_content.TOPICS[b.file_idx % len(demo_content.TOPICS)]
  base = article_paragraphs(b.rng, topic, 6)
  for j in range(3):
    paras = list(base)
    if j:
      paras[-1] = paras[-1] + f" This piece was updated on {j + 3} {b.rng.choice(demo_content.MONTHS)} 2024."
      paras[2] = paras[2].replace(" and ", " & ", 1) if j == 2 else paras[2]
    site = demo_content.SITES[(b.file_idx + j * 3) % len(demo_content.SITES)]
    # The same byline rng for every copy: the copies differ only by the edits above.
    blocks = _article_blocks(random.Random(b.file_idx), topic, paras)
    b.add_html(f"https://{site}/syndicated/{b.file_idx}-{j}", topic["title"], site, blocks, kind="near_duplicate")


def _exact_duplicate(b: _FileBuilder) -> None:
  """Identical bytes under another URL (mirrors, tracking parameters)."""
  dup = b.add_article(kind="exact_duplicate")
  b.add(_Page(dup.url + "?utm_source=newsletter", dup.body, kind="exact_duplicate"))


def _pii_article(b: _FileBuilder) -> None:
  """PII inside an otherwise good article."""
  i = b.file_idx
  extra = [p.format(file_idx=i, site=b.site, phone=2000 + i, ip=30 + i) for p in demo_content.PII_PARAGRAPHS]
  b.add_article(extra_paras=extra, kind="pii")


def _seo_spam(b: _FileBuilder) -> None:
  """The same keyword lines over and over (Gopher repetition)."""
  kw = b.rng.choice(demo_content.SPAM_KEYWORDS)
  spam = [f"<p>Best {kw} online. Buy {kw} today at the lowest price. {kw.title()} with free shipping.</p>"] * 12
  url = f"https://{kw.replace(' ', '-')}-shop.biz/{b.slug('deals')}"
  b.add_html(url, kw.title(), "deals-shop.biz", spam, kind="spam")


def _hashtag_soup(b: _FileBuilder) -> None:
  """Gopher quality: too many hashes."""
  tagged = zip(demo_content.HASHTAG_CAPTIONS, demo_content.HASHTAG_SETS)
  posts = [f"<p>{caption} {' '.join('#' + t for t in tags)}</p>" for caption, tags in tagged]
  b.add_html(f"https://www.photoblog.net/{b.slug('tags')}", "My week", "photoblog.net", posts, kind="hashtags")


def _short_page(b: _FileBuilder) -> None:
  """Gopher quality: short doc."""
  blocks = [f"<p>{demo_content.MOVED_NOTICE}</p>"]
  b.add_html(f"https://www.{b.site}/{b.slug('notice')}", "Notice", b.site, blocks, kind="short")


def _duplicated_line(b: _FileBuilder) -> None:
  """An article whose closing line is printed twice (FineWeb: duplicated line characters)."""
  topic = b.rng.choice(demo_content.TOPICS)
  twice = demo_content.CLOSING_LINE
  paras = article_paragraphs(b.rng, topic, 5)
  url = f"https://www.{b.site}/{b.slug('article')}"
  blocks = _article_blocks(b.rng, topic, paras[:3] + [twice] + paras[3:] + [twice])
  b.add_html(url, topic["title"], b.site, blocks, kind="dup_line")


def _lorem_ipsum(b: _FileBuilder) -> None:
  """A placeholder paragraph left in (C4: lorem ipsum)."""
  paras = article_paragraphs(b.rng, b.rng.choice(demo_content.TOPICS), 3)
  paras[1] = demo_content.LOREM_IPSUM
  b.add_html(f"https://www.{b.site}/{b.slug('draft')}", "Draft", b.site, [f"<p>{p}</p>" for p in paras], kind="lorem")


def _curly_brackets(b: _FileBuilder) -> None:
  """A sentence with code in it (C4: curly bracket)."""
  paras = article_paragraphs(b.rng, b.rng.choice(demo_content.TOPICS), 3)
  paras.insert(1, demo_content.CONFIG_SENTENCE)
  blocks = [f"<p>{_esc(p)}</p>" for p in paras]
  b.add_html(f"https://www.{b.site}/{b.slug('howto')}", "Config tips", b.site, blocks, kind="curly")


def _catalogue(b: _FileBuilder) -> None:
  """Plenty of words but no sentences (C4: too few sentences once unpunctuated lines go)."""
  items = "<ul>" + "".join(f"<li>{i}</li>" for i in demo_content.CATALOGUE_ITEMS) + "</ul>"
  blocks = [items, f"<p>{demo_content.CATALOGUE_NOTE}</p>"]
  b.add_html(f"https://www.{b.site}/{b.slug('shop')}", "Shop the collection", b.site, blocks, kind="catalogue")


def _short_lines(b: _FileBuilder) -> None:
  """Short punchy lines (FineWeb quality: short line ratio)."""
  blocks = ["".join(f"<p>{s}</p>" for s in demo_content.RICE_STEPS)]
  b.add_html(f"https://www.{b.site}/{b.slug('recipe')}", "Perfect rice", b.site, blocks, kind="short_lines")


def _other_languages(b: _FileBuilder) -> None:
  """German, French and Spanish local news (langid keeps English only)."""
  for lang in ("de", "fr", "es"):
    sents = b.rng.sample(demo_content.OTHER_LANGS[lang], 8)
    blocks = [f"<p>{' '.join(part)}</p>" for part in (sents[:3], sents[3:6], sents[6:])]
    site = f"stadtzeitung-{lang}.eu"
    b.add_html(f"https://www.{site}/{b.slug('lokales')}", "Bibliothek", site, blocks, kind=f"lang_{lang}", lang=lang)


def _latin1_french(b: _FileBuilder) -> None:
  """A French page in Latin-1, declared only in a <meta> tag (the reader must not trust the HTTP default)."""
  if b.file_idx != 0:
    return
  fr = demo_content.OTHER_LANGS["fr"]
  blocks = [f"<p>{' '.join(fr[:5])}</p>", f"<p>{' '.join(fr[5:])}</p>"]
  html = _html("Bibliothèque", "journal-local.fr", blocks, lang="fr", charset="iso-8859-1")
  url = "https://www.journal-local.fr/actualites/bibliotheque"
  b.add(_Page(url, html.encode("latin-1"), content_type="text/html", kind="lang_fr_latin1"))


def _blocked_urls(b: _FileBuilder) -> None:
  """URL filter: a blocklisted domain, a banned word, two soft-banned words, a banned subword."""
  b.add_article(url=f"https://www.casino-jackpot-online.com/{b.slug('news')}", kind="blocked_domain")
  b.add_article(url=f"https://www.{b.site}/xxx/{b.slug('clip')}", kind="banned_word")
  b.add_article(url=f"https://www.{b.site}/adult/dating/{b.slug('article')}", kind="soft_banned")
  b.add_article(url=f"https://www.{b.site}/videos/hotpornclips{b.file_idx}", kind="banned_subword")


def _nothing_to_extract(b: _FileBuilder) -> None:
  """A page that is all chrome and scripts."""
  url = f"https://www.{b.site}/{b.slug('app')}"
  b.add_html(url, "App", b.site, [demo_content.APP_SHELL], kind="empty_extract", chrome=False)


def _not_html(b: _FileBuilder) -> None:
  """Non-HTML responses, an empty body and binary junk that claims to be HTML."""
  i, site = b.file_idx, b.site
  png = demo_content.PNG_SIGNATURE + hashlib.sha256(b"img%d" % i).digest() * 8
  b.add(_Page(f"https://www.{site}/img/{i}.png", png, content_type="image/png", kind="not_html"))
  pdf = demo_content.MINIMAL_PDF
  b.add(_Page(f"https://www.{site}/files/report-{i}.pdf", pdf, content_type="application/pdf", kind="not_html"))
  b.add(_Page(f"https://www.{site}/{b.slug('blank')}", b"", kind="empty"))
  junk_rng = random.Random(i)
  junk = bytes(junk_rng.getrandbits(8) for _ in range(1500))
  b.add(_Page(f"https://www.{site}/{b.slug('junk')}", junk, content_type="text/html", kind="binary"))


# A fixed menu per file, so that every file exercises every stage; the order is that of the rng draws.
_SPECIAL_PAGES = (
    _near_duplicates,
    _exact_duplicate,
    _pii_article,
    _seo_spam,
    _hashtag_soup,
    _short_page,
    _duplicated_line,
    _lorem_ipsum,
    _curly_brackets,
    _catalogue,
    _short_lines,
    _other_languages,
    _latin1_french,
    _blocked_urls,
    _nothing_to_extract,
    _not_html,
)


def _pages(rng: random.Random, file_idx: int, n: int) -> list[_Page]:
  """The pages of one WARC file: one or two of each special kind, then good articles up to ``n``, shuffled."""
  b = _FileBuilder(rng, file_idx)
  for add_special in _SPECIAL_PAGES:
    add_special(b)
  while len(b.pages) < n:
    b.add_article()
  rng.shuffle(b.pages)
  return b.pages


def _record_id(seed: int, *parts) -> str:
  return "<urn:uuid:%s>" % uuid.UUID(bytes=hashlib.md5(repr((seed,) + parts).encode()).digest())


def _write_file(path: str, pages: list[_Page], seed: int, file_idx: int, truncate: bool = False) -> None:
  from warcio.statusandheaders import StatusAndHeaders  # pylint: disable=g-import-not-at-top
  from warcio.warcwriter import WARCWriter  # pylint: disable=g-import-not-at-top

  buf = io.BytesIO()
  writer = WARCWriter(buf, gzip=True)
  name = os.path.basename(path)
  date = (_BASE_DATE + datetime.timedelta(days=file_idx)).strftime("%Y-%m-%dT%H:%M:%SZ")
  info = b"software: nanolm_jax demo crawl\r\nformat: WARC File Format 1.0\r\nisPartOf: nanolm-demo\r\n"
  writer.write_record(
      writer.create_warc_record(
          "",
          "warcinfo",
          payload=io.BytesIO(info),
          length=len(info),
          warc_headers_dict={
              "WARC-Record-ID": _record_id(seed, file_idx, "info"),
              "WARC-Date": date,
              "WARC-Filename": name,
              "Content-Type": "application/warc-fields",
          },
      )
  )
  for i, page in enumerate(pages):
    when = (_BASE_DATE + datetime.timedelta(days=file_idx, seconds=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    host = page.url.split("/")[2]
    req = f"GET /{page.url.split('/', 3)[-1]} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nanolm-demo/1.0\r\n\r\n"
    writer.write_record(
        writer.create_warc_record(
            page.url,
            "request",
            payload=io.BytesIO(req.encode()),
            length=len(req),
            warc_headers_dict={
                "WARC-Record-ID": _record_id(seed, file_idx, i, "req"),
                "WARC-Date": when,
                "Content-Type": "application/http; msgtype=request",
            },
        )
    )
    http_headers = StatusAndHeaders(
        page.status, [("Content-Type", page.content_type), ("Content-Length", str(len(page.body)))], protocol="HTTP/1.1"
    )
    last_response_start = buf.tell()
    writer.write_record(
        writer.create_warc_record(
            page.url,
            "response",
            payload=io.BytesIO(page.body),
            length=len(page.body),
            http_headers=http_headers,
            warc_headers_dict={"WARC-Record-ID": _record_id(seed, file_idx, i, "resp"), "WARC-Date": when},
        )
    )
  data = buf.getvalue()
  if truncate:
    # Cut the last response record in half, as an interrupted download would.
    data = data[: (last_response_start + len(data)) // 2]
  with open(path, "wb") as f:
    f.write(data)


def write_demo_crawl(out_dir: str, seed: int = 0, num_files: int = 4, pages_per_file: int = 80) -> list[str]:
  """Writes ``num_files`` demo WARC.gz files into ``out_dir`` and returns their paths.

  The last file is cut in the middle of its final response record, as an interrupted download would be: the
  reader must report that record as an error and keep everything before it.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for file_idx in range(num_files):
    rng = random.Random(seed * 1000 + file_idx)
    pages = _pages(rng, file_idx, pages_per_file)
    path = os.path.join(out_dir, f"demo-{seed:03d}-{file_idx:05d}.warc.gz")
    _write_file(path, pages, seed, file_idx, truncate=file_idx == num_files - 1)
    paths.append(path)
  return paths
