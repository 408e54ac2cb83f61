"""Verifiable tasks for RL: problems, prompts, held-out splits, and rewards checked by a program.

A task hands out training problems by index (a cursor, so a resumed run continues with the same stream) and a fixed
held-out evaluation set that never appears in training. Rewards are named functions of (completion text, problem),
combined with weights:

  correct   1 when the extracted final answer equals the problem's answer ("The answer is N" / "#### N"), else 0.
  format    1 when the reply *ends* with the task's answer sentence ("The answer is N." / "#### N"), else 0.

Tasks:
  arithmetic  reasoning.make_problem word problems; difficulty (digits, steps, max_factor) by config, defaulting to
              what the SFT data uses (reasoning.default_reasoning_config), so the SFT model is partially good at it.
  gsm8k       GSM8K-format JSONL ({"question", "answer"} lines, the answer after "####"), e.g. the real GSM8K
              train/test files; without a test file the held-out split is a stable hash of each question.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import random
import re
import zlib
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from nanolm_jax import fs
from nanolm_jax.synthetic import reasoning

RewardFn = Callable[[str, "Problem"], float]
TASKS = ("arithmetic", "gsm8k")

_ENDS_WITH_ANSWER = re.compile(r"the answer is\s*-?[\d,]*\d\.?\s*$", re.IGNORECASE)
_ENDS_WITH_HASHES = re.compile(r"####\s*-?[\d,]*\d\s*$")


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str
  answer: int
  solution: str = ""  # a worked reference solution, when the source has one (not used by rewards)


def correctness_reward(text: str, problem: Problem) -> float:
  """1.0 when the reply's final answer ('The answer is N' / '#### N', the last one) is the problem's answer."""
  return float(reasoning.extract_answer(text) == problem.answer)


def answer_format_reward(text: str, problem: Problem) -> float:  # pylint: disable=unused-argument
  """1.0 when the reply ends with 'The answer is N.' (the SFT format); any N, right or wrong."""
  return float(_ENDS_WITH_ANSWER.search(text) is not None)


def gsm8k_format_reward(text: str, problem: Problem) -> float:  # pylint: disable=unused-argument
  """1.0 when the reply ends with '#### N' (the GSM8K format)."""
  return float(_ENDS_WITH_HASHES.search(text) is not None)


def combine_rewards(rewards: Mapping[str, tuple[RewardFn, float]]) -> Callable[[str, Problem], dict[str, float]]:
  """{name: (fn, weight)} -> fn(text, problem) -> {name: value, ..., 'reward': weighted sum}."""

  def score(text: str, problem: Problem) -> dict[str, float]:
    out = {name: float(fn(text, problem)) for name, (fn, _) in rewards.items()}
    out["reward"] = sum(w * out[name] for name, (_, w) in rewards.items())
    return out

  return score


def in_eval_split(question: str, eval_permille: int) -> bool:
  """Stable membership of a question in the held-out split (eval_permille / 1000 of all questions)."""
  return zlib.crc32(question.encode("utf-8")) % 1000 < eval_permille


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
  if k > n:
    raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
  if n - c < k:
    return 1.0
  prob_all_wrong = 1.0
  for i in range(n - c + 1, n + 1):
    prob_all_wrong *= 1.0 - k / i
  return 1.0 - prob_all_wrong


class Task(abc.ABC):
  """Problems by index, a held-out eval set, chat prompts and rewards. Subclasses implement the two sources."""

  name = "task"
  verifiable = True  # a reply can be checked right or wrong (accuracy, pass@k); a learned reward's task cannot

  def __init__(self, reward_weights: Mapping[str, float], format_fn: RewardFn, system_prompt: str = ""):
    fns = {"correct": correctness_reward, "format": format_fn}
    unknown = set(reward_weights) - set(fns)
    if unknown:
      raise ValueError(f"unknown reward(s) {sorted(unknown)}; choose from {sorted(fns)}")
    self.score = combine_rewards({k: (fns[k], float(w)) for k, w in reward_weights.items() if w})
    self.system_prompt = system_prompt

  @abc.abstractmethod
  def train_problem(self, index: int) -> Problem:
    """The index-th training problem (deterministic, never one of the held-out ones)."""

  @abc.abstractmethod
  def eval_problems(self, n: int) -> list[Problem]:
    """The first n held-out evaluation problems."""

  def score_completions(self, completions: Sequence[Any], problems: Sequence[Problem], tokenizer: Any) -> list[dict]:
    """score() of each engine completion's text for its problem; one call per rollout round, so a task whose
    reward is a model can batch it."""
    del tokenizer
    return [self.score(c.text, p) for c, p in zip(completions, problems)]

  def messages(self, problem: Problem) -> list[dict[str, str]]:
    """The conversation that prompts the model for this problem."""
    sys = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
    return sys + [{"role": "user", "content": problem.question}]


