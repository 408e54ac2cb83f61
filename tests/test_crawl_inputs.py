"""Tests for nanolm_jax.crawl.inputs: Common Crawl style listings (warc.paths.gz), local and over real HTTP."""

import functools
import glob
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading

import ml_collections
import pytest

from configs import crawl as crawl_config
from nanolm_jax.crawl import demo, inputs, local_runner, warc, writer
from tests import crawl_copies

_CC = "crawl-data/CC-TEST-2024-10"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
  """A local tree shaped like Common Crawl's: <root>/crawl-data/CC-.../segments/<s>/warc/*.warc.gz + warc.paths.gz."""
  root = str(tmp_path_factory.mktemp("cc"))
  lines = []
  for seg in ("1700000000.1", "1700000000.2"):
    folder = os.path.join(root, _CC, "segments", seg, "warc")
    for p in demo.write_demo_crawl(folder, seed=int(seg[-1]), num_files=2, pages_per_file=12):
      lines.append(os.path.relpath(p, root))
  listing = os.path.join(root, _CC, "warc.paths.gz")
  with gzip.open(listing, "wt") as f:
    f.write("\n".join(lines) + "\n")
  return root, listing, lines


def _cfg() -> ml_collections.ConfigDict:
  cfg = crawl_config.build_config("demo", ml_collections.ConfigDict())
  cfg.runner.num_workers = 1
  cfg.output.num_shards = 2
  return cfg


def _shards(out) -> list[bytes]:
  return [open(p, "rb").read() for p in sorted(glob.glob(writer.shard_glob(str(out))))]


def test_listing_resolves_against_a_base_with_a_range(mirror, tmp_path):
  root, listing, lines = mirror
  want = [os.path.join(root, line) for line in lines]
  # No base: a local listing's lines are relative to... the listing's folder, which here is not the root.
  assert inputs.read_listing(listing) == [os.path.join(os.path.dirname(listing), line) for line in lines]
  assert inputs.read_listing(listing, base=root) == want
  assert inputs.read_listing(listing, base="file://" + root) == want
  assert inputs.find_inputs(listing, base=root) == want
  assert inputs.find_inputs(listing, base=root, num_files=2) == want[:2]
  assert inputs.find_inputs(listing, base=root, start=1, num_files=2) == want[1:3]
  assert inputs.find_inputs(listing, base=root, start=3) == want[3:]
  with pytest.raises(ValueError, match="only 4 input files"):
    inputs.find_inputs(listing, base=root, start=4)
  # Plain-text listings, comments, blank lines and absolute lines; a file listed twice is read once.
  plain = tmp_path / "mine.paths"
  plain.write_text(f"# two of them\n{lines[0]}\n\n{want[1]}\n{lines[0]}\n")
  got = inputs.find_inputs(str(plain), base=root)
  assert got == [want[0], want[1], want[0]] and inputs.unique_paths(got) == (sorted(want[:2]), 1)


def test_bad_listings_are_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="Cannot read the WARC listing"):
    inputs.find_inputs(str(tmp_path / "missing.paths.gz"))
  (tmp_path / "bad.paths.gz").write_bytes(b"not gzip at all")
  with pytest.raises(ValueError, match="Cannot read the WARC listing"):
    inputs.find_inputs(str(tmp_path / "bad.paths.gz"))
  (tmp_path / "empty.paths").write_text("# nothing\n\n")
  with pytest.raises(ValueError, match="lists no files"):
    inputs.find_inputs(str(tmp_path / "empty.paths"))
  with pytest.raises(ValueError, match="matches no files"):
    inputs.find_inputs(str(tmp_path / "*.warc.gz"))
  with pytest.raises(ValueError, match="remote glob"):
    inputs.find_inputs("gs://bucket/*.warc.gz", num_files=3)
  assert inputs.find_inputs("gs://bucket/*.warc.gz") == "gs://bucket/*.warc.gz"  # Beam's MatchFiles takes it


