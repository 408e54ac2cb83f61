"""Evaluation tasks: which public benchmarks exist, how their files read, and the prompts built from them.

A task file is JSONL (plain or .gz, local or any fsspec URL, read through `nanolm_jax.fs`) in one of five formats,
one per `TaskSpec.kind`; the bundled copies under `data/` (see data/README.md) are the defaults, and the same code
reads the full releases from a user path (`parse_tasks("blimp=/data/blimp/*.jsonl")`) or from TFDS (`tfds:blimp`).
Every line is validated before `load_task` returns, so a bad file fails at load time, naming `file:line` and field.

This module turns files into items; scoring them with a model is the scorer's job:
- `ChoiceItem`s are scored by the log-likelihood of each option's continuation given its context; the gold option
  must score strictly highest (a tie counts as wrong). Multiple choice compares the mean log-prob per continuation
  token (`length_normalize`, the DCLM/nanochat CORE convention); schema and minimal pairs compare sums.
- Minimal pairs (BLiMP) have empty contexts: each sentence is scored whole after BOS, and the pair is right only when
  log p(good) > log p(bad).
- Language modelling (LAMBADA) items have one option, right when greedy decoding reproduces its tokens exactly.
- `GenItem`s (GSM8K) are right when `exact_match(generated, item.answer)`.

Prompt convention, the same for every likelihood kind (llm-foundry style, strings stripped as llm-foundry does): the
continuation delimiter is split at its trailing whitespace; the head ends the context and the whitespace starts the
continuation, so the context never ends in a space (a space before a word belongs to that word's token in BPE
vocabularies). With the delimiter " ": context = shots + query, continuation = " " + choice; with "\\nAnswer: ":
context = shots + query + "\\nAnswer:", continuation = " " + choice. Each shot is the full example text (query +
delimiter + gold answer) followed by the example delimiter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
from typing import Any, Callable, Iterator

from nanolm_jax import fs

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
KINDS = ("minimal_pairs", "multiple_choice", "schema", "language_modeling", "generative")
GSM8K_STOP = ("\n\nQuestion:", "Question:", "\n\n")


class BadTaskData(ValueError):
  """A task-file line that does not fit its task's format; the message starts with `file:line`."""


@dataclasses.dataclass(frozen=True)
class ChoiceItem:
  """One example scored by the log-likelihood of each option's continuation after its context."""

  contexts: tuple[str, ...]  # one per option (schema tasks vary the context; others repeat one context)
  continuations: tuple[str, ...]  # one per option (multiple choice varies these; schema repeats one)
  gold: int
  meta: dict  # {"UID": ..., "field": ...} for BLiMP (per-phenomenon and per-field means); {} otherwise