class ArithmeticTask(Task):
  """reasoning.make_problem word problems: steps uniform in [min_steps, max_steps], operands of `digits` digits."""

  name = "arithmetic"

  def __init__(
      self,
      *,
      digits: int,
      min_steps: int,
      max_steps: int,
      max_factor: int,
      seed: int = 0,
      eval_permille: int = 50,
      reward_weights: Mapping[str, float] | None = None,
      system_prompt: str = "",
  ):
    super().__init__(reward_weights or {"correct": 1.0}, answer_format_reward, system_prompt)
    if not 1 <= min_steps <= max_steps:
      raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if not 0 < eval_permille < 1000:
      raise ValueError(f"eval_permille must be in (0, 1000), got {eval_permille}")
    self.digits, self.min_steps, self.max_steps, self.max_factor = digits, min_steps, max_steps, max_factor
    self.seed, self.eval_permille = seed, eval_permille

  def _draw(self, rng: random.Random) -> Problem:
    steps = rng.randint(self.min_steps, self.max_steps)
    q, a, s = reasoning.make_problem(rng, reasoning.Difficulty(self.digits, steps, self.max_factor))
    return Problem(q, a, reasoning.solution(a, s))

  def train_problem(self, index: int) -> Problem:
    rng = random.Random(f"rl/arithmetic/{self.seed}/{index}")
    while True:  # rejection keeps every held-out question out of training
      p = self._draw(rng)
      if not in_eval_split(p.question, self.eval_permille):
        return p

  def eval_problems(self, n: int) -> list[Problem]:
    rng = random.Random(f"rl/arithmetic/eval/{self.seed}")
    out, seen = [], set()
    for _ in range(1000 * n):
      p = self._draw(rng)
      if p.question not in seen and in_eval_split(p.question, self.eval_permille):
        seen.add(p.question)
        out.append(p)
        if len(out) == n:
          return out
    raise ValueError(f"could not draw {n} distinct held-out problems at this difficulty (got {len(out)})")


def parse_gsm8k_answer(answer: str) -> int:
  """The integer after the last '####' of a GSM8K answer field ('... #### 1,234' -> 1234)."""
  if "####" not in answer:
    raise ValueError(f"GSM8K answer has no '####': {answer[-80:]!r}")
  final = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
  try:
    return int(final)
  except ValueError:
    value = float(final)
    if value != int(value):
      raise ValueError(f"GSM8K final answer {final!r} is not an integer") from None
    return int(value)


def load_gsm8k(path: str) -> list[Problem]:
  """Problems from a GSM8K JSONL file: one {"question": str, "answer": "... #### N"} object per line."""
  out = []
  with fs.open_file(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        out.append(Problem(row["question"].strip(), parse_gsm8k_answer(row["answer"]), row["answer"]))
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}:{i}: not a GSM8K line ({e})") from e
  if not out:
    raise ValueError(f"{path} has no problems")
  return out


def to_gsm8k_record(problem: Problem) -> dict[str, str]:
  """A problem as a GSM8K JSONL object: the worked solution, then '#### N'."""
  steps = re.sub(r"\s*The answer is -?\d+\.\s*$", "", problem.solution).strip()
  return {"question": problem.question, "answer": f"{steps}\n#### {problem.answer}".strip()}


class GSM8KTask(Task):
  """GSM8K-format problems from JSONL; eval from `test_path`, else a stable-hash held-out part of `train_path`."""

  name = "gsm8k"

  def __init__(
      self,
      *,
      train_path: str,
      test_path: str = "",
      eval_permille: int = 50,
      seed: int = 0,
      reward_weights: Mapping[str, float] | None = None,
      system_prompt: str = "",
  ):
    super().__init__(reward_weights or {"correct": 1.0}, gsm8k_format_reward, system_prompt)
    problems = load_gsm8k(train_path)
    if test_path:
      self._train, self._eval = problems, load_gsm8k(test_path)
      held = {p.question for p in self._eval}
      self._train = [p for p in self._train if p.question not in held]
    else:
      self._train = [p for p in problems if not in_eval_split(p.question, eval_permille)]
      self._eval = [p for p in problems if in_eval_split(p.question, eval_permille)]
    if not self._train or not self._eval:
      raise ValueError(f"GSM8K split of {train_path} left {len(self._train)} train / {len(self._eval)} eval problems")
    self.seed = seed

  def train_problem(self, index: int) -> Problem:
    epoch, i = divmod(index, len(self._train))
    order = list(range(len(self._train)))
    random.Random(f"rl/gsm8k/{self.seed}/{epoch}").shuffle(order)  # a fresh order every epoch
    return self._train[order[i]]

  def eval_problems(self, n: int) -> list[Problem]:
    return self._eval[:n]


def default_task_config() -> ml_collections.ConfigDict:
  """The task block of the RL config; arithmetic difficulty defaults to the SFT data's."""
  r = reasoning.default_reasoning_config()
  return ml_collections.ConfigDict(
      {
          "name": "arithmetic",  # arithmetic | gsm8k
          "digits": r.digits,
          "min_steps": r.min_steps,
          "max_steps": r.max_steps,
          "max_factor": r.max_factor,
          "train_path": "",  # gsm8k: JSONL with {"question", "answer"} lines
          "test_path": "",  # gsm8k: optional held-out JSONL ("" = a hash split of train_path)
          "eval_permille": 50,  # held-out fraction (per mille) when the split is by hash
          "rewards": {"correct": 1.0, "format": 0.0},
          "system_prompt": "",
      }
  )


def make_task(cfg: ml_collections.ConfigDict, seed: int = 0) -> Task:
  """A Task from a default_task_config()-shaped block."""
  weights = dict(cfg.rewards)
  if cfg.name == "arithmetic":
    return ArithmeticTask(
        digits=cfg.digits,
        min_steps=cfg.min_steps,
        max_steps=cfg.max_steps,
        max_factor=cfg.max_factor,
        seed=seed,
        eval_permille=cfg.eval_permille,
        reward_weights=weights,
        system_prompt=cfg.system_prompt,
    )
  if cfg.name == "gsm8k":
    if not cfg.train_path:
      raise ValueError("task.name=gsm8k needs task.train_path (a GSM8K JSONL file)")
    return GSM8KTask(
        train_path=cfg.train_path,
        test_path=cfg.test_path,
        eval_permille=cfg.eval_permille,
        seed=seed,
        reward_weights=weights,
        system_prompt=cfg.system_prompt,
    )
  raise ValueError(f"unknown task {cfg.name!r}; choose one of {TASKS}")
