r"""Throughput of the crawl pipeline on the demo crawl: docs/s per stage, end to end, and MinHash signatures/s.

  python -m experiments.bench_crawl                      # 4 files x 80 pages
  python -m experiments.bench_crawl --num_files=8 --pages_per_file=200 --workers=1,2

MinHash is compared with datasketch (if installed) at the same parameters (112 permutations, word 5-grams of the
same simplified text), both timed from the text to the signature; the ratio ours / datasketch is printed.
"""
import logging as py_logging
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from configs import crawl as crawl_config
from nanolm_jax.crawl import dedup
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import report as report_lib
from nanolm_jax.crawl import stages as stages_lib

_NUM_FILES = flags.DEFINE_integer("num_files", 4, "Demo WARC files.")
_PAGES = flags.DEFINE_integer("pages_per_file", 80, "Pages per demo file.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts for the end-to-end runs.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 2.0, "Repeat each MinHash measurement for at least this long.")


def _rate(n: int, seconds: float) -> str:
  return f"{n / seconds:10.1f}/s" if seconds > 0 else "       inf"


def _repeat(fn, texts) -> float:
  """Signatures per second of ``fn`` over ``texts``, repeated for at least --min_seconds."""
  n, start = 0, time.perf_counter()
  while True:
    for t in texts:
      fn(t)
    n += len(texts)
    elapsed = time.perf_counter() - start
    if elapsed >= _MIN_SECONDS.value:
      return n / elapsed


def bench_minhash(texts: list[str]) -> None:
  cfg = crawl_config.build_config("default", stages_lib.default_stages_config()).dedup.minhash
  hasher = dedup.MinHasher.from_config(cfg)
  num_perm, n = hasher.num_perm, cfg.n_grams
  words = np.mean([len(dedup.simplify_text(t).split()) for t in texts])
  print(f"\nMinHash signatures ({num_perm} permutations, word {n}-grams, {len(texts)} texts, {words:.0f} words avg)")
  ours = _repeat(hasher.signature, texts)
  print(f"  nanolm_jax dedup.MinHasher                 {ours:10.1f} sig/s")
  try:
    import datasketch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("  datasketch not installed (pip install datasketch): no comparison")
    return

  def shingles(text):
    w = dedup.simplify_text(text).split()
    return [" ".join(w[i:i + n]).encode("utf-8") for i in range(len(w) - n + 1)]

  template = datasketch.MinHash(num_perm=num_perm, seed=cfg.seed)

  def ds_batch(text):  # its fastest path: permutations reused, all shingles at once
    m = datasketch.MinHash(num_perm=num_perm, permutations=template.permutations,
                           scheme=template.scheme)
    m.update_batch(shingles(text))
    return m.hashvalues

  def ds_update(text):  # the per-shingle loop of its README
    m = datasketch.MinHash(num_perm=num_perm, permutations=template.permutations,
                           scheme=template.scheme)
    for s in shingles(text):
      m.update(s)
    return m.hashvalues

  batch = _repeat(ds_batch, texts)
  update = _repeat(ds_update, texts[:max(1, len(texts) // 4)])
  print(f"  datasketch {datasketch.__version__} ({template.scheme}) update_batch  {batch:10.1f} sig/s   ratio {ours / batch:5.1f}x")
  print(f"  datasketch {datasketch.__version__} ({template.scheme}) update loop   {update:10.1f} sig/s   ratio {ours / update:5.1f}x")

  # The same without the shared text normalisation: from word lists to signatures, i.e. the MinHash work itself.
  word_lists = [dedup.simplify_text(t).split() for t in texts]
  word_lists = [w for w in word_lists if len(w) >= n]
  ours_w = _repeat(lambda w: hasher.signature_from_shingles(dedup._shingle_hashes(w, n)), word_lists)

  def ds_words(w):
    m = datasketch.MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)
    m.update_batch([" ".join(w[i:i + n]).encode("utf-8") for i in range(len(w) - n + 1)])
    return m.hashvalues

  batch_w = _repeat(ds_words, word_lists)
  print(f"  from simplified words: ours {ours_w:10.1f} sig/s, datasketch update_batch {batch_w:10.1f} sig/s, "
        f"ratio {ours_w / batch_w:5.1f}x")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  py_logging.getLogger("trafilatura").setLevel(py_logging.ERROR)  # per-page notes drown the table
  tmp = tempfile.mkdtemp(prefix="bench_crawl_")
  paths = demo.write_demo_crawl(os.path.join(tmp, "warc"), num_files=_NUM_FILES.value, pages_per_file=_PAGES.value)
  cfg = crawl_config.get_config("default")
  stages = stages_lib.build_stages(cfg.stages)

  # Per stage, in one process: every document a stage sees is timed inside it.
  stats, timers = report_lib.Stats(), {}
  start = time.perf_counter()
  docs = [d for p in paths for d in local_runner.read_file(p, cfg.read, stats)]
  timers["read"] = time.perf_counter() - start
  texts = []
  for group in ("pre_dedup", "post_dedup"):
    for name, fn in stages[group]:
      start = time.perf_counter()
      out = []
      for d in docs:
        r = local_runner.apply_stage(name, fn, d)
        stats.record(name, r, d)
        if r.kept:
          out.append(r.doc)
      timers[name] = time.perf_counter() - start
      docs = out
      if name == "extract":
        texts = [d.text for d in docs]
    if group == "pre_dedup":
      hasher = local_runner.hasher_for(cfg)
      start = time.perf_counter()
      keys = [local_runner.dedup_keys(d, hasher) for d in docs]
      timers["dedup keys"] = time.perf_counter() - start
      stats.stage("dedup keys").docs_in = len(keys)
  print(f"Demo crawl: {len(paths)} files, {stats.stages['read'].docs_in} records  ({tmp})\n")
  print(f"{'stage':<20}{'docs in':>9}{'seconds':>10}{'docs/s':>13}")
  for name, seconds in timers.items():
    n = stats.stages[name].docs_in
    print(f"{name:<20}{n:>9}{seconds:>10.3f}{_rate(n, seconds):>13}")

  print("\nEnd to end (local runner: read, stages, dedup, PII, shards, report)")
  for workers in sorted({int(w) for w in _WORKERS.value}):
    cfg.runner.num_workers = workers
    start = time.perf_counter()
    rep = local_runner.run(cfg, paths, os.path.join(tmp, f"out{workers}"), progress=False)
    seconds = time.perf_counter() - start
    print(f"  {workers} worker(s): {rep['input_records']} records in {seconds:.2f}s = "
          f"{rep['input_records'] / seconds:.1f} records/s ({rep['kept']} kept)")

  bench_minhash(texts)


if __name__ == "__main__":
  app.run(main)
