"""Hugging Face interop: import GPT-2 / Llama checkpoints into run folders and export runs back (safetensors only).

  hf.import_hf(hf_dir, workdir)    HF folder (config.json + *.safetensors + tokenizer.json) -> nanolm_jax run folder
  hf.export_hf(workdir, out_dir)   run folder -> folder that `transformers.AutoModelForCausalLM` / `AutoTokenizer` load
  hf_tokenizer.HFTokenizer         a `tokenizers` tokenizer behind nanolm_jax's Tokenizer interface
  hf_tokenizer.spm_to_hf(proto)    our sentencepiece model -> an equivalent `tokenizers.Tokenizer`

Neither direction needs torch or transformers (only `tokenizers` and `safetensors`); tests use them as references.
"""
