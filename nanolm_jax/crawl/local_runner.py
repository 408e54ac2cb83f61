"""Runs the crawl pipeline on one machine: a process pool, one task per input WARC file, resumable.

Phases (``<output>/_work`` holds the intermediates):
  1. per file, in the pool: read -> pre-dedup stages -> dedup keys; writes ``files/<key>/{docs.jsonl.gz, keys.npz,
     stats.json}`` and last, atomically, ``DONE`` (with a fingerprint of the config). A rerun skips files whose
     ``DONE`` matches, so an interrupted job resumes where it stopped.
  2. dedup, in this process: repeated record ids (the first copy in path order is kept), exact duplicates, then
     MinHash-LSH clusters over the survivors (dedup.py).
  3. per file, in the pool: dedup verdicts -> post-dedup stages (PII) -> ``final.jsonl.gz``.
  4. shards (writer.py) and the report (report.py).

A stage that raises on a document counts it as errored ("<stage>:exception:<Type>") and the job goes on. Every
decision depends on the documents only, never on the worker count or the order tasks finish in.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import multiprocessing
import os
import time
from typing import Any, Callable, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np
import tqdm

from nanolm_jax.crawl import dedup
from nanolm_jax.crawl import inputs
from nanolm_jax.crawl import report as report_lib
from nanolm_jax.crawl import writer
from nanolm_jax.crawl.types import Document, StageResult, drop, errored, keep

Stage = tuple[str, Callable[[Document], StageResult]]
StageBuilder = Callable[[ml_collections.ConfigDict], dict[str, list[Stage]]]
WORK_DIR = "_work"
DONE = "DONE"


# ---- per-document helpers shared with the Beam runner ---------------------------------------------------------


def default_stage_builder(stages_cfg: ml_collections.ConfigDict) -> dict[str, list[Stage]]:
  from nanolm_jax.crawl import stages  # pylint: disable=g-import-not-at-top  # heavy (extractors, models)

  return stages.build_stages(stages_cfg)


def apply_stage(name: str, fn: Callable[[Document], StageResult], doc: Document) -> StageResult:
  """Calls a stage; an exception (or a non-StageResult) becomes an errored verdict instead of killing the job."""
  try:
    result = fn(doc)
  except Exception as exc:  # pylint: disable=broad-except  # one bad page must not stop a crawl.
    return errored(f"{name}:exception:{type(exc).__name__}")
  if not isinstance(result, StageResult):
    return errored(f"{name}:exception:BadReturn")
  return result


def run_stages(doc: Document, stages: Sequence[Stage], stats: report_lib.Stats) -> Document | None:
  """Runs ``doc`` through ``stages`` in order, counting each verdict; returns the kept document or None."""
  for name, fn in stages:
    result = apply_stage(name, fn, doc)
    stats.record(name, result, doc)
    if not result.kept:
      return None
    doc = result.doc
  return doc


def read_file(path: str, read_cfg: ml_collections.ConfigDict, stats: report_lib.Stats) -> Iterator[Document]:
  """The reader's documents, counting every record (kept, dropped or errored) under the "read" stage."""
  from nanolm_jax.crawl import warc  # pylint: disable=g-import-not-at-top

  it = warc.read_warc(path, read_cfg)
  while True:
    try:
      result = next(it)
    except StopIteration:
      return
    except Exception as exc:  # pylint: disable=broad-except  # the reader promises not to raise; make sure.
      stats.record(report_lib.READ_STAGE, errored(f"read:exception:{type(exc).__name__}"), None)
      return
    stats.record(report_lib.READ_STAGE, result, None)
    if result.kept:
      yield result.doc


def dedup_keys(doc: Document, hasher: dedup.MinHasher | None) -> tuple[str, np.ndarray]:
  """(exact key, band keys) of a document; band keys are empty for short texts or when MinHash is off."""
  bands = hasher.band_keys(doc.text) if hasher is not None else np.zeros(0, dtype=np.uint64)
  return dedup.exact_key(doc.text), bands


def stage_order(cfg: ml_collections.ConfigDict, stages: dict[str, list[Stage]]) -> list[str]:
  names = [report_lib.READ_STAGE] + [n for n, _ in stages["pre_dedup"]] + [dedup.ID_STAGE]
  if cfg.dedup.exact.enabled:
    names.append(dedup.EXACT_STAGE)
  if cfg.dedup.minhash.enabled:
    names.append(dedup.MINHASH_STAGE)
  return names + [n for n, _ in stages["post_dedup"]]


def hasher_for(cfg: ml_collections.ConfigDict) -> dedup.MinHasher | None:
  return dedup.MinHasher.from_config(cfg.dedup.minhash) if cfg.dedup.minhash.enabled else None


# ---- worker tasks -----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _stages_cached(builder: StageBuilder, stages_json: str) -> dict[str, list[Stage]]:
  # Built once per worker process, not once per file: stages may load lists or models.
  return builder(ml_collections.ConfigDict(json.loads(stages_json)))


