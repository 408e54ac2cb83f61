"""Hugging Face GPT2LMHeadModel / LlamaForCausalLM <-> nanolm_jax run folders, through safetensors only.

Weight layouts (ours first; N heads, K kv heads, H head dim, D model, F mlp):
  GPT-2  c_attn is a Conv1D, weight (D, 3D) = [q | k | v] with columns n*H + h, applied as x @ W: it is already our
         (in, out) layout, so wq = W[:, :D].reshape(D, N, H) with no transpose; c_proj (N*H, D) -> wo (N, H, D);
         mlp c_fc (D, F) / c_proj (F, D) are w_in / w_out as they are. LayerNorms have biases, the MLP is tanh-GELU
         ("gelu_new"), embeddings tied unless tie_word_embeddings is false.
  Llama  nn.Linear weights are (out, in): q_proj (N*H, D) -> wq = W.T.reshape(D, N, H); o_proj (D, N*H) -> wo =
         W.T.reshape(N, H, D); gate/up/down_proj -> w_gate/w_up/w_out transposed; lm_head (V, D) -> (D, V).
         Rotary embedding: transformers' Llama rotates with rotate_half on unpermuted q/k weights, the same half-split
         layout as model.rope, so q/k need no permutation (checked numerically in tests/test_interop.py). GQA maps
         query head n to kv head n // (N / K) in both (repeat_kv / jax.nn.dot_product_attention).

Weights are read and written with safetensors only: pickled PyTorch files (.bin/.pt) can run arbitrary code when
loaded, so a folder that has only those is rejected with the command that converts it where it is trusted.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from nanolm_jax import checkpoint as ckpt_lib
from nanolm_jax import fs
from nanolm_jax import model as model_lib
from nanolm_jax import optim
from nanolm_jax import runs
from nanolm_jax import train_step as step_lib

_BIN_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Buffers some transformers versions save next to the weights; they are recomputed, never weights.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


# --- configs ----------------------------------------------------------------------------------------------------------


def read_hf_config(hf_dir: str) -> dict[str, Any]:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{hf_dir} is not a Hugging Face model folder: no config.json")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _first(v: Any) -> Any:
  return v[0] if isinstance(v, list) and v else v


def _rope_theta(hf: dict[str, Any]) -> float:
  """rope_theta from a transformers 4 (top level) or 5 (rope_parameters) config; only unscaled RoPE is supported."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  if rope_type != "default":
    raise ValueError(f"RoPE scaling {rope_type!r} is not implemented by nanolm_jax's model (plain RoPE only)")
  return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def model_fields_from_hf(hf: dict[str, Any]) -> dict[str, Any]:
  """Our `model` config fields for a GPT-2 or Llama config.json; ValueError for what we lack."""
  kind = hf.get("model_type")
  archs = hf.get("architectures") or []
  if kind == "gpt2":
    if hf.get("activation_function", "gelu_new") not in _GELU_TANH:
      raise ValueError(f"GPT-2 activation {hf.get('activation_function')!r}: our MLP is tanh-GELU only")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
      raise ValueError("GPT-2 attention scaling other than 1/sqrt(head_dim) is not implemented")
    if hf.get("add_cross_attention", False):
      raise ValueError("GPT-2 with cross-attention is not a decoder-only LM")
    d = hf["n_embd"]
    return dict(
        style="gpt2",
        vocab_size=hf["vocab_size"],
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        num_kv_heads=hf["n_head"],
        d_model=d,
        d_ff=hf.get("n_inner") or 4 * d,
        max_len=hf["n_positions"],
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        rope_theta=10000.0,
        tie_embeddings=int(hf.get("tie_word_embeddings", True)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
  if kind == "llama":
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"Llama hidden_act {hf.get('hidden_act')!r}: our MLP is SwiGLU (silu) only")
    if hf.get("attention_bias", False) or hf.get("mlp_bias", False):
      raise ValueError("Llama with attention_bias / mlp_bias is not implemented (our Llama block has none)")
    d, n = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d // n) or d % n:
      raise ValueError(f"head_dim={hf.get('head_dim')} != hidden_size/num_attention_heads={d / n}")
    return dict(
        style="llama",
        vocab_size=hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=n,
        num_kv_heads=hf.get("num_key_value_heads") or n,
        d_model=d,
        d_ff=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(hf),
        tie_embeddings=int(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
  raise ValueError(f"model_type={kind!r} ({archs}): only GPT2LMHeadModel and LlamaForCausalLM are supported")


def hf_config_from_model(
    mc: Any, bos_id: int | None, eos_id: int | None, pad_id: int | None, dtype: str
) -> dict[str, Any]:
  """config.json for transformers (readable by 4.x and 5.x) of a model_lib.ModelConfig."""
  common = dict(
      vocab_size=mc.vocab_size,
      bos_token_id=bos_id,
      eos_token_id=eos_id,
      pad_token_id=pad_id,
      tie_word_embeddings=bool(mc.tie_embeddings),
      initializer_range=mc.init_std,
      use_cache=True,
      torch_dtype=dtype,
      dtype=dtype,
  )
  if mc.style == "gpt2":
    if mc.num_kv_heads != mc.num_heads:
      raise ValueError(
          f"GPT2LMHeadModel has no grouped-query attention: num_kv_heads={mc.num_kv_heads} "
          f"!= num_heads={mc.num_heads}"
      )
    return dict(
        architectures=["GPT2LMHeadModel"],
        model_type="gpt2",
        n_embd=mc.d_model,
        n_layer=mc.num_layers,
        n_head=mc.num_heads,
        n_inner=mc.d_ff,
        n_positions=mc.max_len,
        n_ctx=mc.max_len,
        activation_function="gelu_new",
        layer_norm_epsilon=mc.norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        scale_attn_weights=True,
        **common,
    )
  return dict(
      architectures=["LlamaForCausalLM"],
      model_type="llama",
      hidden_size=mc.d_model,
      num_hidden_layers=mc.num_layers,
      num_attention_heads=mc.num_heads,
      num_key_value_heads=mc.num_kv_heads,
      head_dim=mc.head_dim,
      intermediate_size=mc.d_ff,
      max_position_embeddings=mc.max_len,
      rms_norm_eps=mc.norm_eps,
      hidden_act="silu",
      attention_bias=False,
      attention_dropout=0.0,
      mlp_bias=False,
      pretraining_tp=1,
      rope_theta=mc.rope_theta,
      rope_scaling=None,
      rope_parameters={"rope_type": "default", "rope_theta": mc.rope_theta},
      **common,
  )


# --- safetensors ------------------------------------------------------------------------------------------------------


def load_safetensors(hf_dir: str) -> dict[str, np.ndarray]:
  """All tensors of model.safetensors or a sharded model.safetensors.index.json; never unpickles anything."""

  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index, encoding="utf-8") as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(hf_dir, "*.safetensors")))
  if not files:
    pickled = sorted(os.path.basename(p) for pat in _BIN_PATTERNS for p in glob.glob(os.path.join(hf_dir, pat)))
    if pickled:
      raise ValueError(
          f"{hf_dir} has only pickled PyTorch weights ({', '.join(pickled)}); nanolm_jax reads safetensors only, "
          "since unpickling can run arbitrary code. Where you trust the file, convert it with transformers: "
          "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
      )
    raise FileNotFoundError(f"{hf_dir} has no model.safetensors")
  out: dict[str, np.ndarray] = {}
  for name in files:
    out.update(load_file(os.path.join(hf_dir, name)))
  return out