def test_commoncrawl_preset_points_at_common_crawl():
  cfg = crawl_config.build_config("commoncrawl", ml_collections.ConfigDict())
  listing = cfg.input.glob
  assert listing == "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/warc.paths.gz"
  assert "gs://commoncrawl" not in json.dumps(cfg.to_dict())
  line = "crawl-data/CC-MAIN-2024-10/segments/1707947473347.0/warc/CC-MAIN-20240220211055-20240221001055-00000.warc.gz"
  assert inputs.resolve(line, inputs.default_base(listing)) == "https://data.commoncrawl.org/" + line
  assert inputs.resolve(line, "s3://commoncrawl/") == "s3://commoncrawl/" + line
  opts = cfg.read.storage_options
  assert inputs.storage_kwargs("s3://commoncrawl/" + line, opts) == {"anon": False}
  assert inputs.storage_kwargs("https://data.commoncrawl.org/" + line, opts) == {"block_size": 0}
  assert inputs.storage_kwargs("/local/file.warc.gz", opts) == {}
  for flag in ("--runner=DataflowRunner", "--project=", "--region=", "--temp_location=gs://", "--setup_file="):
    assert flag in cfg.runner.beam_options


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves files; answers "503 Slow Down" to the next ``slow_down[path]`` GETs of a path, as Common Crawl may."""

  slow_down: dict[str, int] = {}

  def do_GET(self):
    if self.slow_down.get(self.path, 0) > 0:
      self.slow_down[self.path] -= 1
      self.send_error(503, "Slow Down")
      return
    super().do_GET()

  def log_message(self, *args):  # keep pytest's output clean
    pass


@pytest.fixture
def server(mirror):
  """A plain HTTP server on 127.0.0.1 over the mirror (it ignores Range headers, as a simple server may)."""
  pytest.importorskip("aiohttp", reason="fsspec's http:// needs aiohttp (pip install -e '.[commoncrawl]')")
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=mirror[0]))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def test_crawl_over_http_matches_the_local_files(mirror, server, tmp_path):
  """warc.paths.gz and the WARCs fetched with fsspec's http backend: same corpus and counts as reading the files."""
  root, _, lines = mirror
  urls = inputs.find_inputs(f"{server}/{_CC}/warc.paths.gz", num_files=3)
  assert urls == [f"{server}/{line}" for line in lines[:3]]
  with inputs.open_path(urls[0], _cfg().read.storage_options) as f:  # one streamed GET, no Range requests
    assert type(f).__name__ == "HTTPStreamFile" and f.read(2) == b"\x1f\x8b"
  got = [r.reason or r.doc.id for r in warc.read_warc(urls[2], _cfg().read)]
  assert got == [r.reason or r.doc.id for r in warc.read_warc(os.path.join(root, lines[2]), _cfg().read)] != []
  run = functools.partial(local_runner.run, stage_builder=crawl_copies.cheap_stages, progress=False)
  over_http = run(_cfg(), urls, str(tmp_path / "http"))
  local = run(_cfg(), [os.path.join(root, line) for line in lines[:3]], str(tmp_path / "local"))
  assert _shards(tmp_path / "http") == _shards(tmp_path / "local") != []
  drop_run = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "num_workers")}
  assert drop_run(over_http) == drop_run(local) and over_http["kept"] > 0
  missing = [r.reason for r in warc.read_warc(f"{server}/{_CC}/nope.warc.gz", _cfg().read)]
  assert missing == ["read:io_error"]  # a 404 is one errored record, not a crash


def test_slow_down_answers_are_retried(mirror, server):
  """A 503 at open is retried (open_retries, retry_wait_s apart); past the retries the file is one errored record."""
  root, _, lines = mirror
  want = [r.reason or r.doc.id for r in warc.read_warc(os.path.join(root, lines[0]), _cfg().read)]
  cfg = _cfg().read
  cfg.retry_wait_s = 0.01
  for retries, got_all in ((1, False), (2, True)):
    cfg.open_retries = retries
    _Handler.slow_down["/" + lines[0]] = 2
    got = [(r.error, r.reason or r.doc.id) for r in warc.read_warc(f"{server}/{lines[0]}", cfg)]
    assert _Handler.slow_down["/" + lines[0]] == 0
    if got_all:
      assert [g for _, g in got] == want and not any(e for e, _ in got)
    else:
      assert len(got) == 1 and got[0][0] and got[0][1].startswith("read:")


@pytest.mark.slow
def test_cli_reads_a_listing_range(mirror, tmp_path):
  """process_crawl --input=<warc.paths.gz> --config.input.start/num_files: the chosen files, resolved on a base."""
  root, listing, _ = mirror
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "experiments.process_crawl", "--config=configs/crawl.py:demo", f"--input={listing}"]
  cmd += [f"--config.input.base={root}", "--config.input.start=1", "--config.input.num_files=2", f"--output={out}"]
  cmd += ["--config.runner.progress=False"]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(2 files)" in proc.stdout
  rep = json.loads((out / "report.json").read_text())
  assert rep["input_files"] == 2 and rep["kept"] > 0
  bad = subprocess.run(
      cmd[:5] + ["--config.input.start=9", f"--output={out}"], cwd=repo, capture_output=True, text=True
  )
  assert bad.returncode != 0 and "input.start=9 but there are only 4 input files" in bad.stderr
