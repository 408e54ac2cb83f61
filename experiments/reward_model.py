r"""Reward-model entrypoint: a Bradley-Terry proxy of the gold preferences, from an SFT run, on the shared trainer.

  python -m experiments.reward_model                          # from runs/sft_tiny (created first when absent)
  python -m experiments.reward_model --init_from=runs/sft_tiny --workdir=runs/rm_tiny
  python -m experiments.reward_model --config=configs/reward_model.py:layers1 \
      --config.rm.train_file=runs/rm_tiny/rm_data/train.jsonl --config.rm.val_file=runs/rm_tiny/rm_data/validation.jsonl

Writes the usual run folder plus rm_data/ (the generated pairs and their stats) and eval.json (held-out rm_accuracy,
rm_bt_loss, rm_ece, rm_reward_gap, rm_n). Rerunning with the same --workdir resumes.
"""

from experiments import stage_cli
from nanolm_jax.stages import reward_model

if __name__ == "__main__":
  stage_cli.run(reward_model.STAGE)
