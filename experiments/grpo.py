r"""GRPO entrypoint: RL on a verifiable task, from an SFT run, on the shared trainer.

  python -m experiments.grpo                                   # from runs/sft_tiny (created first when absent)
  python -m experiments.grpo --init_from=runs/sft_tiny --workdir=runs/grpo_tiny
  python -m experiments.grpo --config=configs/grpo.py:dapo --config.rl.group_size=4

Rerunning with the same --workdir resumes from its latest checkpoint (same reference: the init_from in its config).
Prints held-out accuracy before and after (same sampler settings and seed) and the rollout / update tokens per second.
"""

from experiments import stage_cli
from nanolm_jax.stages import grpo

if __name__ == "__main__":
  stage_cli.run(grpo.STAGE)