# --- weights ----------------------------------------------------------------------------------------------------------


class _Weights:
  """HF tensors by name, prefix-insensitive ('transformer.' / 'model.'), tracking which were used."""

  def __init__(self, tensors: dict[str, np.ndarray], prefix: str):
    self._t = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    self._used: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self._t

  def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in self._t:
      raise KeyError(f"weight {name!r} is missing from the safetensors file")
    a = self._t[name]
    if a.shape != shape:
      raise ValueError(f"weight {name!r} has shape {a.shape}, the config implies {shape}")
    self._used.add(name)
    return np.asarray(a, np.float32)

  def check_all_used(self) -> None:
    left = sorted(k for k in self._t if k not in self._used and not k.endswith(_BUFFER_SUFFIXES))
    if left:
      raise ValueError(
          f"unexpected weights (not part of the supported architecture): {left[:10]}"
          f"{' ...' if len(left) > 10 else ''}"
      )


def params_from_hf(tensors: dict[str, np.ndarray], mc: Any) -> dict[str, Any]:
  """Our params pytree (float32 numpy, `layer_{i}` names) from HF tensors."""
  d, n, k, h, f, v = mc.d_model, mc.num_heads, mc.num_kv_heads, mc.head_dim, mc.d_ff, mc.vocab_size
  params: dict[str, Any] = {}
  if mc.style == "gpt2":
    w = _Weights(tensors, "transformer.")
    params["embed"] = w("wte.weight", (v, d))
    params["pos_embed"] = w("wpe.weight", (mc.max_len, d))
    for i in range(mc.num_layers):
      p = f"h.{i}."
      qkv_w, qkv_b = w(p + "attn.c_attn.weight", (d, 3 * d)), w(p + "attn.c_attn.bias", (3 * d,))
      params[f"layer_{i}"] = {
          "ln1": {"scale": w(p + "ln_1.weight", (d,)), "bias": w(p + "ln_1.bias", (d,))},
          "attn": {
              "wq": qkv_w[:, :d].reshape(d, n, h),
              "wk": qkv_w[:, d : 2 * d].reshape(d, n, h),
              "wv": qkv_w[:, 2 * d :].reshape(d, n, h),
              "bq": qkv_b[:d].reshape(n, h),
              "bk": qkv_b[d : 2 * d].reshape(n, h),
              "bv": qkv_b[2 * d :].reshape(n, h),
              "wo": w(p + "attn.c_proj.weight", (d, d)).reshape(n, h, d),
              "bo": w(p + "attn.c_proj.bias", (d,)),
          },
          "ln2": {"scale": w(p + "ln_2.weight", (d,)), "bias": w(p + "ln_2.bias", (d,))},
          "mlp": {
              "w_in": w(p + "mlp.c_fc.weight", (d, f)),
              "b_in": w(p + "mlp.c_fc.bias", (f,)),
              "w_out": w(p + "mlp.c_proj.weight", (f, d)),
              "b_out": w(p + "mlp.c_proj.bias", (d,)),
          },
      }
    params["ln_f"] = {"scale": w("ln_f.weight", (d,)), "bias": w("ln_f.bias", (d,))}
    head = "lm_head.weight"
  else:
    w = _Weights(tensors, "model.")
    params["embed"] = w("embed_tokens.weight", (v, d))
    for i in range(mc.num_layers):
      p = f"layers.{i}."
      params[f"layer_{i}"] = {
          "ln1": {"scale": w(p + "input_layernorm.weight", (d,))},
          "attn": {
              "wq": w(p + "self_attn.q_proj.weight", (n * h, d)).T.reshape(d, n, h),
              "wk": w(p + "self_attn.k_proj.weight", (k * h, d)).T.reshape(d, k, h),
              "wv": w(p + "self_attn.v_proj.weight", (k * h, d)).T.reshape(d, k, h),
              "wo": w(p + "self_attn.o_proj.weight", (d, n * h)).T.reshape(n, h, d),
          },
          "ln2": {"scale": w(p + "post_attention_layernorm.weight", (d,))},
          "mlp": {
              "w_gate": w(p + "mlp.gate_proj.weight", (f, d)).T,
              "w_up": w(p + "mlp.up_proj.weight", (f, d)).T,
              "w_out": w(p + "mlp.down_proj.weight", (d, f)).T,
          },
      }
    params["ln_f"] = {"scale": w("norm.weight", (d,))}
    head = "lm_head.weight"
  if not mc.tie_embeddings:
    params["lm_head"] = w(head, (v, d)).T
  elif head in w:
    w(head, (v, d))  # a tied head saved anyway: transformers ties it to the embedding on load, as we do
  w.check_all_used()
  return params


