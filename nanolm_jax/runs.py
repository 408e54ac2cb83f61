"""The run folder: where a run's files live, reading and writing its config, whether it finished, and loading it for
inference — the contract every entrypoint relies on.

    RUN/config.json        the resolved config (written first by the trainer; what every entrypoint loads a run by)
    RUN/checkpoints/<step> orbax: train state (params + optimizer), data-iterator state, config
    RUN/tokenizer.model    sentencepiece (trained runs) — or tokenizer.json & co. (imported Hugging Face models)
    RUN/eval.json          the stage's evaluation results (SFT)
    RUN/search_index/      the search tool's documents (SFT runs)

Loading a run for inference needs the model, the checkpoint and the tokenizer, not the training loop.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import fs
from nanolm_jax import model as model_lib
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax.synthetic import search_data

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_FILE = "tokenizer.json"
EVAL_FILE = "eval.json"
SEARCH_INDEX_DIR = "search_index"


@dataclasses.dataclass
class Run:
  workdir: str
  cfg: ml_collections.ConfigDict
  model: model_lib.Transformer
  params: Any  # unboxed params pytree (apply with {"params": params})
  tokenizer: tokenizer_lib.Tokenizer
  step: int | None = None


def config_to_dict(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(cfg.to_json_best_effort())


def config_path(workdir: str) -> str:
  return fs.join(workdir, CONFIG_FILE)


def is_run(workdir: str) -> bool:
  return fs.exists(config_path(workdir))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config; FileNotFoundError naming the folder when it is not a run."""
  return ml_collections.ConfigDict(ckpt_lib.read_config(workdir))


def write_config(workdir: str, cfg: ml_collections.ConfigDict | dict[str, Any]) -> None:
  data = config_to_dict(cfg) if isinstance(cfg, ml_collections.ConfigDict) else cfg
  fs.write_text(config_path(workdir), json.dumps(data, indent=2))


def checkpoint_steps(workdir: str) -> list[int]:
  """Finalized checkpoint steps (on an object store a step folder exists before its save commits)."""
  folder = fs.join(workdir, "checkpoints")
  return sorted(ocp.utils.checkpoint_steps(folder)) if fs.isdir(folder) else []


def is_finished(workdir: str) -> bool:
  """Whether the run has a checkpoint at its configured last step."""
  if not is_run(workdir):
    return False
  steps = checkpoint_steps(workdir)
  return bool(steps) and steps[-1] >= int(read_config(workdir).train.steps)


def read_eval(workdir: str) -> dict[str, Any]:
  path = fs.join(workdir, EVAL_FILE)
  return json.loads(fs.read_text(path)) if fs.exists(path) else {}


def write_eval(workdir: str, results: dict[str, Any]) -> None:
  fs.write_text(fs.join(workdir, EVAL_FILE), json.dumps(results, indent=2))


def search_index_dir(workdir: str) -> str:
  return fs.join(workdir, SEARCH_INDEX_DIR)


def search_settings(workdir: str) -> dict[str, Any]:
  """{'top_k', 'fuzzy'} the run's search tool was trained and evaluated with (one default for every reader)."""
  scfg = read_config(workdir).get("sft", {}).get("search", {}) if is_run(workdir) else {}
  return {
      "top_k": int(scfg.get("top_k", search_data.DEFAULT_TOP_K)),
      "fuzzy": bool(scfg.get("fuzzy", search_data.DEFAULT_FUZZY)),
  }


def load_tokenizer(workdir: str) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer; FileNotFoundError naming the folder when there is none."""
  sp = fs.join(workdir, TOKENIZER_FILE)
  if fs.exists(sp):
    return tokenizer_lib.SentencePieceTokenizer.load(sp)
  if fs.exists(fs.join(workdir, HF_TOKENIZER_FILE)):
    # Optional dependency (`tokenizers`, the 'hf' extra): only imported models carry tokenizer.json.
    from nanolm_jax import hf_tokenizer  # pylint: disable=g-import-not-at-top

    return hf_tokenizer.HFTokenizer.load(workdir)
  raise FileNotFoundError(f"{workdir} has no tokenizer ({TOKENIZER_FILE} or {HF_TOKENIZER_FILE})")


SCORING_STAGES = ("reward_model",)


def load_run(workdir: str, step: int | None = None, mesh: jax.sharding.Mesh | None = None) -> Run:
  """Loads a run for inference (params on the default device unless a mesh is given for the model's constraints)."""
  if not fs.isdir(workdir):
    raise FileNotFoundError(f"run folder {workdir} does not exist")
  cfg = read_config(workdir)
  if cfg.get("stage") in SCORING_STAGES:  # a scalar head, no LM head: nothing to sample from
    raise ValueError(
        f"{workdir} is a {cfg.stage} run: it scores replies and cannot generate; load a language-model run (its "
        f"init_from {cfg.get('init_from', '')!r}, or an rlhf run trained against it), or score with "
        "posttrain.reward_model.load_reward_model"
    )
  step, params = ckpt_lib.restore_params(workdir, step=step)
  model = model_lib.build_model(cfg, mesh)
  return Run(workdir=workdir, cfg=cfg, model=model, params=params, tokenizer=load_tokenizer(workdir), step=step)
