"""RL rollouts (GRPO family): the engine samples the current policy, verifiers score it, rows feed the loss.

Per optimizer step the data iterator (``RolloutData.__next__``, called right before the step):
  1. takes the current policy params (ctx.current_params) into one Engine (programs compiled once, params swapped),
  2. samples G completions for each of P prompts of the task (one shared prefill per prompt), keeping the
     sampling-time log-probs (π_old, temperature 1 unfiltered) and the generated-token mask,
  3. scores them with the task's verifiers (+ DAPO's soft overlong penalty when enabled), and turns each group's
     rewards into advantages (grpo.group_advantages),
  4. with dynamic sampling, drops groups whose rewards are all equal (no signal) and samples more prompts to refill,
     at most ``max_sample_rounds`` rounds; still-missing groups are filled with dropped ones at weight 0,
  5. lays out one prompt + completion per row (prompt weight 0, sampled completion tokens weight 1, forced tool tokens
     0), padded to a multiple of ``length_bucket`` (<= train.seq_len), adds the frozen reference's log-probs when
     β > 0 (a jitted forward of the init_from params, loaded once), and yields that batch μ = inner_steps times: the
     same old_logprobs each time, so the first inner step has ratio 1 (up to the engine's float error).

Rollout metrics (reward, accuracy, response length, truncation, kept groups, KL to the reference, rollout and update
tokens/s) reach metrics.jsonl through the trainer's ``step_metrics`` hook; the loss adds clip fraction, ratio,
entropy (and KL when β > 0). Evaluation samples k completions per held-out problem with fixed sampler settings and
seed: eval_accuracy (= pass@1, the mean over the k samples) and pass@k, at step 0 and every eval step, and at
temperature 1 eval_kl, the samples' KL to the reference.

Resume: the iterator state is (rollouts done, prompt cursor, inner step); rollouts are seeded from (seed, rollout
index), so a resumed run continues the same prompt stream. A run stopped between two inner steps of one rollout
starts a fresh rollout (the old batch's π_old is gone with the old params).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging

from nanolm_jax import chat
from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import continuous
from nanolm_jax import engine as engine_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import sharding as shd
from nanolm_jax.posttrain import grpo
from nanolm_jax.posttrain import tasks as tasks_lib

ROW_KEYS = ("inputs", "targets", "segment_ids", "positions", "weights", "old_logprobs")
CURVES = ("reward", "accuracy", "eval_accuracy", "eval_kl", "kl", "rollout_kl", "clip_frac", "entropy", "response_len")


# --- pure pieces ------------------------------------------------------------------------------------------------------


def overlong_penalty(length: int, max_new_tokens: int, cache: int) -> float:
  """DAPO's soft overlong punishment: 0 up to max - cache tokens, then linear down to -1 at max_new_tokens."""
  if cache <= 0 or length <= max_new_tokens - cache:
    return 0.0
  if length > max_new_tokens:
    return -1.0
  return (max_new_tokens - cache - length) / cache


