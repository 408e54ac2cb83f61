"""Tests for language identification: keep English above the threshold, name what is dropped."""

import pickle

import pytest

from nanolm_jax.crawl import demo, langid
from nanolm_jax.crawl.types import Document

_EN = (
    "The council decided on Tuesday to renovate the old library before next summer. Many residents had "
    "complained for years about the lack of space and light in the reading rooms."
)


def _stage(**overrides):
  cfg = langid.default_config()
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return langid.make_stage(cfg)


@pytest.fixture(scope="module")
def stage():
  return _stage()


def _doc(text):
  return Document(id="1", url="https://e.com", text=text, metadata={"url": "https://e.com"})


def test_english_is_kept_with_probability_in_metadata(stage):
  result = stage(_doc(_EN))
  assert result.kept
  assert result.doc.metadata["language"] == "en"
  assert 0.65 <= result.doc.metadata["language_score"] <= 1.0
  assert result.doc.metadata["url"] == "https://e.com"


@pytest.mark.parametrize("lang", ["de", "fr", "es"])
def test_other_languages_are_dropped_by_name(stage, lang):
  text = " ".join(demo._OTHER_LANGS[lang][:6])
  result = stage(_doc(text))
  assert not result.kept and result.reason == f"lang:{lang}" and not result.error


def test_low_score_is_dropped(stage):
  result = stage(_doc("ok 12 34 ## 56"))
  assert not result.kept and result.reason == "lang:low_score"


def test_threshold_decides(stage):
  _, score, _ = stage.predict(_EN)
  assert _stage(threshold=score - 0.01)(_doc(_EN)).kept
  assert _stage(threshold=min(score + 0.001, 1.0001))(_doc(_EN)).reason == "lang:low_score"


def test_scores_are_probabilities(stage):
  ranked = stage._identifier.rank(_EN)
  assert abs(sum(s for _, s in ranked) - 1.0) < 1e-3 and all(0 <= s <= 1 for _, s in ranked)


def test_configured_languages_are_kept():
  de = " ".join(demo._OTHER_LANGS["de"][:6])
  stage = _stage(languages=["de", "fr"])
  assert stage(_doc(de)).kept and stage(_doc(de)).doc.metadata["language"] == "de"
  assert stage(_doc(_EN)).reason == "lang:en"


def test_empty_language_list_keeps_any_confident_language():
  stage = _stage(languages=[])
  assert stage(_doc(" ".join(demo._OTHER_LANGS["es"][:6]))).doc.metadata["language"] == "es"


def test_picklable_without_shipping_the_model(stage):
  blob = pickle.dumps(stage)
  assert len(blob) < 10_000
  assert pickle.loads(blob)(_doc(_EN)).kept
