"""Tests for the Gopher, C4 and FineWeb quality filters: a keep case and a drop case for every rule."""

import random

import pytest

from nanolm_jax.crawl import demo, quality
from nanolm_jax.crawl.types import Document


def _article(seed=0, n_paras=6):
  rng = random.Random(seed)
  return "\n".join(demo.article_paragraphs(rng, demo._TOPICS[seed % len(demo._TOPICS)], n_paras))


GOOD = _article()


def _doc(text):
  return Document(id="1", url="https://e.com", text=text, metadata={"language": "en"})


def _only(default_fn, keep_rule=None, **overrides):
  """A config with every rule off except those named in overrides (datatrove: a falsy threshold disables)."""
  cfg = default_fn()
  for k in list(cfg.keys()):
    if k in ("enabled", "stop_words", "short_line_length", "line_punct_exclude_zero"):
      continue
    v = cfg[k]
    cfg[k] = [] if isinstance(v, list) else (None if not isinstance(v, bool) else False)
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def test_good_article_passes_every_filter():
  doc = _doc(GOOD)
  for name, (default_fn, make_fn) in quality.STAGES.items():
    result = make_fn(default_fn())(doc)
    assert result.kept, (name, result.reason)
    doc = result.doc


def test_word_tokenizer_and_sentences():
  assert quality.words("Don't stop... it's 3.5 km, OK?") == [
      "Don't",
      "stop",
      "...",
      "it's",
      "3",
      ".",
      "5",
      "km",
      ",",
      "OK",
      "?",
  ]
  assert quality.words("well-known cat's toys, yes.") == ["well-known", "cat's", "toys", ",", "yes", "."]
  assert len(quality.sentences('One here. Two there! Three? "Four." Five')) == 5


# ------------------------------------------------------------------------------------------- Gopher repetition.

_REP = quality.default_gopher_repetition_config


def _rep(cfg, text):
  return quality.make_gopher_repetition_stage(cfg)(_doc(text))


