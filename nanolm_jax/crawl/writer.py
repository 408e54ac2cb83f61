"""Output of the crawl pipeline: deterministic gz JSONL shards, and a TFDS (array_record) dataset built from them.

A document's shard is a hash of its id and a shard is sorted by id, so the bytes of every shard depend only on the
set of kept documents: the local runner (any worker count) and the Beam runner write identical files. Lines are
``{"id", "metadata", "text", "url"}`` objects, which ``files:<dir>/*.jsonl.gz`` in the pretraining data spec reads.
"""

from __future__ import annotations

import functools
import glob as globlib
import gzip
import hashlib
import io
import json
import os
import shutil
from typing import Any, Iterable, Iterator

from nanolm_jax.crawl.types import Document

SHARD_PREFIX = "crawl"
SHARD_SUFFIX = ".jsonl.gz"


def shard_of(doc_id: str, num_shards: int) -> int:
  """Stable shard index of a document (Python's hash() is salted per process, so it cannot be used)."""
  digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") % num_shards


def shard_path(out_dir: str, index: int, num_shards: int, prefix: str = SHARD_PREFIX) -> str:
  return os.path.join(out_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}")


def shard_glob(out_dir: str, prefix: str = SHARD_PREFIX) -> str:
  return os.path.join(out_dir, f"{prefix}-*-of-*{SHARD_SUFFIX}")


def to_record(doc: Document) -> dict[str, Any]:
  return {"text": doc.text, "id": doc.id, "url": doc.url, "metadata": doc.metadata}


def from_record(record: dict[str, Any]) -> Document:
  return Document(id=record["id"], url=record["url"], text=record["text"], metadata=record.get("metadata") or {})


def encode_line(doc: Document) -> str:
  """One JSON line; sorted keys so that equal documents give equal bytes."""
  return json.dumps(to_record(doc), ensure_ascii=False, sort_keys=True) + "\n"


def _gzip_bytes(lines: Iterable[str]) -> bytes:
  buf = io.BytesIO()
  # mtime=0 and no file name in the header: the archive's bytes depend on its content only.
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as f:
    for line in lines:
      f.write(line.encode("utf-8"))
  return buf.getvalue()


def write_atomic(path: str, data: bytes) -> None:
  """Writes via a temporary file and a rename, so a crash never leaves a half-written file under ``path``."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_jsonl_gz(path: str, docs: Iterable[Document]) -> int:
  """Writes documents in the given order; returns how many."""
  lines = [encode_line(d) for d in docs]
  write_atomic(path, _gzip_bytes(lines))
  return len(lines)


def read_jsonl_gz(path: str) -> Iterator[Document]:
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield from_record(json.loads(line))


def encode_shard(docs: Iterable[Document]) -> bytes:
  """The bytes of a shard: its documents sorted by id, gzipped reproducibly (the Beam runner uploads these)."""
  return _gzip_bytes(encode_line(d) for d in sorted(docs, key=lambda d: d.id))


def write_shard(out_dir: str, index: int, num_shards: int, docs: Iterable[Document]) -> str:
  """Writes one output shard; an empty shard is still written so that the set of files is fixed."""
  path = shard_path(out_dir, index, num_shards)
  write_atomic(path, encode_shard(docs))
  return path


def write_shards(docs: Iterable[Document], out_dir: str, num_shards: int) -> list[str]:
  """Distributes documents over ``num_shards`` shards by id hash; returns the shard paths in order."""
  buckets: list[list[Document]] = [[] for _ in range(num_shards)]
  for doc in docs:
    buckets[shard_of(doc.id, num_shards)].append(doc)
  return [write_shard(out_dir, i, num_shards, bucket) for i, bucket in enumerate(buckets)]


def read_shards(pattern: str) -> Iterator[Document]:
  """All documents of the shards matching ``pattern``, in shard order."""
  for path in sorted(globlib.glob(pattern)):
    yield from read_jsonl_gz(path)


@functools.cache
def _builder_class():
  """The TFDS builder class, made once: TFDS registers builders by class name and refuses a second definition."""
  from nanolm_jax.data.tfds_compat import tfds  # pylint: disable=g-import-not-at-top  # heavy; only here

  class CrawlCorpus(tfds.core.GeneratorBasedBuilder):
    """Documents kept by the crawl pipeline (features: text, id, url, metadata as a JSON string)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From the crawl pipeline's gz JSONL shards."}

    def __init__(self, *, pattern: str = "", **kwargs: Any):
      kwargs.setdefault("file_format", "array_record")  # random access via tfds.data_source, no TensorFlow
      super().__init__(**kwargs)
      self._pattern = pattern

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict(
              {
                  "text": tfds.features.Text(),
                  "id": tfds.features.Text(),
                  "url": tfds.features.Text(),
                  "metadata": tfds.features.Text(),
              }
          ),
          description="Documents kept by the crawl pipeline.",
      )

    def _split_generators(self, dl_manager: Any):
      del dl_manager  # nothing to download
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for doc in read_shards(self._pattern):
        yield doc.id, {
            "text": doc.text,
            "id": doc.id,
            "url": doc.url,
            "metadata": json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True),
        }

  return CrawlCorpus


def build_tfds(pattern: str, data_dir: str):
  """Prepares TFDS dataset ``crawl_corpus`` (array_record, split 'train') from the shards matching ``pattern``.

  Returns the builder: ``builder.as_data_source("train")`` reads it without TensorFlow, as does ``tfds:crawl_corpus``
  in the pretraining data spec with ``data.data_dir=<data_dir>``. An existing copy in ``data_dir`` is rebuilt.
  """
  from nanolm_jax.data.tfds_compat import tfds  # pylint: disable=g-import-not-at-top

  if not globlib.glob(pattern):
    raise ValueError(f"build_tfds: {pattern!r} matches no shards.")
  builder = _builder_class()(pattern=pattern, data_dir=data_dir)
  # The version does not change when the shards do, so a stale copy must be regenerated, not reused.
  mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
  if os.path.isdir(builder.data_dir):
    shutil.rmtree(builder.data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return builder
