"""Loading a run folder: config, model, params, tokenizer — the contract every downstream entrypoint relies on.

A run folder holds `config.json`, `checkpoints/<step>/state` (a pytree with at least `params`), and
`tokenizer.model` (sentencepiece) or Hugging Face tokenizer files (imported models).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from nanolm_jax import model as model_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import trainer


@dataclasses.dataclass
class Run:
  workdir: str
  cfg: ml_collections.ConfigDict
  model: model_lib.Transformer
  params: Any  # unboxed params pytree (apply with {"params": params})
  tokenizer: Any  # tokenizer_lib.Tokenizer or an object with the same interface
  step: int | None = None


def load_tokenizer(workdir: str) -> Any:
  """The run's tokenizer; FileNotFoundError naming the folder when there is none."""
  sp = os.path.join(workdir, "tokenizer.model")
  if os.path.exists(sp):
    return tokenizer_lib.Tokenizer.load(sp)
  if os.path.exists(os.path.join(workdir, "tokenizer.json")):
    from nanolm_jax.interop import hf_tokenizer  # pylint: disable=g-import-not-at-top

    return hf_tokenizer.HFTokenizer.load(workdir)
  raise FileNotFoundError(f"{workdir} has no tokenizer (tokenizer.model or tokenizer.json)")


def load_run(workdir: str, step: int | None = None, mesh: Any = None) -> Run:
  """Loads a run for inference (params on the default device unless a mesh is given for the model's constraints)."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"run folder {workdir} does not exist")
  from nanolm_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict(ckpt_lib.read_config(workdir))
  step, params = trainer.restore_params(workdir, step=step)
  model = trainer.build_model(cfg, mesh)
  return Run(workdir=workdir, cfg=cfg, model=model, params=params, tokenizer=load_tokenizer(workdir), step=step)
