"""Assembles the per-document stages in FineWeb order from one config.

pre_dedup:  url_filter -> extract -> langid -> gopher_repetition -> gopher_quality -> c4 -> fineweb_quality
post_dedup: pii
Disabled stages (``cfg.<name>.enabled = False``) are left out.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from nanolm_jax.crawl import extract, langid, pii, quality, url_filter
from nanolm_jax.crawl.types import Document, StageResult

Stage = Callable[[Document], StageResult]

PRE_DEDUP = ("url_filter", "extract", "langid", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality")
POST_DEDUP = ("pii",)

_MODULES = {
    "url_filter": (url_filter.default_config, url_filter.make_stage),
    "extract": (extract.default_config, extract.make_stage),
    "langid": (langid.default_config, langid.make_stage),
    **quality.STAGES,
    "pii": (pii.default_config, pii.make_stage),
}


def default_stages_config() -> ml_collections.ConfigDict:
  """All stage sub-configs with their published defaults, keyed by stage name."""
  cfg = ml_collections.ConfigDict()
  for name in PRE_DEDUP + POST_DEDUP:
    setattr(cfg, name, _MODULES[name][0]())
  return cfg


def build_stages(cfg: ml_collections.ConfigDict) -> dict[str, list[tuple[str, Stage]]]:
  """Returns {"pre_dedup": [(name, stage), ...], "post_dedup": [...]} for the enabled stages.

  A stage missing from ``cfg`` runs with its defaults, so older configs keep working when a stage is added.
  """
  out = {}
  for key, names in (("pre_dedup", PRE_DEDUP), ("post_dedup", POST_DEDUP)):
    stages = []
    for name in names:
      default_fn, make_fn = _MODULES[name]
      sub = cfg.get(name) if hasattr(cfg, "get") else None
      sub = sub if sub is not None else default_fn()
      if sub.get("enabled", True):
        stages.append((name, make_fn(sub)))
    out[key] = stages
  return out


def run_document(doc: Document, stages: list[tuple[str, Stage]]) -> tuple[StageResult, str | None]:
  """Runs ``doc`` through ``stages`` until one drops it; returns (last result, name of the stage that stopped it).

  Convenience for tests and small runs; a stage that raises counts as errored "<stage>:exception".
  """
  from nanolm_jax.crawl.types import errored, keep  # pylint: disable=g-import-not-at-top

  result = keep(doc)
  for name, stage in stages:
    try:
      result = stage(result.doc)
    except Exception:  # pylint: disable=broad-except  # one bad document must not stop a run.
      return errored(f"{name}:exception"), name
    if not result.kept:
      return result, name
  return result, None
