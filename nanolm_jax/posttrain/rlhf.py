"""RL against a learned reward (issue 15): the gold task as an RL task, its sampled evaluation, and best-of-n.

The GRPO machinery (posttrain.rollouts, posttrain.grpo) runs unchanged; what differs is the task:
``RewardModelTask`` hands out the gold judge's prompts ("Tell me about <person>", gold_judge.prompts: training
people for rollouts, held-out people for evaluation) and scores a round of completions with one batched call of the
proxy reward model (posttrain.reward_model.Scorer). The reward is the proxy's score; the gold judge's score is
computed beside it and only ever logged (``gold``), as in Gao et al. 2022: the policy optimises the proxy while the
gold measures what it really gained.

Evaluation (``evaluate``), at step 0 and every eval step, samples k replies per held-out prompt from the current
policy (temperature 1, unfiltered: the samples are the policy's own, so the KL estimate is of the policy) and reports
proxy_reward and gold_reward (means over the samples) and kl: the mean over samples of the sum over their sampled
tokens of log π − log π_init (nats; sequence_kl), both log-probs from the same training-graph forward, so the
policy at its start reads exactly 0. A few sample texts go to <workdir>/rlhf_samples.jsonl.

Best-of-n (``best_of_n_rows``): N samples per held-out prompt from the starting policy, scored by proxy and gold,
through best_of_n.best_of_n (the unbiased estimator over N): one row per n with bon_n, bon_gold, bon_proxy, bon_kl.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import fs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.posttrain import best_of_n
from nanolm_jax.posttrain import gold_judge
from nanolm_jax.posttrain import rollouts
from nanolm_jax.posttrain import tasks as tasks_lib

SAMPLES_FILE = "rlhf_samples.jsonl"
Conversation = list[dict[str, Any]]


def reply_text(tokens: Sequence[int], tok: tokenizer_lib.Tokenizer) -> str:
  """The assistant text of generated tokens, as the reward-model data rendered its samples (probe.engine_answer_fn)."""
  msgs = chat.parse_completion(tokens, tok)
  return " ".join(m["content"] for m in msgs if m["role"] == "assistant").strip()


class RewardModelTask(tasks_lib.Task):
  """The gold task's prompts with a proxy reward model as the reward; see the module docstring.

  scorer: conversations ending in a reply -> rewards (reward_model.Scorer); judge: the gold judge on the SFT run's
  fact world; gold_cfg: its config (the prompts' people and seed). Training prompts cycle through a fixed pool of
  ``pool_size`` draws of the training split; evaluation prompts are the first n of the validation split."""

  name = "reward_model"
  verifiable = False

  def __init__(self, scorer: Any, judge: gold_judge.GoldJudge, gold_cfg: ml_collections.ConfigDict, pool_size: int):
    # No Task.__init__: there are no verifier weights; score() is the proxy's.
    self.scorer, self.judge, self.gold_cfg = scorer, judge, gold_cfg
    self.system_prompt = ""
    self._pool = [c[-1]["content"] for c in gold_judge.prompts(gold_cfg, pool_size, "train")]

  def train_problem(self, index: int) -> tasks_lib.Problem:
    return tasks_lib.Problem(self._pool[index % len(self._pool)], 0)

  def eval_problems(self, n: int) -> list[tasks_lib.Problem]:
    return [tasks_lib.Problem(c[-1]["content"], 0) for c in gold_judge.prompts(self.gold_cfg, n, "validation")]

  def score_replies(self, replies: Sequence[str], problems: Sequence[tasks_lib.Problem]) -> list[dict[str, float]]:
    """{'proxy', 'gold', 'reward' (= proxy)} per reply: the proxy in one batched call, the gold beside it.

    An empty reply cannot be rendered for the proxy; it gets the lowest proxy score of the call (never preferred)."""
    prompts = [self.messages(p) for p in problems]
    live = [i for i, r in enumerate(replies) if r]
    scored = self.scorer([prompts[i] + [{"role": "assistant", "content": replies[i]}] for i in live]) if live else []
    proxy = np.full(len(replies), float(np.min(scored)) if live else 0.0, np.float64)
    proxy[live] = scored
    gold = [self.judge.score(m, r) for m, r in zip(prompts, replies)]
    return [{"proxy": float(p), "gold": float(g), "reward": float(p)} for p, g in zip(proxy, gold)]

  def score_completions(self, completions, problems, tokenizer) -> list[dict[str, float]]:
    return self.score_replies([reply_text(c.tokens, tokenizer) for c in completions], problems)

  def score(self, text: str, problem: tasks_lib.Problem) -> dict[str, float]:
    return self.score_replies([text], [problem])[0]


def _sample(shared: rollouts.Shared, params: Any, problems, k: int, e: ml_collections.ConfigDict, seed: int):
  """k temperature-1 samples per problem from ``params`` (eval.chunk_prompts prompts per generate call)."""
  sampling = engine_lib.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=e.max_new_tokens)
  eng = shared.engine(params)
  chunk = max(1, int(e.chunk_prompts))
  outs = []
  for start in range(0, len(problems), chunk):
    part = problems[start : start + chunk]
    outs += eng.generate(
        [shared.prompt(p) for p in part], sampling, n=k, seed=seed + start, stop_tokens=shared.stop_tokens
    )
  return outs


def policy_kl(shared: rollouts.Shared, params: Any, problems, outs, k: int) -> np.ndarray:
  """kl_B: sequence_kl of each sample under ``params`` against the reference (one forward each, same graph)."""
  return shared.sample_kl(params, [shared.prompt(p) for p in problems for _ in range(k)], outs)


def evaluate(shared: rollouts.Shared, params: Any) -> dict[str, float]:
  """proxy_reward, gold_reward and kl (KL(π || π_init), nats) on the held-out prompts; see the module docstring."""
  e = shared.cfg.eval
  problems = shared.task.eval_problems(int(e.num_problems))
  k = int(e.samples)
  outs = _sample(shared, params, problems, k, e, int(e.seed))
  scores = shared.task.score_completions(outs, [p for p in problems for _ in range(k)], shared.tok)
  kl_B = policy_kl(shared, params, problems, outs, k)
  m = {
      "proxy_reward": float(np.mean([s["proxy"] for s in scores])),
      "gold_reward": float(np.mean([s["gold"] for s in scores])),
      "kl": float(np.mean(kl_B)),
      "eval_response_len": float(np.mean([len(c.tokens) for c in outs])),
      "eval_truncated_frac": float(np.mean([c.truncated for c in outs])),
  }
  _write_samples(shared, problems, outs, scores, k, m)
  return m


def _write_samples(shared: rollouts.Shared, problems, outs, scores, k: int, m: dict[str, float]) -> None:
  n = int(shared.cfg.rlhf.log_samples)
  if not n or not shared.ctx.workdir:
    return
  picked = [
      {
          "prompt": problems[i].question,
          "reply": reply_text(outs[i * k].tokens, shared.tok),
          "proxy": scores[i * k]["proxy"],
          "gold": scores[i * k]["gold"],
      }
      for i in range(min(n, len(problems)))
  ]
  for s in picked[:2]:
    logging.info("sample (proxy %+.2f, gold %.2f): %s -> %s", s["proxy"], s["gold"], s["prompt"], s["reply"])
  row = {**{key: m[key] for key in ("proxy_reward", "gold_reward", "kl")}, "samples": picked}
  fs.append_text(fs.join(shared.ctx.workdir, SAMPLES_FILE), json.dumps(row) + "\n")


def bon_table(proxy_PxN: np.ndarray, gold_PxN: np.ndarray) -> list[dict[str, float]]:
  """best_of_n.best_of_n as metrics rows: {bon_n, bon_gold, bon_proxy, bon_kl} for n = 1..N."""
  curve = best_of_n.best_of_n(proxy_PxN, gold_PxN)
  return [
      {"bon_n": int(n), "bon_gold": float(g), "bon_proxy": float(p), "bon_kl": float(kl)}
      for n, g, p, kl in zip(curve["n"], curve["gold"], curve["proxy"], curve["kl"])
  ]


def best_of_n_rows(shared: rollouts.Shared, like: Any) -> list[dict[str, float]]:
  """bon_table of rlhf.bon_samples samples per held-out prompt from the starting policy (the reference run)."""
  e, big_n = shared.cfg.eval, int(shared.cfg.rlhf.bon_samples)
  problems = shared.task.eval_problems(int(shared.cfg.rlhf.bon_prompts or e.num_problems))
  outs = _sample(shared, shared.ref_params(like), problems, big_n, e, int(e.seed) + 7919)
  scores = shared.task.score_completions(outs, [p for p in problems for _ in range(big_n)], shared.tok)
  proxy = np.array([s["proxy"] for s in scores]).reshape(len(problems), big_n)
  gold = np.array([s["gold"] for s in scores]).reshape(len(problems), big_n)
  return bon_table(proxy, gold)