def _file_key(path: str) -> str:
  digest = hashlib.blake2b(inputs.canonical(path).encode(), digest_size=6).hexdigest()
  return f"{digest}-{os.path.basename(path)[:60]}"


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
  """Changes whenever a setting that shapes phase 1 does; a finished file with another fingerprint is redone."""
  # How files are fetched (fsspec options, retries) does not change what is read.
  read = {k: v for k, v in cfg.read.to_dict().items() if k not in ("storage_options", "open_retries", "retry_wait_s")}
  parts = {"read": read, "stages": cfg.stages.to_dict(), "minhash": cfg.dedup.minhash.to_dict()}
  return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def _save_npz(path: str, **arrays: np.ndarray) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  writer.write_atomic(path, buf.getvalue())


def _phase1(task: tuple[str, str, ml_collections.ConfigDict, StageBuilder]) -> str:
  """read -> pre-dedup stages -> keys for one input file; returns the file key. Skips finished files."""
  path, file_dir, cfg, builder = task
  done_path = os.path.join(file_dir, DONE)
  fp = fingerprint(cfg)
  if os.path.exists(done_path) and open(done_path).read().strip() == fp:
    return file_dir
  stages = _stages_cached(builder, json.dumps(cfg.stages.to_dict(), sort_keys=True))
  hasher = hasher_for(cfg)
  stats = report_lib.Stats()
  docs, ids, exact, bands, chars = [], [], [], [], []
  for doc in read_file(path, cfg.read, stats):
    doc = run_stages(doc, stages["pre_dedup"], stats)
    if doc is None:
      continue
    key, band = dedup_keys(doc, hasher)
    docs.append(doc)
    ids.append(doc.id)
    exact.append(key)
    bands.append(band)
    chars.append(len(doc.text))
  num_bands = hasher.num_buckets if hasher is not None else 0
  band_matrix = np.zeros((len(bands), num_bands), dtype=np.uint64)
  has_bands = np.array([b.size > 0 for b in bands], dtype=bool)
  for i, b in enumerate(bands):
    if b.size:
      band_matrix[i] = b
  os.makedirs(file_dir, exist_ok=True)
  writer.write_jsonl_gz(os.path.join(file_dir, "docs.jsonl.gz"), docs)
  _save_npz(
      os.path.join(file_dir, "keys.npz"),
      ids=np.array(ids, dtype=str),
      exact=np.array(exact, dtype=str),
      bands=band_matrix,
      has_bands=has_bands,
  )
  writer.write_atomic(os.path.join(file_dir, "stats.json"), json.dumps(stats.to_dict()).encode())
  writer.write_atomic(done_path, fp.encode())  # last: the file counts as finished only once everything is there
  return file_dir


def dedup_verdicts(doc: Document, reason: str | None, cfg: ml_collections.ConfigDict, stats: report_lib.Stats) -> bool:
  """Counts the dedup stages' verdicts on one document given its drop reason (None: unique); True if it survives."""
  for stage, enabled, stage_reason in (
      (dedup.ID_STAGE, True, dedup.ID_REASON),
      (dedup.EXACT_STAGE, cfg.dedup.exact.enabled, dedup.EXACT_REASON),
      (dedup.MINHASH_STAGE, cfg.dedup.minhash.enabled, dedup.MINHASH_REASON),
  ):
    if not enabled:
      continue
    verdict = drop(reason) if reason == stage_reason else keep(doc)
    stats.record(stage, verdict, doc)
    if not verdict.kept:
      return False
  return True


def _phase3(task: tuple[str, dict[int, str], ml_collections.ConfigDict, StageBuilder]) -> str:
  """Dedup verdicts (by row) and post-dedup stages for one file's documents; writes final.jsonl.gz, stats_post.json."""
  file_dir, dropped, cfg, builder = task
  stages = _stages_cached(builder, json.dumps(cfg.stages.to_dict(), sort_keys=True))
  stats = report_lib.Stats()
  kept = []
  for row, doc in enumerate(writer.read_jsonl_gz(os.path.join(file_dir, "docs.jsonl.gz"))):
    if not dedup_verdicts(doc, dropped.get(row), cfg, stats):
      continue
    doc = run_stages(doc, stages["post_dedup"], stats)
    if doc is not None:
      stats.record_kept(doc)
      kept.append(doc)
  writer.write_jsonl_gz(os.path.join(file_dir, "final.jsonl.gz"), kept)
  writer.write_atomic(os.path.join(file_dir, "stats_post.json"), json.dumps(stats.to_dict()).encode())
  return file_dir


# ---- dedup phase ----------------------------------------------------------------------------------------------


