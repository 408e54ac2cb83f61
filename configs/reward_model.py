"""Reward-model configs: `python -m experiments.reward_model [--config=configs/reward_model.py:PRESET]`.

The model block is not set here: it is the init_from (SFT) run's, cut to its first rm.num_layers blocks (0 = all),
with a scalar head in place of the LM head (nanolm_jax.posttrain.reward_model). train.batch_size is set by the
stage (a different value given as a flag is an error): rm.packed_rows rows of train.seq_len packed with whole pairs
(each pair's two sides side by side, as many as fit), or with rm.packed_rows=0, 2 x rm.pairs_per_step padded rows
of train.seq_len (chosen rows, then rejected rows).

Pairs: rm.train_file / rm.val_file (JSONL: TRL prompt/chosen/rejected as text or messages, Anthropic HH; see
nanolm_jax.posttrain.preferences); with no train file, rm.data generates them from the SFT run and the gold judge
(nanolm_jax.posttrain.gold_judge) into <workdir>/rm_data/, which a later proxy can reuse as its rm.train_file.

Presets (a proxy family is one sweep over the presets, or over rm.num_layers and rm.data.num_train):
  tiny       the CPU default: every layer of the SFT run; 1600 training prompts, 4 samples each, the gold's best vs
             worst as the pair; 150 steps of 8 packed rows of 192 tokens (~19 pairs a step).
  layers1..3 tiny cut to the first 1, 2 or 3 blocks (smaller proxies of the same data).
"""

import ml_collections
from ml_collections import config_dict

from configs import base

PRESETS = ("tiny", "layers1", "layers2", "layers3")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  preset = preset or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  c = base.get_config("reward_model", preset)
  c.model = base.inherited_model()  # the starting (SFT) run's architecture
  c.init_from = ""  # the SFT run folder; "" = the default SFT run, created when absent
  c.train.update(
      steps=150,  # held-out accuracy is flat from step 50 (0.83-0.84 at 50-300 on the default SFT run)
      batch_size=config_dict.placeholder(int),  # rm.packed_rows (or 2 x rm.pairs_per_step) rows: set by the stage
      seq_len=192,  # a packed row; a pair's side (prompt ~20 tokens + a reply of <= 64 + chat markup) takes <= half
      eval_every=50,
      eval_batches=1,  # unused: the evaluation scores every held-out pair
      log_every=10,
      checkpoint_every=50,
      keep_checkpoints=2,
  )
  c.optim.update(lr=1e-4, warmup_steps=20, min_lr_ratio=0.1, weight_decay=0.0)
  c.rm = ml_collections.ConfigDict(
      dict(
          num_layers=0,  # blocks of the SFT run kept (0 = all): the proxy's size
          pairs_per_step=16,  # padded: P pairs a step, 2P rows (chosen then rejected); also the eval's batch
          packed_rows=8,  # R > 0: R rows of train.seq_len a step, each packed with whole pairs (both sides)
          center_coefficient=0.01,  # TRL's center_rewards_coefficient: c * mean (r_c + r_r)^2
          train_file="",  # preference JSONL (glob); "" = generate (rm.data)
          val_file="",  # held-out JSONL; required with a train file; given without one: fixed across generated sets
          data=dict(
              num_train=1600,  # prompts (two samples each: one pair, less the gold's ties)
              num_val=400,  # prompts about the judge's held-out people
              samples=4,  # replies sampled per prompt
              pairing="best_worst",  # adjacent: pairs (0, 1), (2, 3) ...; best_worst: the gold's best vs worst
              temperature=1.0,  # the SFT model's sampler: spread within a pair is what the RM learns from
              max_new_tokens=64,
              bt_temperature=0.0,  # Bradley-Terry label noise on the training pairs (0 = the gold's order)
              min_gap=0.0,  # keep training pairs whose gold scores differ by at least this
          ),
      )
  )
  if preset.startswith("layers"):
    c.rm.num_layers = int(preset[len("layers") :])
  return c
