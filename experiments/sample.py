r"""Sample from a trained run: the completion goes to stdout, logs to stderr.

  python -m experiments.sample --workdir=runs/pretrain_tiny --prompt="The function" --temperature=0.8 --top_k=50
  python -m experiments.sample --workdir=runs/pretrain_tiny --few_shot --prompt="What is a tuple?"

--few_shot wraps the prompt in a transcript of a helpful assistant (nanolm_jax.prompting) so a base model answers it;
generation stops at the next "Human:" / "User:" turn and only the answer is printed.
"""

import sys

from absl import app
from absl import flags

from nanolm_jax import engine
from nanolm_jax import metrics
from nanolm_jax import prompting
from nanolm_jax import runs

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_tiny", "Run folder to load.")
_PROMPT = flags.DEFINE_string("prompt", "The", "Text to continue (the question, with --few_shot).")
_FEW_SHOT = flags.DEFINE_bool("few_shot", False, "Answer --prompt as an assistant via a few-shot transcript.")
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
    sampling = engine.SamplingParams(
        temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, max_new_tokens=_MAX_NEW.value
    ).validate()
    if _NUM.value < 1:
      raise ValueError(f"--num_samples must be >= 1, got {_NUM.value}")
    text = prompting.few_shot_prompt(_PROMPT.value) if _FEW_SHOT.value else _PROMPT.value
    run = runs.load_run(_WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  tok = run.tokenizer
  ids = tok.encode(text, bos=True)
  ctx = run.model.cfg.max_len
  if _FEW_SHOT.value and len(ids) + sampling.max_new_tokens > ctx:
    # A small model's context cannot hold the whole transcript: keep its end (the latest examples + the question).
    keep = max(ctx // 2, ctx - sampling.max_new_tokens)
    print(f"note: few-shot prompt of {len(ids)} tokens cut to its last {keep} (context {ctx})", file=sys.stderr)
    ids = ids[-keep:]
  eng = engine.Engine(run.model, run.params, tok)
  try:
    outs = eng.generate(
        [ids],
        sampling,
        n=_NUM.value,
        seed=_SEED.value,
        stop_tokens=(tok.eos_id,),
        stop_strings=prompting.STOP_STRINGS if _FEW_SHOT.value else (),
    )
  except ValueError as e:
    sys.exit(f"error: {e}")
  for out in outs:
    if _FEW_SHOT.value:
      sys.stdout.write(prompting.clean_answer(out.text) + "\n")
    else:
      sys.stdout.write(_PROMPT.value + tok.decode(out.tokens, skip_special=True) + "\n")


if __name__ == "__main__":
  app.run(main)
