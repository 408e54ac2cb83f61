"""Few-shot prompting: the transcript layout and that stop strings end the answer before the next turn."""

import pytest

from nanolm_jax import prompting


def test_transcript_ends_at_the_assistant_turn():
  p = prompting.few_shot_prompt("What is a tuple?", examples=[("Q1?", "A1."), ("Q2?", "A2.")])
  assert p.startswith(prompting.PREAMBLE)
  assert p.endswith("Human: Q1?\nAssistant: A1.\n\nHuman: Q2?\nAssistant: A2.\n\nHuman: What is a tuple?\nAssistant:")
  h = prompting.few_shot_prompt("Q3?", examples=[("Q1?", "A1.")], history=[("Q2?", "A2.")])
  assert h.count("Human:") == 3 and h.index("Q2?") < h.index("Q3?")
  with pytest.raises(ValueError, match="question is empty"):
    prompting.few_shot_prompt("  ")


def test_default_examples_do_not_contain_stop_strings():
  # An example answer with a stop string would teach the model to stop mid-answer.
  for q, a in prompting.DEFAULT_EXAMPLES:
    assert not any(s in f"{q}\nAssistant: {a}" for s in prompting.STOP_STRINGS), a


def test_clean_answer_cuts_the_next_turn():
  assert prompting.clean_answer(" A list is mutable.\nHuman: and a tuple?") == "A list is mutable."
  assert prompting.clean_answer(" Yes.\nUser: ok") == "Yes."
  assert prompting.clean_answer(" Fine. ") == "Fine."
