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
"""
from __future__ import annotations

import collections
import functools
import hashlib
import re
import sys
import unicodedata
from typing import Iterable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np

# The characters datatrove's simplify_text removes (ASCII/CJK punctuation and control characters).
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
_PUNCT_TABLE = str.maketrans("", "", PUNCTUATION)
_WHITESPACE = re.compile(r"\s+")
_NUMBERS = re.compile(r"\d+")

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_MERSENNE = (1 << 61) - 1
_MERSENNE_U64 = _U64(_MERSENNE)
_SHIFT61 = _U64(61)
# Odd base for the rolling byte hash: odd numbers are invertible modulo 2^64, which is what lets a prefix sum
# give any substring's polynomial hash in O(1) (see _shingle_hashes).
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)

EXACT_STAGE = "exact_dedup"
MINHASH_STAGE = "minhash_dedup"
EXACT_REASON = "exact_dedup:duplicate"
MINHASH_REASON = "minhash_dedup:near_duplicate"


def default_config() -> ml_collections.ConfigDict:
  """Dedup settings; the minhash defaults are datatrove's MinhashConfig (with 64-bit hashes)."""
  return ml_collections.ConfigDict({
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
  })


@functools.cache
def _combining_marks() -> dict[int, None]:
  """str.translate table deleting every nonspacing mark (category Mn): C speed instead of a per-char loop."""
  return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn"}


