r"""Decode throughput of the engine, its speed-up over recomputing without a cache, and over HF transformers.

  python -m experiments.bench_sample                      # tiny + gpt2_124m, batch 1/8/64 (about 5 minutes, 2 cores)
  python -m experiments.bench_sample --presets=tiny --batches=1,8

Random weights (throughput does not depend on them). For each preset and batch size: greedy decode tokens/s
(B * new tokens / wall time of the decode, prefill excluded by timing a 1-token run too). Then, at batch 1:
  * no-cache ratio: the time of one forward over a 512-token sequence (what recomputation pays per new token at that
    length) / the time of one cached decode step at position 512;
  * for gpt2_124m, if torch + transformers are installed: a GPT2LMHeadModel with the *same* weights (copied in), greedy
    `generate` of the same lengths; its tokens are checked against ours and the ratio of tokens/s is printed.
gpt2_124m decodes fewer tokens (--new_tokens_124m) to keep the default run short on a CPU.
"""

from __future__ import annotations

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

_PRESETS = flags.DEFINE_list("presets", ["tiny", "gpt2_124m"], "configs/pretrain.py presets.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8", "64"], "Batch sizes.")
_PROMPT = flags.DEFINE_integer("prompt_len", 16, "Prompt tokens.")
_NEW = flags.DEFINE_integer("new_tokens", 128, "Tokens to decode (tiny).")
_NEW_124M = flags.DEFINE_integer("new_tokens_124m", 32, "Tokens to decode for gpt2_124m (slow on CPU).")
_CTX = flags.DEFINE_integer("nocache_len", 512, "Sequence length of the no-cache comparison.")
_HF = flags.DEFINE_bool("hf", True, "Compare with transformers' generate when torch + transformers are importable.")


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


def _timed(f, repeats=1):
  f()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f()
    best = min(best, time.perf_counter() - t)
  return best


def decode_tokens_per_s(eng, vocab, batch, prompt_len, new_tokens, seed=0):
  prompts = np.random.default_rng(seed).integers(300, vocab, (batch, prompt_len)).tolist()
  run = lambda n: eng.generate(prompts, E.SamplingParams(temperature=0.0, max_new_tokens=n))
  t_full = _timed(lambda: run(new_tokens))
  t_one = _timed(lambda: run(1))  # prefill + one step
  return batch * (new_tokens - 1) / max(t_full - t_one, 1e-9), run(new_tokens)


def nocache_ratio(model, params, length):
  """(seconds per token recomputing a length-token sequence, seconds per cached decode step at that position)."""
  x = jnp.asarray(np.random.default_rng(0).integers(300, model.cfg.vocab_size, (1, length)), jnp.int32)
  fwd = jax.jit(lambda p, t: model.apply({"params": p}, t)[:, -1].argmax(-1))
  t_recompute = _timed(lambda: fwd(params, x).block_until_ready(), repeats=2)
  eng = E.Engine(model, params)
  new = 33
  prompt = x[0, : length - new].tolist()
  run = lambda n: eng.generate([prompt], E.SamplingParams(temperature=0.0, max_new_tokens=n))
  t_step = (_timed(lambda: run(new)) - _timed(lambda: run(1))) / (new - 1)
  return t_recompute, t_step


def hf_model_with_weights(cfg, params):
  """A transformers GPT2LMHeadModel holding our gpt2-style weights (Conv1D layout: in x out)."""
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
    sd[pre + "attn.c_attn.weight"] = t(np.concatenate([np.asarray(a[w]).reshape(d, d) for w in ("wq", "wk", "wv")], 1))
    sd[pre + "attn.c_attn.bias"] = t(np.concatenate([np.asarray(a[b]).reshape(d) for b in ("bq", "bk", "bv")]))
    sd[pre + "attn.c_proj.weight"], sd[pre + "attn.c_proj.bias"] = t(np.asarray(a["wo"]).reshape(d, d)), t(a["bo"])
    sd[pre + "mlp.c_fc.weight"], sd[pre + "mlp.c_fc.bias"] = t(m["w_in"]), t(m["b_in"])
    sd[pre + "mlp.c_proj.weight"], sd[pre + "mlp.c_proj.bias"] = t(m["w_out"]), t(m["b_out"])
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing), (missing, unexpected)
  return hf


def hf_tokens_per_s(hf, prompts, new_tokens):
  import torch  # pylint: disable=g-import-not-at-top

  x = torch.tensor(prompts)

  def run(n):
    with torch.no_grad():
      return hf.generate(
          x,
          attention_mask=torch.ones_like(x),
          max_new_tokens=n,
          min_new_tokens=n,
          do_sample=False,
          pad_token_id=0,
          use_cache=True,
      )

  t_full = _timed(lambda: run(new_tokens))
  t_one = _timed(lambda: run(1))
  return len(prompts) * (new_tokens - 1) / max(t_full - t_one, 1e-9), run(new_tokens)[:, x.shape[1] :].tolist()


def main(argv):
  del argv
  print(f"devices: {jax.devices()}  (jax {jax.__version__})")
  for preset in _PRESETS.value:
    cfg = pretrain.get_config(preset)
    if preset == "tiny":
      cfg.model.max_len = max(cfg.model.max_len, _CTX.value)  # room for the 512-token comparison
    model = model_lib.build_model(cfg, mesh=None)
    params = random_params(model)
    new = _NEW.value if preset == "tiny" else _NEW_124M.value
    eng = E.Engine(model, params)
    print(
        f"\n== {preset}: {model.cfg.num_layers} layers, d_model {model.cfg.d_model}, vocab {model.cfg.vocab_size}; "
        f"prompt {_PROMPT.value}, {new} new tokens, greedy =="
    )
    ours_b1 = None
    for b in map(int, _BATCHES.value):
      tps, outs = decode_tokens_per_s(eng, model.cfg.vocab_size, b, _PROMPT.value, new)
      if b == 1:
        ours_b1 = (tps, outs)
      print(f"  batch {b:3d}: {tps:10.1f} decode tokens/s")
    t_re, t_step = nocache_ratio(model, params, _CTX.value)
    print(
        f"  no-cache at {_CTX.value} tokens: recompute {t_re * 1e3:.1f} ms/token vs cached step "
        f"{t_step * 1e3:.2f} ms/token -> {t_re / t_step:.1f}x"
    )
    if preset.startswith("gpt2") and _HF.value and ours_b1 is not None:
      try:
        import torch  # pylint: disable=g-import-not-at-top,unused-import
        import transformers  # pylint: disable=g-import-not-at-top,unused-import
      except ImportError:
        print("  transformers comparison skipped: pip install torch transformers")
        continue
      hf = hf_model_with_weights(model.cfg, jax.device_get(params))
      prompts = np.random.default_rng(0).integers(300, model.cfg.vocab_size, (1, _PROMPT.value)).tolist()
      hf_tps, hf_toks = hf_tokens_per_s(hf, prompts, new)
      same = hf_toks[0] == ours_b1[1][0].tokens
      print(
          f"  transformers {transformers.__version__} generate (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), batch 1: {hf_tps:.1f} tokens/s -> ours/theirs "
          f"{ours_b1[0] / hf_tps:.2f}x; identical greedy tokens: {same}"
      )


if __name__ == "__main__":
  app.run(main)
