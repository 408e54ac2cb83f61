"""Tests for the WARC reader: documents, drops, charsets and broken files."""

import gzip
import io

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from nanolm_jax.crawl import warc

_HTML = "<html><head><title>t</title></head><body><p>Hello world, this is a page.</p></body></html>"


def _write(path, records, gz=True):
  """records: (rec_type, url, body bytes, content_type or None)."""
  buf = io.BytesIO()
  w = WARCWriter(buf, gzip=gz)
  for i, (rec_type, url, body, ctype) in enumerate(records):
    headers = {"WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>", "WARC-Date": "2024-01-02T03:04:05Z"}
    http = None
    if rec_type == "response":
      http = StatusAndHeaders("200 OK", [("Content-Type", ctype)] if ctype else [], protocol="HTTP/1.1")
    elif rec_type in ("warcinfo", "metadata"):
      headers["Content-Type"] = "application/warc-fields"
    w.write_record(
        w.create_warc_record(
            url, rec_type, payload=io.BytesIO(body), length=len(body), http_headers=http, warc_headers_dict=headers
        )
    )
  path.write_bytes(buf.getvalue())
  return str(path)


def _read(path, **overrides):
  cfg = warc.default_config()
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return list(warc.read_warc(path, cfg))


def test_html_response_becomes_document_and_other_records_are_not_counted(tmp_path):
  path = _write(
      tmp_path / "a.warc.gz",
      [
          ("warcinfo", "", b"software: test\r\n", None),
          ("request", "https://example.com/a", b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n", None),
          ("response", "https://example.com/a", _HTML.encode(), "text/html; charset=utf-8"),
          ("metadata", "https://example.com/a", b"fetchTimeMs: 12\r\n", None),
      ],
  )
  results = _read(path)
  assert len(results) == 1
  doc = results[0].doc
  assert results[0].kept and doc.url == "https://example.com/a" and doc.text == _HTML
  assert doc.id == "<urn:uuid:00000000-0000-0000-0000-000000000002>"
  assert doc.metadata["record_id"] == doc.id
  assert doc.metadata["date"] == "2024-01-02T03:04:05Z"
  assert doc.metadata["warc_file"] == "a.warc.gz"
  assert doc.metadata["content_type"] == "text/html" and doc.metadata["charset"] == "utf-8"


def test_uncompressed_warc_is_read(tmp_path):
  path = _write(tmp_path / "a.warc", [("response", "https://e.com/", _HTML.encode(), "text/html")], gz=False)
  assert [r.kept for r in _read(path)] == [True]


@pytest.mark.parametrize(
    "ctype,body,reason",
    [
        ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00", "read:not_html"),
        ("application/pdf", b"%PDF-1.4 ...", "read:not_html"),
        ("text/html", b"", "read:empty"),
        ("text/html", b"   \n\t ", "read:empty"),
        ("text/html", bytes(range(256)) * 8, "read:binary"),
    ],
)
def test_drops(tmp_path, ctype, body, reason):
  path = _write(
      tmp_path / "a.warc.gz",
      [("response", "https://e.com/x", body, ctype), ("response", "https://e.com/ok", _HTML.encode(), "text/html")],
  )
  results = _read(path)
  assert [(r.kept, r.reason, r.error) for r in results] == [(False, reason, False), (True, None, False)]


def test_xhtml_is_html(tmp_path):
  path = _write(tmp_path / "a.warc.gz", [("response", "https://e.com/", _HTML.encode(), "application/xhtml+xml")])
  assert _read(path)[0].kept


def test_too_large_is_dropped_and_limit_is_inclusive(tmp_path):
  body = _HTML.encode()
  path = _write(tmp_path / "a.warc.gz", [("response", "https://e.com/", body, "text/html")])
  assert _read(path, max_bytes=len(body) - 1)[0].reason == "read:too_large"
  assert _read(path, max_bytes=len(body))[0].kept


def test_charset_from_http_header(tmp_path):
  body = "<html><body><p>Café crème à Noël</p></body></html>".encode("latin-1")
  path = _write(tmp_path / "a.warc.gz", [("response", "https://e.com/", body, "text/html; charset=ISO-8859-1")])
  doc = _read(path)[0].doc
  assert "Café crème à Noël" in doc.text and doc.metadata["charset_source"] == "http"


def test_charset_from_meta_tag_when_header_has_none(tmp_path):
  body = '<html><head><meta charset="windows-1252"></head><body><p>Café “quoted”</p></body></html>'.encode("cp1252")
  path = _write(tmp_path / "a.warc.gz", [("response", "https://e.com/", body, "text/html")])
  doc = _read(path)[0].doc
  assert "Café “quoted”" in doc.text and doc.metadata["charset_source"] == "meta"


def test_bogus_declared_charset_falls_through():
  text, charset, source = warc.decode_html("<p>naïve</p>".encode(), "text/html; charset=no-such-charset")
  assert text == "<p>naïve</p>" and charset == "utf-8" and source == "utf8"


def test_undeclared_non_utf8_is_detected():
  body = "<html><body><p>" + "Привет, как дела? Это обычная страница на русском языке. " * 6 + "</p></body></html>"
  text, charset, source = warc.decode_html(body.encode("cp1251"), "text/html")
  assert source == "detected" and "Привет, как дела?" in text, charset


def test_declared_charset_that_fails_strictly_is_not_trusted():
  # Declared utf-8 but actually latin-1: strict utf-8 fails, detection takes over, nothing raises.
  text, _, source = warc.decode_html("<p>Ça coûte très cher à Zürich</p>".encode("latin-1"), "text/html; charset=utf-8")
  assert source in ("detected", "replace") and "Z" in text


def test_truncated_gzip_keeps_earlier_records_then_errors_once(tmp_path):
  path = _write(
      tmp_path / "a.warc.gz", [("response", f"https://e.com/{i}", (_HTML * 20).encode(), "text/html") for i in range(3)]
  )
  data = (tmp_path / "a.warc.gz").read_bytes()
  (tmp_path / "a.warc.gz").write_bytes(data[: len(data) - 300])
  results = _read(path)
  assert [r.kept for r in results] == [True, True, False]
  assert results[-1].error and results[-1].reason == "read:truncated"


def test_truncated_uncompressed_record_errors(tmp_path):
  path = _write(
      tmp_path / "a.warc",
      [("response", f"https://e.com/{i}", (_HTML * 20).encode(), "text/html") for i in range(2)],
      gz=False,
  )
  data = (tmp_path / "a.warc").read_bytes()
  (tmp_path / "a.warc").write_bytes(data[: len(data) - 500])
  results = _read(path)
  assert results[0].kept and results[-1].error and results[-1].reason.startswith("read:")
  assert sum(r.kept for r in results) == 1


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a warc file at all\r\n\r\n",
        b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: banana\r\n\r\nxyz",
        gzip.compress(b"WARC/1.0\r\nno colon header line\r\n\r\n"),
    ],
)
def test_malformed_files_error_without_raising(tmp_path, content):
  path = tmp_path / "bad.warc.gz"
  path.write_bytes(content)
  results = _read(str(path))
  assert len(results) == 1 and results[0].error and results[0].reason.startswith("read:")


def test_missing_file_errors_without_raising(tmp_path):
  results = _read(str(tmp_path / "nope.warc.gz"))
  assert len(results) == 1 and results[0].error and results[0].reason == "read:io_error"
