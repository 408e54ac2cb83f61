"""Exact and MinHash-LSH near-duplicate removal, as pure functions that both runners compose.

The work splits into four steps so that no step needs the whole corpus on one worker:

  (a) map: ``exact_key(text)`` and ``MinHasher.band_keys(text)`` per document;
  (b) group by key: every group of documents sharing a key becomes star edges ``(min id, other id)``
      (``group_edges``; ``band_edges_sorted`` does it vectorised for the local runner);
  (c) connected components over the edges: ``connected_components`` (union-find, local) or rounds of
      ``large_star`` / ``small_star`` (Kiveris et al., 2014) which the Beam runner runs as GroupByKeys;
  (d) survivors: the smallest id in a component is kept, every other member is dropped.

Defaults follow datatrove's FineWeb recipe: simplified text, word 5-grams, 14 bands x 8 rows = 112 permutations,
universal hashing ``(a * x + b) mod (2^61 - 1)`` with parameters drawn from ``RandomState(seed)``.

Signatures come from one fused numba kernel (bytes of the simplified text -> word n-gram hashes -> 112 permutations
-> min) when numba imports, else from the numpy code below it; both compute the same integers bit for bit, so
outputs do not depend on which one a worker had.

This module is step (a), the hashing of text; steps (b)-(d) live in dedup_graph.py and are re-exported here, so the
runners, tests and benchmarks keep one entry point.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import unicodedata
from typing import Iterable, Sequence

import ml_collections
import numpy as np

# ``name as name`` marks a deliberate re-export (ruff and type checkers read it so).
from nanolm_jax.crawl.dedup_graph import band_edges_sorted as band_edges_sorted
from nanolm_jax.crawl.dedup_graph import cluster_sizes as cluster_sizes
from nanolm_jax.crawl.dedup_graph import connected_components as connected_components
from nanolm_jax.crawl.dedup_graph import duplicates_from_labels as duplicates_from_labels
from nanolm_jax.crawl.dedup_graph import exact_duplicates as exact_duplicates
from nanolm_jax.crawl.dedup_graph import finish_labels as finish_labels
from nanolm_jax.crawl.dedup_graph import group_edges as group_edges
from nanolm_jax.crawl.dedup_graph import labels_from_star_edges as labels_from_star_edges
from nanolm_jax.crawl.dedup_graph import large_star as large_star
from nanolm_jax.crawl.dedup_graph import minhash_duplicates as minhash_duplicates
from nanolm_jax.crawl.dedup_graph import orient_for_small_star as orient_for_small_star
from nanolm_jax.crawl.dedup_graph import small_star as small_star
from nanolm_jax.crawl.dedup_graph import star_rounds_local as star_rounds_local

try:  # Optional: ~10x faster signatures. Without it the numpy path gives identical results, only slower.
  import numba  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - exercised by forcing _USE_NUMBA off in the tests
  numba = None

# The characters datatrove's simplify_text removes (ASCII/CJK punctuation and control characters).
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
)
_PUNCT_TABLE = {ord(c): " " if c.isspace() else None for c in PUNCTUATION}
# ASCII text in one translate: punctuation deleted, whitespace -> " " (squeezed after), and with numbers=True every
# digit -> "0" (runs of "0" are exactly the former digit runs, squeezed to one "0" after). Keyed by `numbers`.
_ZERO_RUNS = re.compile("00+")
_ASCII_WHITESPACE = {cp: " " for cp in range(128) if chr(cp).isspace()}
_ASCII_TABLES = {
    numbers: {
        **{cp: v for cp, v in _PUNCT_TABLE.items() if cp < 128},
        **_ASCII_WHITESPACE,
        **({cp: "0" for cp in range(ord("0"), ord("9") + 1)} if numbers else {}),
    }
    for numbers in (False, True)
}

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_MERSENNE = (1 << 61) - 1
_MERSENNE_U64 = _U64(_MERSENNE)
_SHIFT61 = _U64(61)
# Odd base for the rolling byte hash: odd numbers are invertible modulo 2^64, which is what lets a prefix sum
# give any substring's polynomial hash in O(1) (see _shingle_hashes).
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)

# A record id seen more than once (one capture in two input files, or twice in one): the first copy in (path, position)
# order is kept, the rest dropped before exact dedup, so the later steps see each id once.
ID_STAGE = "id_dedup"
ID_REASON = "id_dedup:repeated_id"
EXACT_STAGE = "exact_dedup"
MINHASH_STAGE = "minhash_dedup"
EXACT_REASON = "exact_dedup:duplicate"
MINHASH_REASON = "minhash_dedup:near_duplicate"


def default_config() -> ml_collections.ConfigDict:
  """Dedup settings; the minhash defaults are datatrove's MinhashConfig (with 64-bit hashes)."""
  return ml_collections.ConfigDict(
      {
          "exact": {"enabled": True},
          "minhash": {
              "enabled": True,
              "n_grams": 5,
              "num_buckets": 14,
              "hashes_per_bucket": 8,
              "seed": 1,
          },
          # Beam only: rounds of large-star/small-star before the (small) unconverged rest is finished on one worker.
          "cc_rounds": 4,
      }
  )