def build_rows(
    prompts: Sequence[Sequence[int]], completions: Sequence[engine_lib.Completion], seq_len: int, length_bucket: int = 0
) -> dict[str, np.ndarray]:
  """One prompt + completion per row -> next-token arrays (N x L) for the loss.

  L is the longest row rounded up to a multiple of length_bucket (capped at seq_len), or seq_len when 0. Row i holds
  prompts[i] + completions[i].tokens: targets are the inputs shifted by one; `weights` is 1 on targets that are
  sampled completion tokens (generated_mask) and 0 on the prompt, forced tool tokens and padding; `old_logprobs` are
  the completion's sampling-time log-probs at the same positions. A row longer than seq_len + 1 raises ValueError.
  """
  lengths = [len(p) + len(c.tokens) - 1 for p, c in zip(prompts, completions)]
  longest = max(lengths)
  if longest > seq_len:
    raise ValueError(f"a prompt + completion of {longest + 1} tokens does not fit train.seq_len={seq_len} + 1")
  width = seq_len if not length_bucket else min(seq_len, -(-longest // length_bucket) * length_bucket)
  n = len(prompts)
  out = {k: np.zeros((n, width), np.float32 if k in ("weights", "old_logprobs") else np.int32) for k in ROW_KEYS}
  for i, (p, c) in enumerate(zip(prompts, completions)):
    full = np.asarray(list(p) + list(c.tokens), np.int32)
    m = len(full) - 1
    out["inputs"][i, :m] = full[:-1]
    out["targets"][i, :m] = full[1:]
    out["segment_ids"][i, :m] = 1
    out["positions"][i, :m] = np.arange(m)
    start = len(p) - 1  # target index of the first completion token
    out["weights"][i, start:m] = np.asarray(c.generated_mask, np.float32)
    out["old_logprobs"][i, start:m] = np.asarray(c.logprobs, np.float32) * out["weights"][i, start:m]
  return out


def sequence_kl(logp_BxL: np.ndarray, ref_logp_BxL: np.ndarray, weights_BxL: np.ndarray) -> np.ndarray:
  """kl_B: each row's sum over its weighted (sampled completion) tokens of log π - log π_ref, in nats.

  On samples of π, its mean over rows estimates KL(π || π_ref) of the completion distribution (unbiased; a single
  row may be negative)."""
  w = np.asarray(weights_BxL, np.float64) > 0
  return np.sum((np.asarray(logp_BxL, np.float64) - np.asarray(ref_logp_BxL, np.float64)) * w, axis=1)


def _token_logprobs_fn(model):
  """Jitted (params, inputs, targets, segment_ids, positions) -> log π(target) per position (N x L)."""

  def fwd(params, inputs, targets, segment_ids, positions):
    logits = model.apply({"params": params}, inputs, segment_ids, positions)
    return grpo.token_logprobs(logits, targets)[0]

  return jax.jit(fwd)


# --- the stage --------------------------------------------------------------------------------------------------------


class Shared:
  """What the iterator, the evaluator and on_end share within one run: the task, one engine, the jitted forward."""

  def __init__(self, ctx: Any, task: tasks_lib.Task | None = None, reference: str | None = None):
    """ctx: the trainer's RunContext (cfg, model, mesh, tokenizer and current_params are used); task: the task
    (default: cfg.task's); reference: the frozen reference's run folder (default: cfg.init_from)."""
    self.ctx = ctx
    self.cfg = ctx.cfg
    self.task = task or tasks_lib.make_task(ctx.cfg.task, seed=ctx.cfg.seed)
    self.reference = reference or ctx.cfg.init_from
    self._ref = None
    self.tok = ctx.tokenizer
    self.stop_tokens = chat.stop_tokens(self.tok)
    self._engine = None
    self.logprobs_fn = _token_logprobs_fn(ctx.model)
    self.batch_sharding = shd.batch_sharding(ctx.mesh, shd.normalize_rules(ctx.cfg.sharding_rules))

  def engine(self, params: Any) -> engine_lib.Engine:
    """The one engine, holding `params` (the trainer's sharded arrays; swapping them recompiles nothing)."""
    if self._engine is None:
      self._engine = engine_lib.Engine(self.ctx.model, params, self.tok, mesh=self.ctx.mesh)
    self._engine.params = params
    return self._engine

  def generate(self, eng: engine_lib.Engine, prompts, sampling, n: int, seed: int) -> list[engine_lib.Completion]:
    """n completions per prompt, prompt-major: one engine call, or with rl.rollout_slots > 0 continuous batching in
    that many slots (the same rows, drawn with the same keys; a finished row's slot goes to a waiting one, so a group
    no longer pays decode steps for its longest completion on every row)."""
    slots = int(self.cfg.rl.get("rollout_slots", 0) or 0)
    if slots > 0:
      return continuous.generate(eng, prompts, sampling, n=n, seed=seed, stop_tokens=self.stop_tokens, slots=slots)
    return eng.generate(prompts, sampling, n=n, seed=seed, stop_tokens=self.stop_tokens)

  def prompt(self, problem: tasks_lib.Problem) -> list[int]:
    return chat.render_for_completion(self.task.messages(problem), self.tok)

  def forward_logprobs(self, params: Any, rows: dict[str, np.ndarray]) -> np.ndarray:
    """logp_BxL of rows' targets; rows are padded (segment 0, dropped after) to a multiple of the batch sharding, so
    an evaluation of fewer rows than data-parallel devices runs too."""
    keys = ("inputs", "targets", "segment_ids", "positions")
    n = rows["inputs"].shape[0]
    spec = self.batch_sharding.spec[0] if self.batch_sharding.spec else None
    axes = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
    width = max(1, int(np.prod([self.batch_sharding.mesh.shape[a] for a in axes])) // jax.process_count())
    pad = -n % width
    b = shd.global_batch(
        {k: np.pad(rows[k], [(0, pad)] + [(0, 0)] * (rows[k].ndim - 1)) for k in keys}, self.batch_sharding
    )
    logp = jax.device_get(self.logprobs_fn(params, b["inputs"], b["targets"], b["segment_ids"], b["positions"]))
    return np.asarray(logp)[:n]

  def sample_kl(self, params: Any, prompts: Sequence[Sequence[int]], outs: Sequence[Any]) -> np.ndarray:
    """kl_B: sequence_kl of each prompt + sample under ``params`` against the reference (one forward each, the same
    graph, so params equal to the reference's read exactly 0). An estimate of KL(π || π_ref) when the samples are
    π's own (temperature 1, unfiltered)."""
    # Capped by the model's context, not train.seq_len: eval replies may run longer than rollouts'.
    rows = build_rows(prompts, outs, int(self.cfg.model.max_len), int(self.cfg.rl.length_bucket))
    logp = self.forward_logprobs(params, rows)
    ref = self.forward_logprobs(self.ref_params(params), rows)
    return sequence_kl(logp, ref, rows["weights"])

  def ref_params(self, like: Any) -> Any:
    """The frozen reference's params (the reference run's), sharded like ``like``; loaded once."""
    if self._ref is None:
      target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
      self._ref = ckpt_lib.restore_params(self.reference, target=target)[1]
      logging.info("reference policy: %s", self.reference)
    return self._ref


class RolloutData:
  """The RL training batches: rollouts of the current policy, scored and laid out as rows. See the module doc."""

  def __init__(self, shared: Shared, kl_in_reward: float = 0.0):
    """kl_in_reward: c > 0 subtracts c * sum over the completion of (log π_old - log π_ref) from each reward (the
    InstructGPT-style KL penalty in the reward, beside or instead of rl.beta's k3 term in the loss)."""
    self.shared = shared
    self.kl_in_reward = float(kl_in_reward)
    rl = shared.cfg.rl
    self.rl = rl
    self.group_size, self.prompts_per_step, self.inner_steps = (
        int(rl.group_size),
        int(rl.prompts_per_step),
        int(rl.inner_steps),
    )
    self.seq_len = int(shared.cfg.train.seq_len)
    self.max_prompt = self.seq_len + 1 - int(rl.max_new_tokens)
    self.sampling = engine_lib.SamplingParams(
        temperature=rl.temperature, top_k=rl.top_k, top_p=rl.top_p, max_new_tokens=rl.max_new_tokens
    )
    self.rollouts, self.cursor, self.inner = 0, 0, 0
    self._batch: dict[str, np.ndarray] | None = None
    self._metrics: dict[str, float] = {}
    self._t_yield: float | None = None
    self._prev_tokens = 0.0

  # --- state ---

  def get_state(self) -> dict[str, int]:
    return {"rollouts": self.rollouts, "cursor": self.cursor, "inner": self.inner}

  def set_state(self, state: dict[str, int]) -> None:
    self.rollouts, self.cursor = int(state["rollouts"]), int(state["cursor"])
    self.inner = 0
    if int(state.get("inner", 0)):
      logging.info("resumed between inner steps of a rollout: starting a fresh rollout")

  def step_metrics(self) -> dict[str, float]:
    return dict(self._metrics)

  def __iter__(self):
    return self

  # --- one step ---

  def __next__(self) -> dict[str, np.ndarray]:
    params = self.shared.ctx.current_params()
    jax.block_until_ready(params)  # the previous update is done: what it took is the update time
    now = time.perf_counter()
    update = {}
    if self._t_yield is not None:
      update = {"update_s": now - self._t_yield, "update_tokens_per_s": self._prev_tokens / (now - self._t_yield)}
    if self.inner == 0 or self._batch is None:
      self._batch, self._metrics = self._rollout(params)
      self.rollouts += 1
    self.inner = (self.inner + 1) % self.inner_steps
    self._metrics.update(update)
    self._prev_tokens = float(np.sum(self._batch["segment_ids"] > 0))
    self._t_yield = time.perf_counter()
    return self._batch

  def _problems(self, n: int) -> list[tuple[tasks_lib.Problem, list[int]]]:
    out = []
    while len(out) < n:  # prompts that leave no room for max_new_tokens in a row are skipped
      problem = self.shared.task.train_problem(self.cursor)
      self.cursor += 1
      ids = self.shared.prompt(problem)
      if len(ids) <= self.max_prompt:
        out.append((problem, ids))
    return out

  def _sample_groups(self, params) -> tuple[list[dict], list[dict], list[dict], dict[str, float]]:
    """(kept, dropped, first-round groups, timing): G scored completions per prompt, in up to max_sample_rounds."""
    rl, g = self.rl, self.group_size
    eng = self.shared.engine(params)
    task = self.shared.task
    kept, dropped, first = [], [], None
    gen_tokens, gen_time, rounds = 0, 0.0, 0
    while len(kept) < self.prompts_per_step and rounds < max(1, int(rl.max_sample_rounds)):
      todo = self._problems(self.prompts_per_step - len(kept))
      seed = (int(self.shared.cfg.seed) * 1_000_003 + self.rollouts * 64 + rounds) % (2**31 - 1)
      t0 = time.perf_counter()
      outs = self.shared.generate(eng, [ids for _, ids in todo], self.sampling, n=g, seed=seed)
      gen_time += time.perf_counter() - t0
      gen_tokens += sum(len(o.tokens) for o in outs)
      # One call for the whole round: a reward model scores every completion in a few batched forwards.
      scores_all = task.score_completions(outs, [problem for problem, _ in todo for _ in range(g)], self.shared.tok)
      groups = []
      for i, (problem, ids) in enumerate(todo):
        comps, scores = outs[i * g : (i + 1) * g], scores_all[i * g : (i + 1) * g]
        rewards = np.array([sc["reward"] for sc in scores], np.float64)
        if rl.overlong_cache > 0:
          rewards += [overlong_penalty(len(c.tokens), rl.max_new_tokens, rl.overlong_cache) for c in comps]
        correct = [tasks_lib.correctness_reward(c.text, problem) for c in comps] if task.verifiable else []
        groups.append({"ids": ids, "comps": comps, "scores": scores, "rewards": rewards, "correct": correct})
      if first is None:
        first = groups
      for grp in groups:
        informative = np.ptp(grp["rewards"]) > 0
        (kept if informative or not rl.dynamic_sampling else dropped).append(grp)
      rounds += 1
    timing = {"sample_rounds": float(rounds), "rollout_tokens_per_s": gen_tokens / max(gen_time, 1e-9)}
    return kept, dropped, first, {**timing, "rollout_s": gen_time}

  def _rollout(self, params) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rl, g = self.rl, self.group_size
    kept, dropped, first, timing = self._sample_groups(params)
    # all-equal groups: zero advantage, and weight 0 so they dilute nothing
    groups = kept + dropped[: self.prompts_per_step - len(kept)]
    rewards_PxG = np.stack([grp["rewards"] for grp in groups])
    prompts = [grp["ids"] for grp in groups for _ in range(g)]
    comps = [c for grp in groups for c in grp["comps"]]
    rows = build_rows(prompts, comps, self.seq_len, int(rl.length_bucket))
    live_B = np.repeat(np.arange(len(groups)) < len(kept), g)
    rows["weights"] *= live_B[:, None]
    rows["old_logprobs"] *= live_B[:, None]
    if rl.recompute_old_logprobs:
      rows["old_logprobs"] = self.shared.forward_logprobs(params, rows) * rows["weights"]

    # Metrics of the first round: an unbiased look at the current policy on fresh prompts.
    f_comps = [c for grp in first for c in grp["comps"]]
    f_scores = [sc for grp in first for sc in grp["scores"]]
    m = {
        "reward": float(np.mean([grp["rewards"] for grp in first])),
        "response_len": float(np.mean([len(c.tokens) for c in f_comps])),
        "truncated_frac": float(np.mean([c.truncated for c in f_comps])),
        "groups_kept_frac": float(np.mean([np.ptp(grp["rewards"]) > 0 for grp in first])),
        **timing,
    }
    if self.shared.task.verifiable:
      m["accuracy"] = float(np.mean([grp["correct"] for grp in first]))
    m.update({k: float(np.mean([sc[k] for sc in f_scores])) for k in f_scores[0] if k not in ("reward", "correct")})
    if rl.beta > 0 or rl.log_kl or self.kl_in_reward > 0:
      ref_BxL = self.shared.forward_logprobs(self.shared.ref_params(params), rows)
      if rl.beta > 0:
        rows["ref_logprobs"] = ref_BxL
      # k3 KL(π_old || ref) on the sampled tokens: how far the policy has moved from where it started.
      d = (ref_BxL - rows["old_logprobs"]) * (rows["weights"] > 0)
      m["rollout_kl"] = float(np.sum((np.exp(d) - d - 1.0) * rows["weights"]) / max(rows["weights"].sum(), 1.0))
      if self.kl_in_reward > 0:
        # Each sample's own log-ratio sum: an unbiased estimate of KL(π || ref) whose mean the penalty pulls down.
        kl_B = sequence_kl(rows["old_logprobs"], ref_BxL, rows["weights"])
        rewards_PxG = rewards_PxG - self.kl_in_reward * kl_B.reshape(rewards_PxG.shape)
        m["kl_penalty"] = float(self.kl_in_reward * np.mean(kl_B[live_B]) if live_B.any() else 0.0)
    adv_PxG = grpo.group_advantages(rewards_PxG, rl.advantage)
    rows["advantages"] = np.broadcast_to(adv_PxG.reshape(-1, 1), rows["inputs"].shape).astype(np.float32).copy()
    return rows, m


def evaluate(shared: Shared, params: Any) -> dict[str, float]:
  """pass@1 (= eval_accuracy) and pass@k on the held-out problems, k samples each, fixed sampler and seed.

  With the policy's own sampler (temperature 1, no top-k / top-p) also eval_kl: the mean sequence KL of those
  samples against the reference (Shared.sample_kl; KL(π || π_init) in nats, exactly 0 at the start), the x axis of
  the overoptimisation report; another sampler's samples are not π's, so it is left out then."""
  e = shared.cfg.eval
  problems = shared.task.eval_problems(int(e.num_problems))
  sampling = engine_lib.SamplingParams(
      temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, max_new_tokens=e.max_new_tokens
  )
  own_samples = e.temperature == 1.0 and not e.top_k and e.top_p >= 1.0
  eng = shared.engine(params)
  k, chunk = int(e.samples), max(1, int(e.chunk_prompts))
  correct, lengths, truncated, kl = [], [], [], []
  for start in range(0, len(problems), chunk):
    part = problems[start : start + chunk]
    prompts = [shared.prompt(p) for p in part]
    outs = eng.generate(prompts, sampling, n=k, seed=int(e.seed) + start, stop_tokens=shared.stop_tokens)
    for i, p in enumerate(part):
      comps = outs[i * k : (i + 1) * k]
      correct.append([tasks_lib.correctness_reward(c.text, p) for c in comps])
      lengths += [len(c.tokens) for c in comps]
      truncated += [c.truncated for c in comps]
    if own_samples:  # a chunk at a time: a forward over every eval row at once would hold all their logits
      kl += list(shared.sample_kl(params, [ids for ids in prompts for _ in range(k)], outs))
  c_P = np.sum(correct, axis=1).astype(int)
  pass1 = float(np.mean([tasks_lib.pass_at_k(k, c, 1) for c in c_P]))
  return {
      "eval_accuracy": pass1,
      "eval_pass@1": pass1,
      f"eval_pass@{k}": float(np.mean([tasks_lib.pass_at_k(k, c, k) for c in c_P])),
      "eval_response_len": float(np.mean(lengths)),
      "eval_truncated_frac": float(np.mean(truncated)),
      **({"eval_kl": float(np.mean(kl))} if own_samples else {}),
  }


def plot_curves(workdir: str, keys: Sequence[str] = CURVES, filename: str = "rl_curves.png") -> str | None:
  """One small panel per logged RL metric (reward, accuracy, eval accuracy, KL, ...) to a PNG."""
  return metrics_lib.plot_panels(workdir, keys, filename)
