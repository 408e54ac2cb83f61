"""Speedrun configs: `python -m experiments.speedrun --config=configs/speedrun.py:PRESET`.

Presets:
  cpu   the default: the whole chain (demo crawl -> tokenizer -> pretraining -> SFT -> GRPO -> reward model -> RLHF,
        with evaluations between) on 2 CPU cores in about 30 minutes; each stage is the stage's `tiny` config with
        the step counts below.
  gpu   the same chain at the GPT-2-124M shape on one accelerator (bfloat16): pass the corpus with --input (a WARC glob
        for the crawl) or point pretrain.data.sources at TFDS / jsonl shards. Not run in CI; expect hours on one
        H100-class GPU (the pretraining is 19k steps of 0.5M tokens, nanoGPT's schedule).
  tpu   as gpu with the mesh over every chip (FSDP), for a Cloud TPU VM slice (see README "Cloud TPU VMs").
  toy   a few steps per stage at a 2-layer, 64-wide model: the chain's machinery end to end in a test.

Each stage block is `preset` (that stage's configs/<stage>.py preset) plus nested overrides applied onto it, e.g.
`--config.pretrain.train.steps=200`. `expected_s` is the measured wall time per stage on the reference machine (AMD
EPYC, 2 cores) that the progress line's ETA is made of.
"""

import ml_collections

from nanolm_jax.speedrun import STAGES  # the chain's stage names, in order (part of this module's API)


def _stage(preset: str, **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(preset=preset, **overrides))


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  preset = preset or "cpu"
  if preset not in ("cpu", "gpu", "tpu", "toy"):
    raise ValueError(f"unknown speedrun preset {preset!r}: cpu, gpu, tpu or toy")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.stages = ",".join(STAGES)  # a subset runs only those (the others must be done already, or are skipped)
  # The crawl: configs/crawl.py preset; its corpus joins the pretraining mix at this weight.
  c.crawl = _stage("demo")
  c.crawl_weight = 0.3
  # experiments.evaluate between stages: max examples per task (BLiMP spread over its phenomena), arithmetic count.
  c.eval = ml_collections.ConfigDict(dict(max_examples=200, arithmetic=64, batch_size=32, max_new_tokens=96))
  c.pretrain = _stage("tiny", train=dict(eval_tasks_max_examples=20))
  c.sft = _stage("tiny", train=dict(steps=300), ablation=dict(steps=200))
  c.grpo = _stage("tiny", train=dict(steps=60, eval_every=20, checkpoint_every=20), eval=dict(num_problems=128))
  c.reward_model = _stage("tiny", train=dict(steps=100), rm=dict(data=dict(num_train=800, num_val=200)))
  c.rlhf = _stage("tiny", train=dict(steps=50, eval_every=10), rlhf=dict(bon_samples=8))
  c.samples = True  # the report's samples of every stage's model for the same prompts
  c.claims_n = 0  # questions per sampled claim (identity, few-shot); 0 = their defaults (50, 100)
  c.expected_s = ml_collections.ConfigDict(
      dict(
          crawl=60,
          pretrain=400,
          eval_base=90,
          sft=480,
          eval_sft=90,
          grpo=270,
          eval_grpo=60,
          reward_model=150,
          rlhf=200,
          eval_rlhf=60,
          report=60,
      )
  )
  if preset in ("gpu", "tpu"):
    c.pretrain = _stage("gpt2_124m", model=dict(dtype="bfloat16"), train=dict(eval_tasks="blimp"))
    c.sft = _stage("tiny", train=dict(steps=2000))
    c.grpo = _stage("tiny", train=dict(steps=300))
    c.reward_model = _stage("tiny")
    c.rlhf = _stage("tiny")
    c.eval.update(max_examples=-1)
    c.crawl_weight = 0.5
    if preset == "tpu":
      c.pretrain.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  if preset == "toy":
    c.crawl = _stage("demo", input=dict(demo=dict(num_files=1, pages_per_file=12)), runner=dict(progress=False))
    tiny_model = dict(vocab_size=512, num_layers=2, num_heads=4, d_model=64, max_len=128)
    c.pretrain = _stage(
        "tiny",
        model=tiny_model,
        train=dict(steps=4, seq_len=64, batch_size=8, eval_every=4, eval_batches=1, eval_tasks="", checkpoint_every=4),
        tokenizer=dict(max_train_bytes=300000),
        sample=dict(max_new_tokens=4),
    )
    c.sft = _stage(
        "tiny",
        train=dict(steps=2, batch_size=8, seq_len=128, eval_every=0, checkpoint_every=2),
        ablation=dict(enabled=False),
        probe=dict(samples=2),
        eval=dict(identity=2, facts_per_group=2, arithmetic=2, search=2, max_new_tokens=8),
    )
    c.grpo = _stage(
        "tiny",
        train=dict(steps=2, eval_every=2, checkpoint_every=2, seq_len=96),
        # rows = 8 (the test's 8 host devices); no dynamic sampling: a near-random model's groups are all flat
        rl=dict(group_size=2, prompts_per_step=4, max_new_tokens=8, length_bucket=8, dynamic_sampling=False),
        eval=dict(num_problems=4, samples=1, max_new_tokens=8, chunk_prompts=4),
    )
    c.reward_model = _stage(
        "tiny",
        train=dict(steps=2, seq_len=96, eval_every=2, checkpoint_every=2),
        rm=dict(data=dict(num_train=16, num_val=8, max_new_tokens=8, samples=2)),
    )
    c.rlhf = _stage(
        "tiny",
        train=dict(steps=2, seq_len=96, eval_every=2, checkpoint_every=2),
        rl=dict(group_size=2, prompts_per_step=4, max_new_tokens=8, length_bucket=8),
        eval=dict(num_problems=4, samples=1, max_new_tokens=8, chunk_prompts=4),
        rlhf=dict(train_prompts=16, bon_samples=2, log_samples=0),
    )
    c.eval.update(max_examples=4, arithmetic=4, batch_size=8, max_new_tokens=8)
    c.samples = False
    c.claims_n = 4
  return c
