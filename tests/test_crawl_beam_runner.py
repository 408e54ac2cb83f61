"""Tests for nanolm_jax.crawl.beam_runner: same output as the local runner, exact components on Beam."""

import glob
import random

import pytest

beam = pytest.importorskip("apache_beam", reason="apache_beam is not installed (pip install -e '.[beam]')")

from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=g-import-not-at-top
from apache_beam.testing.util import assert_that, equal_to  # pylint: disable=g-import-not-at-top

from configs import crawl as crawl_config  # pylint: disable=g-import-not-at-top
from nanolm_jax.crawl import beam_runner, dedup, demo, local_runner, writer  # pylint: disable=g-import-not-at-top

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

_RUN_KEYS = ("runner", "num_workers", "resumed_files", "seconds", "shards", "input_files")


def test_local_and_beam_write_identical_documents(tmp_path):
  paths = demo.write_demo_crawl(str(tmp_path / "warc"), num_files=3, pages_per_file=40)
  cfg = crawl_config.get_config("demo")
  cfg.dedup.cc_rounds = 1  # few rounds: the residual union-find has work to do
  local = local_runner.run(cfg, paths, str(tmp_path / "local"), progress=False)
  cfg.runner.num_workers = 1  # in-process FnApiRunner: quick to start
  on_beam = beam_runner.run(cfg, paths, str(tmp_path / "beam"))
  read = lambda d: [open(p, "rb").read() for p in sorted(glob.glob(writer.shard_glob(str(tmp_path / d))))]
  assert read("local") == read("beam") and len(read("beam")) == cfg.output.num_shards
  strip = lambda r: {k: v for k, v in r.items() if k not in _RUN_KEYS}
  assert strip(local) == strip(on_beam)
  assert on_beam["input_records"] == on_beam["kept"] + on_beam["dropped"] + on_beam["errored"]
  assert on_beam["kept"] > 0 and on_beam["cluster_sizes"]["minhash_dedup"]


def test_connected_components_transform_matches_union_find():
  rng = random.Random(0)
  edges = sorted({(f"n{rng.randrange(60):02d}", f"n{rng.randrange(60):02d}") for _ in range(50)})
  edges = [(u, v) for u, v in edges if u != v] + [(f"p{i:02d}", f"p{i + 1:02d}") for i in range(20)]
  want = sorted(dedup.connected_components(edges).items())
  for rounds in (0, 2):
    with beam.Pipeline(runner=FnApiRunner()) as p:
      got = p | beam.Create(edges) | beam_runner.ConnectedComponents(rounds)
      assert_that(got, equal_to(want))
