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

_BASE_DATE = datetime.datetime(2024, 3, 1, 8, 0, 0)

# Article prose is built from sentence templates whose slots come from a topic; each template is used at most once
# per article so that n-gram repetition stays at the level of real writing.
_TEMPLATES = [
    "Most people who start with {topic} discover that the first few weeks are the hardest, and that patience matters "
    "more than {gear}.",
    "When {person} first tried {activity}, {pron} expected it to take an afternoon; it took most of a season.",
    "The trick, according to {expert}, is to focus on {thing} before worrying about anything else.",
    "In {place}, where the weather changes quickly, {activity} has become a popular way to spend a weekend.",
    "There is no single right answer here, but a few habits make a real difference.",
    "If you only remember one thing from this guide, let it be this: {thing} deserves your attention every week.",
    "A common mistake is to buy {gear} too early, before you know what you actually need.",
    "Over the years, {person} has kept a notebook of what worked and what did not.",
    "The results were surprising, even to people who had been doing this for decades.",
    "According to a survey published last {month}, nearly {pct} percent of beginners give up within a year.",
    "That number sounds discouraging, yet it mostly reflects unrealistic expectations rather than a lack of talent.",
    "It helps to set aside a regular time, even if it is only twenty minutes on a quiet evening.",
    "Some readers have asked whether {gear} is worth the money, and the honest answer is that it depends.",
    "For a small household, a modest budget of around {num} dollars is usually enough to get going.",
    "{expert} recommends starting with {thing}, because it teaches the basics without much risk.",
    "Local clubs in {place} meet once a month, and newcomers are almost always welcome.",
    "Nobody needs to be an expert to enjoy {topic}, and that is a large part of its appeal.",
    "The best advice we heard was also the simplest: keep notes, ask questions, and do not rush.",
    "During the first year, {person} made every mistake in the book and still enjoyed the process.",
    "Later, {pron} realised that most of those problems came from trying to do too much at once.",
    "Why does this matter so much? Because small improvements add up over many months.",
    "Experienced hands often disagree about the details, but they agree on the importance of {thing}.",
    "You will find that {thing} becomes second nature after a while, much like riding a bicycle.",
    "On a typical {day}, the work takes less than an hour and leaves plenty of time for everything else.",
    "Weather, cost and time are the three constraints that shape almost every decision in {topic}.",
    "A neighbour in {place} once told {person} that the secret was simply to show up every week.",
    "In the end, the people who stick with {topic} are rarely the most talented ones.",
    "They are the ones who treat setbacks as information instead of as failures.",
    "If something goes wrong, write down what happened and try a slightly different approach next time.",
    "The internet is full of conflicting advice, so it pays to test claims for yourself.",
    "We asked {expert} what {pron2} would tell a complete beginner, and the reply came without hesitation.",
    '"Start small, learn the names of things, and enjoy being bad at it for a while," {pron2} said.',
    "That attitude, more than any particular piece of equipment, is what separates a hobby from a chore.",
    "Many libraries in {place} now lend out {gear}, which is a cheap way to find out what suits you.",
    "It is worth remembering that {activity} was once considered an unusual pastime.",
    "Today it attracts students, retired teachers, nurses and software engineers alike.",
    "Costs have fallen steadily over the past decade, and good second-hand equipment is easy to find.",
    "The main risk is not money but time, because it is easy to lose whole weekends to {topic}.",
    "Keep a simple checklist by the door so that nothing important is forgotten.",
    "After a few months, {person} noticed that {thing} had improved more than anything else.",
    "Progress is rarely linear, and plateaus are a normal part of learning any practical skill.",
    "Some of the most rewarding moments come from sharing what you have learned with others.",
    "There will be days when nothing seems to work, and that is perfectly fine.",
    "By the second year, most of the early frustrations fade and the real enjoyment begins.",
    "Our own experience in {place} suggests that spring is the best season to begin.",
    "Finally, remember that {topic} is supposed to be fun, not another item on a long list of obligations.",
]

