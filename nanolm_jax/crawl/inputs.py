"""Which WARC files a crawl reads: a local glob, one path or URL, a remote glob, or a ``warc.paths.gz`` listing.

Common Crawl publishes one listing per crawl, e.g. ``https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/
warc.paths.gz``: gzipped text, one WARC per line, relative to the bucket root (``crawl-data/CC-MAIN-2024-10/segments/
<segment>/warc/<name>.warc.gz``). Resolved against ``https://data.commoncrawl.org/`` (from anywhere) or
``s3://commoncrawl/`` (from AWS us-east-1, with AWS credentials) the lines are the files to read. A listing's lines
resolve against ``base``; with no base, against the root of the listing's own server (``scheme://host/``), or for a
local listing against its folder.

Every path or URL is opened through ``open_path``: local files directly, anything with a scheme through fsspec, with
the per-protocol ``storage_options`` of the read config (``{"s3": {"anon": ...}, "https": {"block_size": 0}}``).
"""

from __future__ import annotations

import glob as globlib
import os
import time
import urllib.parse
from typing import IO, Any, Mapping, Sequence

LISTING_SUFFIXES = (".paths", ".paths.gz")
_GLOB_CHARS = "*?["


def _protocol(path: str) -> str:
  return path.split("://", 1)[0].lower() if "://" in path else "file"


def is_remote(path: str) -> bool:
  return "://" in path and not path.startswith("file://")


def storage_kwargs(path: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
  """The fsspec keyword arguments for ``path``'s protocol (e.g. ``{"anon": True}`` for s3)."""
  opts = (storage_options or {}).get(_protocol(path)) if storage_options is not None else None
  if opts is None:
    return {}
  return dict(opts.to_dict() if hasattr(opts, "to_dict") else opts)


def open_path(
    path: str,
    storage_options: Mapping[str, Any] | None = None,
    compression: str | None = None,
    retries: int = 0,
    retry_wait_s: float = 1.0,
) -> IO[bytes]:
  """An open binary file (a context manager) for a local path, ``file://``, or any fsspec URL.

  A remote open that fails for any reason but a missing or forbidden file is tried again up to ``retries`` times,
  ``retry_wait_s`` apart: Common Crawl answers bursts with "503 Slow Down", and asks for polite retries, about one a
  second; a file that opens is then read whole in one stream.
  """
  if not is_remote(path) and compression is None:
    return open(path.removeprefix("file://"), "rb")  # local reads need no fsspec
  import fsspec  # pylint: disable=g-import-not-at-top  # http(s) needs aiohttp, s3 s3fs, gs gcsfs: the extras

  for attempt in range(retries + 1):
    try:
      return fsspec.open(path, "rb", compression=compression, **storage_kwargs(path, storage_options)).open()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
      raise
    except Exception:  # pylint: disable=broad-except  # HTTP 5xx, resets, timeouts: the backends raise many types
      if attempt == retries:
        raise
      time.sleep(retry_wait_s)
  raise AssertionError("unreachable")


def canonical(path: str) -> str:
  """One spelling per file: local paths absolute and without ``file://``; URLs as given."""
  if is_remote(path):
    return path
  return os.path.abspath(os.path.expanduser(path.removeprefix("file://")))


def unique_paths(paths: Sequence[str]) -> tuple[list[str], int]:
  """(sorted distinct files, how many entries named a file already listed) - a file given twice is read once."""
  canon = [canonical(p) for p in paths]
  distinct = sorted(set(canon))
  return distinct, len(canon) - len(distinct)


def default_base(listing: str) -> str:
  """Where a listing's relative lines live when no base is given: its server's root, or its local folder."""
  if is_remote(listing):
    parts = urllib.parse.urlsplit(listing)
    return f"{parts.scheme}://{parts.netloc}/"
  return os.path.dirname(canonical(listing))


def resolve(line: str, base: str) -> str:
  """A listing line as a path or URL: absolute ones as they are, relative ones joined to ``base``."""
  if "://" in line or line.startswith("/"):
    return line
  if is_remote(base):
    return base.rstrip("/") + "/" + line
  return os.path.join(canonical(base), line)


def read_listing(
    listing: str, base: str = "", storage_options: Mapping[str, Any] | None = None, retries: int = 0
) -> list[str]:
  """The WARC paths of a listing file (plain or .gz; blank lines and ``#`` comments skipped), in listing order."""
  compression = "gzip" if listing.endswith(".gz") else None
  try:
    with open_path(listing, storage_options, compression, retries) as f:
      text = f.read().decode("utf-8")
  except (OSError, EOFError, UnicodeDecodeError) as exc:
    raise ValueError(f"Cannot read the WARC listing {listing!r}: {type(exc).__name__}: {exc}") from exc
  base = base or default_base(listing)
  lines = [line.strip() for line in text.splitlines()]
  return [resolve(line, base) for line in lines if line and not line.startswith("#")]


def select(paths: Sequence[str], start: int = 0, num_files: int = 0) -> list[str]:
  """paths[start : start + num_files] (num_files 0: to the end); a range past the end is an error, not an empty run."""
  if start < 0 or num_files < 0:
    raise ValueError(f"input.start={start} and input.num_files={num_files} must be >= 0.")
  if start and start >= len(paths):
    raise ValueError(f"input.start={start} but there are only {len(paths)} input files.")
  return list(paths[start : start + num_files if num_files else None])


def find_inputs(
    spec: str,
    base: str = "",
    start: int = 0,
    num_files: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    retries: int = 0,
) -> list[str] | str:
  """The input files named by ``spec``: a list of paths, or a remote glob left as a string for Beam's MatchFiles.

  spec: a listing (name ends in .paths or .paths.gz; lines resolved against ``base``), a local glob, one URL, or a
  remote glob (gs://bucket/*/x.warc.gz). ``start``/``num_files`` pick a range of the (sorted or listed) files.
  """
  if not spec:
    raise ValueError("No input given.")
  if spec.endswith(LISTING_SUFFIXES):
    paths = read_listing(spec, base, storage_options, retries)
    if not paths:
      raise ValueError(f"The WARC listing {spec!r} lists no files.")
  elif is_remote(spec) and any(c in spec for c in _GLOB_CHARS):
    if start or num_files:
      raise ValueError("input.start / input.num_files need a list of files; a remote glob is matched by Beam whole.")
    return spec
  elif is_remote(spec):
    paths = [spec]
  else:
    paths = sorted(globlib.glob(os.path.expanduser(spec.removeprefix("file://"))))
    if not paths:
      raise ValueError(f"Input {spec!r} matches no files.")
  return select(paths, start, num_files)
