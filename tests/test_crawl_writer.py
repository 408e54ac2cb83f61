"""Tests for nanolm_jax.crawl.writer: deterministic shards, the pretraining loader reading them, and TFDS."""

import gzip
import json
import random

from nanolm_jax.crawl import writer
from nanolm_jax.crawl.types import Document
from nanolm_jax.data import sources


def _docs(n: int = 50) -> list[Document]:
  return [
      Document(
          id=f"<urn:uuid:{i:04d}>",
          url=f"https://site{i % 7}.org/p{i}",
          text=f"Text {i} — é\nline two",
          metadata={"language": "en", "score": i / 10},
      )
      for i in range(n)
  ]


def _read_bytes(paths):
  return [open(p, "rb").read() for p in paths]


def test_shards_are_byte_identical_whatever_the_input_order(tmp_path):
  docs = _docs()
  a = writer.write_shards(docs, str(tmp_path / "a"), 4)
  shuffled = list(docs)
  random.Random(0).shuffle(shuffled)
  b = writer.write_shards(shuffled, str(tmp_path / "b"), 4)
  assert [p.split("/")[-1] for p in a] == [f"crawl-{i:05d}-of-00004.jsonl.gz" for i in range(4)]
  assert _read_bytes(a) == _read_bytes(b)


def test_each_doc_lands_once_in_its_hash_shard_sorted_by_id(tmp_path):
  docs = _docs()
  paths = writer.write_shards(docs, str(tmp_path), 3)
  seen = []
  for i, path in enumerate(paths):
    with gzip.open(path, "rt", encoding="utf-8") as f:
      records = [json.loads(line) for line in f]
    ids = [r["id"] for r in records]
    assert ids == sorted(ids)
    assert all(writer.shard_of(x, 3) == i for x in ids)
    seen += ids
  assert sorted(seen) == sorted(d.id for d in docs)
  assert sorted(writer.read_shards(writer.shard_glob(str(tmp_path))), key=lambda d: d.id) == docs


def test_empty_shards_are_written(tmp_path):
  paths = writer.write_shards(_docs(1), str(tmp_path), 5)
  assert len(paths) == 5 and sum(len(list(writer.read_jsonl_gz(p))) for p in paths) == 1


def test_pretraining_loader_reads_the_shards(tmp_path):
  docs = _docs(10)
  writer.write_shards(docs, str(tmp_path), 2)
  spec = sources.parse_sources(f"files:{writer.shard_glob(str(tmp_path))}")[0]
  texts = []
  for path in sources.matched_files(spec):
    file_docs, bad = sources._read_file(path)  # pylint: disable=protected-access
    assert bad == 0
    texts += file_docs
  assert sorted(texts) == sorted(d.text for d in docs)


def test_build_tfds_round_trip(tmp_path):
  docs = _docs(12)
  writer.write_shards(docs, str(tmp_path / "out"), 3)
  builder = writer.build_tfds(writer.shard_glob(str(tmp_path / "out")), str(tmp_path / "tfds"))
  ds = builder.as_data_source("train")
  got = sorted((ds[i]["id"].decode(), ds[i]["text"].decode(), json.loads(ds[i]["metadata"])) for i in range(len(ds)))
  assert got == sorted((d.id, d.text, d.metadata) for d in docs)
  # Rebuilding over new shards does not reuse the stale copy.
  writer.write_shards(docs[:5], str(tmp_path / "out"), 3)
  assert (
      len(writer.build_tfds(writer.shard_glob(str(tmp_path / "out")), str(tmp_path / "tfds")).as_data_source("train"))
      == 5
  )