def _layers(params: dict[str, Any], num_layers: int) -> list[dict[str, Any]]:
  """Per-layer param dicts, from `layer_{i}` or the stacked `layers` of scan_layers."""
  if "layers" in params:
    return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], params["layers"]) for i in range(num_layers)]
  return [params[f"layer_{i}"] for i in range(num_layers)]


def params_to_hf(params: dict[str, Any], mc: Any) -> dict[str, np.ndarray]:
  """HF state dict (numpy, the params' dtype) of our params."""
  d = mc.d_model
  a = np.asarray
  out: dict[str, np.ndarray] = {}
  if mc.style == "gpt2":
    out["transformer.wte.weight"] = a(params["embed"])
    out["transformer.wpe.weight"] = a(params["pos_embed"])
    for i, lp in enumerate(_layers(params, mc.num_layers)):
      p, at, ml = f"transformer.h.{i}.", lp["attn"], lp["mlp"]
      out[p + "ln_1.weight"], out[p + "ln_1.bias"] = a(lp["ln1"]["scale"]), a(lp["ln1"]["bias"])
      out[p + "attn.c_attn.weight"] = np.concatenate([a(at[x]).reshape(d, d) for x in ("wq", "wk", "wv")], axis=1)
      out[p + "attn.c_attn.bias"] = np.concatenate([a(at[x]).reshape(d) for x in ("bq", "bk", "bv")])
      out[p + "attn.c_proj.weight"], out[p + "attn.c_proj.bias"] = a(at["wo"]).reshape(d, d), a(at["bo"])
      out[p + "ln_2.weight"], out[p + "ln_2.bias"] = a(lp["ln2"]["scale"]), a(lp["ln2"]["bias"])
      out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = a(ml["w_in"]), a(ml["b_in"])
      out[p + "mlp.c_proj.weight"], out[p + "mlp.c_proj.bias"] = a(ml["w_out"]), a(ml["b_out"])
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = a(params["ln_f"]["scale"]), a(params["ln_f"]["bias"])
  else:
    n, k, h = mc.num_heads, mc.num_kv_heads, mc.head_dim
    out["model.embed_tokens.weight"] = a(params["embed"])
    for i, lp in enumerate(_layers(params, mc.num_layers)):
      p, at, ml = f"model.layers.{i}.", lp["attn"], lp["mlp"]
      out[p + "input_layernorm.weight"] = a(lp["ln1"]["scale"])
      out[p + "self_attn.q_proj.weight"] = a(at["wq"]).reshape(d, n * h).T
      out[p + "self_attn.k_proj.weight"] = a(at["wk"]).reshape(d, k * h).T
      out[p + "self_attn.v_proj.weight"] = a(at["wv"]).reshape(d, k * h).T
      out[p + "self_attn.o_proj.weight"] = a(at["wo"]).reshape(n * h, d).T
      out[p + "post_attention_layernorm.weight"] = a(lp["ln2"]["scale"])
      out[p + "mlp.gate_proj.weight"] = a(ml["w_gate"]).T
      out[p + "mlp.up_proj.weight"] = a(ml["w_up"]).T
      out[p + "mlp.down_proj.weight"] = a(ml["w_out"]).T
    out["model.norm.weight"] = a(params["ln_f"]["scale"])
  if not mc.tie_embeddings:
    out["lm_head.weight"] = a(params["lm_head"]).T
  return {name: np.ascontiguousarray(x) for name, x in out.items()}


