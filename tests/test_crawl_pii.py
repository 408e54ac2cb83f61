"""Tests for PII anonymisation: what is replaced, what is left alone, and the counts."""

import pickle

import pytest

from nanolm_jax.crawl import pii
from nanolm_jax.crawl.types import Document


def _stage(**overrides):
  cfg = pii.default_config()
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return pii.make_stage(cfg)


def _run(text, **overrides):
  result = _stage(**overrides)(Document(id="1", url="https://e.com", text=text, metadata={"language": "en"}))
  assert result.kept  # PII never drops
  return result.doc.text, result.doc.metadata["pii"]


@pytest.mark.parametrize(
    "text,expected,kind",
    [
        ("Write to jane.doe+news@mail.example.co.uk today.", "Write to <EMAIL> today.", "email"),
        ("Server 93.184.216.34 is down.", "Server <IP_ADDRESS> is down.", "ip"),
        ("Mirror 2606:2800:220:1:248:1893:25c8:1946 is up.", "Mirror <IP_ADDRESS> is up.", "ip"),
        ("Call +1 (555) 013-2000 now.", "Call <PHONE> now.", "phone"),
        ("Call 020 7946 0958 now.", "Call <PHONE> now.", "phone"),
        ("Call +44 20 7946 0958 now.", "Call <PHONE> now.", "phone"),
        ("Call 555-013-2000 now.", "Call <PHONE> now.", "phone"),
    ],
)
def test_replaced_and_counted(text, expected, kind):
  out, counts = _run(text)
  assert out == expected
  assert counts[kind] == 1 and sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "The router lives at 192.168.1.1 by default.",  # private
        "Loopback is 127.0.0.1 and ::1 on most systems.",  # loopback
        "Documentation uses 203.0.113.7 and 2001:db8::1.",  # reserved for documentation
        "Version 1.2.3.4.5 and 300.1.1.1 are not addresses.",
        "It happened between 2019-2020, on 2024-03-01, at 12:30:45.",
        "The house cost 1,250,000 dollars and has 3 rooms.",
        "Order number 123456789 shipped.",
        "Meet at 10.30 or 11.45 near gate 12.",
        "No at-sign here, just an @mention and user@localhost.",
    ],
)
def test_left_alone(text):
  out, counts = _run(text)
  assert out == text and counts == {"email": 0, "ip": 0, "phone": 0}


def test_private_ips_replaced_when_asked():
  out, counts = _run("Router at 192.168.1.1 here.", only_public_ips=False)
  assert out == "Router at <IP_ADDRESS> here." and counts["ip"] == 1


def test_types_can_be_switched_off_and_placeholders_changed():
  text = "Mail a@b.org, host 93.184.216.34, phone +1 555 013 2000."
  out, counts = _run(text, emails=False, ips=False, phones=False)
  assert out == text and sum(counts.values()) == 0
  out, _ = _run("Mail a@b.org now.", email_placeholder="email@example.com")
  assert out == "Mail email@example.com now."


def test_counts_several_of_each():
  out, counts = _run("a@b.org c@d.net 93.184.216.34 8.8.8.8 +1 555 013 2000")
  assert counts == {"email": 2, "ip": 2, "phone": 1}
  assert "@" not in out and "8.8.8.8" not in out


def test_metadata_is_preserved_and_picklable():
  stage = pickle.loads(pickle.dumps(_stage()))
  result = stage(Document(id="1", url="u", text="x@y.com", metadata={"language": "en"}))
  assert result.doc.metadata["language"] == "en" and result.doc.text == "<EMAIL>"
