"""RL tasks: verifier rewards by hand, weighted combination, held-out splits, GSM8K JSONL loading, pass@k."""

import json

import pytest

from nanolm_jax.synthetic import reasoning
from nanolm_jax.posttrain import tasks

P = tasks.Problem("Mia has 3 apples. Mia buys 4 more apples. How many apples does Mia have now?", 7)


@pytest.mark.parametrize(
    "text,correct,fmt",
    [
        ("Mia starts with 3 apples. Buying 4 more gives 3 + 4 = 7. The answer is 7.", 1, 1),
        ("3 + 4 = 8. The answer is 8.", 0, 1),  # right format, wrong answer
        ("The answer is 7. Mia starts with 3 apples.", 1, 0),  # answer not last
        ("The answer is 5. No wait, the answer is 7", 1, 1),  # the last answer counts; final '.' optional
        ("3 + 4 = 7", 0, 0),  # no answer sentence: strict extraction
        ("", 0, 0),
    ],
)
def test_correctness_and_format_rewards(text, correct, fmt):
  assert tasks.correctness_reward(text, P) == correct
  assert tasks.answer_format_reward(text, P) == fmt


def test_gsm8k_format_reward():
  assert tasks.gsm8k_format_reward("3 + 4 = 7\n#### 7", P) == 1.0
  assert tasks.correctness_reward("3 + 4 = 7\n#### 7", P) == 1.0
  assert tasks.gsm8k_format_reward("#### 7 because 3 + 4", P) == 0.0


def test_rewards_combine_with_weights():
  score = tasks.combine_rewards(
      {"correct": (tasks.correctness_reward, 1.0), "format": (tasks.answer_format_reward, 0.25)}
  )
  assert score("The answer is 7.", P) == {"correct": 1.0, "format": 1.0, "reward": 1.25}
  assert score("The answer is 8.", P) == {"correct": 0.0, "format": 1.0, "reward": 0.25}
  assert score("7", P) == {"correct": 0.0, "format": 0.0, "reward": 0.0}
  task = tasks.make_task(tasks.default_task_config())
  assert task.score("The answer is 8.", P) == {"correct": 0.0, "reward": 0.0}  # format weight 0: left out
  with pytest.raises(ValueError, match="unknown reward"):
    tasks.ArithmeticTask(digits=1, min_steps=1, max_steps=2, max_factor=5, reward_weights={"length": 1.0})


def test_pass_at_k_by_hand():
  assert tasks.pass_at_k(4, 0, 1) == 0.0
  assert tasks.pass_at_k(4, 1, 1) == pytest.approx(0.25)
  assert tasks.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
  assert tasks.pass_at_k(4, 2, 4) == 1.0
  assert tasks.pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
  with pytest.raises(ValueError):
    tasks.pass_at_k(2, 1, 3)


def test_arithmetic_task_matches_sft_difficulty_and_holds_out_eval():
  cfg = tasks.default_task_config()
  sft = reasoning.default_reasoning_config()
  assert (cfg.digits, cfg.min_steps, cfg.max_steps, cfg.max_factor) == (
      sft.digits,
      sft.min_steps,
      sft.max_steps,
      sft.max_factor,
  )
  task = tasks.make_task(cfg, seed=3)
  train = [task.train_problem(i) for i in range(300)]
  assert train[:5] == [task.train_problem(i) for i in range(5)]  # by index: a resumed cursor sees the same stream
  evals = task.eval_problems(40)
  assert evals == tasks.make_task(cfg, seed=3).eval_problems(40)
  assert len({p.question for p in evals}) == 40
  assert all(tasks.in_eval_split(p.question, cfg.eval_permille) for p in evals)
  assert not any(tasks.in_eval_split(p.question, cfg.eval_permille) for p in train)
  assert not {p.question for p in train} & {p.question for p in evals}
  for p in train[:50] + evals:
    assert reasoning.extract_answer(p.solution) == p.answer  # the worked solution verifies
    assert tasks.correctness_reward(p.solution, p) == 1.0
  assert task.messages(train[0]) == [{"role": "user", "content": train[0].question}]


def test_arithmetic_difficulty_is_configurable():
  hard = tasks.ArithmeticTask(digits=2, min_steps=3, max_steps=3, max_factor=9)
  sols = [hard.train_problem(i).solution for i in range(30)]
  # three operations -> three equations (a product start counts as one of them)
  assert all(s.count("=") == 3 for s in sols)
  assert any(n >= 10 for s in sols for n in map(int, __import__("re").findall(r"\d+", s)))


def _write_gsm8k(path, problems):
  with open(path, "w") as f:
    for p in problems:
      f.write(json.dumps(tasks.to_gsm8k_record(p)) + "\n")


def test_gsm8k_loader_and_splits(tmp_path):
  arith = tasks.ArithmeticTask(digits=1, min_steps=1, max_steps=3, max_factor=5)
  probs = [arith.train_problem(i) for i in range(60)]
  path = tmp_path / "train.jsonl"
  _write_gsm8k(path, probs)
  with open(path, "a") as f:  # the real GSM8K style: thousands separators, calculator annotations
    f.write(
        json.dumps({"question": "How much is 1000 + 234?", "answer": "1000+234=<<1000+234=1234>>1,234\n" "#### 1,234"})
        + "\n\n"
    )
  loaded = tasks.load_gsm8k(str(path))
  assert len(loaded) == 61
  assert [p.answer for p in loaded[:60]] == [p.answer for p in probs]
  assert loaded[-1].answer == 1234
  assert loaded[0].solution.endswith(f"#### {probs[0].answer}")
  assert tasks.correctness_reward(loaded[0].solution, loaded[0]) == 1.0

  task = tasks.GSM8KTask(train_path=str(path), eval_permille=300)
  evals = task.eval_problems(100)
  train_q = {task.train_problem(i).question for i in range(200)}
  assert evals and not train_q & {p.question for p in evals}
  assert len(train_q) == 61 - len(evals)  # every training problem comes round once per epoch

  test_path = tmp_path / "test.jsonl"
  _write_gsm8k(test_path, probs[:5])
  task = tasks.GSM8KTask(train_path=str(path), test_path=str(test_path))
  assert task.eval_problems(10) == [
      tasks.Problem(p.question, p.answer, tasks.to_gsm8k_record(p)["answer"]) for p in probs[:5]
  ]
  assert not {task.train_problem(i).question for i in range(56)} & {p.question for p in probs[:5]}
  assert task.score("so 3\n#### 7", tasks.Problem("q", 7)) == {"correct": 1.0, "reward": 1.0}


def test_gsm8k_bad_lines_are_named(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"question": "q", "answer": "4"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: .*####"):
    tasks.load_gsm8k(str(bad))
  bad.write_text("{not json\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1"):
    tasks.load_gsm8k(str(bad))
  cfg = tasks.default_task_config()
  cfg.name = "gsm8k"
  with pytest.raises(ValueError, match="train_path"):
    tasks.make_task(cfg)
  cfg.name = "chess"
  with pytest.raises(ValueError, match="unknown task"):
    tasks.make_task(cfg)
