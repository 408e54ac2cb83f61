r"""Throughput of the crawl pipeline on the demo crawl: docs/s per stage, end to end, and MinHash signatures/s.

  python -m experiments.bench_crawl                      # 4 files x 80 pages
  python -m experiments.bench_crawl --num_files=8 --pages_per_file=200 --workers=1,2

MinHash is compared with datasketch (pip install -e '.[bench]') at the same parameters (112 permutations =
14 bands x 8 rows, word 5-grams of the same simplified text), the two sides timed in turns in the same run, from the
raw text and from the simplified text (see bench_minhash for exactly what is timed); ratios ours / datasketch are
printed against both its update_batch and its per-shingle update loop.
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
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 2.0, "Seconds each MinHash candidate is timed for (in turns).")


def _rate(n: int, seconds: float) -> str:
  return f"{n / seconds:10.1f}/s" if seconds > 0 else "       inf"


def _interleaved(fns: dict, inputs: dict, rounds: int = 4) -> dict[str, float]:
  """Items per second of each ``fns[k]`` over ``inputs[k]``, the candidates taking turns round by round.

  Turns share the machine's noise (other jobs on the cores) between the sides; each side gets about
  --min_seconds in total and its rate is total items / total seconds.
  """
  done = {k: 0 for k in fns}
  spent = {k: 0.0 for k in fns}
  budget = _MIN_SECONDS.value / rounds
  for _ in range(rounds):
    for k, fn in fns.items():
      start = time.perf_counter()
      while True:
        for x in inputs[k]:
          fn(x)
        done[k] += len(inputs[k])
        if time.perf_counter() - start >= budget:
          break
      spent[k] += time.perf_counter() - start
  return {k: done[k] / spent[k] for k in fns}


def bench_minhash(texts: list[str]) -> None:
  """Signatures/s, ours vs datasketch, on the same texts at the same parameters.

  Two setups, each timed per signature on one thread of this process (first calls, i.e. numba's compile or cache
  load, and datasketch's permutation draw happen before timing):
    raw text:        text -> simplify_text -> shingles -> signature, simplify_text counted on both sides;
    simplified text: the same from simplify_text's output (computed once, outside the timing, and shared), so each
                     side is timed for its own shingling (ours: bytes -> rolling n-gram hashes; datasketch: word
                     n-gram strings -> SHA1) plus the permutations and the min.
  """
  cfg = crawl_config.build_config("default", stages_lib.default_stages_config()).dedup.minhash
  hasher = dedup.MinHasher.from_config(cfg)
  num_perm, n = hasher.num_perm, cfg.n_grams
  simplified = [dedup.simplify_text(t) for t in texts]
  keep = [i for i, s in enumerate(simplified) if len(s.split()) >= n]  # both sides skip texts too short to shingle
  texts, simplified = [texts[i] for i in keep], [simplified[i] for i in keep]
  words = np.mean([len(s.split()) for s in simplified])
  chars = np.mean([len(t) for t in texts])
  print(
      f"\nMinHash signatures: {num_perm} permutations ({cfg.num_buckets} bands x {cfg.hashes_per_bucket} rows), "
      f"word {n}-grams; {len(texts)} extracted demo texts, {chars:.0f} chars / {words:.0f} words / "
      f"{words - n + 1:.0f} shingles avg"
  )
  print(
      f"  one thread in one process ({os.cpu_count()} cores visible, shared); ours: "
      f"{'numba kernel' if dedup._USE_NUMBA else 'numpy (numba not installed)'}, 64-bit (a*x+b) mod 2^61-1"
  )
  hasher.signature(texts[0])  # compile or load the numba kernels outside the timing

  def numpy_fallback(s):
    dedup._USE_NUMBA = False  # pylint: disable=protected-access
    try:
      return hasher.signature_of_simplified(s)
    finally:
      dedup._USE_NUMBA = dedup.numba is not None  # pylint: disable=protected-access

  try:
    import datasketch  # pylint: disable=g-import-not-at-top
  except ImportError:
    rates = _interleaved(
        {"ours": hasher.signature_of_simplified, "numpy": numpy_fallback}, {"ours": simplified, "numpy": simplified}
    )
    print(f"  from simplified text: ours {rates['ours']:.1f} sig/s, numpy fallback {rates['numpy']:.1f} sig/s")
    print("  datasketch not installed (pip install -e '.[bench]'): no comparison")
    return

  template = datasketch.MinHash(num_perm=num_perm, seed=cfg.seed)

  def ds_new():
    return datasketch.MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)

  def ds_shingles(s):
    w = s.split()
    return [" ".join(w[i : i + n]).encode("utf-8") for i in range(len(w) - n + 1)]

  def ds_batch(s):  # its fastest path: permutations reused, all shingles at once
    m = ds_new()
    m.update_batch(ds_shingles(s))
    return m.hashvalues

  def ds_update(s):  # the per-shingle loop of its README
    m = ds_new()
    for sh in ds_shingles(s):
      m.update(sh)
    return m.hashvalues

  few = max(1, len(texts) // 8)  # the per-shingle loop is slow: a subset keeps its turns short
  setups = {
      "raw text": {
          "ours": (hasher.signature, texts),
          "update_batch": (lambda t: ds_batch(dedup.simplify_text(t)), texts),
          "update loop": (lambda t: ds_update(dedup.simplify_text(t)), texts[:few]),
      },
      "simplified text": {
          "ours": (hasher.signature_of_simplified, simplified),
          "ours, numpy fallback": (numpy_fallback, simplified),
          "update_batch": (ds_batch, simplified),
          "update loop": (ds_update, simplified[:few]),
      },
  }
  version = f"datasketch {datasketch.__version__} ({template.scheme})"
  for setup, cands in setups.items():
    rates = _interleaved({k: f for k, (f, _) in cands.items()}, {k: x for k, (_, x) in cands.items()})
    print(f"  from {setup}:")
    for k, rate in rates.items():
      name = f"{version} {k}" if k.startswith("update") else f"nanolm_jax {k}"
      print(f"    {name:<42}{rate:10.1f} sig/s")
    for k in ("update_batch", "update loop"):
      print(f"    ratio ours / {k:<29}{rates['ours'] / rates[k]:10.1f}x")


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
      # One-off per-process costs out of the docs/s: numba's kernel load (or first compile) and the Unicode tables.
      local_runner.dedup_keys(docs[0], hasher)
      dedup.simplify_text("é٣")
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
    print(
        f"  {workers} worker(s): {rep['input_records']} records in {seconds:.2f}s = "
        f"{rep['input_records'] / seconds:.1f} records/s ({rep['kept']} kept)"
    )

  bench_minhash(texts)


if __name__ == "__main__":
  app.run(main)