def find_duplicates(
    cfg: ml_collections.ConfigDict, file_dirs: Sequence[str]
) -> tuple[list[dict[int, str]], dict[str, dict[int, int]]]:
  """Global dedup over the phase-1 keys; returns ([{row: drop reason} per file], {stage: cluster size histogram}).

  Rows are a file's documents in phase-1 order and ``file_dirs`` are in input path order, so the first copy of a
  repeated record id is its smallest (path, position): that one goes on to exact and MinHash dedup, the rest are
  dropped as repeats. The choice depends on the inputs only, never on worker order.
  """
  ids, exact, bands, has_bands, sizes = [], [], [], [], []
  for d in file_dirs:
    with np.load(os.path.join(d, "keys.npz")) as z:
      ids += z["ids"].tolist()
      exact += z["exact"].tolist()
      bands.append(z["bands"])
      has_bands.append(z["has_bands"])
      sizes.append(len(z["ids"]))
  reasons: list[str | None] = [None] * len(ids)
  first: dict[str, int] = {}
  for row, doc_id in enumerate(ids):
    if doc_id in first:
      reasons[row] = dedup.ID_REASON
    else:
      first[doc_id] = row
  copies = collections.Counter(collections.Counter(ids).values())
  clusters = {dedup.ID_STAGE: {n: c for n, c in sorted(copies.items()) if n > 1}}
  rows = list(first.values())  # one row per id, ascending
  if cfg.dedup.exact.enabled:
    exact_drop, clusters[dedup.EXACT_STAGE] = dedup.exact_duplicates({ids[r]: exact[r] for r in rows})
    for r in rows:
      if ids[r] in exact_drop:
        reasons[r] = dedup.EXACT_REASON
  if cfg.dedup.minhash.enabled:
    band_matrix, mask = np.concatenate(bands), np.concatenate(has_bands)
    alive = [r for r in rows if mask[r] and reasons[r] is None]
    near_drop, clusters[dedup.MINHASH_STAGE] = dedup.minhash_duplicates([ids[r] for r in alive], band_matrix[alive])
    for r in alive:
      if ids[r] in near_drop:
        reasons[r] = dedup.MINHASH_REASON
  per_file, offset = [], 0
  for n in sizes:
    per_file.append({i: reasons[offset + i] for i in range(n) if reasons[offset + i] is not None})
    offset += n
  return per_file, clusters


# ---- driver -----------------------------------------------------------------------------------------------------


def _map(fn, tasks: list, num_workers: int, desc: str, progress: bool) -> list:
  """Runs tasks in a spawn/forkserver pool (in-process for one worker); results come back in task order."""
  bar = tqdm.tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress)
  try:
    if num_workers <= 1 or len(tasks) <= 1:
      out = []
      for t in tasks:
        out.append(fn(t))
        bar.update()
      return out
    # No fork: the parent may hold threads (JAX, tqdm) that a forked child would inherit half-locked.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(min(num_workers, len(tasks))) as pool:
      out = []
      for r in pool.imap(fn, tasks):
        out.append(r)
        bar.update()
      return out
  finally:
    bar.close()


def run(
    cfg: ml_collections.ConfigDict,
    input_paths: Sequence[str],
    out_dir: str,
    stage_builder: StageBuilder = default_stage_builder,
    progress: bool = True,
) -> dict[str, Any]:
  """Runs the whole pipeline; returns the report (also written to ``out_dir``/report.json)."""
  start = time.time()
  paths, repeated = inputs.unique_paths(input_paths)
  if not paths:
    raise ValueError("No input files.")
  if repeated:
    logging.warning("%d input paths name a file already in the list; each file is read once.", repeated)
  num_workers = cfg.runner.num_workers or os.cpu_count() or 1
  work = os.path.join(out_dir, WORK_DIR, "files")
  file_dirs = [os.path.join(work, _file_key(p)) for p in paths]
  reused = sum(
      os.path.exists(os.path.join(d, DONE)) and open(os.path.join(d, DONE)).read().strip() == fingerprint(cfg)
      for d in file_dirs
  )
  if reused:
    logging.info("Resuming: %d of %d input files already processed.", reused, len(paths))
  _map(_phase1, [(p, d, cfg, stage_builder) for p, d in zip(paths, file_dirs)], num_workers, "read+filter", progress)

  per_file, clusters = find_duplicates(cfg, file_dirs)
  tasks = [(d, dropped, cfg, stage_builder) for d, dropped in zip(file_dirs, per_file)]
  _map(_phase3, tasks, num_workers, "dedup+pii", progress)

  stats = report_lib.Stats()
  for d in file_dirs:
    for name in ("stats.json", "stats_post.json"):
      with open(os.path.join(d, name), encoding="utf-8") as f:
        stats.merge(report_lib.Stats.from_dict(json.load(f)))
  for stage, sizes in clusters.items():
    stats.record_clusters(stage, sizes)
  kept_docs = [doc for d in file_dirs for doc in writer.read_jsonl_gz(os.path.join(d, "final.jsonl.gz"))]
  shards = writer.write_shards(kept_docs, out_dir, cfg.output.num_shards)
  stages = _stages_cached(stage_builder, json.dumps(cfg.stages.to_dict(), sort_keys=True))
  rep = report_lib.build_report(
      stats,
      stage_order(cfg, stages),
      kept=len(kept_docs),
      extra={
          "runner": "local",
          "num_workers": num_workers,
          "input_files": len(paths),
          "repeated_input_paths": repeated,
          "resumed_files": reused,
          "shards": [os.path.basename(s) for s in shards],
          "seconds": round(time.time() - start, 2),
      },
  )
  report_lib.write_report(rep, out_dir)
  return rep
