"""RLHF configs: `python -m experiments.rlhf [--config=configs/rlhf.py:PRESET]`, overrides as `--config.rl.beta=0.05`.

init_from is a reward-model run ("" = the default one, trained first when absent); the policy and the frozen
reference are that run's own init_from (the SFT run), recorded as rlhf.policy_from, and the model block is its.
The rl block is GRPO's (configs/grpo.py): the same rollouts, advantages and clipped loss, with the proxy reward
model's score as the reward. KL to the reference: rl.beta (k3, in the loss) or rlhf.kl_in_reward (in the reward).
rlhf.method="dpo" trains the same policy with DPO (the dpo block) on the gold-labelled pairs the proxy learned from,
evaluated the same way (proxy, gold, KL on the policy's own samples).

Presets:
  tiny   the CPU default: a high lr and no KL penalty, so that the proxy is over-optimised within minutes.
  kl     tiny with a KL penalty in the reward (rlhf.kl_in_reward=0.05): KL levels off near 15 nats, gold still rising.
  dpo    DPO (rlhf.method=dpo, lr 5e-5, 60 steps) on the reward model's own training pairs, no reward model in the
         loop: the default chain's gold rises by a third at ~3 nats.
"""

import ml_collections

from configs import base
from configs import grpo

PRESETS = ("tiny", "kl", "dpo")
METHODS = ("rl", "dpo")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  preset = preset or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  g = grpo.get_config("tiny")
  c = base.get_config("rlhf", preset)
  c.model = base.inherited_model()  # the SFT run's (through the reward-model run)
  c.init_from = ""  # the reward-model run folder; "" = the default one, created when absent
  c.train = g.train  # batch_size unset: rows = rl.prompts_per_step * rl.group_size (set by the stage)
  # 1.2-1.6 s a step on 2 CPU cores (rollout ~0.4 s, proxy + gold ~0.2 s, update ~0.8 s), ~7 s an eval. At lr 1e-4
  # against the default proxy the gold peaks near step 20 and is 44 % below its peak by step 80 while the proxy still
  # rises (82 % below by step 120; README, RLHF); 3e-4 peaks by step 10, too fast for 10-step evals to resolve.
  c.train.update(steps=80, seq_len=128, eval_every=10, checkpoint_every=40)  # seq_len: prompt ~20 + 64 new tokens
  c.optim = g.optim
  c.optim.update(lr=1e-4)
  c.rl = g.rl
  c.rl.update(
      group_size=4,
      prompts_per_step=8,
      max_new_tokens=64,  # the reward model's training replies were sampled at this length
      beta=0.0,
      dynamic_sampling=False,  # a learned reward never ties within a group
      length_bucket=32,
  )
  c.eval = g.eval
  c.eval.update(num_problems=64, samples=4, max_new_tokens=64, chunk_prompts=32)  # always sampled at temperature 1
  c.rlhf = ml_collections.ConfigDict(
      dict(
          method="rl",  # "rl": GRPO against the proxy; "dpo": DPO on the proxy's training pairs (the dpo block)
          policy_from="",  # set by the stage: the reward-model run's init_from (the SFT run)
          kl_in_reward=0.0,  # c > 0: reward = proxy - c * sum over the reply of (log π - log π_ref)
          train_prompts=4096,  # the pool of training prompts (gold_judge.prompts, training people) cycled through
          bon_samples=16,  # N samples per held-out prompt for best-of-n (n = 1..N, unbiased estimator)
          bon_prompts=0,  # held-out prompts for best-of-n (0 = eval.num_problems)
          log_samples=4,  # sample texts written to rlhf_samples.jsonl at every eval
      )
  )
  c.dpo = ml_collections.ConfigDict(
      dict(
          beta=0.1,  # the implicit reward's scale: β (log π − log π_ref) per reply
          label_smoothing=0.0,  # cDPO's ε in [0, 0.5]: the assumed fraction of flipped labels
          pairs_per_step=16,  # a batch is 2 x pairs_per_step rows (chosen then rejected)
          length_bucket=32,  # rows padded to the longest rounded up to this (0 = train.seq_len): 64 or 96 here
          train_file="",  # "" = the reward-model run's own training pairs (its rm.train_file)
      )
  )
  if preset == "kl":
    c.rlhf.kl_in_reward = 0.05
  if preset == "dpo":
    c.rlhf.method = "dpo"
    # ~3-6 s a step on 2 shared CPU cores (16 pairs, rows padded to 64 or 96 tokens), ~20 s an eval: 7-8 min. 60 steps
    # = 960 pairs, under one pass over the proxy's ~1.5k training pairs. rm_default's pairs: gold 0.268 -> 0.356 at
    # 3 nats (step 50); lr 1e-4 no more gold at 13-15 nats; on rm_tiny's 3e-5 barely moved (README, RLHF).
    c.train.update(steps=60, eval_every=10, checkpoint_every=30)
    c.optim.update(lr=5e-5)
  return c
