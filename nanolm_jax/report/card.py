"""The report card of a chain folder: ``build`` reads it into one dict (report.json), ``write`` adds report.md and
the plots next to it.

    from nanolm_jax.report import card
    card.write(card.build("speedrun_out"), "speedrun_out/report.md")
    card.report("speedrun_out", samples=False)   # the same in one call (the speedrun's report hook); returns the .md
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from nanolm_jax.report import collect
from nanolm_jax.report import env
from nanolm_jax.report import render

REPORT_JSON = "report.json"
# Compression is measured on the crawl's own documents when they are there, else on this fixed English text.
REFERENCE_TEXT = (
    "The quick brown fox jumps over the lazy dog. A function returns a list of values, sorted by key.",
    "Tanias Vorwena was born in the city of Haexgrad in 1961 and worked as a glassblower.",
    "Question: What is 17 plus 25?\nAnswer: 17 + 25 = 42. The answer is 42.",
    "In the beginning the river was small, but the rains of the long winter made it wide and fast.",
)


def _wall_times(speedrun: dict[str, Any] | None, runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """{stage: {'wall_s', 'status', 'source'}}: speedrun.json's record, else the run's file-time estimate."""
  out = {}
  for name, entry in ((speedrun or {}).get("stages") or {}).items():
    if isinstance(entry, dict):
      out[name] = {
          "wall_s": entry.get("wall_s"),
          "status": entry.get("status"),
          "run": entry.get("run"),
          "source": collect.SPEEDRUN_FILE,
      }
  for stage, run in runs.items():
    if stage not in out and run.get("wall_s_estimate") is not None:
      out[stage] = {"wall_s": run["wall_s_estimate"], "status": "found", "source": "file times (estimate)"}
  return out


def _tokenizer_stats(stage_paths: dict[str, str], crawl: dict[str, Any] | None) -> dict[str, Any] | None:
  """Bytes per token of the chain's tokenizer (the first stage run that has one) on the crawl text or REFERENCE_TEXT."""
  from nanolm_jax import runs as runs_lib  # pylint: disable=g-import-not-at-top  # loads sentencepiece

  for stage in collect.STAGES:
    if stage not in stage_paths:
      continue
    try:
      tok = runs_lib.load_tokenizer(stage_paths[stage])
    except (FileNotFoundError, ValueError, OSError, ImportError):
      continue
    texts = collect.corpus_texts(crawl["shards"]) if crawl else []
    source = f"{len(texts)} crawl documents" if texts else "the report's reference text"
    texts = texts or list(REFERENCE_TEXT)
    return {
        "run": stage_paths[stage],
        "vocab_size": tok.vocab_size,
        "bytes_per_token": tok.bytes_per_token(texts),
        "text": source,
    }
  return None


def build(workdir: str, samples: bool = True) -> dict[str, Any]:
  """Everything the report says, machine-readable: header, stages, metrics (n and intervals), crawl, samples."""
  speedrun = collect.read_json(os.path.join(workdir, collect.SPEEDRUN_FILE))
  speedrun = speedrun if isinstance(speedrun, dict) else None
  stage_paths = collect.find_runs(workdir, speedrun)
  runs = {stage: collect.read_run(path) for stage, path in stage_paths.items()}
  crawl = collect.find_crawl(workdir, speedrun)
  report = {
      "workdir": os.path.abspath(workdir),
      "header": env.header(),
      "speedrun": {k: v for k, v in (speedrun or {}).items() if k != "stages"} or None,
      "wall_times": _wall_times(speedrun, runs),
      "crawl": {k: crawl[k] for k in ("report", "report_path", "funnel")} | {"shards": len(crawl["shards"])}
      if crawl
      else None,
      "tokenizer": _tokenizer_stats(stage_paths, crawl),
      "stages": runs,
      "table": {stage: run["metrics"] for stage, run in runs.items()},
      "samples": None,
  }
  if samples:
    from nanolm_jax.report import samples as samples_lib  # pylint: disable=g-import-not-at-top  # loads the engine

    report["samples"] = samples_lib.all_stages(stage_paths)
  return report


def _copy_plots(report: dict[str, Any], out_dir: str) -> dict[str, str]:
  """Copies every run's plots (and the crawl funnel) next to the report: {caption: file name}."""
  plots = {}
  sources = [
      (f"{stage}: {p}", os.path.join(run["path"], p), f"{stage}_{p}")
      for stage, run in report["stages"].items()
      for p in run["plots"]
  ]
  if report.get("crawl") and report["crawl"].get("funnel"):
    sources.insert(0, ("crawl funnel", report["crawl"]["funnel"], "crawl_funnel.png"))
  for caption, src, name in sources:
    dst = os.path.join(out_dir, name)
    if os.path.abspath(src) != os.path.abspath(dst):
      shutil.copyfile(src, dst)
    plots[caption] = name
  return plots


def write(report: dict[str, Any], out: str) -> tuple[str, str]:
  """Writes ``out`` (report.md), report.json and the plots into out's folder; returns (md path, json path)."""
  out_dir = os.path.dirname(os.path.abspath(out))
  os.makedirs(out_dir, exist_ok=True)
  report["plots"] = _copy_plots(report, out_dir)
  json_path = os.path.join(out_dir, REPORT_JSON)
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
  with open(out, "w", encoding="utf-8") as f:
    f.write(render.markdown(report))
  return out, json_path


def report(workdir: str, samples: bool = True, out: str | None = None) -> str:
  """build + write: the report.md path (default <workdir>/report.md)."""
  return write(build(workdir, samples=samples), out or os.path.join(workdir, "report.md"))[0]
