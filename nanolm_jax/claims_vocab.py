"""The vocabulary-size claim: bigger vocabularies shorten sequences; what does that buy at equal compute?

For each vocabulary size, a tokenizer is trained on the chain's pretraining text and a model of the chain's shape is
pretrained with the same tokens per step for the same total training FLOPs (model.flops_per_token grows with the
vocabulary through the embedding / LM head, so larger vocabularies take fewer steps). Reported per size: bytes per
token on held-out text (the sequence-length side) and validation bits per byte (the quality side, comparable across
tokenizers because it is per byte, not per token).

The smallest size is the smallest SentencePiece allows with this project's specials: 256 byte pieces + 16 specials +
the control pieces reserve 277 ids, so the "bytes" point is a vocabulary of `BYTES_VOCAB` pieces, almost all of them
single bytes or characters.
"""

from __future__ import annotations

import copy
import os
from typing import Sequence

import ml_collections

from nanolm_jax import claims as claims_lib
from nanolm_jax import metrics as metrics_lib
from nanolm_jax import model as model_lib
from nanolm_jax import runs
from nanolm_jax.data import sources
from nanolm_jax.stages import base
from nanolm_jax.stages import pretrain

BYTES_VOCAB = 384  # about the smallest vocabulary the tokenizer trainer accepts here (see the module docstring)
DEFAULT_SIZES = (BYTES_VOCAB, 1024, 4096, 16384)


def equal_flop_steps(cfg: ml_collections.ConfigDict, sizes: Sequence[int], ref_steps: int) -> dict[int, int]:
  """Steps per vocabulary size so that each run spends the FLOPs of `ref_steps` at the config's own vocabulary."""
  mc = model_lib.ModelConfig.from_config(cfg.model)
  budget = model_lib.flops_per_token(mc, cfg.train.seq_len) * ref_steps
  out = {}
  for v in sizes:
    m = model_lib.ModelConfig.from_config(ml_collections.ConfigDict({**cfg.model.to_dict(), "vocab_size": v}))
    out[v] = max(1, round(budget / model_lib.flops_per_token(m, cfg.train.seq_len)))
  return out


def _bytes_per_token(run_dir: str, data_cfg: ml_collections.ConfigDict, max_docs: int = 200) -> float:
  tok = runs.load_tokenizer(run_dir)
  texts = [t for _, t in zip(range(max_docs), sources.iter_texts(data_cfg, "validation"))]
  n_bytes = sum(len(t.encode("utf-8")) for t in texts)
  return n_bytes / max(1, sum(len(tok.encode(t)) for t in texts))


def measure(
    pretrain_cfg: ml_collections.ConfigDict,
    workdir: str,
    out: str,
    sizes: Sequence[int] = DEFAULT_SIZES,
    ref_steps: int = 150,
) -> claims_lib.Claim:
  """Trains one equal-FLOP run per size under `workdir` (resumable: finished runs are reused) and reads the claim."""
  claim = "A bigger vocabulary shortens sequences (more bytes per token) at the price of a bigger embedding and head."
  steps = equal_flop_steps(pretrain_cfg, sizes, ref_steps)
  numbers = {}
  for v in sizes:
    cfg = copy.deepcopy(pretrain_cfg)
    cfg.model.vocab_size = v
    cfg.tokenizer.path = ""  # trained for this size on the same text
    if v < 512:  # rare characters go to byte pieces, so the required characters fit the smallest vocabulary
      cfg.tokenizer.character_coverage = 0.98
    cfg.train.update(steps=steps[v], eval_every=steps[v], checkpoint_every=steps[v], eval_tasks="")
    run_dir = os.path.join(workdir, f"vocab_{v}")
    if not runs.is_finished(run_dir):
      base.run(pretrain.STAGE, cfg, run_dir)
    evals = [r for r in metrics_lib.read_metrics(run_dir) if "val_bpb" in r]
    numbers[str(v)] = {
        "steps": steps[v],
        "bytes_per_token": _bytes_per_token(run_dir, cfg.data),
        "val_bpb": evals[-1]["val_bpb"] if evals else None,
    }
  bpt = [numbers[str(v)]["bytes_per_token"] for v in sizes]
  bpb = [numbers[str(v)]["val_bpb"] for v in sizes]
  shorter = all(b > a for a, b in zip(bpt, bpt[1:]))
  best = min(range(len(sizes)), key=lambda i: bpb[i] if bpb[i] is not None else float("inf"))
  plot = _plot(os.path.join(out, "claim_vocab_size.png"), sizes, bpt, bpb)
  s = (
      f"{'shown' if shorter else 'not shown'}: bytes per token "
      + ", ".join(f"{b:.2f}" for b in bpt)
      + f" for {', '.join(map(str, sizes))} tokens; at equal FLOPs ({ref_steps} steps of the {pretrain_cfg.model.vocab_size}"
      f"-token model) val bpb " + ", ".join(f"{b:.3f}" for b in bpb) + f", best at {sizes[best]} tokens."
  )
  return claims_lib.Claim("vocab_size", claim, shorter, s, numbers, plot)


def _plot(path: str, sizes, bpt, bpb) -> str:
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  fig = figure.Figure(figsize=(6.4, 3.6))
  ax = fig.subplots()
  ax.plot(sizes, bpt, marker="o", color="C0")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("vocabulary size")
  ax.set_ylabel("bytes per token", color="C0")
  ax2 = ax.twinx()
  ax2.plot(sizes, bpb, marker="s", color="C1")
  ax2.set_ylabel("val bits per byte (equal FLOPs)", color="C1")
  ax.set_title("Vocabulary size: sequence length vs quality at equal compute", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return os.path.basename(path)
