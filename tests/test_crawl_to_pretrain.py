"""The crawl pipeline's output is pretraining input: demo WARCs -> local runner -> shards -> a few training steps."""

import glob
import json
import math
import os

import pytest

from configs import crawl as crawl_config
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import trainer
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import writer
from nanolm_jax.data import sources
from tests.conftest import make_config, tiny_overrides

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crawl_out(tmp_path_factory) -> str:
  """Shards of a small demo crawl (all real stages, dedup included) written by the local runner."""
  root = tmp_path_factory.mktemp("crawl")
  paths = demo.write_demo_crawl(str(root / "warc"), num_files=2, pages_per_file=40)
  cfg = crawl_config.get_config("demo")
  cfg.runner.num_workers = 1  # in-process: no worker start-up in a seconds-long test
  out = str(root / "out")
  report = local_runner.run(cfg, paths, out, progress=False)
  assert report["kept"] >= 20, report
  return out


def _crawl_texts(out: str) -> set[str]:
  return {doc.text for path in glob.glob(writer.shard_glob(out)) for doc in writer.read_jsonl_gz(path)}


def test_pretraining_trains_on_crawl_shards(crawl_out, tmp_path):
  spec = f"files:{crawl_out}/crawl-*.jsonl.gz"
  crawl_texts = _crawl_texts(crawl_out)
  # A tokenizer of the crawl's own text, as a user would train one before pretraining on it.
  tok_path = str(tmp_path / "tokenizer.model")
  tokenizer_lib.SentencePieceTokenizer.train(sorted(crawl_texts), 512, tok_path)
  overrides = tiny_overrides(spec, tok_path)
  overrides.update(
      {
          "train.steps": 8,
          "train.eval_every": 4,
          "train.checkpoint_every": 0,
          "sample.max_new_tokens": 4,
          "optim.warmup_steps": 2,
      }
  )
  cfg = make_config("tiny", **overrides)

  # The data spec resolves to exactly the crawl's shards, and both splits are crawl documents: validation is a
  # held-out part of the shards, disjoint from what the model trains on.
  assert sources.matched_files(sources.parse_sources(spec)[0]) == sorted(glob.glob(writer.shard_glob(crawl_out)))
  val = list(sources.load_texts(cfg.data, "validation"))
  train = list(sources.load_texts(cfg.data, "train"))
  assert val and set(val) <= crawl_texts
  assert not set(val) & set(train)
  assert set(val) | set(train) == crawl_texts

  workdir = str(tmp_path / "run")
  final = trainer.train(cfg, workdir, pretraining.build(None))
  assert final["step"] == 8 and not final["preempted"]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["loss"] for r in rows if "loss" in r]
  val_losses = [r["val_loss"] for r in rows if "val_loss" in r]
  assert len(losses) == 8 and all(math.isfinite(x) for x in losses), losses
  assert len(val_losses) == 3 and all(math.isfinite(x) for x in val_losses), rows  # steps 0, 4 and 8
  # Learning happens: the first steps sit near ln(512) = 6.2; a few updates bring both losses down.
  assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1, losses
  assert val_losses[-1] < val_losses[0], val_losses