@pytest.mark.parametrize(
    "rule,overrides,bad",
    [
        (
            "dup_para_frac",
            dict(dup_para_frac=0.3),
            "\n\n".join(["Same paragraph here."] * 3 + ["Other one.", "Third."]),
        ),
        (
            "dup_para_char_frac",
            dict(dup_para_char_frac=0.2),
            "\n\n".join(["A fairly long repeated paragraph sits right here."] * 2 + ["x " * 40]),
        ),
        ("dup_line_frac", dict(dup_line_frac=0.3), "\n".join(["same line"] * 4 + ["other", "more", "last"])),
        (
            "dup_line_char_frac",
            dict(dup_line_char_frac=0.2),
            "\n".join(["A long repeated line of text sits here."] * 2 + ["y " * 30]),
        ),
        ("top_2_gram", dict(top_n_grams=[[2, 0.2]]), "buy now " * 10 + " ".join(f"w{i}" for i in range(40))),
        ("top_3_gram", dict(top_n_grams=[[3, 0.18]]), "buy it now " * 8 + " ".join(f"w{i}" for i in range(40))),
        ("top_4_gram", dict(top_n_grams=[[4, 0.16]]), "buy it right now " * 6 + " ".join(f"w{i}" for i in range(40))),
    ]
    + [
        (
            f"duplicated_{n}_n_grams",
            dict(dup_n_grams=[[n, frac]]),
            " ".join(f"u{i}" for i in range(n))
            + " "
            + " ".join(f"v{i}" for i in range(n))
            + " "
            + " ".join(f"u{i}" for i in range(n))
            + " "
            + " ".join(f"v{i}" for i in range(n)),
        )
        for n, frac in [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    ],
)
def test_gopher_repetition_rules(rule, overrides, bad):
  cfg = _only(_REP, **overrides)
  result = _rep(cfg, bad)
  assert not result.kept and result.reason == f"gopher_rep:{rule}"
  assert _rep(cfg, GOOD).kept
  assert _rep(_REP(), GOOD).kept


def test_gopher_repetition_definitions():
  assert quality.find_duplicates(["a", "bb", "a", "bb", "a"]) == (3, 4)
  assert quality.top_ngram_chars("a b a b a b".split(), 2) == len("a b") * 3
  # "abc" repeats once after the first: the scan jumps past it, counting its joined (no-space) length once.
  assert quality.duplicate_ngram_chars("x y z q x y z".split(), 3) == len("xyz")


def test_empty_text_is_dropped_by_repetition():
  assert _rep(_REP(), "  \n ").reason == "gopher_rep:empty"


# ------------------------------------------------------------------------------------------------ Gopher quality.

_QUAL = quality.default_gopher_quality_config


def _qual(cfg, text):
  return quality.make_gopher_quality_stage(cfg)(_doc(text))


def _words(n, word="cat"):
  return " ".join([word] * n)


@pytest.mark.parametrize(
    "rule,overrides,bad",
    [
        ("short_doc", dict(min_doc_words=50), "The cat sat with the dog."),
        ("long_doc", dict(max_doc_words=2000), _words(2001)),
        ("below_avg_threshold", dict(min_avg_word_length=3), _words(60, "a to")),
        ("above_avg_threshold", dict(max_avg_word_length=10), _words(60, "extraordinarily")),
        ("too_many_hashes", dict(max_symbol_word_ratio=0.1), " ".join(f"word{i} #tag" for i in range(30))),
        ("too_many_ellipsis", dict(max_symbol_word_ratio=0.1), " ".join(f"and then{i}..." for i in range(30))),
        ("too_many_bullets", dict(max_bullet_lines_ratio=0.9), "\n".join(f"• item number {i}" for i in range(20))),
        (
            "too_many_end_ellipsis",
            dict(max_ellipsis_lines_ratio=0.3),
            "\n".join(f"line {i} goes on and on..." for i in range(10)),
        ),
        ("below_alpha_threshold", dict(max_non_alpha_words_ratio=0.8), " ".join(str(i) for i in range(100))),
        ("enough_stop_words", dict(min_stop_words=2), "Cats chase mice while dogs sleep."),
    ],
)
def test_gopher_quality_rules(rule, overrides, bad):
  cfg = _only(_QUAL, **overrides)
  result = _qual(cfg, bad)
  assert not result.kept and result.reason == f"gopher_qual:{rule}"
  assert _qual(cfg, GOOD).kept


def test_gopher_quality_stop_words_are_case_sensitive_as_datatrove():
  cfg = _only(_QUAL, min_stop_words=2)
  assert not _qual(cfg, "The cat. And dog.").kept
  assert _qual(cfg, "the cat and the dog").kept


def test_dash_bullets_count_as_bullets():
  cfg = _only(_QUAL, max_bullet_lines_ratio=0.9)
  assert _qual(cfg, "\n".join(f"- item {i}" for i in range(20))).reason == "gopher_qual:too_many_bullets"


# ------------------------------------------------------------------------------------------------------------ C4.


def _c4(text, **overrides):
  cfg = quality.default_c4_config()
  for k, v in overrides.items():
    cfg[k] = v
  return quality.make_c4_stage(cfg)(_doc(text))


def test_c4_keeps_good_lines_and_removes_bad_ones():
  text = "\n".join(
      [
          "A heading without punctuation",
          "Too short.",
          "Please enable JavaScript to view the comments on this site.",
          "This site uses cookies, see our cookie policy for details.",
          "A sentence with a citation at the end of it.[3]",
          "x" * 1001 + " is a very long word in a sentence.",
          GOOD,
      ]
  )
  result = _c4(text)
  assert result.kept
  out = result.doc.text
  assert out.startswith("A sentence with a citation at the end of it.\n") and out.endswith(GOOD.split("\n")[-1])
  for gone in ("heading", "Too short.", "JavaScript", "cookie policy", "[3]", "xxxx"):
    assert gone not in out, gone
  assert result.doc.metadata["c4_lines_removed"] == 5
  assert result.doc.metadata["language"] == "en"


@pytest.mark.parametrize(
    "rule,text",
    [
        ("lorem_ipsum", GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."),
        ("curly_bracket", GOOD + '\nSet the value to {"debug": true} and restart the server.'),
        (
            "too_few_sentences",
            "One sentence here.\nTwo sentences here. Three here.\nNo punctuation at all in this line",
        ),
    ],
)
def test_c4_page_rules(rule, text):
  result = _c4(text)
  assert not result.kept and result.reason == f"c4:{rule}"


def test_c4_page_rules_can_be_switched_off():
  assert _c4(GOOD + "\nLorem ipsum dolor sit amet, consectetur elit.", filter_lorem_ipsum=False).kept
  assert _c4(GOOD + "\nSet {x} to one and restart.", filter_curly_bracket=False).kept
  assert _c4("One here.\nTwo here, yes.", min_num_sentences=-1).kept
  assert "JavaScript" in _c4(GOOD + "\nPlease enable JavaScript to read on.", filter_javascript=False).doc.text
  assert "cookie policy" in _c4(GOOD + "\nRead our cookie policy now.", filter_policy=False).doc.text
  assert "No stop here" in _c4(GOOD + "\nNo stop here at all", filter_no_terminal_punct=False).doc.text


def test_c4_sentence_count_threshold():
  five = "One is here. Two is here. Three is here. Four is here. Five is here."
  assert _c4(five).kept
  assert _c4(five.rsplit(" Five", 1)[0]).reason == "c4:too_few_sentences"


def test_c4_badwords_off_by_default_and_on_with_a_list(tmp_path):
  text = GOOD + "\nThat was a truly frobnicating experience for everyone."
  assert _c4(text).kept
  (tmp_path / "bad.txt").write_text("frobnicating\n")
  assert _c4(text, filter_badwords=True, badwords_file=str(tmp_path / "bad.txt")).reason == "c4:badwords"
  assert _c4(GOOD, filter_badwords=True, badwords_file=str(tmp_path / "bad.txt")).kept


# ------------------------------------------------------------------------------------------------------- FineWeb.

_FW = quality.default_fineweb_quality_config


def _fw(cfg, text):
  return quality.make_fineweb_quality_stage(cfg)(_doc(text))


@pytest.mark.parametrize(
    "rule,overrides,bad",
    [
        (
            "line_punct_ratio",
            dict(line_punct_thr=0.12),
            "\n".join([f"Header line number {i} without any stop at the end" for i in range(9)] + ["One sentence."]),
        ),
        (
            "short_line_ratio",
            dict(short_line_thr=0.67),
            "\n".join(f"Step {i}: stir the pot well." for i in range(10)) + "\n" + GOOD.split("\n")[0],
        ),
        (
            "char_dup_ratio",
            dict(char_duplicates_ratio=0.01),
            GOOD + "\nThank you for reading this article today.\nThank you for reading this article today.",
        ),
        ("list_ratio", dict(new_line_ratio=0.3), "\n".join(f"Item {i}." for i in range(20))),
    ],
)
def test_fineweb_rules(rule, overrides, bad):
  cfg = _FW()
  # Isolate the rule: park the others where they cannot fire.
  cfg.line_punct_thr, cfg.short_line_thr, cfg.char_duplicates_ratio, cfg.new_line_ratio = -1, 2, 2, 1e9
  for k, v in overrides.items():
    cfg[k] = v
  result = _fw(cfg, bad)
  assert not result.kept and result.reason == f"fineweb:{rule}"
  assert _fw(cfg, GOOD).kept


def test_fineweb_line_punct_exclude_zero():
  cfg = _FW()
  cfg.line_punct_exclude_zero = True
  cfg.short_line_thr, cfg.new_line_ratio = 2, 1e9
  assert _fw(cfg, "A heading\nAnother heading without stops at all here").kept
  assert _fw(_FW(), "A heading\nAnother heading without stops at all here").reason == "fineweb:line_punct_ratio"


def test_defaults_match_datatrove():
  rep, qual, c4, fw = _REP(), _QUAL(), quality.default_c4_config(), _FW()
  assert (rep.dup_line_frac, rep.dup_para_frac, rep.dup_line_char_frac, rep.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
  assert rep.top_n_grams == [[2, 0.2], [3, 0.18], [4, 0.16]]
  assert rep.dup_n_grams == [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
  assert (
      qual.min_doc_words,
      qual.max_doc_words,
      qual.min_avg_word_length,
      qual.max_avg_word_length,
      qual.max_symbol_word_ratio,
      qual.max_bullet_lines_ratio,
      qual.max_ellipsis_lines_ratio,
      qual.max_non_alpha_words_ratio,
      qual.min_stop_words,
  ) == (50, 100000, 3, 10, 0.1, 0.9, 0.3, 0.8, 2)
  assert (c4.min_num_sentences, c4.min_words_per_line, c4.max_word_length, c4.filter_badwords) == (5, 3, 1000, False)
  assert (fw.line_punct_thr, fw.short_line_thr, fw.short_line_length, fw.char_duplicates_ratio, fw.new_line_ratio) == (
      0.12,
      0.67,
      30,
      0.01,
      0.3,
  )
