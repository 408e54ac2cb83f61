"""Overlapping crawl inputs for the crawl tests: copies of a demo WARC, whole, damaged or with records altered.

Not a test module (no ``test_`` prefix): tests/test_crawl_repeats.py and tests/test_crawl_beam_runner.py share it.
"""

import gzip
import os
import random

from nanolm_jax.crawl.types import drop, keep


def short(doc):
  return drop("fake:short") if len(doc.text) < 500 else keep(doc)


def tag(doc):
  doc.metadata["pii"] = {"email": 1}
  return keep(doc)


def cheap_stages(cfg):
  """Picklable stand-in for stages.build_stages: verdicts depend on the text's length only (no extraction)."""
  del cfg
  return {"pre_dedup": [("fake_quality", short)], "post_dedup": [("fake_pii", tag)]}


def write(path: str, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


def altered(data_gz: bytes) -> bytes:
  """The uncompressed WARC with " the " -> " THE " everywhere: same record ids and lengths, other texts."""
  raw = gzip.decompress(data_gz)
  assert raw.count(b" the ") > 10
  return raw.replace(b" the ", b" THE ")


def damaged(data_gz: bytes, rng: random.Random) -> bytes:
  """A damaged copy of a WARC.gz: truncated, bit-flipped, spliced with junk, or flipped and truncated.

  Every record that still reads is byte-identical to the original's (each gzip member carries a CRC), so only its
  copies' count changes.
  """
  kind = rng.choice(["truncate", "flip", "both", "splice"])
  out = bytearray(data_gz)
  if kind in ("flip", "both"):
    for _ in range(rng.randint(1, 8)):
      out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
  if kind == "splice":
    at = rng.randrange(len(out))
    out[at : at + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
  if kind in ("truncate", "both"):
    out = out[: rng.randrange(len(out) + 1)]
  return bytes(out)


def overlapping_inputs(original: str, root: str) -> list[str]:
  """The original plus overlapping inputs, all sorting after it: the same path spelled again, an identical copy
  elsewhere, the file twice in one (every record repeated inside it), a truncated copy, a bit-flipped copy and a
  copy with every " the " in caps."""
  data = open(original, "rb").read()
  name = os.path.basename(original)
  folder = os.path.dirname(original)
  return [
      original,
      os.path.join(folder, ".", name),  # the same file, spelled differently: read once
      write(os.path.join(root, "b-copy", name), data),
      write(os.path.join(root, "c-twice", name), data + data),
      write(os.path.join(root, "d-truncated", name), data[: len(data) * 2 // 3]),
      write(os.path.join(root, "e-flipped", name), data[:5000] + bytes([data[5000] ^ 0x10]) + data[5001:]),
      write(os.path.join(root, "f-altered", name.removesuffix(".gz")), altered(data)),
  ]
