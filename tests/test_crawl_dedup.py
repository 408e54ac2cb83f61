"""Tests for nanolm_jax.crawl.dedup: exact keys, MinHash quality, and connected components."""

import collections
import random
import re
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from nanolm_jax.crawl import dedup

_MASK = (1 << 64) - 1


def _words(rng: random.Random, vocab: list[str], n: int) -> list[str]:
  return [rng.choice(vocab) for _ in range(n)]


def _mutate(rng: random.Random, words: list[str], k: int, vocab: list[str]) -> list[str]:
  out = list(words)
  for i in rng.sample(range(len(out)), k):
    out[i] = rng.choice(vocab) + "x"  # a word never in the source
  return out


def _ngrams(text: str, n: int = 5) -> set[str]:
  w = dedup.simplify_text(text).split()
  return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def _splitmix_py(x: int) -> int:
  x ^= x >> 30
  x = (x * 0xBF58476D1CE4E5B9) & _MASK
  x ^= x >> 27
  x = (x * 0x94D049BB133111EB) & _MASK
  return x ^ (x >> 31)


@pytest.fixture(scope="module")
def vocab():
  rng = random.Random(0)
  return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]


def test_simplify_text_matches_datatrove_rules():
  assert dedup.simplify_text("  Héllo,\tWORLD!!  It's 2024 ") == "hello world its 0"
  assert dedup.simplify_text("a - b") == "a b"


def _simplify_with_regexes(text: str, diacritics: bool = True, numbers: bool = True) -> str:
  """The straightforward datatrove-style implementation that simplify_text's fast paths must equal."""
  text = text.lower()
  text = re.sub(r"\s+", " ", text.strip())
  text = text.translate(str.maketrans("", "", dedup.PUNCTUATION))
  if diacritics:
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
  if numbers:
    text = re.sub(r"\d+", "0", text)
  return " ".join(text.split())


def test_simplify_text_equals_the_regex_version_on_random_strings():
  rng = random.Random(0)
  spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()]
  pool = (
      list("abcXYZ  0123456789")
      + list(dedup.PUNCTUATION)
      + spaces
      + list("٣۵߁०१௬éÉçñüÅ\u0301\u0308ﬁ①½İẞK日本\U0001F600")
  )
  for _ in range(5000):
    text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
    for kwargs in ({}, {"diacritics": False, "numbers": False}, {"numbers": False}, {"diacritics": False}):
      assert dedup.simplify_text(text, **kwargs) == _simplify_with_regexes(text, **kwargs), (text, kwargs)


def test_exact_key_keep_and_drop_cases():
  same = ["Hello,  World!", "hello world", "HELLO\n\nWORLD..."]
  assert len({dedup.exact_key(t) for t in same}) == 1
  different = ["hello world", "hello world 2", "hello world 3", "héllo world", "hello worlds"]
  assert len({dedup.exact_key(t) for t in different}) == len(different)
  keys = {"d3": dedup.exact_key("Same text."), "d1": dedup.exact_key("same TEXT"), "d2": dedup.exact_key("other")}
  drop, sizes = dedup.exact_duplicates(keys)
  assert drop == {"d3"}  # the smallest id survives
  assert sizes == {2: 1}


def test_shingle_hashes_match_a_python_rolling_hash():
  text = "The quick brown fox, jumps over the lazy dog; the quick brown fox jumps again."
  words = dedup.simplify_text(text).split()
  got = dedup.MinHasher().shingles(text)
  want = []
  for i in range(len(words) - 4):
    h = 0
    for byte in " ".join(words[i : i + 5]).encode():
      h = (h * dedup._BASE + byte) & _MASK
    want.append(_splitmix_py(h))
  assert got.tolist() == want
  # Equal n-grams hash equal, different ones differ.
  grams = [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]
  assert len(set(grams)) == len(set(got.tolist()))


def test_signature_matches_a_python_minhash():
  hasher = dedup.MinHasher(seed=3)
  text = " ".join(f"w{i % 37}" for i in range(200))
  shingles = hasher.shingles(text).tolist()
  want = [
      min(((s * a + b) & _MASK) % dedup._MERSENNE for s in shingles)
      for a, b in zip(hasher.a.tolist(), hasher.b.tolist())
  ]
  assert hasher.signature(text).tolist() == want
  # Chunking the shingles does not change the signature.
  assert hasher.signature_from_shingles(np.array(shingles, dtype=np.uint64), chunk=7).tolist() == want


@pytest.mark.skipif(dedup.numba is None, reason="numba not installed: only the numpy path exists")
def test_numba_and_numpy_paths_agree(vocab, monkeypatch):
  """Workers with and without numba must produce the same keys, or dedup would depend on the machine."""
  rng = random.Random(4)
  texts = [
      "",
      "four words only here",
      "exactly five words right here",
      "Héllo wörld, ça va très bien? 2024-01-01 ok",
      " ".join(_words(rng, vocab, 3000)),
  ] + [" ".join(_words(rng, vocab, rng.randint(5, 400))) for _ in range(30)]
  hasher = dedup.MinHasher(seed=5)
  fast = [(hasher.shingles(t), hasher.signature(t), hasher.band_keys(t)) for t in texts]
  monkeypatch.setattr(dedup, "_USE_NUMBA", False)
  slow = [(hasher.shingles(t), hasher.signature(t), hasher.band_keys(t)) for t in texts]
  for text, f, s in zip(texts, fast, slow):
    assert f[0].tolist() == s[0].tolist(), text
    assert (f[1] is None and s[1] is None) or f[1].tolist() == s[1].tolist(), text
    assert f[2].tolist() == s[2].tolist() and f[2].dtype == s[2].dtype == np.uint64, text


