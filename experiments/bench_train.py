r"""Training-step throughput: tokens/s, achieved FLOP/s and its ratio to a large matmul, and to PyTorch eager.

  python -m experiments.bench_train                                  # tiny and a GPT-2-124M shape, both dtypes
  python -m experiments.bench_train --presets=gpt2_124m --dtype=bfloat16 --steps=5 --batch=4 --seq=256

The step timed is the real one: trainer.make_sharded_step on a 1-device mesh (jitted pure step, donated state, the
config's AdamW + clipping + schedule) with make_lm_loss. The "peak" is a large jitted matmul timed in the same run,
in the model's dtype setup: fp32 x fp32 -> fp32 for float32, bf16 x bf16 -> fp32 (preferred_element_type) for
bfloat16; the ratio uses the one matching --dtype. The torch peer (if torch is importable) is a nanoGPT-style
nn.Module with the same shapes, tied embeddings, causal SDPA, AdamW + grad clipping; bfloat16 means autocast with fp32
master weights. Machines are shared: ours and torch are timed interleaved (one step each, alternating) and medians
are quoted, so load spikes hit both sides.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import pretrain as pretrain_configs
from nanolm_jax import model as model_lib
from nanolm_jax import sharding as shd
from nanolm_jax import train_step as step_lib
from nanolm_jax import trainer

_PRESETS = flags.DEFINE_list("presets", ["tiny", "gpt2_124m"], "configs/pretrain.py presets to time.")
_STEPS = flags.DEFINE_integer("steps", 0, "Timed steps per side (0 = 20 for tiny, 5 for larger presets).")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size in sequences (0 = preset's for tiny, 4 for larger presets).")
_SEQ = flags.DEFINE_integer("seq", 0, "Sequence length (0 = preset's for tiny, 256 for larger presets).")
_DTYPE = flags.DEFINE_list("dtype", ["float32", "bfloat16"], "Compute dtype(s): float32 and/or bfloat16.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch eager peer (if torch is importable).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the peak measurement.")


def matmul_peak(n: int, dtype: str, reps: int = 10) -> float:
  """FLOP/s of a large jitted n x n x n matmul: inputs in `dtype`, fp32 accumulation and output."""
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dt)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dt)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  # The fastest rep is the machine's practical peak; the median would fold in other engineers' load.
  return 2.0 * n**3 / min(times)


def _shapes(preset: str) -> tuple[int, int, int]:
  cfg = pretrain_configs.get_config(preset)
  small = preset in ("tiny", "llama_tiny")
  batch = _BATCH.value or (cfg.train.batch_size if small else 4)
  seq = _SEQ.value or (cfg.train.seq_len if small else 256)
  steps = _STEPS.value or (20 if small else 5)
  return batch, seq, steps


def make_jax_step(preset: str, dtype: str, batch: int, seq: int) -> tuple[Callable[[], None], model_lib.ModelConfig]:
  """The trainer's jitted step on a 1-device mesh; returns a closure running one step (blocking)."""
  cfg = pretrain_configs.get_config(preset)
  cfg.model.dtype = dtype
  cfg.train.batch_size, cfg.train.seq_len = batch, seq
  cfg.mesh.update(data=1, fsdp=1, tensor=1)
  mesh = shd.make_mesh(cfg.mesh, jax.devices()[:1])
  model = model_lib.build_model(cfg, mesh)
  setup = trainer.make_sharded_step(cfg, model, mesh, step_lib.make_lm_loss(trainer._apply_fn(model)))  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, model.cfg.vocab_size, (batch, seq + 1), dtype=np.int32)
  host = {
      "inputs": tokens[:, :-1],
      "targets": tokens[:, 1:],
      "segment_ids": np.ones((batch, seq), np.int32),
      "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
      "weights": np.ones((batch, seq), np.float32),
  }
  data = shd.global_batch(host, setup.batch_sharding)
  box: dict[str, Any] = {"state": setup.init(jax.random.PRNGKey(0))}

  def run() -> None:
    box["state"], metrics = setup.step(box["state"], data)
    jax.block_until_ready(metrics["loss"])

  return run, model.cfg


