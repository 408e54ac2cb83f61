"""Tests for nanolm_jax.crawl.local_runner: accounting, crash containment, resume, worker-count independence."""

import glob
import os

import ml_collections
import pytest

from configs import crawl as crawl_config
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import writer
from nanolm_jax.crawl.types import drop, keep

_RUN_KEYS = ("runner", "num_workers", "resumed_files", "seconds")


def _short(doc):
  return drop("fake:short") if len(doc.text) < 500 else keep(doc)


def _explode(doc):
  if doc.id.endswith("7>"):
    raise ZeroDivisionError("a stage bug on some pages")
  return keep(doc)


def _tag(doc):
  doc.metadata["pii"] = {"email": 1}
  return keep(doc)


def fake_stages(cfg):
  """Module-level (picklable) stand-in for stages.build_stages."""
  del cfg
  return {"pre_dedup": [("fake_quality", _short), ("fake_buggy", _explode)], "post_dedup": [("fake_pii", _tag)]}


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
  return demo.write_demo_crawl(str(tmp_path_factory.mktemp("warc")), num_files=3, pages_per_file=30)


def _cfg(workers: int) -> ml_collections.ConfigDict:
  cfg = crawl_config.build_config("demo", ml_collections.ConfigDict())
  cfg.runner.num_workers = workers
  cfg.output.num_shards = 3
  return cfg


def _outputs(out_dir: str) -> list[bytes]:
  return [open(p, "rb").read() for p in sorted(glob.glob(writer.shard_glob(out_dir)))]


def _counts(rep: dict) -> dict:
  return {k: v for k, v in rep.items() if k not in _RUN_KEYS}


@pytest.mark.slow
def test_one_and_two_workers_write_identical_output(crawl, tmp_path):
  rep1 = local_runner.run(_cfg(1), crawl, str(tmp_path / "w1"), stage_builder=fake_stages, progress=False)
  rep2 = local_runner.run(_cfg(2), crawl, str(tmp_path / "w2"), stage_builder=fake_stages, progress=False)
  assert _outputs(str(tmp_path / "w1")) == _outputs(str(tmp_path / "w2"))
  assert _counts(rep1) == _counts(rep2)
  # Accounting: every record kept, dropped or errored once; the stage that raised is counted, not fatal.
  assert rep1["input_records"] == rep1["kept"] + rep1["dropped"] + rep1["errored"]
  buggy = next(s for s in rep1["stages"] if s["name"] == "fake_buggy")
  assert buggy["errored"] == {"fake_buggy:exception:ZeroDivisionError": buggy["docs_in"] - buggy["docs_out"]} != {}
  assert [s["name"] for s in rep1["stages"]] == [
      "read",
      "fake_quality",
      "fake_buggy",
      "id_dedup",
      "exact_dedup",
      "minhash_dedup",
      "fake_pii",
  ]
  assert rep1["kept"] == len(list(writer.read_shards(writer.shard_glob(str(tmp_path / "w1"))))) > 0
  assert rep1["pii"] == {"email": rep1["kept"]}


def test_resume_skips_finished_files(crawl, tmp_path):
  out = str(tmp_path / "out")
  first = local_runner.run(_cfg(1), crawl, out, stage_builder=fake_stages, progress=False)
  dirs = sorted(glob.glob(os.path.join(out, local_runner.WORK_DIR, "files", "*")))
  mtimes = {d: os.stat(os.path.join(d, "docs.jsonl.gz")).st_mtime_ns for d in dirs}
  os.remove(os.path.join(dirs[0], local_runner.DONE))  # as if the job died while on this file
  before = _outputs(out)
  second = local_runner.run(_cfg(1), crawl, out, stage_builder=fake_stages, progress=False)
  assert second["resumed_files"] == len(dirs) - 1
  assert os.stat(os.path.join(dirs[0], "docs.jsonl.gz")).st_mtime_ns != mtimes[dirs[0]]
  assert all(os.stat(os.path.join(d, "docs.jsonl.gz")).st_mtime_ns == mtimes[d] for d in dirs[1:])
  assert _outputs(out) == before and _counts(first) == _counts(second)
  # Another config redoes everything.
  cfg = _cfg(1)
  cfg.dedup.minhash.seed = 7
  assert local_runner.run(cfg, crawl, out, stage_builder=fake_stages, progress=False)["resumed_files"] == 0
