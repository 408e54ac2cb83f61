r"""Decode speed against the machine's limits, measured in the same run, and against HF transformers.

  python -m experiments.bench_sample                        # gpt2_124m, float32 and bfloat16 (a few minutes, 2 cores)
  python -m experiments.bench_sample --dtypes=float32 --batches=8 --hf=false
  python -m experiments.bench_sample --presets=tiny --nocache_len=512

Random weights (speed does not depend on them). The run first measures the machine:
  * memory bandwidth: a jitted sum over a float32 array of 4x the last-level cache (at least 256 MB), best of 10 (GB/s);
  * matmul peak: a jitted n x n x n matmul per dtype (fp32, and bf16 x bf16 -> fp32), best of 5 (FLOP/s).
Then, per preset and weights dtype (model dtype = param_dtype, so bfloat16 reads half the bytes; the KV cache is the
engine's, float32 on CPU), greedy decode through the Engine, decode tokens/s = rows * (new - 1) / (t(new) - t(1))
(prefill cancels), median of --reps interleaved pairs:
  * batch 1 vs the bandwidth bound: bandwidth / (weight bytes read per token + KV cache bytes read per token at the
    mean context, prompt + new / 2). Every weight is read once per token (the tied embedding as the LM head; the
    position table's one row is left out);
  * batch 1 vs transformers' GPT2LMHeadModel.generate (greedy, KV cache) on the same weights at the same precision,
    its tokens compared with ours (float32: all must match);
  * batches of --batches rows vs the compute bound: peak / decode FLOPs per token (2 x matmul params + 4 x layers x
    heads x head_dim x context for scores and values), and vs the roofline min(compute, bandwidth) bound.
Machines are shared: ratios are taken against limits measured minutes apart in the same run; note the load.
"""

from __future__ import annotations

import glob
import os
import statistics
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import pretrain
from nanolm_jax import engine as E
from nanolm_jax import model as model_lib

_PRESETS = flags.DEFINE_list("presets", ["gpt2_124m"], "configs/pretrain.py presets.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Weight (and compute) dtypes.")
_BATCHES = flags.DEFINE_list("batches", ["8", "64", "128"], "Batched decode rows (vs the compute bound).")
_PROMPT = flags.DEFINE_integer("prompt_len", 16, "Prompt tokens.")
_NEW = flags.DEFINE_integer("new_tokens", 32, "Tokens decoded at batch 1 (and by transformers).")
_NEW_BATCHED = flags.DEFINE_integer("new_tokens_batched", 8, "Tokens decoded per row in the batched runs.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions (median).")
_HF = flags.DEFINE_bool("hf", True, "Compare with transformers' generate when torch + transformers are importable.")
_CTX = flags.DEFINE_integer("nocache_len", 0, "If > 0: also time recomputing a sequence this long vs a cached step.")
_BW_MB = flags.DEFINE_integer("bandwidth_mb", 0, "Array size of the bandwidth sum (0 = max(4 x LLC, 256 MB)).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the peak measurement.")


# --- the machine ------------------------------------------------------------------------------------------------------


def llc_bytes() -> int:
  """The last-level cache of cpu0 in bytes (sysfs), 32 MiB if unreadable."""
  best = (0, 32 << 20)
  for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
    try:
      level = int(open(f"{d}/level").read())
      size = open(f"{d}/size").read().strip()
    except OSError:
      continue
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
    best = max(best, (level, int(size.rstrip("KMG")) * mult))
  return best[1]


def machine_info() -> str:
  model = "unknown CPU"
  try:
    model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
  except (OSError, StopIteration):
    pass
  load = ", load avg %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
  return f"{model}, {os.cpu_count()} cores, LLC {llc_bytes() >> 20} MiB{load}; jax {jax.__version__} {jax.devices()}"


def _best(f, reps: int) -> float:
  jax.block_until_ready(f())
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f())
    times.append(time.perf_counter() - t)
  return min(times)  # the fastest rep is the machine's practical limit; slower ones fold in other users' load


