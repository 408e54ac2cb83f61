"""The base every stage config derives from: one set of defaults, taken from the code that reads each block.

  seed, stage, preset
  model           nanolm_jax.model.default_model_config()      (the CPU `tiny` shape)
  train           nanolm_jax.trainer.default_train_config()
  optim           nanolm_jax.optim.default_optim_config()       (AdamW, warmup + cosine)
  mesh            nanolm_jax.sharding.default_mesh_config()     (data / fsdp / tensor)
  sharding_rules  nanolm_jax.sharding.DEFAULT_RULES             (logical axis -> mesh axes)

Stages that start from another run (SFT, GRPO) take its model: their `model` block is `inherited_model()`, every
key unset; a key set by a flag is applied if the stage can honour it and is an error naming it otherwise.
"""

import ml_collections
from ml_collections import config_dict

from nanolm_jax import model as model_lib
from nanolm_jax import optim
from nanolm_jax import sharding
from nanolm_jax import trainer


def get_config(stage: str, preset: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stage = stage
  c.preset = preset
  c.model = model_lib.default_model_config()
  c.train = trainer.default_train_config()
  c.optim = optim.default_optim_config()
  c.mesh = sharding.default_mesh_config()
  c.sharding_rules = sharding.DEFAULT_RULES
  return c


def inherited_model() -> ml_collections.ConfigDict:
  """A `model` block of unset, typed keys: filled from the init_from run (nanolm_jax.stages.base.inherit_model)."""
  return ml_collections.ConfigDict(
      {k: config_dict.placeholder(type(v)) for k, v in model_lib.default_model_config().items()}
  )
