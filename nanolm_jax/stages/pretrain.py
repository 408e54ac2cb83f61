"""The pretraining stage: next-token loss on packed documents, validation bits per byte, samples at the end."""

from __future__ import annotations

from typing import Any

import jax
from absl import logging

from nanolm_jax import engine
from nanolm_jax import fs
from nanolm_jax import model as model_lib
from nanolm_jax import sharding as shd
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer
from nanolm_jax.data import pipeline
from nanolm_jax.data import tokenizer_training
from nanolm_jax.stages import base


def _tokenizer(cfg, workdir) -> tokenizer_lib.Tokenizer:
  # Process 0 trains it into the run folder; the others then load that file.
  return shd.main_first(
      "tokenizer",
      lambda: tokenizer_training.get_or_train_tokenizer(cfg.tokenizer, cfg.data, cfg.model.vocab_size, workdir),
  )


def _dataset(ctx: trainer.RunContext, split: str, repeat: bool):
  return base.process_batches(ctx, pipeline.make_lm_dataset, ctx.cfg.data, split, repeat)


def sample_texts(
    ctx: trainer.RunContext, params: Any, prompts: list[str], sampling: engine.SamplingParams, seed: int
) -> list[str]:
  """Prompt completions with the run's own model and tokenizer (temperature sampling)."""
  tok = ctx.tokenizer
  model = model_lib.build_model(ctx.cfg, mesh=None)
  ids = [tok.encode(p, bos=True) for p in prompts]
  outs = engine.generate(model, {"params": params}, ids, sampling, jax.random.PRNGKey(seed), eos_id=tok.eos_id)
  return [tok.decode(o, skip_special=True) for o in outs]


def _on_end(ctx: trainer.RunContext, params: Any) -> dict[str, Any]:
  s = ctx.cfg.sample
  sampling = engine.SamplingParams(
      temperature=s.temperature,
      top_k=s.top_k,
      top_p=s.top_p,
      max_new_tokens=min(s.max_new_tokens, ctx.model.cfg.max_len - 16),
  )
  prompts = list(s.prompts)
  completions = sample_texts(ctx, params, prompts, sampling, ctx.cfg.seed)
  lines = [f"{p}{c}" for p, c in zip(prompts, completions)]
  # Every process samples the same (same whole params, same seed) and prints; process 0 writes the file.
  print("\n--- samples ---")
  for line in lines:
    print(line.replace("\n", " ") + "\n")
  if shd.is_main_process():
    fs.write_text(fs.join(ctx.workdir, "samples.txt"), "\n\n".join(lines) + "\n")
    logging.info("samples written to %s", fs.join(ctx.workdir, "samples.txt"))
  return {}


def build(cfg) -> trainer.Stage:
  del cfg
  return trainer.Stage(
      name="pretrain",
      make_loss=lambda ctx, apply: step_lib.make_lm_loss(apply, ctx.cfg.train.z_loss),
      make_train_data=lambda ctx: iter(_dataset(ctx, "train", repeat=True)),
      make_eval_data=lambda ctx: _dataset(ctx, "validation", repeat=False),
      on_end=_on_end,
      load_tokenizer=_tokenizer,
  )


def _summary(cfg, workdir: str, out: dict[str, Any]) -> list[str]:
  del cfg, workdir
  return [f"val_bpb={out.get('val_bpb', float('nan')):.4f}"]


STAGE = base.StageDef(name="pretrain", build=build, summary=_summary)