def test_short_text_has_no_band_keys():
  assert dedup.MinHasher().band_keys("only four words here").size == 0
  assert dedup.MinHasher().band_keys("now there are five words").shape == (14,)


def test_band_keys_deterministic_across_processes():
  text = "one two three four five six seven eight nine ten"
  code = "from nanolm_jax.crawl import dedup;" f"print(dedup.MinHasher().band_keys({text!r}).tolist())"
  out = subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      check=True,
      env={"PYTHONHASHSEED": "123", "PATH": ""},
  ).stdout
  assert out.strip() == str(dedup.MinHasher().band_keys(text).tolist())


def test_minhash_recall_and_false_merges(vocab):
  rng = random.Random(1)
  hasher = dedup.MinHasher()
  high, low = [], []  # (jaccard, shares a band key)
  for _ in range(150):
    base = _words(rng, vocab, 300)
    for k, bucket in ((rng.randint(1, 6), high), (rng.randint(22, 60), low)):
      a, b = " ".join(base), " ".join(_mutate(rng, base, k, vocab))
      j = dedup.jaccard(_ngrams(a), _ngrams(b))
      hit = bool(np.any(hasher.band_keys(a) == hasher.band_keys(b)))
      bucket.append((j, hit))
  high = [hit for j, hit in high if j >= 0.8]
  low = [hit for j, hit in low if j <= 0.5]
  assert len(high) >= 100 and len(low) >= 100
  assert np.mean(high) >= 0.95
  assert np.mean(low) <= 0.05


def test_minhash_duplicates_clusters_and_order_independence(vocab):
  rng = random.Random(2)
  hasher = dedup.MinHasher()
  base = _words(rng, vocab, 200)
  docs = {
      "c": " ".join(base),
      "a": " ".join(_mutate(rng, base, 1, vocab)),
      "b": " ".join(_mutate(rng, base, 1, vocab)),
      "z": " ".join(_words(rng, vocab, 200)),
      "y": "too short",
  }
  ids = [i for i in docs if hasher.band_keys(docs[i]).size]
  keys = np.stack([hasher.band_keys(docs[i]) for i in ids])
  drop, sizes = dedup.minhash_duplicates(ids, keys)
  assert drop == {"b", "c"} and sizes == {3: 1}
  perm = [3, 1, 0, 2]
  assert dedup.minhash_duplicates([ids[i] for i in perm], keys[perm]) == (drop, sizes)


def _bfs_components(edges, nodes):
  adj = collections.defaultdict(set)
  for u, v in edges:
    adj[u].add(v)
    adj[v].add(u)
  label = {}
  for n in sorted(nodes):
    if n in label:
      continue
    stack, comp = [n], []
    label[n] = n
    while stack:
      x = stack.pop()
      comp.append(x)
      for y in adj[x]:
        if y not in label:
          label[y] = n
          stack.append(y)
  return label


def test_connected_components_hand_made():
  edges = [(5, 3), (3, 9), (1, 2), (7, 7)]
  assert dedup.connected_components(edges, nodes=[4]) == {5: 3, 3: 3, 9: 3, 1: 1, 2: 1, 7: 7, 4: 4}
  # A path given in the worst order still ends in one component labelled by its minimum.
  path = [(i + 1, i) for i in reversed(range(10))]
  assert set(dedup.connected_components(path).values()) == {0}


@pytest.mark.parametrize("rounds", [0, 1, 2, 6])
def test_star_rounds_with_finish_equal_union_find(rounds):
  rng = random.Random(rounds)
  for _ in range(20):
    nodes = list(range(40))
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(rng.randint(0, 45))]
    edges = [(u, v) for u, v in edges if u != v]
    want = _bfs_components(edges, {x for e in edges for x in e})
    assert dedup.connected_components(edges) == want
    star = dedup.star_rounds_local(edges, rounds)
    labels = dedup.labels_from_star_edges(star)
    assert dedup.finish_labels(labels, star) == want


def test_star_rounds_converge_to_stars():
  path = [(i, i + 1) for i in range(32)]
  star = dedup.star_rounds_local(path, 6)
  assert star == [(i, 0) for i in range(1, 33)]


def test_band_edges_sorted_matches_python_grouping():
  rng = np.random.default_rng(0)
  keys = rng.integers(0, 4, size=(30, 3)).astype(np.uint64)
  want = set()
  for band in range(3):
    groups = collections.defaultdict(list)
    for row in range(30):
      groups[int(keys[row, band])].append(row)
    for members in groups.values():
      want.update(dedup.group_edges(members))
  got = {tuple(e) for e in dedup.band_edges_sorted(keys).tolist()}
  assert got == want