def memory_bandwidth(nbytes: int, reps: int = 10) -> float:
  """Bytes/s of a jitted float32 sum over nbytes (well past the caches: every byte comes from memory)."""
  x = jnp.ones((nbytes // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  return x.nbytes / _best(lambda: f(x), reps)


def matmul_peak(n: int, dtype: str, reps: int = 10) -> float:
  """FLOP/s of a jitted n x n x n matmul: inputs in `dtype`, fp32 accumulation (as experiments.bench_train)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  return 2.0 * n**3 / _best(lambda: f(a, b), reps)


# --- the model's costs per decoded token ------------------------------------------------------------------------------


def weight_bytes(params) -> int:
  """Bytes of weights one decode step reads: all of them but the position table (one row of it is read)."""
  return sum(x.nbytes for p, x in jax.tree_util.tree_leaves_with_path(params) if "pos_embed" not in str(p))


def kv_bytes(cfg: model_lib.ModelConfig, ctx: float, itemsize: int) -> float:
  """Bytes of keys and values one row's decode step reads at context ctx."""
  return cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * ctx * itemsize


def decode_flops(cfg: model_lib.ModelConfig, ctx: float) -> float:
  """FLOPs of one decoded token: 2 x matmul params (with the LM head) + scores and values over ctx keys."""
  d, f, n, k, h = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  matmul = cfg.num_layers * (d * n * h + 2 * d * k * h + n * h * d + (3 if cfg.llama else 2) * d * f)
  return 2.0 * (matmul + d * cfg.vocab_size) + 4.0 * cfg.num_layers * n * h * ctx


# --- timing -----------------------------------------------------------------------------------------------------------


def random_params(model, std=0.02, seed=0):
  """Random params in numpy (no compile of model.init); norm scales 1."""
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.ones(a.shape, a.dtype)
      if "scale" in jax.tree_util.keystr(p)
      else jnp.asarray((rng.standard_normal(a.shape, np.float32) * std).astype(a.dtype)),
      shapes,
  )


def decode_rate(run, rows: int, new: int, reps: int) -> float:
  """Median decode tokens/s of run(n) (a blocking greedy generate of n tokens per row), prefill cancelled out."""
  run(new), run(1)  # compile / warm up
  rates = []
  for _ in range(reps):
    t = time.perf_counter()
    run(new)
    t_new = time.perf_counter() - t
    t = time.perf_counter()
    run(1)
    rates.append(rows * (new - 1) / max(t_new - (time.perf_counter() - t), 1e-9))
  return statistics.median(rates)


def prompts_for(vocab: int, rows: int, length: int, seed: int = 0) -> list[list[int]]:
  return np.random.default_rng(seed).integers(300, vocab, (rows, length)).tolist()


def nocache_ratio(model, params, length):
  """(seconds per token recomputing a length-token sequence, seconds per cached decode step at that position)."""
  x = jnp.asarray(np.random.default_rng(0).integers(300, model.cfg.vocab_size, (1, length)), jnp.int32)
  fwd = jax.jit(lambda p, t: model.apply({"params": p}, t)[:, -1].argmax(-1))
  t_recompute = _best(lambda: fwd(params, x), 2)
  eng, new = E.Engine(model, params), 33
  run = lambda n: eng.generate([x[0, : length - new].tolist()], E.SamplingParams(temperature=0.0, max_new_tokens=n))
  return t_recompute, 1.0 / decode_rate(run, 1, new, 1)


# --- transformers -----------------------------------------------------------------------------------------------------


def hf_model_with_weights(cfg, params, dtype: str):
  """A transformers GPT2LMHeadModel holding our gpt2-style weights (Conv1D layout: in x out), in `dtype`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  d, f = cfg.d_model, cfg.d_ff
  hcfg = transformers.GPT2Config(
      vocab_size=cfg.vocab_size,
      n_positions=cfg.max_len,
      n_embd=d,
      n_layer=cfg.num_layers,
      n_head=cfg.num_heads,
      n_inner=f,
      activation_function="gelu_new",
      layer_norm_epsilon=cfg.norm_eps,
      resid_pdrop=0,
      embd_pdrop=0,
      attn_pdrop=0,
  )
  hf = transformers.GPT2LMHeadModel(hcfg).eval()
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())
  sd = {
      "transformer.wte.weight": t(params["embed"]),
      "transformer.wpe.weight": t(params["pos_embed"]),
      "transformer.ln_f.weight": t(params["ln_f"]["scale"]),
      "transformer.ln_f.bias": t(params["ln_f"]["bias"]),
      "lm_head.weight": t(params["embed"]),
  }
  for i in range(cfg.num_layers):
    lp, pre = params[f"layer_{i}"], f"transformer.h.{i}."
    a, m = lp["attn"], lp["mlp"]
    sd[pre + "ln_1.weight"], sd[pre + "ln_1.bias"] = t(lp["ln1"]["scale"]), t(lp["ln1"]["bias"])
    sd[pre + "ln_2.weight"], sd[pre + "ln_2.bias"] = t(lp["ln2"]["scale"]), t(lp["ln2"]["bias"])
    qkv = [np.asarray(a[w], np.float32).reshape(d, d) for w in ("wq", "wk", "wv")]
    sd[pre + "attn.c_attn.weight"] = t(np.concatenate(qkv, 1))
    sd[pre + "attn.c_attn.bias"] = t(
        np.concatenate([np.asarray(a[b], np.float32).reshape(d) for b in ("bq", "bk", "bv")])
    )
    sd[pre + "attn.c_proj.weight"] = t(np.asarray(a["wo"], np.float32).reshape(d, d))
    sd[pre + "attn.c_proj.bias"] = t(a["bo"])
    sd[pre + "mlp.c_fc.weight"], sd[pre + "mlp.c_fc.bias"] = t(m["w_in"]), t(m["b_in"])
    sd[pre + "mlp.c_proj.weight"], sd[pre + "mlp.c_proj.bias"] = t(m["w_out"]), t(m["b_out"])
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing), (missing, unexpected)
  return hf.to(getattr(torch, dtype))


def hf_decode_rate(hf, prompts, new: int, reps: int) -> tuple[float, list[int]]:
  """(median decode tokens/s of greedy generate with its KV cache, the tokens of one run)."""
  import torch  # pylint: disable=g-import-not-at-top

  x = torch.tensor(prompts)

  def run(n):
    with torch.no_grad():
      kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, use_cache=True)
      return hf.generate(x, attention_mask=torch.ones_like(x), **kw)

  return decode_rate(run, len(prompts), new, reps), run(new)[0, x.shape[1] :].tolist()


# --- main -------------------------------------------------------------------------------------------------------------


def bench_dtype(preset: str, dtype: str, rows_out: list) -> None:
  """Batch-1 and batched decode of one preset with weights in dtype; appends rows (rates and per-token costs)."""
  cfg = pretrain.get_config(preset)
  cfg.model.dtype = cfg.model.param_dtype = dtype
  model = model_lib.build_model(cfg, mesh=None)
  params = random_params(model)
  mcfg, eng = model.cfg, E.Engine(model, params)
  itemsize, w_bytes = jnp.dtype(eng.cache_dtype).itemsize, weight_bytes(params)
  p, new, reps = _PROMPT.value, _NEW.value, _REPS.value
  print(f"\n== {preset} {dtype} weights ({w_bytes / 1e6:.0f} MB read per step), {eng.cache_dtype} cache, greedy ==")

  def run_for(prompts):
    return lambda n: eng.generate(prompts, E.SamplingParams(temperature=0.0, max_new_tokens=n))

  def add_row(b, tps, ctx, **extra):
    cost = {"bytes": w_bytes + b * kv_bytes(mcfg, ctx, itemsize), "flops": decode_flops(mcfg, ctx)}
    rows_out.append({"what": f"{preset} {dtype} batch {b}", "dtype": dtype, "b": b, "tps": tps, **cost, **extra})

  prompts = prompts_for(mcfg.vocab_size, 1, p)
  tps = decode_rate(run_for(prompts), 1, new, reps)
  print(f"  batch   1: {tps:8.1f} tokens/s (mean context {p + new / 2:.0f})")
  extra = {}
  if _HF.value and preset.startswith("gpt2"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
      import transformers  # pylint: disable=g-import-not-at-top
    except ImportError:
      print("  transformers comparison skipped: pip install torch transformers")
    else:
      hf = hf_model_with_weights(mcfg, jax.device_get(params), dtype)
      hf_tps, hf_toks = hf_decode_rate(hf, prompts, new, reps)
      ours = eng.generate(prompts, E.SamplingParams(temperature=0.0, max_new_tokens=new))[0].tokens
      same = sum(a == b for a, b in zip(ours, hf_toks))
      print(
          f"  transformers {transformers.__version__} generate (torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads): {hf_tps:.1f} tokens/s -> ours / theirs {tps / hf_tps:.2f}x; same greedy tokens {same}/{new}"
      )
      extra = {"hf": tps / hf_tps}
  add_row(1, tps, p + new / 2, **extra)
  nb = _NEW_BATCHED.value
  for b in map(int, _BATCHES.value):
    tps_b = decode_rate(run_for(prompts_for(mcfg.vocab_size, b, p, seed=b)), b, nb, reps)
    print(f"  batch {b:3d}: {tps_b:8.1f} tokens/s (mean context {p + nb / 2:.0f})")
    add_row(b, tps_b, p + nb / 2)
  if _CTX.value > 0:
    t_re, t_step = nocache_ratio(model, params, _CTX.value)
    print(
        f"  no-cache at {_CTX.value}: recompute {t_re * 1e3:.1f} ms/token vs cached {t_step * 1e3:.2f} -> {t_re / t_step:.1f}x"
    )


def measure_limits(nbytes: int) -> dict[str, float]:
  """The machine's limits now: memory bandwidth (bytes/s) and the matmul peak of each dtype (FLOP/s)."""
  limits = {"bw": memory_bandwidth(nbytes)}
  for dt in _DTYPES.value:
    limits[dt] = matmul_peak(_MATMUL.value, dt)
  return limits


def report(rows: list, limits: dict[str, float]) -> None:
  print(
      f"\nsummary, against the best limits seen: bandwidth {limits['bw'] / 1e9:.1f} GB/s, matmul peak "
      + ", ".join(f"{dt} {limits[dt] / 1e9:.0f} GFLOP/s" for dt in _DTYPES.value)
  )
  print(f"  {'decode':32s} {'tokens/s':>9s} {'bandwidth bound':>16s} {'compute bound':>14s}  of roofline")
  for r in rows:
    memory = limits["bw"] * r["b"] / r["bytes"]
    compute = limits[r["dtype"]] / r["flops"]
    hf = f"  ({r['hf']:.2f}x transformers)" if "hf" in r else ""
    print(
        f"  {r['what']:32s} {r['tps']:9.1f} {memory:9.1f} ({r['tps'] / memory:.2f}) {compute:7.0f} ({r['tps'] / compute:.2f})"
        f"  {r['tps'] / min(memory, compute):.2f}{hf}"
    )


def main(argv):
  del argv
  print(f"machine: {machine_info()}")
  nbytes = (_BW_MB.value << 20) or max(4 * llc_bytes(), 256 << 20)
  limits = measure_limits(nbytes)
  print(f"memory bandwidth: {limits['bw'] / 1e9:.1f} GB/s (jitted float32 sum over {nbytes >> 20} MiB, best of 10)")
  for dt in _DTYPES.value:
    print(f"matmul peak {dt}: {limits[dt] / 1e9:.0f} GFLOP/s ({_MATMUL.value}^3, fp32 accumulation, best of 10)")
  rows = []
  for preset in _PRESETS.value:
    for dt in _DTYPES.value:
      bench_dtype(preset, dt, rows)
  # Measured again at the end; the better of the two is the machine's limit (a shared machine only slows them down).
  again = measure_limits(nbytes)
  print(
      f"\nlimits at the end: bandwidth {again['bw'] / 1e9:.1f} GB/s, "
      + ", ".join(f"{dt} {again[dt] / 1e9:.0f} GFLOP/s" for dt in _DTYPES.value)
  )
  report(rows, {k: max(v, again[k]) for k, v in limits.items()})
  print(f"load avg at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  app.run(main)
