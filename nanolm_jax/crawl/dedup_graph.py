"""Steps (b)-(d) of dedup: documents sharing a key -> edges -> connected components -> survivors.

Only ids and keys, no text (hashing text is step (a), in dedup.py): these are the parts the two runners arrange
differently. The local runner calls ``exact_duplicates`` and ``minhash_duplicates`` over all keys at once; the Beam
runner applies ``group_edges`` per key group and ``large_star`` / ``small_star`` per GroupByKey round, then
``connected_components`` to the unconverged residue.
"""

from __future__ import annotations

import collections
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

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
