"""The evaluation harness: log-likelihood scoring against direct computation, sharded vs one device, aggregation rules
(ties are wrong, fields are means over phenomena), BLiMP curves during training, and the CLI's bad-input errors."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import model as model_lib
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import trainer
from nanolm_jax.evals import harness
from nanolm_jax.evals import scoring
from nanolm_jax.evals import tasks as tasks_lib
from nanolm_jax.stages import pretrain as pretraining
from tests.conftest import REPO, make_config, tiny_overrides


@pytest.fixture(scope="module")
def tok(small_tokenizer):
  return tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)


@pytest.fixture(scope="module")
def model_and_params():
  cfg = make_config("tiny", **{"model.vocab_size": 512, "model.num_layers": 2, "model.d_model": 64})
  cfg.model.num_heads, cfg.model.max_len = 4, 64
  model = model_lib.build_model(cfg, None)
  params = jax.jit(model.init)(jax.random.PRNGKey(3), np.zeros((1, 8), np.int32))["params"]
  return cfg, model, params


def _direct(model, params, ids, n):
  """log p of the last n ids, and whether each is the argmax: one unpadded sequence, computed in numpy."""
  # jit: one compile per length (persistently cached), not op-by-op dispatch; the same float32 forward.
  logits = np.asarray(jax.jit(model.apply)({"params": params}, np.asarray([ids[:-1]], np.int32))[0], np.float64)
  logp = (
      logits
      - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
      - logits.max(-1, keepdims=True)
  )
  t = len(ids) - 1
  lp = sum(logp[i, ids[i + 1]] for i in range(t - n, t))
  greedy = all(int(np.argmax(logits[i])) == ids[i + 1] for i in range(t - n, t))
  return lp, greedy


TEXTS = [
    ("", "The cat sat on the mat."),
    ("The function returns", " a list of values."),
    ("In Python,", " x"),
    ("A much longer context that goes on and on about modules, classes, functions and their arguments,", " ok"),
    ("", "Lists are mutable sequences."),
]


def test_scores_equal_a_direct_computation_whatever_the_batch(tok, model_and_params):
  _, model, params = model_and_params
  rows = [scoring.encode_row(tok, c, x, model.cfg.max_len) for c, x in TEXTS]
  for batch_size in (1, 8):  # padding rows, buckets and sorting must not change any score
    got = scoring.LogLikelihood(model, params, batch_size=batch_size)(rows)
    for (ids, n), s in zip(rows, got):
      lp, greedy = _direct(model, params, ids, n)
      assert s.num_tokens == n
      assert abs(s.logprob - lp) <= 1e-4 * max(1.0, abs(lp)), (batch_size, s.logprob, lp)
      assert s.greedy == greedy


def test_rows_longer_than_the_context_keep_their_end(tok, model_and_params):
  _, model, params = model_and_params
  ids, n = scoring.encode_row(tok, "word " * 200, " end", model.cfg.max_len)
  assert len(ids) == model.cfg.max_len + 1 and ids[-n:] == tok.encode(" end")
  ids, n = scoring.encode_row(tok, "", "word " * 200, model.cfg.max_len)  # scored on its last max_len tokens
  assert len(ids) == model.cfg.max_len + 1 and n == model.cfg.max_len


def test_sharded_scores_equal_one_device(tok, model_and_params):
  cfg, model, params = model_and_params
  rows = [scoring.encode_row(tok, c, x, model.cfg.max_len) for c, x in TEXTS]
  want = scoring.LogLikelihood(model, params, batch_size=4)(rows)
  cfg.mesh.update(data=2, fsdp=2, tensor=2)
  mesh = shd.make_mesh(cfg.mesh)
  sharded_model = model_lib.build_model(cfg, mesh)
  rules = shd.normalize_rules(cfg.sharding_rules)
  abstract = jax.eval_shape(lambda: sharded_model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32)))
  shardings = shd.state_shardings(abstract, mesh, rules)["params"]
  sharded = jax.device_put(params, shardings)
  scorer = scoring.LogLikelihood(sharded_model, sharded, mesh=mesh, batch_size=3)
  assert scorer.batch_size == 4  # rounded up to the 4 data shards (data x fsdp)
  got = scorer(rows)
  for a, b in zip(want, got):
    assert abs(a.logprob - b.logprob) <= 1e-4 * max(1.0, abs(a.logprob)) and a.greedy == b.greedy


def _s(lp, n=1):
  return scoring.Scored(lp, n, False)


def test_choose_breaks_no_ties():
  assert scoring.choose([_s(-1.0), _s(-2.0)], False) == 0
  assert scoring.choose([_s(-2.0), _s(-2.0)], False) is None  # a tie is no choice, so a wrong answer
  assert scoring.choose([_s(-4.0, 4), _s(-3.0, 1)], True) == 0  # per token: -1 beats -3
  assert scoring.choose([_s(-4.0, 4), _s(-3.0, 1)], False) == 1


class _FixedScorer:
  """Returns given log-probs in order (the harness's aggregation, without a model)."""

  max_len = 64

  def __init__(self, logprobs):
    self.logprobs = list(logprobs)

  def __call__(self, rows):
    return [scoring.Scored(self.logprobs.pop(0), 1, True) for _ in rows]


def test_minimal_pairs_accuracy_ties_wrong_fields_are_means_over_phenomena(tok):
  spec = dataclasses.replace(tasks_lib.REGISTRY["blimp"], path="(test)")
  items = [
      tasks_lib.ChoiceItem(("", ""), ("good a", "bad a"), 0, {"UID": "a", "field": "syntax"}),
      tasks_lib.ChoiceItem(("", ""), ("good a", "bad a"), 0, {"UID": "a", "field": "syntax"}),
      tasks_lib.ChoiceItem(("", ""), ("good b", "bad b"), 0, {"UID": "b", "field": "syntax"}),
      tasks_lib.ChoiceItem(("", ""), ("good c", "bad c"), 0, {"UID": "c", "field": "semantics"}),
  ]
  #      a: right, a: tie (wrong), b: right, c: wrong
  lps = [-1.0, -2.0, -3.0, -3.0, -1.0, -5.0, -4.0, -1.0]
  res = harness.score_choice_task(_FixedScorer(lps), tok, tasks_lib.Task(spec=spec, items=items))
  assert res["accuracy"] == 0.5 and res["correct"] == 2
  assert res["per_phenomenon"] == {"a": 0.5, "b": 1.0, "c": 0.0}
  assert res["per_field"] == {"semantics": 0.0, "syntax": 0.75}  # mean of a (0.5) and b (1.0), not of 3 pairs
  assert res["centered"] == 0.0  # (0.5 - 0.5) / (1 - 0.5)
  assert harness.flat_metrics({"blimp": res})["eval/blimp_syntax"] == 0.75


def test_pretraining_logs_a_blimp_curve(tmp_path, small_corpus, small_tokenizer):
  over = {**tiny_overrides(small_corpus, small_tokenizer), "train.steps": 4, "train.eval_every": 2}
  cfg = make_config("tiny", **over)
  cfg.train.eval_tasks, cfg.train.eval_tasks_max_examples = "blimp", 134  # 2 pairs of each of the 67 phenomena
  trainer.train(cfg, str(tmp_path), dataclasses.replace(pretraining.build(None), on_end=None))
  rows = [r for r in metrics_lib.read_metrics(str(tmp_path)) if "eval/blimp_acc" in r]
  assert [r["step"] for r in rows] == [0, 2, 4]
  assert all(0.0 <= r["eval/blimp_acc"] <= 1.0 and "val_bpb" in r and "eval/blimp_syntax" in r for r in rows)
  # The CLI on the finished run, sharded over a 2x2x2 mesh, scores the same 134 pairs as the trainer did at step 4.
  p = _evaluate(f"--workdir={tmp_path}", "--tasks=blimp", "--max_examples=134", "--mesh=data=2,fsdp=2,tensor=2")
  assert p.returncode == 0, p.stderr[-3000:]
  saved = json.loads((tmp_path / "eval" / "4.json").read_text())["results"]["blimp"]
  assert saved["examples"] == 134 and saved["accuracy"] == rows[-1]["eval/blimp_acc"]
  assert "benchmark:" in p.stdout and "blimp" in p.stdout


def _evaluate(*args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", *args], cwd=REPO, capture_output=True, text=True, timeout=300
  )


@pytest.mark.slow
def test_cli_names_bad_input_before_any_model_work(tmp_path):
  p = _evaluate(f"--workdir={tmp_path / 'nothing'}", "--tasks=blimp,nosuchtask")
  assert p.returncode != 0 and "nosuchtask" in p.stderr
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n" + '{"query": "q"}\n')
  p = _evaluate(f"--workdir={tmp_path / 'nothing'}", f"--tasks=copa={bad}")
  assert p.returncode != 0 and f"{bad}:2" in p.stderr
  assert not os.path.exists(tmp_path / "nothing")


class _StubEngine:
  """Records what it is asked and answers every prompt with a fixed text."""

  def __init__(self, tok, reply):
    self.tok, self.reply, self.prompts, self.kwargs = tok, reply, [], []

  def generate(self, prompts, sampling, **kwargs):
    self.prompts.extend(prompts)
    self.kwargs.append(kwargs)
    toks = self.tok.encode(self.reply)
    return [
        engine_lib.Completion(i, 0, toks, [0.0] * len(toks), [0.0] * len(toks), [True] * len(toks), self.reply, "stop")
        for i in range(len(prompts))
    ]


def test_gsm8k_is_a_few_shot_text_for_base_models_and_a_chat_turn_for_chat_models(tok):
  task = tasks_lib.load_task(tasks_lib.REGISTRY["gsm8k"], max_examples=3)
  answer = task.items[0].answer
  base = _StubEngine(tok, f"She pays 2 + 3.\n#### {answer}")
  res = harness.score_generative_task(base, tok, task, False, 64, 8, 0)
  assert res["correct"] == sum(it.answer == answer for it in task.items) >= 1
  assert tok.decode(base.prompts[0], skip_special=True).count("Question:") == 9  # 8 shots + the question
  assert base.kwargs[0]["stop_strings"] == tuple(task.items[0].stop)
  chat_eng = _StubEngine(tok, f"The answer is {answer}.")
  res = harness.score_generative_task(chat_eng, tok, task, True, 64, 8, 0)
  assert res["correct"] >= 1
  prompt = chat_eng.prompts[0]
  assert prompt == chat.render_for_completion([{"role": "user", "content": task.items[0].meta["question"]}], tok)
  assert "Question:" not in tok.decode(prompt, skip_special=True)