def make_torch_step(mc: model_lib.ModelConfig, dtype: str, batch: int, seq: int) -> Callable[[], None]:
  """nanoGPT-style GPT-2 in PyTorch eager, same shapes, AdamW + clipping; bf16 = autocast over fp32 weights."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class Block(nn.Module):

    def __init__(self):
      super().__init__()
      d = mc.d_model
      self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.fc, self.out = nn.Linear(d, mc.d_ff), nn.Linear(mc.d_ff, d)

    def forward(self, x):
      b, l, d = x.shape
      q, k, v = self.qkv(self.ln1(x)).view(b, l, 3, mc.num_heads, mc.head_dim).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, l, d)
      x = x + self.proj(y)
      return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

  class GPT(nn.Module):

    def __init__(self):
      super().__init__()
      self.wte, self.wpe = nn.Embedding(mc.vocab_size, mc.d_model), nn.Embedding(mc.max_len, mc.d_model)
      self.blocks = nn.ModuleList([Block() for _ in range(mc.num_layers)])
      self.ln_f = nn.LayerNorm(mc.d_model)

    def forward(self, idx, targets):
      x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
      for blk in self.blocks:
        x = blk(x)
      logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
      return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))

  torch.manual_seed(0)
  model = GPT()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
  idx = torch.randint(0, mc.vocab_size, (batch, seq + 1))
  x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()

  def run() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    float(loss)

  return run


def time_interleaved(runs: dict[str, Callable[[], None]], steps: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per step of each closure, alternating one step of each so that load hits all alike."""
  for run in runs.values():
    for _ in range(warmup):
      run()
  times: dict[str, list[float]] = {k: [] for k in runs}
  for _ in range(steps):
    for k, run in runs.items():
      t = time.perf_counter()
      run()
      times[k].append(time.perf_counter() - t)
  return {k: statistics.median(v) for k, v in times.items()}


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=g-import-not-at-top

    have_torch = _TORCH.value
    torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
  except ImportError:
    have_torch, torch_info = False, "torch not installed"
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {torch_info}")
  # Load on a shared machine only ever lowers a peak: measured here and again at the end, the best is the limit.
  peaks = {dt: matmul_peak(_MATMUL.value, dt) for dt in ("float32", "bfloat16")}
  print(
      f"matmul peak ({_MATMUL.value}^3, jitted): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
      f"bf16-in/fp32-acc {peaks['bfloat16'] / 1e9:.1f} GFLOP/s (ratio uses the one matching the dtype)"
  )
  rows = []
  for preset in _PRESETS.value:
    batch, seq, steps = _shapes(preset)
    for dtype in _DTYPE.value:
      jax_run, mc = make_jax_step(preset, dtype, batch, seq)
      runs = {"jax": jax_run}
      if have_torch and not mc.llama:
        runs["torch"] = make_torch_step(mc, dtype, batch, seq)
      t0 = time.perf_counter()
      jax_run()  # compile outside the timing
      compile_s = time.perf_counter() - t0
      med = time_interleaved(runs, steps)
      tokens = batch * seq
      fpt = model_lib.flops_per_token(mc, seq)
      tps = tokens / med["jax"]
      peak = peaks[dtype]
      line = (
          f"{preset:>10s} {dtype:>8s} B{batch}xL{seq}: {tps:8.0f} tok/s  {fpt * tps / 1e9:6.1f} GFLOP/s  "
          f"{fpt * tps / peak:.3f} of matmul  ({med['jax'] * 1e3:.0f} ms/step, compile {compile_s:.0f}s"
      )
      if "torch" in runs:
        line += f"; torch {tokens / med['torch']:.0f} tok/s, ours/torch {med['torch'] / med['jax']:.2f}x"
      print(line + ")", flush=True)
      rows.append((preset, dtype, batch, seq, fpt * tps))
  end = {dt: matmul_peak(_MATMUL.value, dt) for dt in ("float32", "bfloat16")}
  best = {dt: max(peaks[dt], end[dt]) for dt in peaks}
  print(
      f"matmul peak at the end: fp32 {end['float32'] / 1e9:.1f}, bf16 {end['bfloat16'] / 1e9:.1f} GFLOP/s; against the "
      "best of start and end:"
  )
  for preset, dtype, batch, seq, flops in rows:
    print(f"{preset:>10s} {dtype:>8s} B{batch}xL{seq}: {flops / best[dtype]:.3f} of matmul")


if __name__ == "__main__":
  app.run(main)
