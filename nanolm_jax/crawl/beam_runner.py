"""The crawl pipeline as an Apache Beam pipeline: same stages, same dedup functions, same shards as the local runner.

Graph: file paths (a list, or MatchFiles for a glob) -> ReadAndFilter (read + pre-dedup stages + dedup keys; one
element per WARC file) -> repeated record ids (GroupByKey on the id; the copy with the smallest (path, row) goes on)
-> exact dedup (GroupByKey on the exact key) -> band keys of the exact survivors -> GroupByKey per (band, key) -> star
edges -> ``cc_rounds`` of large-star/small-star (each a GroupByKey) -> provisional labels -> the few edges whose
labels still disagree are finished with union-find on one worker -> CoGroupByKey of documents with their verdicts ->
post-dedup stages (PII) -> shards (GroupByKey on shard index) -> report.
No step holds the corpus on one worker: only the unconverged residue of the components does (empty when converged).

Run on this machine (offline; the in-process FnApiRunner, or ``--direct_num_workers=N`` processes):

  python -m experiments.process_crawl --runner=beam --input='/data/warc/*.warc.gz' --output=/tmp/crawl

On Google Cloud Dataflow: ``--config.runner.beam_options`` carries the Beam flags (``--runner=DataflowRunner
--project --region --temp_location --setup_file --requirements_file``); the README's "Crawl -> corpus" section has
the full command and the worker requirements.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence

from absl import logging
import apache_beam as beam
from apache_beam import pvalue
import apache_beam.io.fileio  # beam.io.fileio.MatchFiles: `import apache_beam` alone does not load it
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
import ml_collections

from nanolm_jax.crawl import dedup
from nanolm_jax.crawl import inputs as inputs_lib
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import report as report_lib
from nanolm_jax.crawl import writer

_STATS = "stats"
_KEYS = "keys"
_NAMESPACE = "crawl"


def _count_drops(stats: report_lib.Stats) -> None:
  """Beam counters per stage and drop reason, visible in the Dataflow UI while the job runs."""
  for name, st in stats.stages.items():
    Metrics.counter(_NAMESPACE, f"{name}:in").inc(st.docs_in)
    for reason, n in (st.dropped + st.errored).items():
      Metrics.counter(_NAMESPACE, reason).inc(n)


class _StagesDoFn(beam.DoFn):
  """Builds the stages once per worker (they may load lists and models)."""

  def __init__(self, cfg: ml_collections.ConfigDict, builder: local_runner.StageBuilder):
    self._cfg = cfg
    self._builder = builder
    self._stages = None
    self._hasher = None

  def setup(self):
    self._stages = self._builder(self._cfg.stages)
    self._hasher = local_runner.hasher_for(self._cfg)


class ReadAndFilterFn(_StagesDoFn):
  """One WARC path -> kept documents (id, (pos, doc)), dedup keys (id, (pos, exact, bands)) tagged 'keys', and the
  file's stats tagged 'stats'. pos = (path, row): the copy of a repeated id with the smallest pos is the one kept,
  rows counted as the local runner counts them (documents that passed the pre-dedup stages, in file order)."""

  def process(self, path: str) -> Iterator[Any]:
    stats = report_lib.Stats()
    row = 0
    for doc in local_runner.read_file(path, self._cfg.read, stats):
      doc = local_runner.run_stages(doc, self._stages["pre_dedup"], stats)
      if doc is None:
        continue
      exact, bands = local_runner.dedup_keys(doc, self._hasher)
      pos = (path, row)
      row += 1
      yield (doc.id, (pos, doc))
      yield pvalue.TaggedOutput(_KEYS, (doc.id, (pos, exact, tuple(bands.tolist()))))
    _count_drops(stats)
    yield pvalue.TaggedOutput(_STATS, stats.to_dict())


class PostDedupFn(_StagesDoFn):
  """(id, {'doc': [(pos, doc), ...], 'reason': [reason?]}) -> dedup verdicts, post-dedup stages, kept docs + stats.

  Copies of one id after the first (smallest pos) are repeats; the exact/MinHash reason belongs to the first copy.
  """

  def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Any]:
    _, grouped = element
    copies = sorted(grouped["doc"], key=lambda c: tuple(c[0]))
    reason = grouped["reason"][0] if grouped["reason"] else None
    stats = report_lib.Stats()
    for i, (_, doc) in enumerate(copies):
      if not local_runner.dedup_verdicts(doc, reason if i == 0 else dedup.ID_REASON, self._cfg, stats):
        continue
      doc = local_runner.run_stages(doc, self._stages["post_dedup"], stats)
      if doc is not None:
        stats.record_kept(doc)
        yield doc
    _count_drops(stats)
    yield pvalue.TaggedOutput(_STATS, stats.to_dict())


class MergeStatsFn(beam.CombineFn):
  """Adds up Stats dicts; addition commutes, so any combiner tree gives the same totals."""

  def create_accumulator(self):
    return report_lib.Stats()

  def add_input(self, acc, d):
    return acc.merge(report_lib.Stats.from_dict(d))

  def merge_accumulators(self, accs):
    return report_lib.merge_all(accs)

  def extract_output(self, acc):
    return acc.to_dict()


def _first_copy(element: tuple[str, Iterable[tuple]]) -> Iterator[Any]:
  """(id, [(pos, exact, bands), ...]) -> (id, (exact, bands)) of the copy with the smallest pos; sizes tagged."""
  doc_id, copies = element
  copies = sorted(copies, key=lambda c: tuple(c[0]))
  _, exact, bands = copies[0]
  yield (doc_id, (exact, bands))
  if len(copies) > 1:
    yield pvalue.TaggedOutput("sizes", len(copies))


def _exact_group(element: tuple[str, Iterable[str]]) -> Iterator[Any]:
  _, ids = element
  ids = sorted(ids)
  for other in ids[1:]:
    yield (other, dedup.EXACT_REASON)
  if len(ids) > 1:
    yield pvalue.TaggedOutput("sizes", len(ids))


def _band_entries(element: tuple[str, dict[str, list]]) -> Iterator[tuple[tuple[int, int], str]]:
  """Band keys of documents that survived exact dedup, keyed (band index, key)."""
  doc_id, grouped = element
  if grouped["exact_dup"] or not grouped["keys"]:
    return
  ((_, bands),) = grouped["keys"]
  for band, key in enumerate(bands):
    yield ((band, key), doc_id)


def _both_ways(edge: tuple[str, str]) -> Iterator[tuple[str, str]]:
  u, v = edge
  yield (u, v)
  yield (v, u)


def _sizes_histogram(sizes: Iterable[int]) -> dict[int, int]:
  hist: dict[int, int] = {}
  for s in sizes:
    hist[s] = hist.get(s, 0) + 1
  return dict(sorted(hist.items()))


class ConnectedComponents(beam.PTransform):
  """Edges (u, v) -> (node, component minimum) for every node on an edge.

  ``rounds`` alternations of large-star / small-star (Kiveris et al. 2014) shrink every component to a star around
  its minimum in O(log n) rounds; edges whose provisional labels still disagree are then finished with union-find on
  one worker (dedup.finish_labels), which makes the result exact for any number of rounds.
  """

  def __init__(self, rounds: int):
    super().__init__()
    self._rounds = rounds

  def expand(self, edges):
    for r in range(self._rounds):
      edges = (
          edges
          | f"LargeStarDirections{r}" >> beam.FlatMap(_both_ways)
          | f"LargeStarGroup{r}" >> beam.GroupByKey()
          | f"LargeStar{r}" >> beam.FlatMapTuple(dedup.large_star)
          | f"LargeStarDistinct{r}" >> beam.Distinct()
          | f"SmallStarOrient{r}" >> beam.Map(dedup.orient_for_small_star)
          | f"SmallStarGroup{r}" >> beam.GroupByKey()
          | f"SmallStar{r}" >> beam.FlatMapTuple(dedup.small_star)
          | f"SmallStarDistinct{r}" >> beam.Distinct()
      )
    labels = (
        edges
        | "LabelDirections" >> beam.FlatMap(_both_ways)
        | "LabelMin" >> beam.CombinePerKey(min)
        | "LabelSelf" >> beam.MapTuple(lambda node, m: (node, min(node, m)))
    )
    # Attach both ends' labels to every edge: key by u, join; key by v, join.
    with_u = (
        {"edge": edges | "ByU" >> beam.Map(lambda e: (e[0], e)), "label": labels}
        | "JoinU" >> beam.CoGroupByKey()
        | "EdgeLabelU" >> beam.FlatMap(lambda kv: [(e[1], (e, kv[1]["label"][0])) for e in kv[1]["edge"]])
    )
    residual = (
        {"edge": with_u, "label": labels}
        | "JoinV" >> beam.CoGroupByKey()
        | "Disagree"
        >> beam.FlatMap(lambda kv: [(lu, kv[1]["label"][0]) for _, lu in kv[1]["edge"] if lu != kv[1]["label"][0]])
    )
    remap = (
        residual
        | "ResidualList" >> beam.combiners.ToList()
        | "ResidualUnionFind" >> beam.Map(dedup.connected_components)
    )
    return labels | "Finish" >> beam.Map(lambda kv, m: (kv[0], m.get(kv[1], kv[1])), m=pvalue.AsSingleton(remap))


def _write_shard(element: tuple[int, dict[str, list]], out_dir: str, num_shards: int) -> str:
  index, grouped = element
  path = writer.shard_path(out_dir, index, num_shards)
  data = writer.encode_shard(grouped["docs"])
  if "://" in out_dir:
    with FileSystems.create(path) as f:
      f.write(data)
  else:
    writer.write_atomic(path, data)
  return path


def _finish_report(
    stats_dict: dict, kept: int, cluster_sizes: dict, out_dir: str, order: Sequence[str], extra: dict
) -> dict:
  stats = report_lib.Stats.from_dict(stats_dict)
  for stage, hist in cluster_sizes.items():
    stats.record_clusters(stage, hist)
  rep = report_lib.build_report(stats, order, kept=kept, extra=extra)
  if "://" not in out_dir:
    report_lib.write_report(rep, out_dir)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      for local in report_lib.write_report(rep, tmp):
        with open(local, "rb") as src, FileSystems.create(os.path.join(out_dir, os.path.basename(local))) as dst:
          dst.write(src.read())
  return rep


def _read_files(
    p: beam.Pipeline,
    cfg: ml_collections.ConfigDict,
    inputs: Sequence[str] | str,
    stage_builder: local_runner.StageBuilder,
) -> pvalue.DoOutputsTuple:
  """WARC paths -> ReadAndFilterFn's outputs: docs (main), keys and stats."""
  if isinstance(inputs, str):
    paths = p | "MatchFiles" >> beam.io.fileio.MatchFiles(inputs) | "Paths" >> beam.Map(lambda m: m.path)
  else:
    paths = p | "Paths" >> beam.Create(inputs_lib.unique_paths(inputs)[0])
  return (
      paths
      | "SpreadFiles" >> beam.Reshuffle()
      | "ReadAndFilter" >> beam.ParDo(ReadAndFilterFn(cfg, stage_builder)).with_outputs(_STATS, _KEYS, main="docs")
  )