_TOPICS = [
    dict(
        topic="vegetable gardening",
        activity="growing vegetables",
        gear="a raised bed kit",
        thing="soil health",
        title="What a Year of Vegetable Gardening Taught Me",
        heads=["Choosing a spot", "Soil comes first", "Watering without waste"],
    ),
    dict(
        topic="amateur astronomy",
        activity="stargazing",
        gear="an expensive telescope",
        thing="learning the night sky by eye",
        title="A Beginner's Guide to Amateur Astronomy",
        heads=["Dark skies", "Binoculars before telescopes", "Keeping an observing log"],
    ),
    dict(
        topic="home baking",
        activity="baking bread at home",
        gear="a stand mixer",
        thing="a reliable sourdough starter",
        title="Baking Bread at Home Without the Stress",
        heads=["Flour and water", "Timing the rise", "Common problems"],
    ),
    dict(
        topic="cycling to work",
        activity="commuting by bicycle",
        gear="a carbon road bike",
        thing="a safe and quiet route",
        title="How to Start Cycling to Work",
        heads=["Planning the route", "What to wear", "Staying safe in traffic"],
    ),
    dict(
        topic="bird watching",
        activity="watching birds",
        gear="a pair of premium binoculars",
        thing="recognising common songs",
        title="Bird Watching for Complete Beginners",
        heads=["Where to look", "Learning the songs", "Joining a local count"],
    ),
    dict(
        topic="woodworking",
        activity="building simple furniture",
        gear="a table saw",
        thing="sharpening hand tools",
        title="Simple Woodworking Projects for a Small Workshop",
        heads=["A small workshop", "Sharp tools matter", "Your first bookshelf"],
    ),
    dict(
        topic="personal budgeting",
        activity="tracking every expense",
        gear="a budgeting app",
        thing="an emergency fund",
        title="Personal Budgeting That Actually Works",
        heads=["Know where the money goes", "Building a cushion", "Reviewing each month"],
    ),
    dict(
        topic="trail running",
        activity="running on forest trails",
        gear="a pair of trail shoes",
        thing="an easy, conversational pace",
        title="Trail Running: Getting Off the Pavement",
        heads=["Easy miles first", "Shoes and kit", "Hills and recovery"],
    ),
]
_PEOPLE = [
    ("Maria", "she"),
    ("Tom", "he"),
    ("Aisha", "she"),
    ("David", "he"),
    ("Lena", "she"),
    ("Sam", "he"),
    ("Priya", "she"),
    ("Jonas", "he"),
]
_EXPERTS = [
    ("Dr. Helen Ward", "she"),
    ("coach Peter Lang", "he"),
    ("author Ruth Bell", "she"),
    ("club secretary Ian Moss", "he"),
]
_PLACES = ["Leeds", "Portland", "Dunedin", "Halifax", "Bristol", "Tucson", "Galway", "Adelaide", "Duluth", "York"]
_MONTHS = ["January", "March", "May", "August", "October", "November"]
_DAYS = ["Saturday morning", "Sunday afternoon", "weekday evening", "rainy Tuesday"]
_SITES = [
    "dailyhobbyist.com",
    "greenthumb.org",
    "thecommute.net",
    "slowliving.blog",
    "workbench-weekly.com",
    "northfieldnews.co.uk",
    "weekendguide.net",
    "thriftyhome.org",
]
_AUTHORS = ["Clara Jensen", "Marcus Hill", "Nadia Okafor", "Oliver Grant", "Sofia Rossi", "Ben Carter"]

_OTHER_LANGS = {
    "de": [
        "Der Gemeinderat hat am Dienstag beschlossen, die alte Stadtbibliothek bis zum nächsten Sommer zu "
        "renovieren.",
        "Viele Bürgerinnen und Bürger hatten sich seit Jahren über die engen Räume beschwert.",
        "Nach den Plänen des Architekten entsteht im Erdgeschoss ein heller Lesesaal mit großen Fenstern.",
        "Die Kosten werden auf rund zwei Millionen Euro geschätzt, wobei das Land einen Teil übernimmt.",
        "Während der Bauarbeiten bleibt eine kleine Ausleihstelle im Rathaus geöffnet.",
        "Der Bürgermeister betonte, dass die Bibliothek ein wichtiger Treffpunkt für alle Generationen sei.",
        "Kritiker bemängeln allerdings, dass der Zeitplan sehr knapp bemessen ist.",
        "Im Herbst sollen außerdem neue Kurse für Kinder und Senioren angeboten werden.",
        "Die Stadtverwaltung wird die Öffentlichkeit regelmäßig über den Fortschritt informieren.",
        "Wer Fragen zum Umbau hat, kann sich jeden Donnerstag im Bürgerbüro beraten lassen.",
    ],
    "fr": [
        "Le conseil municipal a décidé mardi de rénover la vieille bibliothèque avant l'été prochain.",
        "Depuis des années, de nombreux habitants se plaignaient du manque de place et de lumière.",
        "Selon les plans de l'architecte, une grande salle de lecture ouvrira au rez-de-chaussée.",
        "Le coût des travaux est estimé à deux millions d'euros, dont une partie sera financée par la région.",
        "Pendant le chantier, un petit point de prêt restera ouvert à la mairie.",
        "Le maire a rappelé que la bibliothèque est un lieu de rencontre essentiel pour toutes les générations.",
        "Certains élus estiment toutefois que le calendrier est beaucoup trop serré.",
        "À l'automne, de nouveaux ateliers seront proposés aux enfants et aux personnes âgées.",
        "La municipalité informera régulièrement les habitants de l'avancement des travaux.",
        "Les personnes intéressées peuvent poser leurs questions chaque jeudi au guichet d'accueil.",
    ],
    "es": [
        "El ayuntamiento decidió el martes renovar la antigua biblioteca municipal antes del próximo verano.",
        "Durante años, muchos vecinos se habían quejado de la falta de espacio y de luz natural.",
        "Según los planos del arquitecto, en la planta baja habrá una amplia sala de lectura.",
        "El coste de las obras se calcula en unos dos millones de euros, y la región pagará una parte.",
        "Mientras duren los trabajos, un pequeño punto de préstamo seguirá abierto en el ayuntamiento.",
        "La alcaldesa recordó que la biblioteca es un lugar de encuentro fundamental para todas las edades.",
        "Algunos concejales, sin embargo, consideran que el calendario es demasiado ajustado.",
        "En otoño se ofrecerán nuevos talleres para niños y para personas mayores.",
        "El ayuntamiento informará periódicamente a los ciudadanos sobre el avance de las obras.",
        "Quien tenga preguntas puede acudir cada jueves a la oficina de atención al ciudadano.",
    ],
}

