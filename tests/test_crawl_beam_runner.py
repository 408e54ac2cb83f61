"""Tests for nanolm_jax.crawl.beam_runner: same output as the local runner, exact components on Beam."""

import glob
import random

import ml_collections
import pytest

beam = pytest.importorskip("apache_beam", reason="apache_beam is not installed (pip install -e '.[beam]')")

from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=g-import-not-at-top
from apache_beam.testing.util import assert_that, equal_to  # pylint: disable=g-import-not-at-top

from configs import crawl as crawl_config  # pylint: disable=g-import-not-at-top
from nanolm_jax.crawl import beam_runner, dedup, demo, local_runner, writer  # pylint: disable=g-import-not-at-top
from tests import crawl_copies  # pylint: disable=g-import-not-at-top

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


def _shards(out) -> list[bytes]:
  return [open(p, "rb").read() for p in sorted(glob.glob(writer.shard_glob(str(out))))]


def _cheap_cfg():
  cfg = crawl_config.build_config("demo", ml_collections.ConfigDict())
  cfg.runner.num_workers = 1
  cfg.output.num_shards = 2
  return cfg


def test_overlapping_inputs_on_beam_match_local(tmp_path):
  """A file given twice, copies, damaged and altered copies: same corpus and counts (repeats included) as local."""
  original = demo.write_demo_crawl(str(tmp_path / "a-original"), seed=5, num_files=2, pages_per_file=30)[0]
  paths = crawl_copies.overlapping_inputs(original, str(tmp_path / "copies"))
  cfg = _cheap_cfg()
  local = local_runner.run(cfg, paths, str(tmp_path / "local"), stage_builder=crawl_copies.cheap_stages, progress=False)
  on_beam = beam_runner.run(cfg, paths, str(tmp_path / "beam"), stage_builder=crawl_copies.cheap_stages)
  assert _shards(tmp_path / "beam") == _shards(tmp_path / "local") != []
  strip = lambda r: {k: v for k, v in r.items() if k not in _RUN_KEYS}
  assert strip(on_beam) == strip(local)
  ids = next(s for s in on_beam["stages"] if s["name"] == dedup.ID_STAGE)
  assert ids["dropped"]["id_dedup:repeated_id"] > 0 and on_beam["cluster_sizes"][dedup.ID_STAGE]
  assert on_beam["repeated_input_paths"] == local["repeated_input_paths"] == 1


def test_glob_input_is_matched_by_beam(tmp_path):
  """A glob string (as for gs://) goes through beam.io.fileio.MatchFiles: same output as the file list."""
  paths = demo.write_demo_crawl(str(tmp_path / "warc"), seed=2, num_files=2, pages_per_file=20)
  cfg = _cheap_cfg()
  local_runner.run(cfg, paths, str(tmp_path / "list"), stage_builder=crawl_copies.cheap_stages, progress=False)
  rep = beam_runner.run(cfg, str(tmp_path / "warc" / "*.warc.gz"), str(tmp_path / "glob"), crawl_copies.cheap_stages)
  assert _shards(tmp_path / "glob") == _shards(tmp_path / "list") != [] and rep["kept"] > 0


def test_connected_components_transform_matches_union_find():
  rng = random.Random(0)
  edges = sorted({(f"n{rng.randrange(60):02d}", f"n{rng.randrange(60):02d}") for _ in range(50)})
  edges = [(u, v) for u, v in edges if u != v] + [(f"p{i:02d}", f"p{i + 1:02d}") for i in range(20)]
  want = sorted(dedup.connected_components(edges).items())
  for rounds in (0, 2):
    with beam.Pipeline(runner=FnApiRunner()) as p:
      got = p | beam.Create(edges) | beam_runner.ConnectedComponents(rounds)
      assert_that(got, equal_to(want))