@functools.cache
def _combining_marks() -> dict[int, None]:
  """str.translate table deleting every nonspacing mark (category Mn): C speed instead of a per-char loop."""
  return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn"}


@functools.cache
def _unicode_digits() -> dict[int, str]:
  """str.translate table mapping every decimal digit (what the regex ``\\d`` matches in str patterns) to "0"."""
  return {cp: "0" for cp in range(sys.maxunicode + 1) if chr(cp).isdecimal()}


def simplify_text(text: str, diacritics: bool = True, numbers: bool = True) -> str:
  """datatrove's simplify_text: lowercase, one space between words, no punctuation, no diacritics, digits -> 0.

  Same output as the regex version (``\\s+`` -> " ", delete punctuation, NFD minus marks, ``\\d+`` -> "0", words
  joined by single spaces) but ~10x faster on ASCII, all in C string methods: regex substitutions cost 10+ ns per
  character and split/join one object per word.
  """
  text = text.lower()
  if not text.isascii():
    # Whitespace among the punctuation becomes a space rather than vanishing, as the regex's \s+ -> " " did before
    # the deletion; all other whitespace survives until the final split.
    text = text.translate(_PUNCT_TABLE)
  if text.isascii():  # most of a crawl (often once ’ and “ are gone): one translate, no per-word objects
    text = text.translate(_ASCII_TABLES[numbers])  # ASCII punctuation deleted again: a no-op after the above
    return _squeeze_spaces(_squeeze_zeros(text) if numbers else text).strip(" ")
  if diacritics:
    text = unicodedata.normalize("NFD", text).translate(_combining_marks())
  if numbers:
    text = _squeeze_zeros(text.translate(_unicode_digits()))
  # Removing punctuation can leave double spaces ("a - b"); words are what count.
  return " ".join(text.split())


def _squeeze_zeros(text: str) -> str:
  # The cheap substring test first: most texts have no "00" and skip the regex.
  return _ZERO_RUNS.sub("0", text) if "00" in text else text


def _squeeze_spaces(text: str) -> str:
  # Runs of spaces are rare and short after the translate; each pass halves every run.
  while "  " in text:
    text = text.replace("  ", " ")
  return text


def exact_key(text: str) -> str:
  """128-bit digest of the text up to case, spacing and punctuation (numbers and accents still count)."""
  normalized = simplify_text(text, diacritics=False, numbers=False)
  return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """Vectorised splitmix64 finaliser: turns a weak (polynomial) hash into well-mixed 64 bits."""
  x = x ^ (x >> _U64(30))
  x = x * _U64(0xBF58476D1CE4E5B9)
  x = x ^ (x >> _U64(27))
  x = x * _U64(0x94D049BB133111EB)
  return x ^ (x >> _U64(31))


