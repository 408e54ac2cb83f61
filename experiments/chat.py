r"""Chat with a run in the terminal: tokens stream as they are sampled; tool calls and results are shown dimmed.

  python -m experiments.chat --workdir=runs/sft_tiny --system="You are terse." --temperature=0.7
  echo "What is 2+3?" | python -m experiments.chat --workdir=runs/sft_tiny      # non-interactive: one turn per line

Commands: /reset (forget the conversation, keep the system prompt), /quit (or end of input). Tools: --tools lists
them (calculator, search); search indexes --search_source (a data source spec, e.g. files:/crawl/*.jsonl.gz).
When the conversation outgrows the context, the oldest turns are dropped.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from nanolm_jax import chat_session
from nanolm_jax import engine as engine_lib
from nanolm_jax import metrics
from nanolm_jax import runs

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to load.")
_SYSTEM = flags.DEFINE_string("system", "", "System prompt ('' = none).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 50, "0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "1 = off.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 256, "Most tokens per assistant turn.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (each turn uses seed + turn number).")
_TOOLS = flags.DEFINE_list("tools", ["calculator"], "Tools the model may call: calculator, search ('' = none).")
_SEARCH_SOURCE = flags.DEFINE_string(
    "search_source",
    "",
    "Documents for the search tool: a data source spec; '' = the "
    "run's own search_index/ (SFT runs) or else 'stdlib'.",
)
_COLOR = flags.DEFINE_enum("color", "auto", ["auto", "always", "never"], "Dim tool calls with ANSI codes.")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  try:
    if not _WORKDIR.value:
      raise ValueError("--workdir is required")
    sampling = engine_lib.SamplingParams(
        temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, max_new_tokens=_MAX_NEW.value
    ).validate()
    tools = chat_session.build_tools(_TOOLS.value, _SEARCH_SOURCE.value, _WORKDIR.value)
    run = runs.load_run(_WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  color = _COLOR.value == "always" or (_COLOR.value == "auto" and sys.stdout.isatty())
  eng = engine_lib.Engine(run.model, run.params, run.tokenizer, tools=tools, chunk_steps=4)
  session = chat_session.ChatSession(
      eng,
      run.tokenizer,
      sampling,
      system=chat_session.system_prompt(_SYSTEM.value, tools),
      seed=_SEED.value,
      color=color,
  )
  try:
    chat_session.repl(session, sys.stdin, interactive=sys.stdin.isatty())
  except KeyboardInterrupt:
    pass
  sys.stdout.write("\n" if sys.stdin.isatty() else "")


if __name__ == "__main__":
  app.run(main)
