"""Pretraining configs: `--config=configs/pretrain.py:PRESET`, overrides as `--config.model.num_layers=4`.

Presets:
  tiny        the CPU default: a 4-layer GPT-2-style model on the embedded stdlib corpus mixed with the generated
              sources post-training builds on (known people, one-off people, worked arithmetic), ~5 min on 2 cores.
  llama_tiny  the same budget with the Llama block (RoPE, RMSNorm, SwiGLU, GQA).
  gpt2_124m, gpt2_350m, gpt2_1.5b   GPT-2 small / medium / XL shapes (llm.c / nanoGPT hyper-parameters).
  llama_1b    Llama 3.2 1B shape.
The large presets keep the embedded corpus as their data so that they run anywhere; point `data.sources` at a real
corpus (`files:/path/*.jsonl.gz` from the crawl pipeline, or `tfds:NAME`) for real training.
"""

import ml_collections

# Logical axis -> mesh axis. Parameters use the bare names, activations the `act_` ones (MaxText's split), so that
# e.g. FSDP shards the weights' embed dim while activations stay batch-sharded.
DEFAULT_RULES = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("position", None),
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_head_dim", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stage = "pretrain"

  c.model = ml_collections.ConfigDict(
      dict(
          style="gpt2",  # gpt2 | llama
          vocab_size=4096,
          num_layers=4,
          num_heads=4,
          num_kv_heads=0,  # 0 = num_heads (multi-head); fewer = grouped-query attention
          d_model=256,
          d_ff=0,  # 0 = 4*d_model (gpt2) or the Llama 8/3 rule rounded to 64
          max_len=256,  # context length; learned positions (gpt2) are sized by it
          tie_embeddings=-1,  # -1 = style default (gpt2 tied, llama untied); 0/1 force it
          dtype="bfloat16",  # compute dtype: float32 | bfloat16 (params stay param_dtype, matmuls accumulate fp32)
          param_dtype="float32",
          scan_layers=False,
          remat="none",  # none | full | dots | dots_no_batch
          attention="xla",  # xla | cudnn (jax.nn.dot_product_attention implementation)
          norm_eps=1e-5,
          rope_theta=10000.0,
          init_std=0.02,
      )
  )

  c.train = ml_collections.ConfigDict(
      dict(
          steps=450,
          batch_size=16,  # global batch, in sequences
          seq_len=256,
          microbatches=1,  # gradient accumulation: batch_size is split into this many scanned microbatches
          eval_every=150,
          eval_batches=8,
          log_every=10,
          checkpoint_every=150,
          keep_checkpoints=3,
          async_checkpointing=True,
          z_loss=0.0,
          peak_flops_per_device=0.0,  # 0 = look the device up; used for MFU
          loss="lm",
      )
  )

  c.optim = ml_collections.ConfigDict(
      dict(
          lr=3e-3,
          warmup_steps=50,
          min_lr_ratio=0.1,  # cosine decays to lr * min_lr_ratio
          b1=0.9,
          b2=0.95,
          eps=1e-8,
          weight_decay=0.1,
          clip_norm=1.0,
          decay_embeddings=False,
          decay_norms_and_biases=False,
      )
  )

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = DEFAULT_RULES

  c.data = ml_collections.ConfigDict(
      dict(
          # The embedded corpus, the fact world (known people), one-off people (copying practice) and worked
          # arithmetic; KIND[:ARG][@WEIGHT];... e.g. "stdlib@0.5;files:runs/crawl/*.jsonl.gz@0.5"
          sources="stdlib@0.5;facts;people;arithmetic@0.5",
          data_dir="",  # TFDS data dir ("" = TFDS default)
          val_fraction=0.05,
          num_workers=0,
      )
  )

  c.tokenizer = ml_collections.ConfigDict(
      dict(
          path="",  # "" = reuse <workdir>/tokenizer.model or train one on data.sources
          model_type="bpe",
          character_coverage=0.9999,
          max_train_bytes=50_000_000,
      )
  )

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
  elif preset == "llama_1b":
    # Llama 3.2 1B: 16 layers, d 2048, 32 heads / 8 KV heads, SwiGLU 8192, RoPE 500k, tied embeddings.
    m.update(
        style="llama",
        vocab_size=128256,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        d_model=2048,
        d_ff=8192,
        max_len=2048,
        rope_theta=500000.0,
        tie_embeddings=1,
        dtype="bfloat16",
        scan_layers=True,
        remat="dots_no_batch",
    )
    t.update(steps=50000, batch_size=256, seq_len=2048, eval_every=500, eval_batches=20, checkpoint_every=1000)
    o.update(lr=3e-4, warmup_steps=2000)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
  else:
    raise ValueError(f"unknown preset {preset!r}; choose tiny, llama_tiny, gpt2_124m, gpt2_350m, gpt2_1.5b, llama_1b")
  c.preset = preset
  return c