def _id_dedup(keys: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
  """(id, (pos, exact, bands)) per copy -> (id, (exact, bands)) once per id, (stage, copies-per-id histogram)."""
  first = (
      keys
      | "IdGroup" >> beam.GroupByKey()
      | "IdFirstCopy" >> beam.FlatMap(_first_copy).with_outputs("sizes", main="keys")
  )
  sizes = (
      first.sizes
      | "IdSizes" >> beam.combiners.ToList()
      | "IdHist" >> beam.Map(lambda s: (dedup.ID_STAGE, _sizes_histogram(s)))
  )
  return first.keys, sizes


def _exact_dedup(keys: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
  """(id, (exact key, bands)) -> ((id, reason) for every copy but the smallest id, (stage, size histogram))."""
  exact = (
      keys
      | "ExactKey" >> beam.MapTuple(lambda doc_id, k: (k[0], doc_id))
      | "ExactGroup" >> beam.GroupByKey()
      | "ExactSurvivors" >> beam.FlatMap(_exact_group).with_outputs("sizes", main="drops")
  )
  sizes = (
      exact.sizes
      | "ExactSizes" >> beam.combiners.ToList()
      | "ExactHist" >> beam.Map(lambda s: (dedup.EXACT_STAGE, _sizes_histogram(s)))
  )
  return exact.drops, sizes


def _near_dedup(
    keys: beam.PCollection, exact_drops: beam.PCollection, cc_rounds: int
) -> tuple[beam.PCollection, beam.PCollection]:
  """MinHash-LSH over the exact survivors -> ((id, reason) for every non-minimum member, (stage, size histogram))."""
  edges = (
      {"keys": keys, "exact_dup": exact_drops}
      | "JoinExact" >> beam.CoGroupByKey()
      | "BandKeys" >> beam.FlatMap(_band_entries)
      | "BandGroup" >> beam.GroupByKey()
      | "StarEdges" >> beam.FlatMapTuple(lambda _, ids: dedup.group_edges(ids))
      | "DistinctEdges" >> beam.Distinct()
  )
  labels = edges | "Components" >> ConnectedComponents(cc_rounds)
  drops = labels | "NearDups" >> beam.FlatMapTuple(
      lambda node, root: [(node, dedup.MINHASH_REASON)] if node != root else []
  )
  sizes = (
      labels
      | "ClusterRoots" >> beam.MapTuple(lambda node, root: (root, 1))
      | "ClusterSize" >> beam.CombinePerKey(sum)
      | "Sizes" >> beam.Values()
      | "SizeList" >> beam.combiners.ToList()
      | "NearHist" >> beam.Map(lambda s: (dedup.MINHASH_STAGE, _sizes_histogram(x for x in s if x > 1)))
  )
  return drops, sizes


def _write_shards(p: beam.Pipeline, kept: beam.PCollection, out_dir: str, num_shards: int) -> None:
  # Every shard index is joined in, so a shard that gets no documents is still written (empty).
  shard_ids = p | "ShardIds" >> beam.Create([(i, None) for i in range(num_shards)])
  _ = (
      {"docs": kept | "ShardOf" >> beam.Map(lambda d: (writer.shard_of(d.id, num_shards), d)), "ids": shard_ids}
      | "GroupShards" >> beam.CoGroupByKey()
      | "WriteShards" >> beam.Map(_write_shard, out_dir=out_dir, num_shards=num_shards)
  )


def _write_report(
    p: beam.Pipeline,
    cfg: ml_collections.ConfigDict,
    inputs: Sequence[str] | str,
    all_stats: Sequence[beam.PCollection],
    kept: beam.PCollection,
    cluster_parts: list[beam.PCollection],
    out_dir: str,
    order: Sequence[str],
) -> None:
  """Report step: per-file stats, the kept count and the cluster histograms meet on one worker as side inputs."""
  stats = all_stats | "AllStats" >> beam.Flatten() | "MergeStats" >> beam.CombineGlobally(MergeStatsFn())
  num_kept = kept | "CountKept" >> beam.combiners.Count.Globally()
  clusters = (
      (cluster_parts | "AllClusters" >> beam.Flatten()) if cluster_parts else (p | "NoClusters" >> beam.Create([]))
  )
  listed = None if isinstance(inputs, str) else inputs_lib.unique_paths(inputs)
  extra = {
      "runner": "beam",
      "num_workers": cfg.runner.num_workers,
      "input_files": len(listed[0]) if listed else None,
      "repeated_input_paths": listed[1] if listed else 0,
  }
  _ = stats | "Report" >> beam.Map(
      _finish_report,
      kept=pvalue.AsSingleton(num_kept),
      cluster_sizes=pvalue.AsDict(clusters),
      out_dir=out_dir,
      order=list(order),
      extra=extra,
  )


def build_pipeline(
    p: beam.Pipeline,
    cfg: ml_collections.ConfigDict,
    inputs: Sequence[str] | str,
    out_dir: str,
    stage_builder: local_runner.StageBuilder,
    order: Sequence[str],
) -> None:
  """Adds the crawl pipeline to ``p``. ``inputs``: a list of paths, or one glob (matched by the runner: gs:// ok).

  The steps are plain functions rather than composite PTransforms so that every step keeps its top-level label:
  Dataflow matches labels when a running job is updated in place.
  """
  read = _read_files(p, cfg, inputs, stage_builder)
  keys, id_sizes = _id_dedup(read[_KEYS])  # each id once from here on: exact and MinHash see unique ids
  cluster_parts = [id_sizes]
  # A disabled dedup step contributes no drops; the join below still needs a PCollection for it.
  exact_drops = near_drops = p | "NoReasons" >> beam.Create([])
  if cfg.dedup.exact.enabled:
    exact_drops, exact_sizes = _exact_dedup(keys)
    cluster_parts.append(exact_sizes)
  if cfg.dedup.minhash.enabled:
    near_drops, near_sizes = _near_dedup(keys, exact_drops, cfg.dedup.cc_rounds)
    cluster_parts.append(near_sizes)
  reasons = (exact_drops, near_drops) | "AllDrops" >> beam.Flatten()
  post = (
      {"doc": read.docs, "reason": reasons}
      | "JoinVerdicts" >> beam.CoGroupByKey()
      | "PostDedup" >> beam.ParDo(PostDedupFn(cfg, stage_builder)).with_outputs(_STATS, main="kept")
  )
  _write_shards(p, post.kept, out_dir, cfg.output.num_shards)
  _write_report(p, cfg, inputs, (read[_STATS], post[_STATS]), post.kept, cluster_parts, out_dir, order)


def pipeline_options(cfg: ml_collections.ConfigDict) -> tuple[PipelineOptions, Any]:
  """(options, runner): the configured Beam options, or an offline local runner when none is named.

  The default DirectRunner may try to download a Prism binary first; naming the runner keeps a local run offline.
  """
  args = shlex.split(cfg.runner.beam_options or "")
  if any(a.startswith("--runner") for a in args):
    return PipelineOptions(args), None
  if cfg.runner.num_workers and cfg.runner.num_workers > 1:
    args += [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={cfg.runner.num_workers}",
    ]
    return PipelineOptions(args), None
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=g-import-not-at-top

  return PipelineOptions(args), FnApiRunner()


def run(
    cfg: ml_collections.ConfigDict,
    inputs: Sequence[str] | str,
    out_dir: str,
    stage_builder: local_runner.StageBuilder = local_runner.default_stage_builder,
) -> dict[str, Any] | None:
  """Runs the pipeline to completion; returns the report when ``out_dir`` is local (else it is on GCS)."""
  start = time.time()
  if not isinstance(inputs, str) and inputs_lib.unique_paths(inputs)[1]:
    logging.warning(
        "%d input paths name a file already in the list; each file is read once.", inputs_lib.unique_paths(inputs)[1]
    )
  stages = stage_builder(cfg.stages)
  order = local_runner.stage_order(cfg, stages)
  if "://" not in out_dir:
    os.makedirs(out_dir, exist_ok=True)
  options, runner = pipeline_options(cfg)
  with beam.Pipeline(runner=runner, options=options) as p:
    build_pipeline(p, cfg, inputs, out_dir, stage_builder, order)
  if "://" in out_dir:
    return None
  with open(os.path.join(out_dir, report_lib.REPORT_JSON), encoding="utf-8") as f:
    rep = json.load(f)
  rep["seconds"] = round(time.time() - start, 2)
  report_lib.write_report(rep, out_dir)
  return rep
