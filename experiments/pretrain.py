r"""Pretraining entrypoint.

  python -m experiments.pretrain                                   # tiny model, embedded corpus, CPU minutes
  python -m experiments.pretrain --config=configs/pretrain.py:gpt2_124m --config.mesh.fsdp=8 --workdir=gs://b/run
  python -m experiments.pretrain --config.model.num_layers=2 --config.train.steps=100

Rerunning with the same --workdir resumes from its latest checkpoint.
"""

from experiments import stage_cli
from nanolm_jax.stages import pretrain

if __name__ == "__main__":
  stage_cli.run(pretrain.STAGE)
