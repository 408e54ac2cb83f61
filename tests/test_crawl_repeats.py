"""Overlapping inputs (a file given twice, copies, damaged and altered copies): counted as repeats, never fatal.

The reference: a run on the original alone. Each record id is kept once, from its first copy in (path, position)
order, so with the original sorting first the corpus is byte-identical to the single-file run, and the report counts
every other copy that reached dedup as ``id_dedup:repeated_id``.
"""

import glob
import os
import random

import ml_collections
import pytest

from configs import crawl as crawl_config
from nanolm_jax.crawl import demo, inputs, local_runner, report, writer
from tests import crawl_copies


@pytest.fixture(scope="module")
def original(tmp_path_factory):
  root = tmp_path_factory.mktemp("repeats")
  # Two files: the demo cuts its last one short; the first is whole.
  return demo.write_demo_crawl(str(root / "a-original"), seed=5, num_files=2, pages_per_file=30)[0]


def _cfg(workers: int = 1) -> ml_collections.ConfigDict:
  cfg = crawl_config.build_config("demo", ml_collections.ConfigDict())
  cfg.runner.num_workers = workers
  cfg.output.num_shards = 2
  return cfg


def _run(paths, out, workers: int = 1) -> dict:
  return local_runner.run(_cfg(workers), paths, str(out), stage_builder=crawl_copies.cheap_stages, progress=False)


def _shards(out) -> list[bytes]:
  return [open(p, "rb").read() for p in sorted(glob.glob(writer.shard_glob(str(out))))]


def _stage(rep: dict, name: str) -> dict:
  return next(s for s in rep["stages"] if s["name"] == name)


def _survivor_ids(paths) -> list[str]:
  """Ids of every copy that passes the pre-dedup stages, by reading each distinct file directly (no runner)."""
  stages = crawl_copies.cheap_stages(None)["pre_dedup"]
  ids = []
  for path in inputs.unique_paths(paths)[0]:
    for doc in local_runner.read_file(path, _cfg().read, report.Stats()):
      if local_runner.run_stages(doc, stages, report.Stats()) is not None:
        ids.append(doc.id)
  return ids


def test_overlapping_inputs_give_the_single_file_corpus_and_count_the_repeats(original, tmp_path):
  single = _run([original], tmp_path / "single")
  paths = crawl_copies.overlapping_inputs(original, str(tmp_path / "copies"))
  rep = _run(paths, tmp_path / "multi")
  assert _shards(tmp_path / "multi") == _shards(tmp_path / "single") and single["kept"] > 0
  survivors = _survivor_ids(paths)
  repeats = len(survivors) - len(set(survivors))
  assert repeats > 2 * single["kept"]
  assert _stage(rep, "id_dedup")["dropped"] == {"id_dedup:repeated_id": repeats}
  assert _stage(single, "id_dedup")["dropped"] == {}
  # Copies were read and filtered like any file (damage counted as errors), then dropped as repeats; the stages
  # after id_dedup saw exactly the single-file run's documents.
  assert rep["input_records"] > 4 * single["input_records"]
  assert {"read:truncated", "read:malformed"} & set(_stage(rep, "read")["errored"])
  after = lambda r: [s for s in r["stages"] if s["name"] in ("exact_dedup", "minhash_dedup", "fake_pii")]
  assert after(rep) == after(single)
  assert rep["repeated_input_paths"] == 1 and rep["input_files"] == len(paths) - 1
  assert rep["cluster_sizes"]["id_dedup"]  # ids seen 2, 3, ... times
  assert rep["input_records"] == rep["kept"] + rep["dropped"] + rep["errored"]


def test_the_first_copy_in_path_order_is_kept(original, tmp_path):
  """With the altered copy sorting first, every kept document is its version: the choice follows the paths."""
  _run([original], tmp_path / "single")
  single = {d.id: d.text for d in writer.read_shards(writer.shard_glob(str(tmp_path / "single")))}
  root = os.path.dirname(os.path.dirname(original))  # "<root>/0-first" sorts before "<root>/a-original"
  first = crawl_copies.write(
      os.path.join(root, "0-first", "altered.warc"), crawl_copies.altered(open(original, "rb").read())
  )
  _run([original, first], tmp_path / "multi")
  got = {d.id: d.text for d in writer.read_shards(writer.shard_glob(str(tmp_path / "multi")))}
  assert got == {i: t.replace(" the ", " THE ") for i, t in single.items()} != single


@pytest.mark.slow
def test_two_hundred_damaged_copies(original, tmp_path):
  """The issue's reproduction: 200 damaged copies of one WARC alongside it, two workers; the job finishes with the
  original's corpus (as one worker wrote it alone) and every surviving copy counted as a repeat."""
  _run([original], tmp_path / "single")
  data, rng = open(original, "rb").read(), random.Random(0)
  paths = [original] + [
      crawl_copies.write(str(tmp_path / "copies" / f"{i:03d}.warc.gz"), crawl_copies.damaged(data, rng))
      for i in range(200)
  ]
  rep = _run(paths, tmp_path / "multi", workers=2)
  assert _shards(tmp_path / "multi") == _shards(tmp_path / "single")
  survivors = _survivor_ids(paths)
  assert _stage(rep, "id_dedup")["dropped"] == {"id_dedup:repeated_id": len(survivors) - len(set(survivors))}
  assert rep["errored"] > 100 and rep["input_records"] == rep["kept"] + rep["dropped"] + rep["errored"]