_NAV = ["Home", "News", "Guides", "Reviews", "Community", "Shop", "About", "Contact"]
_SIDEBAR = [
    "Ten tools every beginner should own",
    "Our editors' picks for spring",
    "Reader questions answered",
    "The best budget gear this year",
    "Subscribe to our newsletter",
    "Meet the team",
]


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
  person, pron = rng.choice(_PEOPLE)
  expert, pron2 = rng.choice(_EXPERTS)
  s = template.format(
      topic=topic["topic"],
      activity=topic["activity"],
      gear=topic["gear"],
      thing=topic["thing"],
      person=person,
      pron=pron,
      expert=expert,
      pron2=pron2,
      place=rng.choice(_PLACES),
      month=rng.choice(_MONTHS),
      day=rng.choice(_DAYS),
      pct=rng.choice([30, 40, 45, 55, 60]),
      num=rng.choice([50, 80, 120, 150, 200]),
  )
  return s[0].upper() + s[1:]


def article_paragraphs(rng: random.Random, topic: dict, n_paras: int = 5) -> list[str]:
  """Fluent-looking English paragraphs: each template at most once, 4-6 sentences a paragraph."""
  templates = rng.sample(_TEMPLATES, min(len(_TEMPLATES), n_paras * 5))
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
  nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in _NAV)
  side = "".join(f'<li><a href="/p/{i}">{_esc(s)}</a></li>' for i, s in enumerate(_SIDEBAR))
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
  author = rng.choice(_AUTHORS)
  blocks = [f'<p class="byline">By {author}, {rng.randint(1, 28)} {rng.choice(_MONTHS)} 2024</p>']
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
  topic = rng.choice(_TOPICS)
  paras = article_paragraphs(rng, topic, rng.randint(5, 7)) + list(extra_paras)
  return f"https://www.{site}/{slug}", topic["title"], _article_blocks(rng, topic, paras)


