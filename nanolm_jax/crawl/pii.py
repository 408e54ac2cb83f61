"""PII anonymisation: e-mail addresses, public IP addresses and phone numbers become placeholders. Never drops.

Placeholders are explicit tokens, ``<EMAIL>``, ``<IP_ADDRESS>`` and ``<PHONE>``, rather than datatrove's
PIIFormatter fakes (email@example.com, random IPs from a fixed pool): a model trained on them learns that an
address was there without memorising a fake one, and they are easy to spot when auditing. Private, loopback,
link-local, reserved and documentation addresses are left alone by default (``only_public_ips``), as datatrove
does, since they identify nobody and often carry technical meaning (192.168.1.1 in a router guide).
Counts per type go to ``metadata["pii"]`` (e.g. {"email": 2, "ip": 1, "phone": 0}); the runner sums them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

import ml_collections

from nanolm_jax.crawl.types import Document, StageResult, keep

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_IPV4_RE = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]\d)"
)
# Candidates only: ipaddress.ip_address decides, so the regex may over-match (e.g. times like 12:30:45 fail there).
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# Phone candidates: optional +country code, optional (area), then digit groups separated by space/dot/dash.
# Validation below keeps 9-15 digits (E.164 maximum) and needs a separator or a leading '+', so plain numbers,
# years and prices are not taken for phones.
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,5}\)[\s.\-]?)?\d{2,5}(?:[\s.\-]\d{2,5}){1,4}(?![\w\-]|\.\d)"
)
_DATE_LIKE = re.compile(r"^\d{4}[\-.]\d{1,2}[\-.]\d{1,2}$|^\d{1,2}[\-.]\d{1,2}[\-.]\d{4}$")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.enabled = True
  cfg.emails = True
  cfg.ips = True
  cfg.only_public_ips = True
  cfg.phones = True
  cfg.email_placeholder = "<EMAIL>"
  cfg.ip_placeholder = "<IP_ADDRESS>"
  cfg.phone_placeholder = "<PHONE>"
  return cfg


def _is_public(addr: str) -> bool | None:
  """True for a global address, False for a non-global one, None if ``addr`` is not an IP address at all."""
  try:
    ip = ipaddress.ip_address(addr)
  except ValueError:
    return None
  return ip.is_global and not ip.is_multicast


def _is_phone(s: str) -> bool:
  digits = sum(c.isdigit() for c in s)
  if not 9 <= digits <= 15 or _DATE_LIKE.match(s):
    return False
  return s.startswith("+") or "(" in s or any(c in s for c in " .-")


class PIIFormatter:
  """The pii stage (post dedup): replaces PII and counts it."""

  def __init__(self, cfg: dict[str, Any]):
    self.cfg = cfg

  def _sub_ips(self, text: str, pattern: re.Pattern, counts: dict[str, int]) -> str:
    def repl(m: re.Match) -> str:
      public = _is_public(m.group(0))
      if public is None or (self.cfg["only_public_ips"] and not public):
        return m.group(0)
      counts["ip"] += 1
      return self.cfg["ip_placeholder"]

    return pattern.sub(repl, text)

  def anonymize(self, text: str) -> tuple[str, dict[str, int]]:
    counts = {"email": 0, "ip": 0, "phone": 0}
    if self.cfg["emails"]:
      text, counts["email"] = _EMAIL_RE.subn(self.cfg["email_placeholder"], text)
    if self.cfg["ips"]:
      # IPv6 first: an IPv4-mapped tail (::ffff:1.2.3.4) must go with its address, not on its own.
      text = self._sub_ips(text, _IPV6_RE, counts)
      text = self._sub_ips(text, _IPV4_RE, counts)
    if self.cfg["phones"]:

      def repl(m: re.Match) -> str:
        if not _is_phone(m.group(0)):
          return m.group(0)
        counts["phone"] += 1
        return self.cfg["phone_placeholder"]

      text = _PHONE_RE.sub(repl, text)
    return text, counts

  def __call__(self, doc: Document) -> StageResult:
    text, counts = self.anonymize(doc.text)
    return keep(Document(id=doc.id, url=doc.url, text=text, metadata=dict(doc.metadata, pii=counts)))


def make_stage(cfg: ml_collections.ConfigDict) -> Callable[[Document], StageResult]:
  return PIIFormatter(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