class _Powers:
  """Per-process cache of BASE^i and BASE^-i mod 2^64, grown by doubling as longer texts arrive."""

  def __init__(self):
    self.pos = np.ones(1, dtype=_U64)
    self.neg = np.ones(1, dtype=_U64)

  def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = self.full(n)
    return pos[:n], neg[:n]

  def full(self, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole cache, at least n long (no slicing: the numba path calls this once per document)."""
    if n > self.pos.size:
      size = max(n, 2 * self.pos.size, 4096)
      # uint64 cumprod wraps modulo 2^64, which is exactly the ring the rolling hash lives in.
      self.pos = np.concatenate([[_U64(1)], np.cumprod(np.full(size - 1, _BASE, dtype=_U64))])
      self.neg = np.concatenate([[_U64(1)], np.cumprod(np.full(size - 1, _BASE_INV, dtype=_U64))])
    return self.pos, self.neg


_POWERS = _Powers()


def _shingle_hashes(words: Sequence[str], n: int) -> np.ndarray:
  """64-bit hashes of the word n-grams ``" ".join(words[i:i+n])``, all computed at once with numpy.

  H[s:e] = sum_j c_j BASE^(e-1-j) = BASE^(e-1) * (T[e] - T[s]) with T the prefix sum of c_j BASE^-j, all mod 2^64.
  """
  data = np.frombuffer(" ".join(words).encode("utf-8"), dtype=np.uint8).astype(_U64)
  length = data.size
  pos, neg = _POWERS.get(length)
  prefix = np.empty(length + 1, dtype=_U64)
  prefix[0] = 0
  np.cumsum(data * neg, out=prefix[1:])
  spaces = np.flatnonzero(data == 32)
  starts = np.concatenate([[0], spaces + 1])
  ends = np.concatenate([spaces, [length]])
  s, e = starts[: len(words) - n + 1], ends[n - 1 :]
  return _splitmix64(pos[e - 1] * (prefix[e] - prefix[s]))


# ---- numba kernels (same integers as the numpy code above and in MinHasher) -----------------------------------

_USE_NUMBA = numba is not None

if numba is not None:
  # cache=True: compiled once per machine (a few seconds), then loaded by every process, Beam workers included.
  _njit = functools.partial(numba.njit, cache=True, nogil=True)

  @_njit
  def _nb_splitmix64(x):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))

  @_njit
  def _nb_shingle_hashes(data, n, pos, neg):
    """_shingle_hashes on the UTF-8 bytes of a simplified text (single spaces, no edge spaces), in one pass.

    Same prefix sum as the numpy version: T[i] = sum_{j<i} c_j BASE^-j, H[s:e] = BASE^(e-1) * (T[e] - T[s]) mod 2^64.
    ``pos``/``neg`` are BASE^i and BASE^-i for i < len(data) (the _Powers cache). Only additions are chained, so the
    loop runs at about a cycle per byte, unlike a Horner recurrence whose multiplications wait on each other.
    """
    length = data.size
    prefix = np.empty(length + 1, dtype=np.uint64)
    bounds = np.empty(length + 2, dtype=np.int64)  # bounds[k]: start of word k, then length + 1 after the last
    prefix[0] = np.uint64(0)
    bounds[0] = 0
    num_words = 1
    acc = np.uint64(0)
    for i in range(length):
      c = data[i]
      acc += np.uint64(c) * neg[i]
      prefix[i + 1] = acc
      if c == 32:
        bounds[num_words] = i + 1
        num_words += 1
    bounds[num_words] = length + 1
    num = num_words - n + 1
    if length == 0 or num <= 0:
      return np.zeros(0, dtype=np.uint64)
    out = np.empty(num, dtype=np.uint64)
    for k in range(num):
      s = bounds[k]
      e = bounds[k + n] - 1  # end of word k+n-1 (exclusive): one before the next word's start
      out[k] = _nb_splitmix64(pos[e - 1] * (prefix[e] - prefix[s]))
    return out

  @_njit
  def _nb_min_hash(shingles, a, b):
    """Per permutation: min over shingles of the folded (a*x + b) mod (2^61-1); see signature_from_shingles."""
    mersenne = np.uint64(_MERSENNE)
    shift = np.uint64(61)
    out = np.empty(a.size, dtype=np.uint64)
    for p in range(a.size):  # permutation outer, shingles inner: a min-reduction LLVM vectorises
      ap, bp = a[p], b[p]
      m = np.uint64(_MASK64)
      for i in range(shingles.size):
        v = shingles[i] * ap + bp
        v = (v & mersenne) + (v >> shift)
        m = min(m, v)
      out[p] = m
    return out

  @_njit
  def _nb_signature(data, n, pos, neg, a, b):
    """Fused: bytes of the simplified text -> signature; an empty array when there are fewer than n words."""
    shingles = _nb_shingle_hashes(data, n, pos, neg)
    if shingles.size == 0:
      return shingles
    return _nb_min_hash(shingles, a, b)

  @_njit
  def _nb_band_keys(sig, num_buckets, rows):
    out = np.empty(num_buckets, dtype=np.uint64)
    for band in range(num_buckets):
      key = np.uint64(band + 1)
      for r in range(rows):
        key = _nb_splitmix64(key ^ sig[band * rows + r])
      out[band] = key
    return out


class MinHasher:
  """MinHash signatures and LSH band keys; picklable, so it can travel to Beam and multiprocessing workers."""

  def __init__(self, n_grams: int = 5, num_buckets: int = 14, hashes_per_bucket: int = 8, seed: int = 1):
    self.n_grams = n_grams
    self.num_buckets = num_buckets
    self.hashes_per_bucket = hashes_per_bucket
    self.num_perm = num_buckets * hashes_per_bucket
    # Same draw as datatrove/datasketch so the permutation family is the familiar one.
    gen = np.random.RandomState(seed)
    self.a = gen.randint(1, _MERSENNE, dtype=_U64, size=self.num_perm)
    self.b = gen.randint(0, _MERSENNE, dtype=_U64, size=self.num_perm)

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "MinHasher":
    return cls(cfg.n_grams, cfg.num_buckets, cfg.hashes_per_bucket, cfg.seed)

  def shingles(self, text: str) -> np.ndarray:
    """Hashes of the word n-grams of the simplified text; empty when it has fewer than n words (as datatrove)."""
    simplified = simplify_text(text)
    if _USE_NUMBA:
      data = np.frombuffer(simplified.encode("utf-8"), dtype=np.uint8)
      return _nb_shingle_hashes(data, self.n_grams, *_POWERS.full(data.size))
    words = simplified.split()
    if len(words) < self.n_grams:
      return np.zeros(0, dtype=_U64)
    return _shingle_hashes(words, self.n_grams)

  def signature_from_shingles(self, shingles: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """min over shingles of (a*x + b) mod (2^61-1), per permutation; shape (num_perm,) uint64."""
    if _USE_NUMBA:
      return _nb_min_hash(np.ascontiguousarray(shingles, dtype=_U64), self.a, self.b)
    out = np.full(self.num_perm, _MASK64, dtype=_U64)
    rows = min(chunk, shingles.size)
    buf = np.empty((rows, self.num_perm), dtype=_U64)
    hi = np.empty_like(buf)
    for start in range(0, shingles.size, chunk):
      x = shingles[start : start + chunk, None]
      cur, cur_hi = buf[: x.shape[0]], hi[: x.shape[0]]
      np.multiply(x, self.a, out=cur)  # wraps mod 2^64, as datatrove's and datasketch's numpy code does
      np.add(cur, self.b, out=cur)
      # x mod (2^61-1) by folding the top bits back in: 3 cheap ops instead of a 64-bit division (3x faster).
      # The result lies in [0, 2^61+7); the rare values >= 2^61-1 are left as they are: still a fixed hash.
      np.right_shift(cur, _SHIFT61, out=cur_hi)
      np.bitwise_and(cur, _MERSENNE_U64, out=cur)
      np.add(cur, cur_hi, out=cur)
      np.minimum(out, cur.min(axis=0), out=out)
    return out

  def signature_of_simplified(self, simplified: str) -> np.ndarray | None:
    """Signature of a text already through ``simplify_text``; None when it has fewer than n words."""
    if _USE_NUMBA:
      data = np.frombuffer(simplified.encode("utf-8"), dtype=np.uint8)
      sig = _nb_signature(data, self.n_grams, *_POWERS.full(data.size), self.a, self.b)
      return sig if sig.size else None
    words = simplified.split()
    if len(words) < self.n_grams:
      return None
    return self.signature_from_shingles(_shingle_hashes(words, self.n_grams))

  def signature(self, text: str) -> np.ndarray | None:
    return self.signature_of_simplified(simplify_text(text))

  def band_keys_from_signature(self, sig: np.ndarray) -> np.ndarray:
    """One uint64 per band: a mix of its rows. Two docs share a band key iff (up to 2^-64) all its rows agree."""
    if _USE_NUMBA:
      return _nb_band_keys(np.ascontiguousarray(sig, dtype=_U64), self.num_buckets, self.hashes_per_bucket)
    rows = sig.reshape(self.num_buckets, self.hashes_per_bucket)
    key = np.arange(1, self.num_buckets + 1, dtype=_U64)  # band index in the seed: equal rows in different bands differ
    for r in range(self.hashes_per_bucket):
      key = _splitmix64(key ^ rows[:, r])
    return key

  def band_keys(self, text: str) -> np.ndarray:
    """(num_buckets,) uint64 band keys, or an empty array for texts too short to shingle."""
    sig = self.signature(text)
    if sig is None:
      return np.zeros(0, dtype=_U64)
    return self.band_keys_from_signature(sig)


def jaccard(a: Iterable, b: Iterable) -> float:
  a, b = set(a), set(b)
  return len(a & b) / max(1, len(a | b))
