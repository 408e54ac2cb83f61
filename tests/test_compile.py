"""experiments.compile: the real train step compiled ahead of time for a TPU slice on this CPU (needs libtpu)."""

import json
import subprocess
import sys

import jax
import pytest

from configs import pretrain as pretrain_configs
from nanolm_jax import model as model_lib
from tests.conftest import REPO

# Subprocess CLIs (the entrypoint alone imports for ~10 s on 2 cores): out of the inner loop, always in CI.
pytestmark = pytest.mark.slow


def _compile(*flags, timeout=300):
  cmd = [sys.executable, "-m", "experiments.compile", *flags]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_unknown_topology_is_named():
  r = _compile("--topology=v5p-7", timeout=120)
  assert r.returncode != 0
  assert "v5p-7" in r.stderr and "TensorCores" in r.stderr


# The tiny preset made smaller still: the TPU compile is most of the test, and scales with the sequence and vocabulary
# (33 s of CPU at seq 256, vocab 4096, 4 layers; 13 s here). Two layers keep the unrolled-layer structure.
SMALLER = {"model.num_layers": 2, "model.vocab_size": 512, "model.max_len": 64, "train.seq_len": 64}


def test_tiny_on_v5p_8_memory_and_flops(tmp_path):
  """Compiled memory and FLOPs against the model counted on the CPU: replicated params + AdamW, 6N-style FLOPs."""
  pytest.importorskip("libtpu", reason="libtpu is not installed (pip install -e '.[tpu]')")
  out = tmp_path / "plan.json"
  r = _compile("--topology=v5p-8", f"--json_out={out}", *(f"--config.{k}={v}" for k, v in SMALLER.items()))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "memory_analysis per device" in r.stdout and ": fits" in r.stdout, r.stdout
  p = json.loads(out.read_text())
  assert (p["libtpu_topology"], p["chips"], p["devices"]) == ("v5p:2x2x1", 4, 4)  # v5p-8 = 8 TensorCores = 4 chips
  assert p["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}  # the tiny preset: data=-1

  # Reference: the parameter count from an abstract init on the CPU (no sharding, no TPU).
  cfg = pretrain_configs.get_config("tiny")
  for key, value in SMALLER.items():
    section, name = key.split(".")
    cfg[section][name] = value
  seq = cfg.train.seq_len
  model = model_lib.build_model(cfg, mesh=None)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.numpy.zeros((1, 8), jax.numpy.int32))
  n = model_lib.count_params(abstract["params"])
  assert p["params"] == n
  # Data parallel: every device holds fp32 params + AdamW mu and nu (12 bytes/param) and a quarter of the batch
  # (5 int32/float32 arrays of 16 x seq). XLA's argument buffers add only tile padding and a few scalars.
  expected = 12 * n + 5 * 4 * (16 // 4) * seq
  assert expected <= p["argument_bytes"] <= 1.01 * expected, (p["argument_bytes"], expected)
  assert p["alias_bytes"] >= 12 * n  # the donated state is reused for the new state
  assert p["fits"] and p["total_bytes"] < p["hbm_bytes"] == 95 * 2**30

  # FLOPs: 6 * matmul params * tokens + attention (PaLM), computed here from the shapes alone.
  mc = model.cfg
  d, L, T = mc.d_model, mc.num_layers, 16 * seq
  matmul_params = L * (4 * d * d + 2 * d * mc.d_ff) + d * mc.vocab_size
  model_flops = (6 * matmul_params + 12 * L * d * seq) * T
  assert p["model_flops_per_step"] == pytest.approx(model_flops)
  # Unrolled layers, no FSDP: XLA's per-device count covers the whole step (plus norms, softmax, AdamW).
  assert 0.95 < p["xla_flops_per_device"] * p["devices"] / model_flops < 1.3
  assert 0 < p["mfu"] < 1 and p["est_step_s"] > 0
