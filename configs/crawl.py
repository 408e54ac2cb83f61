"""Crawl-to-corpus configs: `--config=configs/crawl.py:PRESET`, overrides as `--config.dedup.minhash.seed=2`.

Presets:
  default      FineWeb/datatrove defaults; input from --input (or the demo crawl), local runner, 8 shards.
  demo         the generated demo crawl, 2 workers, 2 shards: a minute on a laptop.
  commoncrawl  scale settings: Common Crawl CC-MAIN-2024-10 from its warc.paths.gz listing over
               https://data.commoncrawl.org/, Beam on Dataflow, 1024 shards (set project/bucket; see README).
"""

import ml_collections

from nanolm_jax.crawl import dedup
from nanolm_jax.crawl import warc

PRESETS = ("default", "demo", "commoncrawl")


def build_config(preset: str, stages_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config around a given stages section (tests pass small fake stages; get_config passes the real ones)."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown crawl preset {preset!r}; choose from {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.input = ml_collections.ConfigDict(
      {
          # A local glob, one path or URL, a remote glob (gs://.../*.warc.gz; Beam only), or a listing file whose
          # name ends in .paths(.gz) (Common Crawl's warc.paths.gz). Empty: generate the demo crawl and use it.
          "glob": "",
          # A listing's relative lines are joined to this; '' = the listing's server root (https://host/, s3://bucket/)
          # or, for a local listing, its folder. Common Crawl: https://data.commoncrawl.org/ or s3://commoncrawl/.
          "base": "",
          # Take files [start, start + num_files) of the listing / sorted glob; num_files 0 = to the end.
          "start": 0,
          "num_files": 0,
          "demo": {"seed": 0, "num_files": 4, "pages_per_file": 80},
      }
  )
  c.read = warc.default_config()  # max_bytes, max_control_byte_ratio, storage_options (fsspec, per protocol)
  c.stages = stages_cfg  # url_filter, extract, langid, gopher_*, c4, fineweb_quality, pii: each with `enabled`
  c.dedup = dedup.default_config()  # exact.enabled; minhash.{enabled, n_grams, num_buckets, hashes_per_bucket, seed}
  c.output = ml_collections.ConfigDict(
      {
          "dir": "./runs/crawl",
          "num_shards": 8,
          "tfds": False,  # also build the TFDS dataset crawl_corpus (array_record) from the shards
          "tfds_data_dir": "",  # '' = <output.dir>/tfds
      }
  )
  c.runner = ml_collections.ConfigDict(
      {
          "name": "local",  # local | beam
          "num_workers": 0,  # local: processes, 0 = one per CPU; beam: direct_num_workers for the local runner
          "progress": True,
          # Extra Beam pipeline options, one shell-quoted string; empty = run on this machine (FnApiRunner).
          "beam_options": "",
      }
  )
  if preset == "demo":
    c.runner.num_workers = 2
    c.output.num_shards = 2
  elif preset == "commoncrawl":
    # Common Crawl is not on gs://; its listing's lines are relative to https://data.commoncrawl.org/ (from AWS
    # us-east-1: --config.input.base=s3://commoncrawl/ with AWS credentials).
    c.input.glob = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/warc.paths.gz"
    c.read.open_retries = 60  # Common Crawl's "503 Slow Down": retry politely, once a second, for up to a minute
    c.output.dir = "gs://YOUR_BUCKET/crawl/CC-MAIN-2024-10"
    c.output.num_shards = 1024
    c.runner.name = "beam"
    c.runner.beam_options = (
        "--runner=DataflowRunner --project=YOUR_PROJECT --region=us-central1 "
        "--temp_location=gs://YOUR_BUCKET/tmp --setup_file=./setup.py "
        "--requirements_file=crawl-worker-requirements.txt --max_num_workers=256"
    )
  return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  from nanolm_jax.crawl import stages  # pylint: disable=g-import-not-at-top  # keeps build_config import-light

  return build_config(preset or "default", stages.default_stages_config())
