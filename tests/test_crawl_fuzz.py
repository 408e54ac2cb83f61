"""Fuzz: truncated and bit-flipped WARC files through the reader and cheap stages never crash or lose a record."""

import gzip
import os
import random

import pytest

from configs import crawl as crawl_config
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import report
from nanolm_jax.crawl import stages as stages_lib

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

_CHEAP = ("url_filter", "gopher_quality", "c4", "fineweb_quality", "pii")  # no extraction/langid: keep it fast
_CASES = 500  # 1000 took 23 s of the suite; every mutation kind still comes up ~125 times


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp("fuzz")
  path = demo.write_demo_crawl(str(d), seed=3, num_files=2, pages_per_file=8)[0]  # the last one is truncated
  compressed = open(path, "rb").read()
  cfg = crawl_config.get_config("demo")
  built = stages_lib.build_stages(cfg.stages)
  stages = [(n, f) for group in ("pre_dedup", "post_dedup") for n, f in built[group] if n in _CHEAP]
  return d, {"gz": compressed, "raw": gzip.decompress(compressed)}, cfg, stages


def _mutate(rng: random.Random, data: bytes) -> bytes:
  kind = rng.choice(["truncate", "flip", "both", "splice"])
  out = bytearray(data)
  if kind in ("flip", "both"):
    for _ in range(rng.randint(1, 8)):
      out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
  if kind == "splice":  # a run of junk bytes, as a bad disk or network would leave
    at = rng.randrange(len(out))
    out[at : at + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
  if kind in ("truncate", "both"):
    out = out[: rng.randrange(len(out) + 1)]
  return bytes(out)


def test_fuzzed_warcs_never_crash_and_accounting_holds(setup):
  d, originals, cfg, stages = setup
  rng = random.Random(0)
  order = ["read"] + [n for n, _ in stages]
  outcomes = {"read": 0, "errored": 0}
  for case in range(_CASES):
    fmt = "gz" if case % 2 else "raw"
    path = os.path.join(d, f"case.warc{'.gz' if fmt == 'gz' else ''}")
    with open(path, "wb") as f:
      f.write(_mutate(rng, originals[fmt]))
    stats, kept = report.Stats(), 0
    for doc in local_runner.read_file(path, cfg.read, stats):
      if local_runner.run_stages(doc, stages, stats) is not None:
        kept += 1
    rep = report.build_report(stats, order, kept)  # raises AccountingError on a lost or double-counted record
    outcomes["read"] += rep["stages"][0]["docs_out"]
    outcomes["errored"] += rep["errored"]
  # The fuzzing reached both outcomes: damaged records were reported and intact ones still came through.
  assert outcomes["read"] > 0 and outcomes["errored"] > 0