@dataclasses.dataclass(frozen=True)
class GenItem:
  """One example scored by exact match of the number in a generated answer (generation ends at any of `stop`)."""

  prompt: str
  answer: str  # normalised (see normalize_number)
  stop: tuple[str, ...]
  meta: dict


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a task is: its format (`kind`), where its data lives, and how its prompts are built and scored."""

  name: str
  kind: str  # one of KINDS
  path: str  # a file, a glob, a folder (its *.jsonl*), or "tfds:NAME:SPLIT"; any path in the same format works
  num_fewshot: int
  random_baseline: float  # the accuracy of guessing, in [0, 1); core_centered maps it to 0
  length_normalize: bool  # compare mean log-prob per continuation token instead of sums
  continuation_delimiter: str = " "
  example_delimiter: str = "\n"
  fewshot_path: str | None = None  # few-shot pool from another split (GSM8K: train); None: the task's other examples


@dataclasses.dataclass
class Task:
  """A loaded task: its spec, its items in file order, and how many bad lines `skip_bad_lines` dropped."""

  spec: TaskSpec
  items: list  # ChoiceItem or GenItem
  skipped_lines: int = 0


def _data(*parts: str) -> str:
  return os.path.join(DATA_DIR, *parts)


def _icl(name: str, kind: str, num_fewshot: int, baseline: float, **kw: Any) -> TaskSpec:
  return TaskSpec(name, kind, _data("icl", f"{name}.jsonl.gz"), num_fewshot, baseline, kind == "multiple_choice", **kw)


# Few-shot counts and delimiters follow the DCLM / nanochat CORE config (core.yaml).
REGISTRY: dict[str, TaskSpec] = {
    "blimp": TaskSpec("blimp", "minimal_pairs", _data("blimp", "*.jsonl.gz"), 0, 0.5, False),
    "copa": _icl("copa", "multiple_choice", 0, 0.5),
    "piqa": _icl("piqa", "multiple_choice", 10, 0.5, continuation_delimiter="\nAnswer: "),
    "arc_easy": _icl("arc_easy", "multiple_choice", 10, 0.25, continuation_delimiter="\nAnswer: "),
    "openbook_qa": _icl("openbook_qa", "multiple_choice", 0, 0.25),
    "winograd_wsc": _icl("winograd_wsc", "schema", 0, 0.5),
    "lambada_openai_small": _icl("lambada_openai_small", "language_modeling", 0, 0.0),
    "gsm8k": TaskSpec(
        "gsm8k",
        "generative",
        _data("gsm8k", "test.jsonl.gz"),
        8,
        0.0,
        False,
        fewshot_path=_data("gsm8k", "train.jsonl.gz"),
    ),
}
CORE_TASKS = ("copa", "piqa", "arc_easy", "openbook_qa", "winograd_wsc", "lambada_openai_small")
DEFAULT_SUITE = ("blimp",) + CORE_TASKS + ("gsm8k",)
# TFDS names this module can read (test split evaluated; GSM8K's train split is the few-shot pool).
TFDS_PATHS = {"blimp": ("tfds:blimp:train", None), "gsm8k": ("tfds:gsm8k:test", "tfds:gsm8k:train")}


def parse_tasks(arg: str) -> list[TaskSpec]:
  """Specs from a comma-separated list of `name`, `name=PATH` (that task's format from PATH) or `tfds:name`."""
  specs, seen = [], set()
  for entry in (e.strip() for e in arg.split(",")):
    if not entry:
      continue
    spec = _parse_entry(entry)
    if spec.name in seen:
      raise ValueError(f"task {spec.name!r} is named twice in {arg!r}")
    seen.add(spec.name)
    specs.append(spec)
  if not specs:
    raise ValueError(f"no tasks in {arg!r}; known tasks: {', '.join(REGISTRY)}")
  return specs


def _parse_entry(entry: str) -> TaskSpec:
  if entry.startswith("tfds:"):
    name = entry[len("tfds:") :].strip()
    if name not in TFDS_PATHS:
      raise ValueError(f"unknown TFDS task {name!r}; TFDS tasks: {', '.join(f'tfds:{n}' for n in TFDS_PATHS)}")
    path, fewshot_path = TFDS_PATHS[name]
    return dataclasses.replace(REGISTRY[name], path=path, fewshot_path=fewshot_path)
  name, has_path, path = (s.strip() for s in entry.partition("="))
  if name not in REGISTRY:
    raise ValueError(
        f"unknown task {name!r}; known tasks: {', '.join(REGISTRY)} (each also as NAME=PATH),"
        f" {', '.join(f'tfds:{n}' for n in TFDS_PATHS)}"
    )
  if not has_path:
    return REGISTRY[name]
  if not path:
    raise ValueError(f"{entry!r}: empty path after '='")
  return dataclasses.replace(REGISTRY[name], path=path)


# ---------------------------------------------------------------------------------------------------------------------
# Reading: raw records with their locations, from JSONL files or TFDS.


def _files(path: str) -> list[str]:
  """The files a task path names, sorted; a folder means its JSONL files."""
  if not any(c in path for c in "*?[") and fs.isdir(path):
    path = fs.join(path, "*.jsonl*")
  if any(c in path for c in "*?["):
    files = fs.glob(path)
    if not files:
      raise FileNotFoundError(f"no task file matches {path}")
    return files
  if not fs.exists(path):
    raise FileNotFoundError(f"task file not found: {path}")
  return [path]


def _stem(source: str) -> str:
  name = fs.basename(source)
  for suffix in (".gz", ".jsonl", ".json"):
    name = name.removesuffix(suffix)
  return name


def _raw_records(path: str) -> Iterator[tuple[str, str, Any]]:
  """(source, location, a JSON line or an already-decoded dict) for every record a task path holds."""
  if path.startswith("tfds:"):
    yield from _tfds_records(path)
    return
  for file in _files(path):
    count = 0
    with fs.open_file(file) as f:
      for number, line in enumerate(f, 1):
        if line.strip():  # blank lines (a trailing newline, a hand edit) are not records
          count += 1
          yield file, f"{file}:{number}", line
    if not count:
      raise ValueError(f"task file is empty: {file}")


def _tfds_records(path: str) -> Iterator[tuple[str, str, Any]]:
  """Records of a TFDS dataset, "tfds:NAME:SPLIT"; tensorflow_datasets is imported only when one is named."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  parts = path.split(":")
  if len(parts) != 3:
    raise ValueError(f"a TFDS task path is tfds:NAME:SPLIT, got {path!r}")
  _, name, split = parts
  # TFDS keeps BLiMP as one config per phenomenon; the bundled files name all 67.
  names = [f"blimp/{_stem(f)}" for f in fs.glob(_data("blimp", "*.jsonl.gz"))] if name == "blimp" else [name]
  for dataset in names:
    count = 0
    for number, example in enumerate(tfds.as_numpy(tfds.load(dataset, split=split)), 1):
      count += 1
      record = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in example.items()}
      yield f"tfds:{dataset}", f"tfds:{dataset}:{split}:{number}", record
    if not count:
      raise ValueError(f"TFDS split is empty: {dataset}:{split}")


# ---------------------------------------------------------------------------------------------------------------------
# Validation: one function per kind turns a raw record into a normalised one, or raises BadTaskData naming the field.


def _field(record: dict, name: str, loc: str, kind: type) -> Any:
  if name not in record:
    raise BadTaskData(f"{loc}: missing field {name!r}")
  value = record[name]
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise BadTaskData(f"{loc}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
  return value


def _options(record: dict, name: str, loc: str) -> list[str]:
  options = _field(record, name, loc, list)
  if len(options) < 2 or not all(isinstance(o, str) for o in options):
    raise BadTaskData(f"{loc}: field {name!r} must be a list of at least 2 strings")
  return [o.strip() for o in options]


def _gold(record: dict, loc: str, n: int) -> int:
  gold = _field(record, "gold", loc, int)
  if not 0 <= gold < n:
    raise BadTaskData(f"{loc}: field 'gold' is {gold}, out of range for {n} options")
  return gold


def _check_minimal_pair(record: dict, loc: str, source: str) -> dict:
  good, bad = (_field(record, k, loc, str) for k in ("sentence_good", "sentence_bad"))
  # The BLiMP release spells one phenomenon's field "syntax/semantics" and the rest "syntax_semantics".
  field = str(record.get("field", "unknown")).replace("/", "_")
  return {"good": good, "bad": bad, "UID": str(record.get("UID", _stem(source))), "field": field}


def _check_multiple_choice(record: dict, loc: str, source: str) -> dict:
  del source
  query, choices = _field(record, "query", loc, str).strip(), _options(record, "choices", loc)
  return {"query": query, "choices": choices, "gold": _gold(record, loc, len(choices))}


def _check_schema(record: dict, loc: str, source: str) -> dict:
  del source
  options = _options(record, "context_options", loc)
  continuation = _field(record, "continuation", loc, str).strip()
  return {"context_options": options, "continuation": continuation, "gold": _gold(record, loc, len(options))}


def _check_language_modeling(record: dict, loc: str, source: str) -> dict:
  del source
  return {k: _field(record, k, loc, str).strip() for k in ("context", "continuation")}


def _check_generative(record: dict, loc: str, source: str) -> dict:
  del source
  question, answer = (_field(record, k, loc, str).strip() for k in ("question", "answer"))
  final = re.search(r"####\s*(" + _NUMBER + ")", answer)
  if not final:
    raise BadTaskData(f"{loc}: field 'answer' must end in '#### <number>'")
  return {"question": question, "answer": answer, "number": normalize_number(final.group(1))}


_CHECKS: dict[str, Callable[[dict, str, str], dict]] = {
    "minimal_pairs": _check_minimal_pair,
    "multiple_choice": _check_multiple_choice,
    "schema": _check_schema,
    "language_modeling": _check_language_modeling,
    "generative": _check_generative,
}


def _read(path: str, kind: str, skip_bad_lines: bool) -> tuple[list[dict], int]:
  """Every record of a task path, validated for its kind; bad lines raise, or are counted when skipped."""
  if kind not in _CHECKS:
    raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(KINDS)}")
  records, skipped = [], 0
  for source, loc, raw in _raw_records(path):
    try:
      record = raw if isinstance(raw, dict) else _parse_json(raw, loc)
      records.append(_CHECKS[kind](record, loc, source))
    except BadTaskData:
      if not skip_bad_lines:
        raise
      skipped += 1
  if not records:
    raise ValueError(f"no valid examples in {path} ({skipped} bad lines skipped)")
  return records, skipped


def _parse_json(line: str, loc: str) -> dict:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise BadTaskData(f"{loc}: not JSON ({e.msg})") from None
  if not isinstance(record, dict):
    raise BadTaskData(f"{loc}: expected a JSON object, got {type(record).__name__}")
  return record


# ---------------------------------------------------------------------------------------------------------------------
# Items: subsets, few-shot sampling and prompt formatting.


def _subset(records: list[dict], kind: str, max_examples: int | None) -> list[int]:
  """Indices of a deterministic subset: the first n, or for minimal pairs the first n/phenomena of each phenomenon."""
  if max_examples is None or max_examples >= len(records):
    return list(range(len(records)))
  if max_examples < 1:
    raise ValueError(f"max_examples must be positive, got {max_examples}")
  if kind != "minimal_pairs":
    return list(range(max_examples))
  # Equal counts per phenomenon keep the BLiMP mean over phenomena unbiased on a subset.
  by_uid: dict[str, list[int]] = {}
  for i, record in enumerate(records):
    by_uid.setdefault(record["UID"], []).append(i)
  per_uid = max(1, max_examples // len(by_uid))
  return sorted(i for indices in by_uid.values() for i in indices[:per_uid])


def fewshot_indices(pool_size: int, k: int, index: int, seed: int, exclude_index: bool) -> list[int]:
  """k pool indices for item `index`, seeded by (seed, index) so any subset of a task gets the same prompts.

  With `exclude_index` (the pool is the task itself) the item never sees itself; a pool too small gives fewer shots.
  """
  rng = random.Random(f"{seed}:{index}")
  if not exclude_index:
    return rng.sample(range(pool_size), min(k, pool_size))
  return [j + (j >= index) for j in rng.sample(range(pool_size - 1), min(k, pool_size - 1))]


def _split_delimiter(delimiter: str) -> tuple[str, str]:
  head = delimiter.rstrip()
  return head, delimiter[len(head) :]


def _choice_item(spec: TaskSpec, record: dict, shots: list[dict]) -> ChoiceItem:
  """A likelihood item; shots are the full text of other examples (see the module docstring)."""
  if spec.kind == "minimal_pairs":  # no context and no shots: each sentence is scored whole
    return ChoiceItem(("", ""), (record["good"], record["bad"]), 0, {"UID": record["UID"], "field": record["field"]})
  head, lead = _split_delimiter(spec.continuation_delimiter)
  d = spec.continuation_delimiter
  if spec.kind == "multiple_choice":
    texts = [s["query"] + d + s["choices"][s["gold"]] for s in shots]
    contexts, continuations = [record["query"]], [lead + c for c in record["choices"]]
  elif spec.kind == "schema":
    texts = [s["context_options"][s["gold"]] + d + s["continuation"] for s in shots]
    contexts, continuations = record["context_options"], [lead + record["continuation"]]
  else:  # language_modeling
    texts = [s["context"] + d + s["continuation"] for s in shots]
    contexts, continuations = [record["context"]], [lead + record["continuation"]]
  block = "".join(t + spec.example_delimiter for t in texts)
  n = max(len(contexts), len(continuations))
  contexts = [block + c + head for c in contexts] * (n // len(contexts))
  continuations = continuations * (n // len(continuations))
  return ChoiceItem(tuple(contexts), tuple(continuations), record.get("gold", 0), {})


def _gen_item(spec: TaskSpec, record: dict, shots: list[dict]) -> GenItem:
  del spec
  block = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
  return GenItem(
      f"{block}Question: {record['question']}\nAnswer:", record["number"], GSM8K_STOP, {"question": record["question"]}
  )


def load_task(spec: TaskSpec, *, max_examples: int | None = None, skip_bad_lines: bool = False, seed: int = 0) -> Task:
  """Reads and validates a task's data and builds its items (with few-shot prompts), in file order.

  Raises FileNotFoundError (no file), ValueError (an empty file, nothing valid) or BadTaskData (a bad line, naming
  `file:line` and the field) before returning; with `skip_bad_lines` bad lines are counted in `skipped_lines` instead.
  Few-shot examples come from the task's other examples (or `spec.fewshot_path`), drawn per item from `seed` and the
  item's index in the whole file, so `max_examples` keeps each kept item's prompt unchanged.
  """
  records, skipped = _read(spec.path, spec.kind, skip_bad_lines)
  pool, pool_is_task = records, True
  if spec.num_fewshot and spec.fewshot_path:
    pool, pool_skipped = _read(spec.fewshot_path, spec.kind, skip_bad_lines)
    skipped += pool_skipped
    pool_is_task = False
  build = _gen_item if spec.kind == "generative" else _choice_item
  items = []
  for i in _subset(records, spec.kind, max_examples):
    shots = []
    if spec.num_fewshot and spec.kind != "minimal_pairs":
      shots = [pool[j] for j in fewshot_indices(len(pool), spec.num_fewshot, i, seed, pool_is_task)]
    items.append(build(spec, records[i], shots))
  if skipped:
    logging.getLogger(__name__).warning("%s: skipped %d bad lines in %s", spec.name, skipped, spec.path)
  return Task(spec, items, skipped)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring helpers.

# An optional sign and dollar sign, then digits with thousands commas and an optional decimal part (or a bare ".5").
_NUMBER = r"-?\$?-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"


def normalize_number(text: str) -> str:
  """A number as GSM8K compares it: no commas or `$`, no trailing zero decimals ("$1,234.50" -> "1234.5")."""
  number = text.strip().replace(",", "").replace("$", "")
  if "." in number:
    number = number.rstrip("0").rstrip(".")
  sign, digits = ("-", number[1:]) if number.startswith("-") else ("", number)
  whole, point, fraction = digits.partition(".")
  digits = (whole.lstrip("0") or "0") + point + fraction  # ".5", "0.5" and "00.5" are one answer
  return digits if digits == "0" else sign + digits


def extract_final_number(text: str) -> str | None:
  """The answer in a solution: the number after `####` if any, else the last number in the text; None if none."""
  final = re.search(r"####\s*(" + _NUMBER + ")", text)
  if final:
    return normalize_number(final.group(1))
  numbers = re.findall(_NUMBER, text)
  return normalize_number(numbers[-1]) if numbers else None


def exact_match(generated: str, answer: str) -> bool:
  """True when the generated text's final number equals the answer, both normalised."""
  predicted = extract_final_number(generated)
  return predicted is not None and predicted == normalize_number(answer)


def core_centered(acc: float, random_baseline: float) -> float:
  """Accuracy rescaled so guessing scores 0 and a perfect score 1 (the CORE metric averages these over tasks)."""
  return (acc - random_baseline) / (1.0 - random_baseline)