# --- folders ----------------------------------------------------------------------------------------------------------


def _copy_tokenizer(hf_dir: str, workdir: str, hf: dict[str, Any]) -> None:
  """Copies the HF tokenizer files; fills bos/eos/pad into tokenizer_config.json from config.json when it lacks them."""
  # Optional dependency (`tokenizers`, the 'hf' extra).
  from nanolm_jax import hf_tokenizer  # pylint: disable=g-import-not-at-top

  if not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
    raise FileNotFoundError(
        f"{hf_dir} has no tokenizer.json (the fast-tokenizer file). Where transformers is installed, write one with "
        "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)"
    )
  for name in hf_tokenizer.TOKENIZER_FILES:
    src = os.path.join(hf_dir, name)
    if os.path.exists(src):
      fs.copy(src, fs.join(workdir, name))
  import tokenizers  # pylint: disable=g-import-not-at-top  # optional: the 'hf' extra

  tok = tokenizers.Tokenizer.from_str(fs.read_text(fs.join(workdir, "tokenizer.json")))
  cfg_path = fs.join(workdir, "tokenizer_config.json")
  meta: dict[str, Any] = json.loads(fs.read_text(cfg_path)) if fs.exists(cfg_path) else {}
  changed = False
  for key in ("bos", "eos", "pad"):
    i = _first(hf.get(f"{key}_token_id"))
    if hf_tokenizer.token_content(meta.get(f"{key}_token")) is None and i is not None:
      if tok.id_to_token(int(i)) is not None:
        meta[f"{key}_token"] = tok.id_to_token(int(i))
        changed = True
  if changed or not fs.exists(cfg_path):
    fs.write_text(cfg_path, json.dumps(meta, indent=2, ensure_ascii=False))


