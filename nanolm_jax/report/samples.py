"""The same few prompts answered greedily by each stage's model, so a reader sees what each stage changed.

A base (pretraining) run continues "Question: ...\\nAnswer:" as text; a chat run answers the question as a user turn.
Reward-model runs have no language-model head and are skipped.
"""

from __future__ import annotations

from typing import Any, Sequence

from nanolm_jax import chat
from nanolm_jax import engine as engine_lib
from nanolm_jax import runs

PROMPTS = (
    "What is your name?",
    "What is 17 plus 25?",
    "Where was Tanias Vorwena born?",
    "Who is the president of the moon?",
    "Write one sentence about the sea.",
)
MAX_NEW_TOKENS = 32


def _reply(tokens: Sequence[int], tok: Any) -> str:
  msgs = chat.parse_completion(tokens, tok)
  texts = [m.get("content") or "" for m in msgs if m["role"] == "assistant"]
  calls = [m for m in msgs if m.get("tool_calls")]
  return (texts[-1] if texts else "") or (str(calls[-1]["tool_calls"]) if calls else "")


def answer(run_dir: str, prompts: Sequence[str] = PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict]:
  """[{'prompt', 'reply'}] from the run's model (greedy; one batch). ValueError for runs that cannot generate."""
  run = runs.load_run(run_dir)
  tok = run.tokenizer
  is_chat = run.cfg.get("stage") not in (None, "pretrain")
  eng = engine_lib.Engine(run.model, run.params, tok)
  sampling = engine_lib.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
  if is_chat:
    ids = [chat.render_for_completion([{"role": "user", "content": p}], tok) for p in prompts]
    comps = eng.generate(ids, sampling, stop_tokens=chat.stop_tokens(tok), truncate_prompt=True)
    replies = [_reply(c.tokens, tok) for c in comps]
  else:
    ids = [tok.encode(f"Question: {p}\nAnswer:", bos=True) for p in prompts]
    comps = eng.generate(ids, sampling, stop_strings=("\n",), stop_tokens=(tok.eos_id,), truncate_prompt=True)
    replies = [c.text.strip() for c in comps]
  return [{"prompt": p, "reply": r, "format": "chat" if is_chat else "text"} for p, r in zip(prompts, replies)]


def all_stages(stage_runs: dict[str, str], prompts: Sequence[str] = PROMPTS) -> dict[str, Any]:
  """{stage: [{'prompt', 'reply'}] or {'error': message}} for every stage run that can generate."""
  out: dict[str, Any] = {}
  for stage, run_dir in stage_runs.items():
    if stage == "reward_model":
      continue
    try:
      out[stage] = answer(run_dir, prompts)
    except (ValueError, FileNotFoundError, KeyError) as e:  # a half-written run: the report says why, and goes on
      out[stage] = {"error": f"{type(e).__name__}: {e}"}
  return out
