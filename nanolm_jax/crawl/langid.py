"""Language identification with py3langid, keeping configured languages above a probability threshold.

Why py3langid: its 97-language naive-Bayes model ships inside the wheel (offline, no download at run time), it
needs only numpy, classifies a page in well under a millisecond, and with ``norm_probs=True`` returns a calibrated
probability (softmax over languages) that the 0.65 threshold can be compared with. fastText's lid.176 (datatrove's
choice) is more accurate on very short text but is not shipped by any offline pip package we may use
(fasttext-langdetect downloads it); lingua ships models and is accurate but is ~100x slower and needs GBs of RAM
in its high-accuracy mode. Extracted web pages are long enough for py3langid to be reliable.

Drops: "lang:<code>" when the best language is confidently one we do not keep, "lang:low_score" when no kept
language reaches the threshold otherwise. Metadata gets "language" and "language_score" either way.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from nanolm_jax.crawl.types import Document, StageResult, drop, keep


def default_config() -> ml_collections.ConfigDict:
  """datatrove LanguageFilter defaults: English, threshold 0.65."""
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.languages = ["en"]  # empty list: keep any language above the threshold
  cfg.threshold = 0.65
  return cfg


def _load_identifier():
  from py3langid.langid import MODEL_FILE, LanguageIdentifier  # pylint: disable=g-import-not-at-top

  return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageFilter:
  """The langid stage; picklable (the model is reloaded from the package on unpickling, not shipped)."""

  def __init__(self, cfg: dict[str, Any]):
    self._cfg = dict(cfg)
    self._languages = frozenset(cfg["languages"])
    self._identifier = _load_identifier()

  def __getstate__(self) -> dict[str, Any]:
    return {"_cfg": self._cfg}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["_cfg"])

  def predict(self, text: str) -> tuple[str, float, dict[str, float]]:
    """Returns (best language, its probability, probabilities of the configured languages)."""
    ranked = self._identifier.rank(text.replace("\n", " "))
    best, best_score = ranked[0]
    kept = {lang: score for lang, score in ranked if lang in self._languages}
    return best, float(best_score), kept

  def __call__(self, doc: Document) -> StageResult:
    best, best_score, kept = self.predict(doc.text)
    threshold = self._cfg["threshold"]
    metadata = dict(doc.metadata, language=best, language_score=round(best_score, 4))
    if self._languages:
      if any(score >= threshold for score in kept.values()):
        lang = max(kept, key=kept.get)
        metadata.update(language=lang, language_score=round(float(kept[lang]), 4))
        return keep(Document(id=doc.id, url=doc.url, text=doc.text, metadata=metadata))
      if best not in self._languages and best_score >= threshold:
        return drop(f"lang:{best}")
      return drop("lang:low_score")
    if best_score >= threshold:
      return keep(Document(id=doc.id, url=doc.url, text=doc.text, metadata=metadata))
    return drop("lang:low_score")


def make_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return LanguageFilter(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