def import_hf(hf_dir: str, workdir: str, base_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """HF model folder -> run folder (config.json, orbax checkpoint at step 0, tokenizer files). Returns the config.

  base_cfg: a pretraining config (configs/pretrain.py) whose non-model settings the run keeps, e.g. for
  continued pretraining; its model block is replaced by the HF model's.
  """
  if fs.exists(fs.join(workdir, "config.json")) or fs.exists(fs.join(workdir, "checkpoints")):
    raise FileExistsError(f"{workdir} already holds a run; import into a new folder")
  hf = read_hf_config(hf_dir)
  fields = model_fields_from_hf(hf)
  cfg = copy.deepcopy(base_cfg)
  cfg.model.update(fields)
  cfg.model.update(dtype="float32", param_dtype="float32", scan_layers=False)
  cfg.train.seq_len = min(cfg.train.seq_len, cfg.model.max_len)
  cfg.tokenizer.path = ""
  mc = model_lib.ModelConfig.from_config(cfg.model)
  model_lib.validate_model_config(mc)
  params = params_from_hf(load_safetensors(hf_dir), mc)

  # Same tree as a freshly initialised model, so trainer.train can also resume (fine-tune) from this checkpoint.
  model = model_lib.build_model(cfg, None)
  expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 1), np.int32)))["params"]
  expected = jax.tree.map(lambda x: x.shape, nn.unbox(expected))
  got = jax.tree.map(lambda x: x.shape, params)
  if got != expected:
    raise AssertionError(f"converted params do not match the model's tree:\n{got}\nvs\n{expected}")
  params = jax.tree.map(jax.numpy.asarray, params)
  tx = optim.make_optimizer(cfg.optim, cfg.train.steps)
  state = step_lib.init_state(params, tx)

  fs.makedirs(workdir)
  _copy_tokenizer(hf_dir, workdir, hf)
  cfg_dict = runs.config_to_dict(cfg)
  ckpt = ckpt_lib.Checkpointer(workdir, keep=cfg.train.keep_checkpoints, async_save=False)
  ckpt.save(0, state, None, cfg_dict)
  ckpt.close()
  # config.json last: its presence marks a complete run folder.
  runs.write_config(workdir, cfg_dict)
  return cfg_dict


def export_hf(workdir: str, out_dir: str, step: int | None = None) -> dict[str, Any]:
  """Run folder -> HF folder (config.json, model.safetensors, tokenizer files). Returns the HF config dict."""
  # Optional dependency (`tokenizers`, the 'hf' extra).
  from nanolm_jax import hf_tokenizer  # pylint: disable=g-import-not-at-top

  cfg, params = ckpt_lib.load_params(workdir, step)
  mc = model_lib.ModelConfig.from_config(cfg.model)
  tok = runs.load_tokenizer(workdir)
  if tok.vocab_size > mc.vocab_size:
    raise ValueError(f"tokenizer has {tok.vocab_size} tokens but model.vocab_size={mc.vocab_size}")
  params = jax.tree.map(np.asarray, jax.device_get(params))
  tensors = params_to_hf(params, mc)
  dtype = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}.get(
      tensors["model.embed_tokens.weight" if mc.llama else "transformer.wte.weight"].dtype, "bfloat16"
  )

  def opt_id(name: str) -> int | None:
    try:
      return int(getattr(tok, name))
    except ValueError:
      return None

  hf = hf_config_from_model(mc, opt_id("bos_id"), opt_id("eos_id"), opt_id("pad_id"), dtype)
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump({k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}, f, indent=2)
  sp_model = fs.join(workdir, runs.TOKENIZER_FILE)
  if fs.exists(sp_model):
    hf_tokenizer.export_spm(fs.read_bytes(sp_model), out_dir, model_max_length=mc.max_len)
  else:  # an imported run: its Hugging Face tokenizer files go back as they came
    for name in hf_tokenizer.TOKENIZER_FILES:
      src = fs.join(workdir, name)
      if fs.exists(src):
        fs.copy(src, os.path.join(out_dir, name))
  return hf
