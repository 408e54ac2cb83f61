"""The model's hyper-parameters: the `model` config block (with its defaults) and the resolved, hashable
ModelConfig the Flax modules read; validation that names the inconsistent field."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("full", "dots", "dots_no_batch")


def default_model_config() -> ml_collections.ConfigDict:
  """The ``model`` config block: the one set of model defaults (the CPU `tiny` shape); 0 / -1 mean "derive"."""
  return ml_collections.ConfigDict(
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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static model hyper-parameters (hashable, so it can live inside jitted closures)."""

  style: str = "gpt2"
  vocab_size: int = 4096
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 4
  d_model: int = 256
  d_ff: int = 1024
  max_len: int = 256
  tie_embeddings: bool = True
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat: str = "none"
  attention: str = "xla"
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  init_std: float = 0.02

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def llama(self) -> bool:
    return self.style == "llama"

  @classmethod
  def from_config(cls, m: Mapping[str, Any]) -> "ModelConfig":
    """Resolves the config's 0 / -1 defaults (kv heads, d_ff, tying) into concrete values."""
    style = m["style"]
    if style not in ("gpt2", "llama"):
      raise ValueError(f"model.style must be 'gpt2' or 'llama', got {style!r}")
    d_ff = m["d_ff"]
    if not d_ff:
      d_ff = 4 * m["d_model"] if style == "gpt2" else 64 * -(-(8 * m["d_model"] // 3) // 64)
    tie = m["tie_embeddings"]
    tie = (style == "gpt2") if tie == -1 else bool(tie)
    return cls(
        style=style,
        vocab_size=m["vocab_size"],
        num_layers=m["num_layers"],
        num_heads=m["num_heads"],
        num_kv_heads=m["num_kv_heads"] or m["num_heads"],
        d_model=m["d_model"],
        d_ff=d_ff,
        max_len=m["max_len"],
        tie_embeddings=tie,
        dtype=m["dtype"],
        param_dtype=m["param_dtype"],
        scan_layers=m["scan_layers"],
        remat=m["remat"],
        attention=m["attention"],
        norm_eps=m["norm_eps"],
        rope_theta=m["rope_theta"],
        init_std=m["init_std"],
    )


def validate_model_config(cfg: ModelConfig) -> None:
  """Raises ValueError naming the first inconsistent field."""
  if cfg.d_model % cfg.num_heads:
    raise ValueError(f"model.num_heads={cfg.num_heads} does not divide model.d_model={cfg.d_model}")
  if cfg.num_heads % cfg.num_kv_heads:
    raise ValueError(f"model.num_kv_heads={cfg.num_kv_heads} does not divide model.num_heads={cfg.num_heads}")
  if cfg.llama and cfg.head_dim % 2:
    raise ValueError(f"RoPE needs an even head dim; d_model/num_heads = {cfg.head_dim}")
  for name in ("dtype", "param_dtype"):
    if getattr(cfg, name) not in DTYPES:
      raise ValueError(f"model.{name}={getattr(cfg, name)!r}; choose one of {sorted(DTYPES)}")
  if cfg.remat != "none" and cfg.remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat={cfg.remat!r}; choose none or one of {sorted(REMAT_POLICIES)}")
  if cfg.attention not in ("xla", "cudnn"):
    raise ValueError(f"model.attention={cfg.attention!r}; choose 'xla' or 'cudnn'")
  for name in ("vocab_size", "num_layers", "num_heads", "d_model", "d_ff", "max_len"):
    if getattr(cfg, name) <= 0:
      raise ValueError(f"model.{name} must be positive, got {getattr(cfg, name)}")
