"""Pretraining configs: `--config=configs/pretrain.py:PRESET`, overrides as `--config.model.num_layers=4`.

Presets:
  tiny        the CPU default: a 4-layer GPT-2-style model on the embedded stdlib corpus mixed with the generated
              sources post-training builds on (known people, one-off people, worked arithmetic), ~6-7 min on 2 cores
              (BLiMP scored at each of its 4 evals: ~20 s each).
  llama_tiny  the same budget with the Llama block (RoPE, RMSNorm, SwiGLU, GQA).
  gpt2_124m, gpt2_350m, gpt2_1.5b   GPT-2 small / medium / XL shapes (llm.c / nanoGPT hyper-parameters).
  llama_1b    Llama 3.2 1B shape.
  llama_8b    Llama 3 8B shape (for `experiments.compile` plans of a pod; 2048-token sequences as llama_1b, since
              attention is the materialised XLA einsum).
The large presets keep the embedded corpus as their data so that they run anywhere; point `data.sources` at a real
corpus (`files:/path/*.jsonl.gz` from the crawl pipeline, or `tfds:NAME`) for real training.
"""

import ml_collections

from configs import base
from nanolm_jax.data import sources
from nanolm_jax.data import tokenizer_training


def _base() -> ml_collections.ConfigDict:
  c = base.get_config("pretrain", "tiny")
  c.data = sources.default_data_config()
  # The embedded corpus, the fact world (known people), one-off people (copying practice) and worked arithmetic.
  c.data.sources = "stdlib@0.5;facts;people;arithmetic@0.5"
  c.tokenizer = tokenizer_training.default_tokenizer_config()
  # BLiMP (67 phenomena x 100 pairs) beside val bpb at every eval step: the grammar curve of the run.
  c.train.eval_tasks = "blimp"

  c.sample = ml_collections.ConfigDict(
      dict(
          prompts=("The function", "In Python, a list is", "This module provides"),
          max_new_tokens=48,
          temperature=0.8,
          top_k=50,
          top_p=0.95,
      )
  )
  return c


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  c = _base()
  m, t, o = c.model, c.train, c.optim
  preset = preset or "tiny"
  if preset == "tiny":
    pass
  elif preset == "llama_tiny":
    m.style = "llama"
    m.num_kv_heads = 2
  elif preset == "gpt2_124m":
    m.update(vocab_size=50304, num_layers=12, num_heads=12, d_model=768, max_len=1024)
    t.update(steps=19073, batch_size=512, seq_len=1024, eval_every=250, eval_batches=20, checkpoint_every=1000)
    o.update(lr=6e-4, warmup_steps=700)
  elif preset == "gpt2_350m":
    m.update(vocab_size=50304, num_layers=24, num_heads=16, d_model=1024, max_len=1024)
    t.update(steps=60000, batch_size=512, seq_len=1024, eval_every=250, eval_batches=20, checkpoint_every=1000)
    o.update(lr=3e-4, warmup_steps=700)
  elif preset == "gpt2_1.5b":
    m.update(
        vocab_size=50304,
        num_layers=48,
        num_heads=25,
        d_model=1600,
        max_len=1024,
        dtype="bfloat16",
        scan_layers=True,
        remat="dots_no_batch",
    )
    t.update(steps=60000, batch_size=512, seq_len=1024, eval_every=500, eval_batches=20, checkpoint_every=1000)
    o.update(lr=2e-4, warmup_steps=700)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
  elif preset in ("llama_1b", "llama_8b"):
    # Llama 3.2 1B: 16 layers, d 2048, 32 heads / 8 KV heads, SwiGLU 8192, tied embeddings, RoPE 500k.
    # Llama 3 8B: 32 layers, d 4096, 32 heads / 8 KV heads, SwiGLU 14336, untied embeddings, RoPE 500k, 8k context.
    big = preset == "llama_8b"
    m.update(
        style="llama",
        vocab_size=128256,
        num_layers=32 if big else 16,
        num_heads=32,
        num_kv_heads=8,
        d_model=4096 if big else 2048,
        d_ff=14336 if big else 8192,
        max_len=8192 if big else 2048,
        rope_theta=500000.0,
        tie_embeddings=0 if big else 1,
        dtype="bfloat16",
        scan_layers=True,
        remat="dots_no_batch",
    )
    t.update(steps=50000, batch_size=256, seq_len=2048, eval_every=500, eval_batches=20, checkpoint_every=1000)
    o.update(lr=3e-4, warmup_steps=2000)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
  else:
    raise ValueError(
        f"unknown preset {preset!r}; choose tiny, llama_tiny, gpt2_124m, gpt2_350m, gpt2_1.5b, llama_1b, llama_8b"
    )
  c.preset = preset
  return c
