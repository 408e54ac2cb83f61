"""nanolm_jax.evals.tasks: the bundled benchmark data loads exactly, prompts are built as documented, bad data fails."""

import collections
import dataclasses
import functools
import gzip
import json
import logging
import os
import re
import sys
import types

import pytest

from nanolm_jax.evals import tasks

T = tasks


@functools.lru_cache(maxsize=None)
def _bundled(name):
  return T.load_task(T.REGISTRY[name])


def _write(path, rows, gz=False):
  """Writes rows (dicts, or raw strings written as they are) as JSONL; returns the path as a string."""
  text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
  with (gzip.open if gz else open)(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def _mc_rows(n):
  return [{"query": f"Q{i}", "choices": [f"a{i}", f"b{i}"], "gold": i % 2} for i in range(n)]


def _spec(name, path, **kw):
  return dataclasses.replace(T.REGISTRY[name], path=path, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# The bundled data.

# (count, a hand-checked fact about the first item) per task; the counts are the public releases' (BLiMP: 100 each).
FIRST = {
    "blimp": (
        6700,
        (("", ""), ("Who should Derek hug after shocking Richard?", "Who should Derek hug Richard after shocking?"), 0),
    ),
    "copa": (
        100,
        (
            ("The man turned on the faucet, therefore",) * 2,
            (" the toilet filled with water.", " water flowed from the spout."),
            1,
        ),
    ),
    "openbook_qa": (
        500,
        (
            None,
            (
                " make more phone calls",
                " quit eating lunch out",
                " buy less with monopoly money",
                " have lunch with friends",
            ),
            1,
        ),
    ),
    "winograd_wsc": (
        273,
        (
            (
                "The city councilmen refused the demonstrators a permit because the city councilmen",
                "The city councilmen refused the demonstrators a permit because the demonstrators",
            ),
            (" feared violence.", " feared violence."),
            0,
        ),
    ),
    "piqa": (1838, (None, None, 0)),
    "arc_easy": (2376, (None, (" Sunlight is the source of energy for nearly all ecosystems.",) + (None,) * 3, 0)),
    "lambada_openai_small": (8, (None, (" signs",), 0)),
}


@pytest.mark.parametrize("name", sorted(FIRST))
def test_bundled_choice_tasks_have_the_release_counts_and_first_records(name):
  count, (contexts, continuations, gold) = FIRST[name]
  task = _bundled(name)
  assert len(task.items) == count and task.skipped_lines == 0
  first = task.items[0]
  assert isinstance(first, T.ChoiceItem) and first.gold == gold
  if contexts is not None:
    assert first.contexts == contexts
  if continuations is not None:
    assert len(first.continuations) == len(continuations)
    assert all(want is None or got == want for got, want in zip(first.continuations, continuations))
  assert len(first.contexts) == len(first.continuations) and 0 <= first.gold < len(first.contexts)
  assert all(not c.endswith(" ") for c in first.contexts), "the space belongs to the continuation"


def test_bundled_fewshot_prompts_have_the_configured_shots():
  piqa, arc, lambada = _bundled("piqa").items[0], _bundled("arc_easy").items[0], _bundled("lambada_openai_small")
  assert piqa.contexts[0].endswith("\nQuestion: How do I ready a guinea pig cage for it's new occupants?\nAnswer:")
  assert piqa.contexts[0].count("\nAnswer: ") == 10 and piqa.contexts[0].count("\nAnswer:") == 11
  assert arc.contexts[0].count("\nAnswer: ") == 10
  assert arc.contexts[0].endswith(
      "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
  )
  assert lambada.items[0].contexts[0].endswith("his mouth curved in a confident grin, I don't care about")


def test_bundled_gsm8k_prompt_answer_and_fewshot_pool():
  task = _bundled("gsm8k")
  assert len(task.items) == 1319
  item = task.items[0]
  assert isinstance(item, T.GenItem) and item.answer == "18" and item.stop == ("\n\nQuestion:", "Question:", "\n\n")
  assert item.prompt.startswith("Question: ") and item.prompt.count("Question: ") == 9
  assert item.prompt.endswith("she make every day at the farmers' market?\nAnswer:")
  shots = item.prompt.split("\n\n")[:-1]  # each shot ends with a blank line; the item follows the last one
  assert len(shots) == 8 and all(re.search(r"\n#### -?[\d.,]+$", s) for s in shots)
  test_questions = {i.prompt.rsplit("Question: ", 1)[1] for i in task.items}
  assert not any(s.split("\nAnswer: ")[0].removeprefix("Question: ") + "\nAnswer:" in test_questions for s in shots)


def test_blimp_minimal_pairs_cover_67_phenomena_and_4_fields():
  items = _bundled("blimp").items
  uids = collections.Counter(i.meta["UID"] for i in items)
  fields = collections.Counter(i.meta["field"] for i in items)
  assert len(uids) == 67 and set(uids.values()) == {100}
  assert fields == {"syntax": 2600, "morphology": 1800, "syntax_semantics": 1400, "semantics": 900}
  assert all(i.contexts == ("", "") and i.gold == 0 and len(i.continuations) == 2 for i in items)
  # The release has one pair whose two sentences are identical (kept as released; as a tie it always scores wrong).
  (same,) = [i for i in items if i.continuations[0] == i.continuations[1]]
  assert (
      same.meta["UID"] == "passive_1" and same.continuations[0] == "Some grandmother of the cashier was left by James."
  )


def test_registry_suite_and_config():
  assert T.DEFAULT_SUITE == (
      "blimp",
      "copa",
      "piqa",
      "arc_easy",
      "openbook_qa",
      "winograd_wsc",
      "lambada_openai_small",
      "gsm8k",
  )
  assert T.CORE_TASKS == T.DEFAULT_SUITE[1:-1] and set(T.REGISTRY) == set(T.DEFAULT_SUITE)
  shots = {n: s.num_fewshot for n, s in T.REGISTRY.items()}
  assert shots == dict(
      blimp=0, copa=0, piqa=10, arc_easy=10, openbook_qa=0, winograd_wsc=0, lambada_openai_small=0, gsm8k=8
  )
  baselines = {n: s.random_baseline for n, s in T.REGISTRY.items()}
  assert baselines == dict(
      blimp=0.5,
      copa=0.5,
      piqa=0.5,
      arc_easy=0.25,
      openbook_qa=0.25,
      winograd_wsc=0.5,
      lambada_openai_small=0.0,
      gsm8k=0.0,
  )
  assert {n for n, s in T.REGISTRY.items() if s.length_normalize} == {"copa", "piqa", "arc_easy", "openbook_qa"}
  package = os.path.dirname(os.path.abspath(T.__file__))
  for spec in T.REGISTRY.values():
    assert spec.kind in T.KINDS and spec.path.startswith(package), spec  # self-contained: never ../shared
  assert len(os.listdir(os.path.join(package, "data", "blimp"))) == 67
  for license_file in ("icl/LICENSE.llm-foundry", "gsm8k/LICENSE", "README.md"):
    assert os.path.isfile(os.path.join(package, "data", license_file))


# ---------------------------------------------------------------------------------------------------------------------
# Prompt formatting and few-shot sampling, against hand-built files.


def test_multiple_choice_fewshot_is_seeded_excludes_the_item_and_has_k_shots(tmp_path):
  spec = _spec("arc_easy", _write(tmp_path / "mc.jsonl", _mc_rows(20)), num_fewshot=3)
  task = T.load_task(spec)
  for i, item in enumerate(task.items):
    picks = T.fewshot_indices(20, 3, i, 0, True)
    answer = lambda j: f"a{j}" if j % 2 == 0 else f"b{j}"
    expected = "".join(f"Q{j}\nAnswer: {answer(j)}\n" for j in picks) + f"Q{i}\nAnswer:"
    assert item.contexts == (expected, expected) and item.continuations == (f" a{i}", f" b{i}")
    shots = re.findall(r"Q(\d+)\nAnswer: ", item.contexts[0])
    assert len(shots) == 3 and len(set(shots)) == 3 and str(i) not in shots
  assert T.load_task(spec).items == task.items  # same seed, same prompts
  assert T.load_task(spec, seed=1).items != task.items
  # A subset keeps each kept item's prompt (shots are seeded by the item's index in the whole file).
  assert T.load_task(spec, max_examples=5).items == task.items[:5]


def test_fewshot_indices_cap_at_the_pool():
  assert sorted(T.fewshot_indices(4, 10, 2, 0, True)) == [0, 1, 3]
  assert sorted(T.fewshot_indices(3, 10, 0, 0, False)) == [0, 1, 2]
  assert T.fewshot_indices(100, 5, 7, 3, True) == T.fewshot_indices(100, 5, 7, 3, True)


def test_schema_and_language_modeling_prompts(tmp_path):
  schema_rows = [{"context_options": [f"A{i} x", f"B{i} x"], "continuation": f"c{i}.", "gold": i % 2} for i in range(4)]
  schema = T.load_task(_spec("winograd_wsc", _write(tmp_path / "s.jsonl", schema_rows), num_fewshot=1))
  first = schema.items[0]
  (shot,) = [j for j in range(4) if f"c{j}." in first.contexts[0]]
  shot_text = f"{'A' if shot % 2 == 0 else 'B'}{shot} x c{shot}.\n"
  assert first.contexts == (shot_text + "A0 x", shot_text + "B0 x") and first.continuations == (" c0.", " c0.")
  lm_rows = [{"context": f"story {i}", "continuation": f"word{i}"} for i in range(3)]
  lm = T.load_task(_spec("lambada_openai_small", _write(tmp_path / "lm.jsonl", lm_rows)))
  assert lm.items[1] == T.ChoiceItem(("story 1",), (" word1",), 0, {})


def test_blimp_max_examples_keeps_an_equal_number_per_phenomenon():
  full = _bundled("blimp").items
  sub = T.load_task(T.REGISTRY["blimp"], max_examples=670).items
  assert set(collections.Counter(i.meta["UID"] for i in sub).values()) == {10} and len(sub) == 670
  first_ten = [
      i for uid in dict.fromkeys(x.meta["UID"] for x in full) for i in [x for x in full if x.meta["UID"] == uid][:10]
  ]
  assert sub == first_ten
  tiny = T.load_task(T.REGISTRY["blimp"], max_examples=5).items  # fewer than the phenomena: still one of each
  assert len(tiny) == 67 and len({i.meta["UID"] for i in tiny}) == 67
  assert T.load_task(T.REGISTRY["copa"], max_examples=7).items == _bundled("copa").items[:7]
  with pytest.raises(ValueError, match="max_examples"):
    T.load_task(T.REGISTRY["copa"], max_examples=0)


# ---------------------------------------------------------------------------------------------------------------------
# parse_tasks and user paths.


def test_parse_tasks_names_paths_and_errors(tmp_path):
  path = _write(tmp_path / "c.jsonl", _mc_rows(3))
  specs = T.parse_tasks(f" copa , piqa={path},gsm8k")
  assert [s.name for s in specs] == ["copa", "piqa", "gsm8k"]
  assert specs[0] == T.REGISTRY["copa"] and specs[1].path == path and specs[1].num_fewshot == 10
  with pytest.raises(ValueError, match=r"unknown task 'hellaswag'.*copa.*gsm8k"):
    T.parse_tasks("copa,hellaswag")
  with pytest.raises(ValueError, match="'copa' is named twice"):
    T.parse_tasks(f"copa,copa={path}")
  with pytest.raises(ValueError, match="'blimp' is named twice"):
    T.parse_tasks("blimp,tfds:blimp")
  with pytest.raises(ValueError, match="unknown TFDS task 'copa'"):
    T.parse_tasks("tfds:copa")
  with pytest.raises(ValueError, match="empty path"):
    T.parse_tasks("copa=")
  with pytest.raises(ValueError, match="no tasks"):
    T.parse_tasks(" , ")


def test_user_paths_read_gz_and_plain_globs_and_folders(tmp_path):
  folder = tmp_path / "blimp"
  folder.mkdir()
  pair = {"sentence_good": "Cats sleep.", "sentence_bad": "Cats sleeps.", "field": "morphology", "UID": "agr"}
  _write(folder / "agr.jsonl.gz", [pair, pair], gz=True)
  _write(folder / "island.jsonl", [{"sentence_good": "G.", "sentence_bad": "B."}])  # UID from the file name
  (spec,) = T.parse_tasks(f"blimp={folder}/*.jsonl*")
  items = T.load_task(spec).items
  assert [i.meta for i in items] == [{"UID": "agr", "field": "morphology"}] * 2 + [
      {"UID": "island", "field": "unknown"}
  ]
  assert items[0].continuations == ("Cats sleep.", "Cats sleeps.")
  assert T.load_task(_spec("blimp", str(folder))).items == items  # a folder means its JSONL files
  copa = T.load_task(T.parse_tasks(f"copa={_write(tmp_path / 'c.jsonl.gz', _mc_rows(2), gz=True)}")[0])
  assert copa.items[1] == T.ChoiceItem(("Q1", "Q1"), (" a1", " b1"), 1, {})


# ---------------------------------------------------------------------------------------------------------------------
# Bad data: every case fails at load time, naming file:line and the field.


@pytest.mark.parametrize(
    "name,line,match",
    [
        ("copa", "{not json", "not JSON"),
        ("copa", "[1, 2]", "expected a JSON object"),
        ("copa", {"query": "q", "gold": 0}, "missing field 'choices'"),
        ("copa", {"query": "q", "choices": ["a"], "gold": 0}, "field 'choices' must be a list of at least 2"),
        ("copa", {"query": "q", "choices": ["a", "b"], "gold": 2}, "field 'gold' is 2, out of range"),
        ("copa", {"query": "q", "choices": ["a", "b"], "gold": "0"}, "field 'gold' must be int"),
        ("copa", {"query": 5, "choices": ["a", "b"], "gold": 0}, "field 'query' must be str"),
        ("winograd_wsc", {"context_options": ["a", "b"], "gold": 0}, "missing field 'continuation'"),
        ("lambada_openai_small", {"context": "c"}, "missing field 'continuation'"),
        ("blimp", {"sentence_good": "g"}, "missing field 'sentence_bad'"),
        ("gsm8k", {"question": "q", "answer": "it is 5"}, r"field 'answer' must end in '#### <number>'"),
    ],
)
def test_a_bad_line_names_file_line_and_field(tmp_path, name, line, match):
  good = {
      "copa": _mc_rows(1)[0],
      "winograd_wsc": {"context_options": ["a", "b"], "continuation": "c", "gold": 1},
      "lambada_openai_small": {"context": "c", "continuation": "w"},
      "blimp": {"sentence_good": "g", "sentence_bad": "b"},
      "gsm8k": {"question": "q", "answer": "2 + 3 = 5\n#### 5"},
  }[name]
  path = _write(tmp_path / "t.jsonl", [good, "", line, good])  # the bad record is on line 3 (line 2 is blank)
  spec = _spec(name, path, num_fewshot=0)
  with pytest.raises(T.BadTaskData, match=re.escape(f"{path}:3: ") + match):
    T.load_task(spec, max_examples=1)  # every line is checked, not only the kept ones
  task = T.load_task(spec, skip_bad_lines=True)
  assert task.skipped_lines == 1 and len(task.items) == 2


def test_missing_and_empty_files(tmp_path):
  missing = str(tmp_path / "nope.jsonl")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    T.load_task(_spec("copa", missing))
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "*.jsonl"))):
    T.load_task(_spec("copa", str(tmp_path / "*.jsonl")))
  empty = _write(tmp_path / "empty.jsonl", [])
  with pytest.raises(ValueError, match="empty: " + re.escape(empty)):
    T.load_task(_spec("copa", empty))
  _write(tmp_path / "a.jsonl", _mc_rows(2))
  with pytest.raises(ValueError, match="empty: " + re.escape(empty)):  # one empty file in a glob is an error too
    T.load_task(_spec("copa", str(tmp_path / "*.jsonl")))
  with pytest.raises(ValueError, match="no valid examples"):
    T.load_task(_spec("copa", _write(tmp_path / "bad.jsonl", ["{", "{"])), skip_bad_lines=True)


