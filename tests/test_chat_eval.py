"""Tests for nanolm_jax.posttrain.chat_eval: reply classification, intervals, the declared-tools prompt, the table."""

import math

import pytest

from nanolm_jax.posttrain import chat_eval
from nanolm_jax.synthetic import search_data
from nanolm_jax.tools import search

CITIES = {"Brelsmere", "Droford", "Vunadale"}


@pytest.mark.parametrize(
    "reply,kind",
    [
        ("I don't know.", "idk"),
        ("I'm not familiar with Hanr Venyl, so I don't know where Hanr Venyl was born.", "idk"),
        ("Hanr Venyl was born in Droford.", "correct"),
        ("Droford.", "correct"),
        ("Hanr Venyl was born in Brelsmere.", "hallucination"),  # confident and wrong
        ("Droford or Brelsmere.", "hallucination"),  # hedging over candidates is not an answer
        ("Hanr Venyl was born in born in born in", "other"),  # garbled, states nothing
        ("", "other"),
        # Issue 14's greedy reply: a decline that loops is not "I don't know", and a loop is no answer either.
        ("I'm not familiar with Hyl Hyl Hyl Hyl Hyl", "other"),
        ("Droford Droford Droford", "other"),
        ("I'm not familiar with Hyl Venyl, so I don't know where Hyl Venyl was born.", "idk"),  # a rough name is fine
        ("Droford. Droford.", "correct"),  # two copies: a repeat, not yet a loop
    ],
)
def test_classify_reply(reply, kind):
  assert chat_eval.classify_reply(reply, "Droford", CITIES) == kind


def test_years_are_whole_words():
  years = {"1903", "1950"}
  assert chat_eval.classify_reply("In 1950.", "1903", years) == "hallucination"
  assert chat_eval.classify_reply("In 19503.", "1903", years) == "other"


def test_tools_prompt_is_the_trained_declaration():
  tool = search.Search(["Dena Priato. Birthplace: Brelsmere."])
  assert search_data.tools_prompt([tool]) == search_data.SYSTEM_PROMPTS[0]


def test_format_table_puts_models_side_by_side():
  table = chat_eval.format_table({"a": {"identity_accuracy": 1.0, "val_loss": 0.5}, "b": {"identity_accuracy": 0.25}})
  lines = table.splitlines()
  assert lines[0].split() == ["a", "b"]
  assert lines[1].split() == ["identity_accuracy", "1.000", "0.250"]
  assert lines[-1].split() == ["val_loss", "0.500", "-"]


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [  # (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.959964, worked by hand
        (0, 10, 0.0, 0.277533),  # lo 0, hi (z^2/n) / (1 + z^2/n) = 0.384146 / 1.384146
        (5, 10, 0.236593, 0.763407),  # 0.5 -+ 1.959964 sqrt(0.025 + 0.009604) / 1.384146
        (10, 10, 0.722467, 1.0),
        (81, 100, 0.722212, 0.874852),  # centre 0.829207 / 1.038415 = 0.798531, half 0.076322
        (1, 1, 0.206549, 1.0),  # 1 / (1 + z^2) = 1 / 4.841459
    ],
)
def test_wilson_interval(k, n, lo, hi):
  got = chat_eval.wilson_interval(k, n)
  assert got == pytest.approx((lo, hi), abs=1e-6)
  assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_interval_of_nothing_is_nan():
  assert all(math.isnan(x) for x in chat_eval.wilson_interval(0, 0))


def test_rates_come_with_n_and_interval():
  result = {}
  chat_eval._rate(result, "x_rate", [True] * 5 + [False] * 5)
  assert result["x_rate"] == 0.5 and result["x_rate_n"] == 10
  assert result["x_rate_ci"] == pytest.approx([0.236593, 0.763407], abs=1e-6)
  chat_eval._rate(result, "y_rate", [])
  assert math.isnan(result["y_rate"]) and result["y_rate_n"] == 0


def test_fact_rates_partition_the_replies():
  # Every classify_reply kind is counted by exactly one rate of each group: the rates sum to 1.
  kinds = {"correct", "idk", "hallucination", "other"}
  for rates in chat_eval.FACT_RATES.values():
    counted = [k for ks in rates.values() for k in ks]
    assert sorted(counted) == sorted(kinds)
  unknown = [f"unknown_fact_{r}" for r in chat_eval.FACT_RATES["unknown_fact"]]
  assert unknown == ["unknown_fact_idk_rate", "unknown_fact_hallucination_rate", "unknown_fact_other_rate"]
  keys = chat_eval.METRIC_KEYS
  assert keys.index("unknown_fact_other_rate") == keys.index("unknown_fact_idk_rate") + 1


def test_identity_questions_are_many_and_start_with_the_plain_ones():
  qs = chat_eval.identity_questions(100, seed=1)
  assert len(qs) == 100 and qs[:10] == list(chat_eval.IDENTITY_QUESTIONS)
  assert qs == chat_eval.identity_questions(100, seed=1)
  # Variant k of the list asks what base question k mod 10 asks (the same kind), in other surface form.
  assert [kind for _, kind in qs] == [kind for _, kind in chat_eval.IDENTITY_QUESTIONS] * 10
  assert chat_eval.identity_questions(4, seed=1) == qs[:4]


def test_format_table_shows_interval_and_n():
  col = {"identity_accuracy": 0.5, "identity_accuracy_n": 10, "identity_accuracy_ci": [0.236593, 0.763407]}
  old = {"identity_accuracy": 0.25}  # an eval.json from before intervals: the value alone
  nan = {"identity_accuracy": float("nan"), "identity_accuracy_n": 0, "identity_accuracy_ci": [math.nan, math.nan]}
  lines = chat_eval.format_table({"new": col, "old": old, "empty": nan}).splitlines()
  assert lines[1].split() == ["identity_accuracy", "0.500", "[0.24,0.76]", "n=10", "0.250", "nan", "n=0"]


def test_search_outcome_names_where_a_search_broke():
  from nanolm_jax.synthetic import facts, search_data  # pylint: disable=import-outside-toplevel

  world = facts.make_world(0, 2, 2, 3)
  person, other = world.index_only[0], world.index_only[1]
  city, values = str(person.attributes["birthplace"]), world.values["birthplace"]
  wrong = next(v for v in sorted(values) if v != city)
  found = [{"name": "search", "arguments": person.name, "result": "[1] " + search_data.profile(person)}]
  missed = [{"name": "search", "arguments": "Zz", "result": "[1] " + search_data.profile(other)}]
  outcome = lambda reply, calls: chat_eval.search_outcome(person, "birthplace", reply, calls, values)
  assert outcome(f"The birthplace is {city}.", found) == "correct"
  assert outcome(f"The birthplace is {wrong}.", []) == "no_call"
  assert outcome(f"The birthplace is {wrong}.", missed) == "bad_query"
  assert outcome(f"The birthplace is {wrong}.", found) == "not_copied"
