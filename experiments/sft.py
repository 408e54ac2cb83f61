r"""Supervised fine-tuning into an assistant.

  python -m experiments.sft                                   # from runs/pretrain_tiny (trained first if absent)
  python -m experiments.sft --init_from=runs/my_base --workdir=runs/my_sft --config.train.steps=1000

Writes the usual run folder (checkpoints, metrics.jsonl, loss.png) plus sft_data/ (probe and answer-first
conversations), search_index/, eval.json, and ablation_no_probe/ (the control run).
"""

from experiments import stage_cli
from nanolm_jax.stages import sft

if __name__ == "__main__":
  stage_cli.run(sft.STAGE)