def _pages(rng: random.Random, file_idx: int, n: int) -> list[_Page]:
  """The pages of one WARC file: mostly good articles plus one or two of each special kind."""
  pages: list[_Page] = []
  uid = [0]

  def slug(word: str = "post") -> str:
    uid[0] += 1
    return f"{word}/{file_idx}-{uid[0]}-{rng.randint(100, 999)}"

  def add_article(site: str | None = None, url: str | None = None, extra_paras=(), kind="article") -> _Page:
    site = site or rng.choice(_SITES)
    u, title, blocks = _article(rng, site, slug("article"), extra_paras)
    html = _html(title, site, blocks)
    page = _Page(url or u, html.encode("utf-8"), kind=kind)
    pages.append(page)
    return page

  # Special pages, a fixed menu per file so every file exercises every stage.
  site = rng.choice(_SITES)
  # Near-duplicate cluster: one article republished on other sites with small edits (date, one sentence, footer).
  topic = _TOPICS[file_idx % len(_TOPICS)]
  base = article_paragraphs(rng, topic, 6)
  for j in range(3):
    paras = list(base)
    if j:
      paras[-1] = paras[-1] + f" This piece was updated on {j + 3} {rng.choice(_MONTHS)} 2024."
      paras[2] = paras[2].replace(" and ", " & ", 1) if j == 2 else paras[2]
    s = _SITES[(file_idx + j * 3) % len(_SITES)]
    pages.append(
        _Page(
            f"https://{s}/syndicated/{file_idx}-{j}",
            _html(topic["title"], s, _article_blocks(random.Random(file_idx), topic, paras)).encode(),
            kind="near_duplicate",
        )
    )
  # Exact duplicate: identical bytes under another URL (mirrors, tracking parameters).
  dup = add_article(kind="exact_duplicate")
  pages.append(_Page(dup.url + "?utm_source=newsletter", dup.body, kind="exact_duplicate"))
  # PII inside otherwise good articles.
  add_article(
      extra_paras=[
          f"For questions about this article, write to editor{file_idx}@{site} or call our desk on "
          f"+1 (555) 013-{2000 + file_idx:04d}. Readers in Europe can also reach us at office.eu@example.org.",
          f"Our comments server at 93.184.216.{30 + file_idx} and the mirror at 2606:2800:220:1:248:1893:25c8:1946 were "
          "briefly offline last week, while the internal host 192.168.1.20 was not affected.",
      ],
      kind="pii",
  )
  # SEO spam: the same keyword lines over and over (Gopher repetition).
  kw = rng.choice(["cheap watches", "best vpn deals", "buy followers fast", "discount phone cases"])
  spam = [f"<p>Best {kw} online. Buy {kw} today at the lowest price. {kw.title()} with free shipping.</p>"] * 12
  pages.append(
      _Page(
          f"https://{kw.replace(' ', '-')}-shop.biz/{slug('deals')}",
          _html(kw.title(), "deals-shop.biz", spam).encode(),
          kind="spam",
      )
  )
  # Hashtag soup (Gopher quality: too many hashes); tags differ per post so repetition rules stay quiet.
  tag_sets = [
      ["travel", "sunset", "beach", "love", "summer", "photo"],
      ["family", "dog", "weekend", "sea", "waves", "fun"],
      ["coffee", "books", "terrace", "rain", "cozy", "mood"],
      ["city", "night", "lights", "walk", "friends", "autumn"],
  ]
  captions = [
      "What a day at the beach with the whole family and the dog.",
      "Sunset walk after dinner, the sky was on fire tonight.",
      "Coffee and a good book on the terrace before the rain came.",
      "Late stroll through the old town with friends from school.",
  ]
  posts = [f"<p>{c} {' '.join('#' + t for t in tags)}</p>" for c, tags in zip(captions, tag_sets)]
  pages.append(
      _Page(
          f"https://www.photoblog.net/{slug('tags')}",
          _html("My week", "photoblog.net", posts).encode(),
          kind="hashtags",
      )
  )
  # Very short page (Gopher quality: short doc), long enough that the n-gram rules do not fire first.
  pages.append(
      _Page(
          f"https://www.{site}/{slug('notice')}",
          _html(
              "Notice",
              site,
              [
                  "<p>This page has moved to our new address. Please update your bookmarks, and thank you for reading our "
                  "weekly guides over the years. The archive will stay online until the end of the summer.</p>"
              ],
          ).encode(),
          kind="short",
      )
  )
  # An article whose closing line is printed twice (FineWeb: duplicated line characters).
  topic = rng.choice(_TOPICS)
  twice = "Thank you for reading, and do let us know how your own first season goes."
  paras = article_paragraphs(rng, topic, 5)
  pages.append(
      _Page(
          f"https://www.{site}/{slug('article')}",
          _html(topic["title"], site, _article_blocks(rng, topic, paras[:3] + [twice] + paras[3:] + [twice])).encode(),
          kind="dup_line",
      )
  )
  # Lorem ipsum placeholder and a page full of code (C4 drops).
  lorem_paras = article_paragraphs(rng, rng.choice(_TOPICS), 3)
  lorem_paras[1] = (
      "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
      "labore et dolore magna aliqua."
  )
  pages.append(
      _Page(
          f"https://www.{site}/{slug('draft')}",
          _html("Draft", site, [f"<p>{p}</p>" for p in lorem_paras]).encode(),
          kind="lorem",
      )
  )
  code_paras = article_paragraphs(rng, rng.choice(_TOPICS), 3)
  code_paras.insert(
      1,
      'In the config file, write the settings as {"debug": true, "port": 8080} and then restart '
      "the server before testing again.",
  )
  pages.append(
      _Page(
          f"https://www.{site}/{slug('howto')}",
          _html("Config tips", site, [f"<p>{_esc(p)}</p>" for p in code_paras]).encode(),
          kind="curly",
      )
  )
  # A catalogue: plenty of words but no sentences (C4: too few sentences once unpunctuated lines go).
  items = [
      "Blue cotton shirt with long sleeves",
      "Green linen jacket, two deep pockets",
      "Black wool trousers for the office",
      "Grey denim scarf in a gift box",
      "White canvas bag that folds flat",
      "Red leather boots to the knee",
      "Navy fleece hoodie of recycled yarn",
      "Brown silk dress with a belt",
      "Yellow rain coat and matching hat",
      "Purple knitted gloves for children",
      "Orange sports socks in packs of five",
      "Pink summer skirt made to last",
  ]
  pages.append(
      _Page(
          f"https://www.{site}/{slug('shop')}",
          _html(
              "Shop the collection",
              site,
              [
                  "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>",
                  "<p>Prices include tax and delivery to most of the country</p>",
              ],
          ).encode(),
          kind="catalogue",
      )
  )
  # Short punchy lines (FineWeb quality: short line ratio).
  steps = [
      "Wash the rice twice.",
      "Soak it for an hour.",
      "Drain it well.",
      "Add water to the pot.",
      "Bring it to a boil.",
      "Turn the heat down low.",
      "Cover it with a lid.",
      "Wait for twelve minutes.",
      "Turn off the heat.",
      "Let it rest a while.",
      "Fluff it with a fork.",
      "Serve it with the curry.",
      "Keep the rest covered.",
      "Eat it within a day.",
      "Do not reheat it twice.",
      "Enjoy the meal with us.",
  ]
  pages.append(
      _Page(
          f"https://www.{site}/{slug('recipe')}",
          _html("Perfect rice", site, ["".join(f"<p>{s}</p>" for s in steps)]).encode(),
          kind="short_lines",
      )
  )
  # Other languages.
  for lang in ("de", "fr", "es"):
    sents = rng.sample(_OTHER_LANGS[lang], 8)
    paras = [" ".join(sents[:3]), " ".join(sents[3:6]), " ".join(sents[6:])]
    pages.append(
        _Page(
            f"https://www.stadtzeitung-{lang}.eu/{slug('lokales')}",
            _html("Bibliothek", f"stadtzeitung-{lang}.eu", [f"<p>{p}</p>" for p in paras], lang=lang).encode(),
            kind=f"lang_{lang}",
        )
    )
  # A French page in Latin-1, declared only in a <meta> tag (the reader must not trust the HTTP default).
  if file_idx == 0:
    paras = [" ".join(_OTHER_LANGS["fr"][:5]), " ".join(_OTHER_LANGS["fr"][5:])]
    pages.append(
        _Page(
            "https://www.journal-local.fr/actualites/bibliotheque",
            _html(
                "Bibliothèque", "journal-local.fr", [f"<p>{p}</p>" for p in paras], lang="fr", charset="iso-8859-1"
            ).encode("latin-1"),
            content_type="text/html",
            kind="lang_fr_latin1",
        )
    )
  # URL filter: blocklisted domain, a banned word, two soft-banned words, a banned subword.
  add_article(url=f"https://www.casino-jackpot-online.com/{slug('news')}", kind="blocked_domain")
  add_article(url=f"https://www.{site}/xxx/{slug('clip')}", kind="banned_word")
  add_article(url=f"https://www.{site}/adult/dating/{slug('article')}", kind="soft_banned")
  add_article(url=f"https://www.{site}/videos/hotpornclips{file_idx}", kind="banned_subword")
  # Nothing to extract: a page that is all chrome and scripts.
  pages.append(
      _Page(
          f"https://www.{site}/{slug('app')}",
          _html(
              "App",
              site,
              ["<div id='root'></div><script>render(document.getElementById('root'));</script>"],
              chrome=False,
          ).encode(),
          kind="empty_extract",
      )
  )
  # Non-HTML responses, an empty body and binary junk that claims to be HTML.
  png = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"img%d" % file_idx).digest() * 8
  pages.append(_Page(f"https://www.{site}/img/{file_idx}.png", png, content_type="image/png", kind="not_html"))
  pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
  pages.append(
      _Page(f"https://www.{site}/files/report-{file_idx}.pdf", pdf, content_type="application/pdf", kind="not_html")
  )
  pages.append(_Page(f"https://www.{site}/{slug('blank')}", b"", kind="empty"))
  junk_rng = random.Random(file_idx)
  junk = bytes(junk_rng.getrandbits(8) for _ in range(1500))
  pages.append(_Page(f"https://www.{site}/{slug('junk')}", junk, content_type="text/html", kind="binary"))
  # The rest: good articles.
  while len(pages) < n:
    add_article()
  rng.shuffle(pages)
  return pages


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
