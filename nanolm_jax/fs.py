"""One path layer for run folders and data files: local paths and any fsspec URL (gs://, s3://, https://, memory://).

Every read and write of a run folder goes through here, so a `gs://BUCKET/run` workdir behaves like a local one for
every entrypoint. Local paths use the OS directly (atomic replace, real mtimes); URLs use fsspec (gcsfs for gs://,
which honours STORAGE_EMULATOR_HOST). Object stores have no append and no rename: a write replaces the whole object,
which is atomic on GCS and S3, so `write_*` needs no temporary file there.
"""

from __future__ import annotations

import glob as glob_lib
import gzip
import io
import os
import posixpath
import shutil
import tempfile
from typing import IO, Any

import fsspec


def is_remote(path: str) -> bool:
  """True for URLs with a scheme (gs://, s3://, ...); file:// and plain paths are local."""
  return "://" in str(path) and not str(path).startswith("file://")


def _local(path: str) -> str:
  path = os.fspath(path)
  return path[len("file://") :] if path.startswith("file://") else os.path.expanduser(path)


def _fs(path: str) -> tuple[Any, str]:
  fs, p = fsspec.core.url_to_fs(path)
  # Listings are cached per process; other hosts (and other processes) write the same folders, so never trust them.
  fs.invalidate_cache()
  return fs, p


def join(base: str, *parts: str) -> str:
  base = os.fspath(base)
  return posixpath.join(base, *parts) if is_remote(base) else os.path.join(_local(base), *parts)


def abspath(path: str) -> str:
  """Absolute local path, or the URL unchanged (URLs are absolute already)."""
  return path if is_remote(path) else os.path.abspath(_local(path))


def basename(path: str) -> str:
  return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(os.path.normpath(path))


def _query(path: str, local: Any, remote: str) -> bool:
  if not is_remote(path):
    return local(_local(path))
  fs, p = _fs(path)
  return getattr(fs, remote)(p)


def exists(path: str) -> bool:
  return _query(path, os.path.exists, "exists")


def isdir(path: str) -> bool:
  """A folder (remote: a prefix with objects under it; object stores have no empty folders)."""
  return _query(path, os.path.isdir, "isdir")


def isfile(path: str) -> bool:
  return _query(path, os.path.isfile, "isfile")


def makedirs(path: str) -> None:
  """Creates a local folder (and parents); a no-op for object stores, where folders are name prefixes."""
  if not is_remote(path):
    os.makedirs(_local(path), exist_ok=True)


def listdir(path: str) -> list[str]:
  """Names (not paths) of the entries of a folder; [] when it does not exist."""
  if not is_remote(path):
    return sorted(os.listdir(_local(path))) if os.path.isdir(_local(path)) else []
  fs, p = _fs(path)
  if not fs.isdir(p):
    return []
  return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False) if e.rstrip("/") != p.rstrip("/"))


def glob(pattern: str) -> list[str]:
  """Sorted files matching a glob (`**` recursive), as paths or URLs in the pattern's own form."""
  if not is_remote(pattern):
    return sorted(p for p in glob_lib.glob(_local(pattern), recursive=True) if os.path.isfile(p))
  fs, p = _fs(pattern)
  scheme = pattern.split("://", 1)[0]
  return sorted(f"{scheme}://{m}" for m in fs.glob(p) if fs.isfile(m))


def open_file(path: str, mode: str = "r", encoding: str | None = "utf-8", errors: str | None = None) -> IO[Any]:
  """A file object for reading or writing ('r', 'rb', 'w', 'wb'); `.gz` files are (de)compressed transparently."""
  binary = "b" in mode
  raw_mode = mode.replace("t", "").replace("b", "") + "b"
  if is_remote(path):
    raw = fsspec.open(path, raw_mode).open()
  else:
    raw = open(_local(path), raw_mode)  # pylint: disable=consider-using-with
  if str(path).endswith(".gz"):
    raw = gzip.GzipFile(fileobj=raw, mode=raw_mode)
  if binary:
    return raw
  return io.TextIOWrapper(raw, encoding=encoding or "utf-8", errors=errors)


def read_bytes(path: str) -> bytes:
  if not is_remote(path):
    with open(_local(path), "rb") as f:
      return f.read()
  fs, p = _fs(path)
  return fs.cat_file(p)


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole file atomically: a local temp file renamed over it, or one object upload."""
  if is_remote(path):
    fs, p = _fs(path)
    fs.pipe_file(p, data)
    return
  folder = os.path.dirname(os.path.abspath(_local(path)))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  os.replace(tmp, _local(path))  # concurrent writers (several hosts on a shared disk) never leave a torn file


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def append_text(path: str, text: str) -> None:
  """Appends to a local file; on an object store, rewrites the object (callers batch their appends)."""
  if is_remote(path):
    old = read_bytes(path) if exists(path) else b""
    write_bytes(path, old + text.encode("utf-8"))
    return
  with open(_local(path), "a", encoding="utf-8") as f:
    f.write(text)


def copy(src: str, dst: str) -> None:
  """Copies one file between any two locations (local <-> remote included), atomically at the destination."""
  write_bytes(dst, read_bytes(src))


def remove(path: str, recursive: bool = False) -> None:
  if not exists(path):
    return
  if not is_remote(path):
    (shutil.rmtree if recursive and os.path.isdir(_local(path)) else os.remove)(_local(path))
    return
  fs, p = _fs(path)
  fs.rm(p, recursive=recursive)


def stat(path: str) -> tuple[int, int | str]:
  """(size in bytes, a version that changes when the content may have: mtime_ns, or the object's generation/etag)."""
  if not is_remote(path):
    st = os.stat(_local(path))
    return st.st_size, st.st_mtime_ns
  fs, p = _fs(path)
  info = fs.info(p)
  tag = next(
      (str(info[k]) for k in ("generation", "ETag", "etag", "mtime", "updated", "LastModified") if k in info), ""
  )
  return int(info.get("size") or 0), tag