def simplify_text(text: str, diacritics: bool = True, numbers: bool = True) -> str:
  """datatrove's simplify_text: lowercase, one space between words, no punctuation, no diacritics, digits -> 0."""
  text = text.lower()
  text = _WHITESPACE.sub(" ", text.strip())
  text = text.translate(_PUNCT_TABLE)
  if diacritics and not text.isascii():  # ASCII has no diacritics: skip the costly normalisation
    text = unicodedata.normalize("NFD", text).translate(_combining_marks())
  if numbers:
    text = _NUMBERS.sub("0", text)
  # Removing punctuation can leave double spaces ("a - b"); words are what count.
  return " ".join(text.split())


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
    if n > self.pos.size:
      size = max(n, 2 * self.pos.size, 4096)
      # uint64 cumprod wraps modulo 2^64, which is exactly the ring the rolling hash lives in.
      self.pos = np.concatenate([[_U64(1)], np.cumprod(np.full(size - 1, _BASE, dtype=_U64))])
      self.neg = np.concatenate([[_U64(1)], np.cumprod(np.full(size - 1, _BASE_INV, dtype=_U64))])
    return self.pos[:n], self.neg[:n]


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
  s, e = starts[:len(words) - n + 1], ends[n - 1:]
  return _splitmix64(pos[e - 1] * (prefix[e] - prefix[s]))


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
    words = simplify_text(text).split()
    if len(words) < self.n_grams:
      return np.zeros(0, dtype=_U64)
    return _shingle_hashes(words, self.n_grams)

  def signature_from_shingles(self, shingles: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """min over shingles of (a*x + b) mod (2^61-1), per permutation; shape (num_perm,) uint64."""
    out = np.full(self.num_perm, _MASK64, dtype=_U64)
    rows = min(chunk, shingles.size)
    buf = np.empty((rows, self.num_perm), dtype=_U64)
    hi = np.empty_like(buf)
    for start in range(0, shingles.size, chunk):
      x = shingles[start:start + chunk, None]
      cur, cur_hi = buf[:x.shape[0]], hi[:x.shape[0]]
      np.multiply(x, self.a, out=cur)  # wraps mod 2^64, as datatrove's and datasketch's numpy code does
      np.add(cur, self.b, out=cur)
      # x mod (2^61-1) by folding the top bits back in: 3 cheap ops instead of a 64-bit division (3x faster).
      # The result lies in [0, 2^61+7); the rare values >= 2^61-1 are left as they are: still a fixed hash.
      np.right_shift(cur, _SHIFT61, out=cur_hi)
      np.bitwise_and(cur, _MERSENNE_U64, out=cur)
      np.add(cur, cur_hi, out=cur)
      np.minimum(out, cur.min(axis=0), out=out)
    return out

  def signature(self, text: str) -> np.ndarray | None:
    shingles = self.shingles(text)
    return self.signature_from_shingles(shingles) if shingles.size else None

  def band_keys_from_signature(self, sig: np.ndarray) -> np.ndarray:
    """One uint64 per band: a mix of its rows. Two docs share a band key iff (up to 2^-64) all its rows agree."""
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


# ---- (b) grouping: keys -> star edges -------------------------------------------------------------------------


def group_edges(members: Iterable[str]) -> list[tuple[str, str]]:
  """Star edges (smallest, other) for a group of ids sharing one key; a group of one gives none."""
  ids = sorted(set(members))
  return [(ids[0], other) for other in ids[1:]]


def band_edges_sorted(keys: np.ndarray) -> np.ndarray:
  """Edges between rows of ``keys`` (n_docs, num_buckets) that share a band key, as (m, 2) int64 row pairs.

  Rows are node ids: when rows are ordered by doc id, each edge is (smallest row in its group, other row).
  Vectorised per band: a stable sort brings equal keys together, runs of equal keys become stars.
  """
  edges = []
  n = keys.shape[0]
  if n == 0:
    return np.zeros((0, 2), dtype=np.int64)
  for band in range(keys.shape[1]):
    col = keys[:, band]
    order = np.argsort(col, kind="stable")  # stable: within a run rows stay ascending, so the run head is its min
    sorted_keys = col[order]
    is_head = np.empty(n, dtype=bool)
    is_head[0] = True
    is_head[1:] = sorted_keys[1:] != sorted_keys[:-1]
    head_pos = np.maximum.accumulate(np.where(is_head, np.arange(n), 0))
    members = ~is_head
    edges.append(np.stack([order[head_pos[members]], order[members]], axis=1))
  out = np.concatenate(edges)
  return np.unique(out, axis=0) if out.size else np.zeros((0, 2), dtype=np.int64)


# ---- (c) connected components ---------------------------------------------------------------------------------


def connected_components(edges: Iterable[tuple], nodes: Iterable = ()) -> dict:
  """Union-find; returns node -> smallest node of its component, for every node in ``edges`` or ``nodes``."""
  parent: dict = {}

  def find(x):
    parent.setdefault(x, x)
    root = x
    while parent[root] != root:
      root = parent[root]
    while parent[x] != root:  # path compression
      parent[x], x = root, parent[x]
    return root

  for node in nodes:
    find(node)
  for u, v in edges:
    ru, rv = find(u), find(v)
    if ru != rv:
      # The smaller label wins, so every root is its component's minimum (= the survivor).
      if rv < ru:
        ru, rv = rv, ru
      parent[rv] = ru
  return {node: find(node) for node in list(parent)}


def large_star(node, neighbors: Iterable) -> Iterator[tuple]:
  """Large-star reducer: link every larger neighbour to the smallest of the node's closed neighbourhood.

  Input: a node and all its neighbours (edges seen in both directions). Output: new directed edges (v, m).
  """
  nbrs = set(neighbors)
  m = min(nbrs | {node})
  for v in sorted(nbrs):
    if v > node:
      yield (v, m)


def small_star(node, smaller_neighbors: Iterable) -> Iterator[tuple]:
  """Small-star reducer: link the node and its smaller neighbours to the smallest of them.

  Input: a node and its neighbours that are <= it (each edge (u, v) sent to max(u, v)).
  """
  group = set(smaller_neighbors) | {node}
  m = min(group)
  for v in sorted(group):
    if v != m:
      yield (v, m)


def orient_for_small_star(edge: tuple) -> tuple:
  u, v = edge
  return (u, v) if v <= u else (v, u)


def star_rounds_local(edges: Iterable[tuple], rounds: int) -> list[tuple]:
  """Runs large-star/small-star rounds in memory; the Beam runner does the same with GroupByKeys (used in tests)."""
  current = list(edges)
  for _ in range(rounds):
    nbrs = collections.defaultdict(set)
    for u, v in current:
      if u != v:
        nbrs[u].add(v)
        nbrs[v].add(u)
    current = sorted({e for node, ns in nbrs.items() for e in large_star(node, ns)})
    smaller = collections.defaultdict(set)
    for u, v in map(orient_for_small_star, current):
      smaller[u].add(v)
    current = sorted({e for node, ns in smaller.items() for e in small_star(node, ns)})
  return current


def labels_from_star_edges(edges: Iterable[tuple]) -> dict:
  """Provisional label per node: the smallest of itself and its neighbours (exact once the rounds converged)."""
  labels: dict = {}
  for u, v in edges:
    labels[u] = min(labels.get(u, u), v, u)
    labels[v] = min(labels.get(v, v), u, v)
  return labels


def finish_labels(labels: Mapping, edges: Iterable[tuple]) -> dict:
  """Makes provisional labels exact: edges whose ends disagree are unioned on their labels (a small residue).

  Correct for any number of rounds: the star operations keep components, every label lies in its node's component,
  and a path between two nodes becomes a chain of equal labels or residual label edges.
  """
  residual = {(labels[u], labels[v]) for u, v in edges if labels[u] != labels[v]}
  remap = connected_components(residual)
  return {node: remap.get(label, label) for node, label in labels.items()}


# ---- (d) survivors --------------------------------------------------------------------------------------------


def duplicates_from_labels(labels: Mapping) -> set:
  """Every node that is not its component's minimum."""
  return {node for node, root in labels.items() if node != root}


def cluster_sizes(labels: Mapping) -> dict[int, int]:
  """Histogram size -> number of clusters, over clusters of two or more documents."""
  sizes = collections.Counter(labels.values())
  return dict(sorted(collections.Counter(s for s in sizes.values() if s > 1).items()))


def exact_duplicates(keys: Mapping[str, str]) -> tuple[set, dict[int, int]]:
  """doc id -> exact key; returns (ids to drop, cluster size histogram). Survivor: the smallest id of each key."""
  groups = collections.defaultdict(list)
  for doc_id, key in keys.items():
    groups[key].append(doc_id)
  drop, sizes = set(), collections.Counter()
  for members in groups.values():
    if len(members) > 1:
      members.sort()
      drop.update(members[1:])
      sizes[len(members)] += 1
  return drop, dict(sorted(sizes.items()))


def minhash_duplicates(ids: Sequence[str], keys: np.ndarray) -> tuple[set, dict[int, int]]:
  """Local fuzzy dedup: ids (n,) with band keys (n, num_buckets); docs with no keys are passed as absent.

  Returns (ids to drop, cluster size histogram).
  """
  order = sorted(range(len(ids)), key=ids.__getitem__)
  sorted_ids = [ids[i] for i in order]
  if not sorted_ids:
    return set(), {}
  edges = band_edges_sorted(np.asarray(keys)[order])
  labels = connected_components(map(tuple, edges.tolist()))
  drop = {sorted_ids[i] for i in duplicates_from_labels(labels)}
  return drop, cluster_sizes(labels)
