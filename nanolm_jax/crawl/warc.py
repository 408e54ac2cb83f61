"""Reads WARC / WARC.gz files into HTML Documents, one StageResult per response record.

Non-response records (warcinfo, request, metadata, ...) are not documents and are skipped silently. Every response
record the reader could see yields exactly one StageResult: a kept Document, a drop ("read:not_html", "read:empty",
"read:too_large", "read:binary") or an error ("read:<reason>"). A file that makes warcio raise (truncated gzip,
malformed headers, ...) yields one errored result and stops; the reader itself never raises.
"""

from __future__ import annotations

import codecs
import os
import re
import zlib
from typing import Iterator

import ml_collections

from nanolm_jax.crawl import inputs
from nanolm_jax.crawl.types import Document, StageResult, drop, errored, keep

_HTML_TYPES = ("text/html", "application/xhtml+xml")
# A meta charset declaration lives in the first few KB of a page by the HTML spec (1024 bytes; we allow slack).
_META_SNIFF_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.IGNORECASE)
# Control bytes other than \t \n \r: text in any ASCII-compatible charset has almost none, a binary blob has plenty.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))
_BINARY_SNIFF_BYTES = 8192


def default_config() -> ml_collections.ConfigDict:
  """Reader settings."""
  cfg = ml_collections.ConfigDict()
  # Larger payloads are dropped unread: real pages are rarely above 1 MB and extraction cost grows with size.
  cfg.max_bytes = 2_000_000
  # Share of control bytes above which a "text/html" payload is binary junk.
  cfg.max_control_byte_ratio = 0.02
  # fsspec options per protocol, for remote inputs. http(s): block_size 0 streams each WARC in one GET (a reader
  # reads front to back; ranged block reads would cost a request per 5 MB and need a server that honours Range).
  # s3: anon=False signs requests with the usual AWS credential chain (Common Crawl's s3:// is for AWS users in
  # us-east-1; from elsewhere use https://data.commoncrawl.org/); anon=True for buckets open to unsigned reads.
  cfg.storage_options = ml_collections.ConfigDict(
      {"http": {"block_size": 0}, "https": {"block_size": 0}, "s3": {"anon": False}}
  )
  # A remote file that fails to open (HTTP 503 "Slow Down", a reset) is tried again this many times, this far
  # apart, before it counts as one errored record; a missing file (404) is not retried.
  cfg.open_retries = 0
  cfg.retry_wait_s = 1.0
  return cfg


def _valid_codec(name: str | None) -> str | None:
  if not name:
    return None
  try:
    return codecs.lookup(name.strip().strip("\"'")).name
  except LookupError:
    return None


def decode_html(payload: bytes, content_type: str | None) -> tuple[str, str, str]:
  """Decodes an HTML payload; returns (text, charset, source).

  Order: charset declared in the HTTP Content-Type -> <meta charset> -> strict UTF-8 (by far the commonest, and
  cheap) -> charset-normalizer detection -> UTF-8 with replacement characters. A declared charset that is unknown
  or fails to decode strictly falls through to the next source.
  """
  candidates = []
  if content_type:
    m = _HEADER_CHARSET.search(content_type)
    if m:
      candidates.append((m.group(1), "http"))
  m = _META_CHARSET.search(payload[:_META_SNIFF_BYTES])
  if m:
    candidates.append((m.group(1).decode("ascii", "replace"), "meta"))
  candidates.append(("utf-8", "utf8"))
  for name, source in candidates:
    codec = _valid_codec(name)
    if codec is None:
      continue
    try:
      return payload.decode(codec), codec, source
    except (UnicodeDecodeError, LookupError):
      continue
  try:
    import charset_normalizer  # pylint: disable=g-import-not-at-top

    best = charset_normalizer.from_bytes(payload).best()
    if best is not None:
      return str(best), best.encoding, "detected"
  except Exception:  # pylint: disable=broad-except  # detection is best effort; fall back below.
    pass
  return payload.decode("utf-8", errors="replace"), "utf-8", "replace"


def _mime(content_type: str | None) -> str:
  return (content_type or "").split(";", 1)[0].strip().lower()