def test_skip_bad_lines_counts_skips_and_logs_once(tmp_path, caplog):
  rows = _mc_rows(5)
  rows[1] = "{oops"
  rows[3] = {"query": "q", "choices": ["a", "b"], "gold": 9}
  with caplog.at_level(logging.WARNING, logger=T.__name__):
    task = T.load_task(_spec("copa", _write(tmp_path / "t.jsonl", rows)), skip_bad_lines=True)
  assert task.skipped_lines == 2 and [i.contexts[0] for i in task.items] == ["Q0", "Q2", "Q4"]
  warnings = [r.getMessage() for r in caplog.records if r.name == T.__name__]
  assert len(warnings) == 1 and "skipped 2 bad lines" in warnings[0]


# ---------------------------------------------------------------------------------------------------------------------
# TFDS, through a fake tensorflow_datasets (the real one would download).


def test_tfds_names_load_through_tfds(monkeypatch):
  loads = []

  def load(name, split):
    loads.append((name, split))
    if name.startswith("blimp/"):
      uid = name.split("/")[1]
      return [
          {"sentence_good": b"Good.", "sentence_bad": b"Bad.", "field": b"syntax", "UID": uid.encode(), "pair_id": 0}
      ]
    return [{"question": f"{split} q{i}".encode(), "answer": f"so\n#### {i},000".encode()} for i in range(12)]

  fake = types.ModuleType("tensorflow_datasets")
  fake.load, fake.as_numpy = load, lambda ds: iter(ds)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  blimp, gsm8k = T.parse_tasks("tfds:blimp,tfds:gsm8k")
  assert (
      blimp.path == "tfds:blimp:train" and gsm8k.path == "tfds:gsm8k:test" and gsm8k.fewshot_path == "tfds:gsm8k:train"
  )
  assert not loads, "parse_tasks reads nothing"
  items = T.load_task(blimp).items
  assert len(items) == 67 and len(loads) == 67 and all(split == "train" for _, split in loads)
  assert items[0] == T.ChoiceItem(("", ""), ("Good.", "Bad."), 0, {"UID": "adjunct_island", "field": "syntax"})
  loads.clear()
  task = T.load_task(gsm8k, max_examples=2)
  assert loads == [("gsm8k", "test"), ("gsm8k", "train")]
  assert [i.answer for i in task.items] == ["0", "1000"]
  assert task.items[1].prompt.count("Question: train q") == 8 and task.items[1].prompt.endswith(
      "Question: test q1\nAnswer:"
  )


