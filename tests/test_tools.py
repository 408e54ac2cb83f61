"""Tools: the calculator against Python arithmetic, its limits and refusals; BM25 search; time and size bounds."""

import gzip
import json
import time

import pytest

from nanolm_jax import chat_session
from nanolm_jax.tools import Tool
from nanolm_jax.tools import calculator
from nanolm_jax.tools import search


@pytest.mark.parametrize(
    "expr,want",
    [
        ("2+3", 2 + 3),
        ("2 * (3 + 4) ** 2", 2 * (3 + 4) ** 2),
        ("7 / 2", 7 / 2),
        ("7 // 2", 7 // 2),
        ("-7 % 3", -7 % 3),
        ("2 ** -2", 2**-2),
        ("-(3 - 10) * +2", -(3 - 10) * +2),
        ("1.5e3 / 4", 1.5e3 / 4),
        ("2 ** 3 ** 2", 2**3**2),
        ("((1 + 2) * (3 + 4)) % 5", ((1 + 2) * (3 + 4)) % 5),
        ("10 ** 100", 10**100),
        ("0.1 + 0.2", 0.1 + 0.2),
        ("-2 ** 2", -(2**2)),
    ],
)
def test_calculator_matches_python_arithmetic(expr, want):
  assert calculator.evaluate(expr) == want
  assert calculator.Calculator()(expr) == calculator.format_number(want)


@pytest.mark.parametrize(
    "expr,match",
    [
        ("__import__('os').system('echo pwned')", "unsupported syntax"),
        ("open('/etc/passwd').read()", "unsupported syntax"),
        ("x + 1", "unsupported syntax"),
        ("(1).__class__", "unsupported syntax"),
        ("'a' * 3", "unsupported syntax"),
        ("True + 1", "unsupported syntax"),
        ("1 < 2", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("[1, 2]", "unsupported syntax"),
        ("2j", "unsupported syntax"),
        ("1 << 10", "unsupported syntax"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("9 ** 9 ** 9", "exponent"),
        ("2 ** 5000", "exponent"),
        ("(10 ** 999) ** 2", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e308 * 10", "not finite"),
        ("1 +", "cannot parse"),
        ("", "empty"),
        ("1+" * 150 + "1", "longer than"),
        ("-" * 120 + "1", "syntax nodes"),
    ],
)
def test_calculator_refuses_with_a_reason(expr, match):
  with pytest.raises(calculator.CalculatorError, match=match):
    calculator.evaluate(expr)
  assert calculator.Calculator()(expr).startswith("error: ")


class _Slow(Tool):
  name = "slow"

  def run(self, arguments):
    time.sleep(5)
    return "late"


class _Loud(Tool):
  name = "loud"

  def run(self, arguments):
    if arguments == "fail":
      raise RuntimeError("boom")
    return "x" * 10_000


def test_tool_calls_are_time_and_size_bounded():
  t = time.perf_counter()
  assert _Slow(timeout_s=0.2)("q") == "error: slow timed out after 0.2s"
  assert time.perf_counter() - t < 2
  out = _Loud(max_output_chars=100)("q")
  assert len(out) == 100 and out.endswith("...")
  assert _Loud()("fail") == "error: boom"
  assert _Loud(max_argument_chars=10)("y" * 11).startswith("error: arguments longer than 10")


DOCS = [
    "Generators are functions that use yield to produce a sequence of values lazily.",
    "The with statement wraps a block with methods defined by a context manager, such as a file.",
    "Dictionaries map hashable keys to values; lookups are fast because they use hashing.",
    "Tuples are immutable sequences, typically used to store collections of heterogeneous data.",
]


def test_search_ranks_the_relevant_passage_first():
  s = search.Search(DOCS, k=2)
  assert s.search("yield generators")[0][1] == DOCS[0]
  assert s.search("context manager")[0][1] == DOCS[1]
  hits = s.search("immutable tuples hashing")
  assert len(hits) == 2 and {h[1] for h in hits} == {DOCS[2], DOCS[3]}
  assert hits[0][0] >= hits[1][0] > 0
  out = s("dictionaries keys")
  assert out.startswith("[1] Dictionaries map") and out.count("\n") <= 1
  assert s("the of and") == "no results" and s("zebra quantum") == "no results"


def test_search_output_is_bounded_and_long_documents_are_split():
  long_doc = "\n\n".join(f"Paragraph {i} talks about topic{i} at length. " * 5 for i in range(50))
  s = search.Search([long_doc], k=3, snippet_chars=80, passage_chars=400, max_output_chars=200)
  assert len(s.passages) > 10 and all(len(p) <= 400 for p in s.passages)
  assert "topic17" in s.search("topic17")[0][1]
  assert len(s("topic17 topic18 topic19")) <= 200
  with pytest.raises(ValueError, match="empty"):
    search.Search(["", "   "])


def test_search_reads_jsonl_gz_and_txt_folders(tmp_path):
  with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
    f.write(json.dumps({"text": DOCS[0]}) + "\n")
    f.write("not json\n")
    f.write(json.dumps({"url": "no text"}) + "\n")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "b.txt").write_text(DOCS[1])
  s = search.Search.from_files(str(tmp_path))
  assert sorted(s.passages) == sorted(DOCS[:2])
  s = chat_session.search_from_sources(f"files:{tmp_path}/a.jsonl.gz")  # a data source spec
  assert s.search("yield")[0][1] == DOCS[0]
  with pytest.raises(FileNotFoundError, match="no files match"):
    search.Search.from_files(str(tmp_path / "missing*.jsonl"))
