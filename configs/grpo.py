"""GRPO configs: `--config=configs/grpo.py[:PRESET]`, overrides as `--config.rl.group_size=4`.

The model block is not set here: it comes from the init_from run (nanolm_jax.stages.base), which is also the frozen
reference when rl.beta > 0. train.batch_size is prompts_per_step * group_size rows (set by the stage; a different
value given as a flag is an error).

Presets:
  tiny   the CPU default: GRPO on the arithmetic task from the default SFT run (runs/sft_tiny), <= 15 min on 2 cores.
  dapo   tiny with DAPO's recipe: clip-higher, dynamic sampling, token-mean loss, soft overlong penalty.
  drgrpo tiny with Dr. GRPO: mean-centred advantages, constant-length aggregation.
"""

import ml_collections
from ml_collections import config_dict

from configs import base
from nanolm_jax.posttrain import tasks


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config("grpo", preset or "tiny")
  c.model = base.inherited_model()  # the starting (and reference) run's architecture
  c.init_from = ""  # the starting (and reference) run folder; "" = the default SFT run, created when absent
  c.train.update(
      steps=140,  # 4-5 s a step on 2 CPU cores (rollout ~2.5 s, update ~1.5-2 s), + 5 sampled evals
      batch_size=config_dict.placeholder(int),  # rows = rl.prompts_per_step * rl.group_size (set by the stage)
      seq_len=224,  # the longest row (prompt + completion - 1); rows are bucketed below it
      eval_every=35,
      eval_batches=1,  # must stay 1: RL evaluation samples eval.num_problems problems instead
      log_every=1,
      checkpoint_every=35,
      keep_checkpoints=2,
  )
  c.optim.update(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, b2=0.99, weight_decay=0.0)

  c.rl = ml_collections.ConfigDict(
      dict(
          group_size=8,  # G samples per prompt (one shared prefill)
          prompts_per_step=16,  # P prompts per optimizer step
          inner_steps=1,  # μ: optimizer steps on each rollout batch (same old_logprobs each time)
          temperature=1.0,  # rollout sampler; 1.0 keeps π_old = the engine's logprobs exactly
          top_k=0,
          top_p=1.0,
          max_new_tokens=96,
          advantage="grpo",  # grpo | drgrpo | rloo
          aggregation="token_mean",  # token_mean | sequence_mean | constant
          eps_low=0.2,
          eps_high=0.28,  # clip-higher (DAPO)
          beta=0.0,  # KL to the init_from reference; 0 keeps no reference in the loss
          log_kl=False,  # also log KL(π_old || ref) on rollouts (one more forward per step)
          dynamic_sampling=True,  # drop all-equal-reward groups, refill with fresh prompts
          max_sample_rounds=2,  # bound on generate calls per step with dynamic sampling
          overlong_cache=0,  # > 0: DAPO soft overlong penalty over the last this-many tokens
          length_bucket=32,  # rows padded to a multiple of this (<= train.seq_len): few shapes, little padding
          recompute_old_logprobs=False,  # π_old from a training-graph forward instead of the engine's logprobs
          rollout_slots=0,  # > 0: decode rollouts in this many continuous-batching slots (rows join as others end)
      )
  )

  c.task = tasks.default_task_config()
  # One-step problems: RL needs groups with some right answers (else every advantage is zero), and the CPU default
  # SFT model solves few multi-step ones. lr 1e-4 is the largest that stayed stable; the measurements behind these
  # choices are in the README's GRPO section.
  c.task.update(min_steps=1, max_steps=1)

  c.eval = ml_collections.ConfigDict(
      dict(
          num_problems=256,  # held-out problems (128 x 4 samples moved pass@1 by 2 points between two seeds)
          samples=4,  # k: pass@1 is the mean over them, pass@k too
          temperature=1.0,  # the fixed sampler, the same before and after
          top_k=0,
          top_p=1.0,
          max_new_tokens=96,
          seed=1234,
          chunk_prompts=64,  # prompts per generate call
      )
  )

  r = c.rl
  if c.preset == "tiny":
    pass
  elif c.preset == "dapo":
    r.update(eps_high=0.28, dynamic_sampling=True, aggregation="token_mean", overlong_cache=16)
  elif c.preset == "drgrpo":
    r.update(advantage="drgrpo", aggregation="constant", dynamic_sampling=False)
  else:
    raise ValueError(f"unknown preset {preset!r}; choose tiny, dapo, drgrpo")
  return c