# ---------------------------------------------------------------------------------------------------------------------
# Scoring helpers.


@pytest.mark.parametrize(
    "text,number",
    [
        ("#### 1,234", "1234"),
        ("She pays $5.00 in total.", "5"),
        ("The change is -3 degrees.", "-3"),
        ("no number here", None),
        ("First 12, then 7. So the answer is 19.", "19"),
        ("2 + 2 = <<2+2=4>>4\n#### 4\nQuestion: 99 apples", "4"),  # the #### answer wins over later numbers
        ("#### -12", "-12"),
        ("It costs $1,250.50", "1250.5"),
        ("about .5 of them", "0.5"),
        ("18.0", "18"),
        ("#### 007", "7"),
    ],
)
def test_extract_final_number(text, number):
  assert T.extract_final_number(text) == number


def test_exact_match_and_core_centered():
  assert T.exact_match(" Janet makes 9 * 2 = $18.\n#### 18", "18")
  assert T.exact_match("The answer is 1,000.", "1000") and T.exact_match("$-4.00", "-4")
  assert not T.exact_match("The answer is 17.", "18") and not T.exact_match("I don't know", "18")
  assert T.core_centered(0.5, 0.5) == 0.0 and T.core_centered(1.0, 0.25) == 1.0
  assert T.core_centered(0.625, 0.25) == pytest.approx(0.5) and T.core_centered(0.3, 0.0) == pytest.approx(0.3)
