r"""Sample from a trained run: the completion goes to stdout, logs to stderr.

  python -m experiments.sample --workdir=runs/pretrain_tiny --prompt="The function" --temperature=0.8 --top_k=50
"""
import sys

import jax
from absl import app
from absl import flags

from nanolm_jax import engine
from nanolm_jax import metrics
from nanolm_jax import runs

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_tiny", "Run folder to load.")
_PROMPT = flags.DEFINE_string("prompt", "The", "Text to continue.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 50, "0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "1 = off.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Independent samples of the prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  try:
    sampling = engine.SamplingParams(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                                     max_new_tokens=_MAX_NEW.value).validate()
    if _NUM.value < 1:
      raise ValueError(f"--num_samples must be >= 1, got {_NUM.value}")
    run = runs.load_run(_WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  tok = run.tokenizer
  ids = tok.encode(_PROMPT.value, bos=True)
  try:
    outs = engine.generate(run.model, {"params": run.params}, [ids] * _NUM.value, sampling,
                           jax.random.PRNGKey(_SEED.value), eos_id=tok.eos_id)
  except ValueError as e:
    sys.exit(f"error: {e}")
  for out in outs:
    sys.stdout.write(_PROMPT.value + tok.decode(out, skip_special=True) + "\n")


if __name__ == "__main__":
  app.run(main)
