r"""RLHF entrypoint: GRPO against a proxy reward model, the gold judge measured on the side (issue 15).

  python -m experiments.rlhf                                   # from runs/reward_model_tiny (created when absent)
  python -m experiments.rlhf --init_from=runs/reward_model_tiny --workdir=runs/rlhf_tiny
  python -m experiments.rlhf --config=configs/rlhf.py:kl --config.rlhf.kl_in_reward=0.1
  python -m experiments.rlhf --config=configs/rlhf.py:dpo --init_from=runs/reward_model_tiny --workdir=runs/dpo_tiny

The policy and the reference are the reward-model run's SFT run. metrics.jsonl carries proxy_reward, gold_reward
and kl at every eval step and bon_n rows (best-of-n from the starting policy); rlhf_samples.jsonl the sample texts;
rlhf_curves.png the curves. With rlhf.method=dpo (preset dpo) the policy is trained with DPO on the reward model's
own training pairs instead, evaluated the same way (no best-of-n rows). Rerunning with the same --workdir resumes.
"""

from experiments import stage_cli
from nanolm_jax.stages import rlhf

if __name__ == "__main__":
  stage_cli.run(rlhf.STAGE)