def _error_reason(exc: BaseException) -> str:
  """A short snake_case name for what broke the file."""
  name = type(exc).__name__
  msg = str(exc).lower()
  if isinstance(exc, (EOFError, zlib.error)) or "gzip" in msg or "compressed" in msg or "truncat" in msg:
    return "read:truncated"
  if name == "ArchiveLoadFailed" or "header" in msg or isinstance(exc, (ValueError, KeyError, IndexError)):
    return "read:malformed"
  if isinstance(exc, OSError):
    return "read:io_error"
  return "read:" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _is_binary(payload: bytes, max_ratio: float) -> bool:
  sample = payload[:_BINARY_SNIFF_BYTES]
  # bytes.translate with a delete set is a fast C-level count of the control bytes.
  n_control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
  return n_control / max(len(sample), 1) > max_ratio


def _judge(record, warc_file: str, cfg: ml_collections.ConfigDict) -> StageResult:
  """Judges one response record from its headers and (at most max_bytes + 1 of) its payload."""
  headers = record.rec_headers
  record_id = headers.get_header("WARC-Record-ID") or ""
  url = headers.get_header("WARC-Target-URI") or ""
  content_type = record.http_headers.get_header("Content-Type") if record.http_headers else None
  mime = _mime(content_type)
  if mime not in _HTML_TYPES:
    return drop("read:not_html")
  payload = record.content_stream().read(cfg.max_bytes + 1)
  if len(payload) > cfg.max_bytes:
    return drop("read:too_large")
  if not payload.strip():
    return drop("read:empty")
  if _is_binary(payload, cfg.max_control_byte_ratio):
    return drop("read:binary")
  text, charset, charset_source = decode_html(payload, content_type)
  metadata = {
      "url": url,
      "date": headers.get_header("WARC-Date") or "",
      "warc_file": warc_file,
      "record_id": record_id,
      "content_type": mime,
      "charset": charset,
      "charset_source": charset_source,
  }
  return keep(Document(id=record_id or f"{warc_file}#{url}", url=url, text=text, metadata=metadata))


def _truncated(record) -> bool:
  """Drains the record and says whether its block ended before its WARC Content-Length.

  warcio returns short reads for a cut-off gzip member instead of raising, so the byte count is the only witness.
  """
  raw = record.raw_stream
  while raw.read(1 << 16):
    pass
  return getattr(raw, "limit", 0) > 0


def _malformed(record, allow_arc: bool) -> bool:
  """warcio parses almost anything leniently (garbage becomes an ARC record); insist on a well-formed header."""
  if record.rec_type is None or (record.format != "warc" and not allow_arc):
    return True
  length = record.rec_headers.get_header("Content-Length") if record.format == "warc" else "0"
  return length is None or not length.strip().isdigit()


def _trailing_bytes(archive, fh) -> bool:
  """Whether bytes were left over after the last complete record.

  A gzip member cut short makes warcio stop silently (it reads the partial headers as end of file); the end of the
  last whole record (``archive.offset``) then falls short of what was read from the file.
  """
  try:
    return archive.offset < fh.tell()
  except (AttributeError, OSError, ValueError):
    return False


def read_warc(path: str, cfg: ml_collections.ConfigDict | None = None) -> Iterator[StageResult]:
  """Yields one StageResult per response record of the WARC (or WARC.gz) at ``path``; never raises."""
  from warcio.archiveiterator import ArchiveIterator  # pylint: disable=g-import-not-at-top

  cfg = cfg if cfg is not None else default_config()
  warc_file = os.path.basename(path.rstrip("/"))
  allow_arc = ".arc" in warc_file.lower() and ".warc" not in warc_file.lower()
  try:
    retries, wait = cfg.get("open_retries", 0), cfg.get("retry_wait_s", 1.0)
    with inputs.open_path(path, cfg.get("storage_options"), None, retries, wait) as fh:
      archive = ArchiveIterator(fh)
      it = iter(archive)
      while True:
        try:
          record = next(it)
        except StopIteration:
          if _trailing_bytes(archive, fh):
            yield errored("read:truncated")
          return
        if _malformed(record, allow_arc):
          yield errored("read:malformed")
          return
        try:
          if record.rec_type != "response":
            # Not a document, but a cut-off one still means the file ends here.
            if _truncated(record):
              yield errored("read:truncated")
              return
            continue
          result = _judge(record, warc_file, cfg)
          if _truncated(record):
            result = errored("read:truncated")
        except Exception as exc:  # pylint: disable=broad-except  # a broken record ends the file, not the run.
          yield errored(_error_reason(exc))
          return
        yield result
        if result.error:
          return
  except Exception as exc:  # pylint: disable=broad-except  # open / header parse failures.
    yield errored(_error_reason(exc))
