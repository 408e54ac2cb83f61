r"""Convert between Hugging Face model folders and nanolm_jax run folders (safetensors only, never pickle).

  # HF GPT2LMHeadModel / LlamaForCausalLM folder (config.json, model.safetensors, tokenizer.json) -> run folder
  python -m experiments.convert --from_hf=path/to/hf_model --workdir=runs/gpt2_imported
  python -m experiments.sample --workdir=runs/gpt2_imported --prompt="The meaning of life is"

  # run folder -> HF folder: transformers' AutoModelForCausalLM / AutoTokenizer.from_pretrained(DIR) load it
  python -m experiments.convert --workdir=runs/pretrain_tiny --export_hf=runs/pretrain_tiny_hf

Imported models keep their own tokenizer, which has none of our chat tokens: use them as base models (prompting,
continued pretraining); `special_id('<|user|>')` raises KeyError on them.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from configs import pretrain
from nanolm_jax import metrics
from nanolm_jax.interop import hf

_FROM_HF = flags.DEFINE_string("from_hf", "", "Hugging Face model folder to import into --workdir.")
_EXPORT_HF = flags.DEFINE_string("export_hf", "", "Folder to write the run in --workdir to, in Hugging Face format.")
_WORKDIR = flags.DEFINE_string("workdir", "", "The run folder (created by --from_hf, read by --export_hf).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_PRESET = flags.DEFINE_string(
    "preset",
    "tiny",
    "configs/pretrain.py preset whose non-model settings an imported "
    "run gets (training, optimizer, data); model fields come from the HF config.",
)


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  metrics.quiet_library_logs()
  if not _WORKDIR.value:
    sys.exit("error: --workdir is required")
  if bool(_FROM_HF.value) == bool(_EXPORT_HF.value):
    sys.exit("error: pass exactly one of --from_hf=DIR (import) or --export_hf=DIR (export)")
  try:
    if _FROM_HF.value:
      cfg = hf.import_hf(_FROM_HF.value, _WORKDIR.value, pretrain.get_config(_PRESET.value))
      m = cfg["model"]
      logging.info(
          "imported %s (%s, %d layers, d_model %d, vocab %d) into %s",
          _FROM_HF.value,
          m["style"],
          m["num_layers"],
          m["d_model"],
          m["vocab_size"],
          _WORKDIR.value,
      )
      print(_WORKDIR.value)
    else:
      out = hf.export_hf(_WORKDIR.value, _EXPORT_HF.value, step=_STEP.value)
      logging.info("exported %s as %s to %s", _WORKDIR.value, out["architectures"][0], _EXPORT_HF.value)
      print(_EXPORT_HF.value)
  except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
