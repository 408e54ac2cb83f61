"""Tests for nanolm_jax.posttrain.chat_eval: reply classification, the declared-tools prompt, the table."""

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
