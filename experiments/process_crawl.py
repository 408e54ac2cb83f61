r"""Turns a web crawl (WARC files) into a deduplicated pretraining corpus (gz JSONL shards) and a report.

  python -m experiments.process_crawl                                  # demo crawl, local runner -> ./runs/crawl
  python -m experiments.process_crawl --input='/data/warc/*.warc.gz' --output=/data/corpus
  python -m experiments.process_crawl --runner=beam                    # same pipeline on Apache Beam, offline
  python -m experiments.process_crawl --config=configs/crawl.py:demo --config.dedup.minhash.num_buckets=20
  python -m experiments.process_crawl --config.output.tfds=True        # also build TFDS dataset crawl_corpus
  python -m experiments.process_crawl --runner=beam --config.input.num_files=2 \
    --input=https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/warc.paths.gz   # the first 2 Common Crawl WARCs

Train on the result with data.sources='files:<output>/crawl-*.jsonl.gz'. A rerun with the local runner resumes:
input files already processed are skipped. Dataflow: see the README (Crawl -> corpus) and configs/crawl.py.
"""

import glob
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import configs
from nanolm_jax.crawl import demo
from nanolm_jax.crawl import inputs as inputs_lib
from nanolm_jax.crawl import local_runner
from nanolm_jax.crawl import report as report_lib
from nanolm_jax.crawl import writer

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(configs.__file__), "crawl.py"), "Crawl config (configs/crawl.py[:PRESET])."
)
_INPUT = flags.DEFINE_string(
    "input",
    None,
    "WARC(.gz) files: a local glob, a URL, a remote glob (Beam), or a *.paths(.gz) listing such as Common Crawl's "
    "warc.paths.gz (see config input.base/start/num_files); default: config input.glob, else the demo crawl.",
)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (overrides config output.dir).")
_RUNNER = flags.DEFINE_enum("runner", None, ["local", "beam"], "Overrides config runner.name.")


def _inputs(cfg) -> tuple[list[str] | str, str]:
  """(input paths or a remote glob, a description); with no input, writes the demo crawl once and reuses it."""
  spec = _INPUT.value or cfg.input.glob
  if spec:
    i = cfg.input
    try:
      found = inputs_lib.find_inputs(
          spec, i.base, i.start, i.num_files, cfg.read.get("storage_options"), cfg.read.get("open_retries", 0)
      )
    except ValueError as exc:
      raise app.UsageError(str(exc)) from exc
    if isinstance(found, str):
      return found, spec  # a remote glob: matched by Beam's MatchFiles on the workers' filesystem (gs:// etc.)
    paths, repeated = inputs_lib.unique_paths(found)
    note = f", {repeated} repeated path(s) read once" if repeated else ""
    return paths, f"{spec} ({len(paths)} files{note})"
  d = cfg.input.demo
  demo_dir = os.path.join(cfg.output.dir, "_demo_warc", f"seed{d.seed}-{d.num_files}x{d.pages_per_file}")
  paths = sorted(glob.glob(os.path.join(demo_dir, "*.warc.gz")))
  if len(paths) != d.num_files:
    paths = demo.write_demo_crawl(demo_dir, seed=d.seed, num_files=d.num_files, pages_per_file=d.pages_per_file)
  return paths, f"demo crawl ({len(paths)} files in {demo_dir})"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  if _OUTPUT.value:
    cfg.output.dir = _OUTPUT.value
  if _RUNNER.value:
    cfg.runner.name = _RUNNER.value
  inputs, described = _inputs(cfg)
  out = cfg.output.dir
  print(f"Input: {described}\nRunner: {cfg.runner.name}\nOutput: {out}")
  if cfg.runner.name == "beam":
    from nanolm_jax.crawl import beam_runner  # pylint: disable=g-import-not-at-top  # optional dependency

    rep = beam_runner.run(cfg, inputs, out)
  else:
    if isinstance(inputs, str):
      raise app.UsageError(
          f"The local runner reads a list of files, not the remote glob {inputs!r}: use --runner=beam."
      )
    rep = local_runner.run(cfg, inputs, out, progress=cfg.runner.progress)
  if rep is None:
    print(f"Done: shards, {report_lib.REPORT_JSON} and {report_lib.FUNNEL_PNG} are in {out}")
    return
  print()
  print(report_lib.format_summary(rep))
  print(f"\nShards:  {writer.shard_glob(out)}  ({rep['kept']} documents)")
  print(f"Report:  {os.path.join(out, report_lib.REPORT_JSON)}")
  print(f"Funnel:  {os.path.join(out, report_lib.FUNNEL_PNG)}")
  if cfg.output.tfds:
    data_dir = cfg.output.tfds_data_dir or os.path.join(out, "tfds")
    builder = writer.build_tfds(writer.shard_glob(out), data_dir)
    print(f"TFDS:    {builder.name} in {data_dir} (tfds:{builder.name} with data.data_dir={data_dir})")
  print(f"Train on it: --config.data.sources='files:{writer.shard_glob(out)}'")


if __name__ == "__main__":
  app.run(main)
