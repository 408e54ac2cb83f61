"""Chat CLI: piped stdin on a tiny trained run (replies equal the engine's, /reset, /quit), EOF, tool display."""

import io
import os
import re
import subprocess
import sys

import pytest

from nanolm_jax import chat_session as chat_cli
from nanolm_jax import chat
from nanolm_jax import engine as E
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax import runs
from nanolm_jax import tokenizer as tokenizer_lib
from nanolm_jax import trainer
from nanolm_jax.tools import calculator

from tests.conftest import REPO, make_config, tiny_overrides
from tests.test_engine import _Scripted

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

SAMPLING = E.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8)
SEED = 3


@pytest.fixture(scope="module")
def run_dir(small_corpus, small_tokenizer, tmp_path_factory):
  over = tiny_overrides(small_corpus, small_tokenizer)
  over.update({"train.steps": 2, "train.eval_every": 0, "train.checkpoint_every": 0, "sample.max_new_tokens": 2})
  workdir = str(tmp_path_factory.mktemp("chat_run") / "run")
  trainer.train(make_config("tiny", **over), workdir, pretraining.build(None))
  return workdir


def _reply(run, system, turns):
  """Reference: the greedy replies computed in-process, turn after turn, with the chat format and the engine."""
  tok = run.tokenizer
  eng = E.Engine(run.model, run.params, tok)
  msgs = [{"role": "system", "content": system}] if system else []
  out = []
  for turn, text in enumerate(turns):
    msgs.append({"role": "user", "content": text})
    # Conversation history as tokens: what the CLI keeps (the model's exact reply tokens).
    comp = eng.generate(
        [history_tokens(msgs, out, tok)], SAMPLING, seed=SEED + turn, stop_tokens=chat.stop_tokens(tok)
    )[0]
    out.append(comp.tokens)
  return [tok.decode(r, skip_special=True) for r in out]  # the CLI prints no role / end markers


def history_tokens(msgs, replies, tok):
  prefix = chat.render_for_completion(msgs[:1] + [{"role": "user", "content": "x"}], tok)
  sys_len = len(prefix) - len(chat.render_for_completion([{"role": "user", "content": "x"}], tok)) + 1
  ids = prefix[:sys_len] if msgs[0]["role"] == "system" else [tok.bos_id]
  users = [m for m in msgs if m["role"] == "user"]
  for i, u in enumerate(users):
    ids += chat.render_for_completion([u], tok)[1:]
    if i < len(replies):
      r = list(replies[i])
      ids += r if r and r[-1] == tok.special_id("end") else r + [tok.special_id("end")]
  return ids


def test_piped_session_streams_replies_and_handles_commands(run_dir):
  stdin = "Hello there\n\n/bogus\nWhat is a list?\n/reset\nHello there\n/quit\nnever answered\n"
  p = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.chat",
          f"--workdir={run_dir}",
          "--system=Be terse.",
          "--temperature=1",
          "--top_k=0",
          "--top_p=1",
          f"--seed={SEED}",
          "--max_new_tokens=8",
          "--color=never",
      ],
      input=stdin,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ, "XLA_FLAGS": ""},
  )
  assert p.returncode == 0, p.stderr
  run = runs.load_run(run_dir)
  first, second = _reply(run, "Be terse.", ["Hello there", "What is a list?"])
  after_reset = _reply(run, "Be terse.", ["Hello there"])[0]
  assert "unknown command /bogus; commands: /reset, /quit" in p.stdout
  want = [first, "unknown command /bogus; commands: /reset, /quit", second, "(conversation reset)", after_reset]
  # Invalid UTF-8 bytes from this barely trained model render as one U+FFFD when streamed token by token and as
  # one per byte when decoded at once: compare with runs of them collapsed.
  fffd = lambda s: re.sub("\ufffd+", "\ufffd", s)
  assert fffd("\n".join(want) + "\n") == fffd(p.stdout), (p.stdout, want)
  assert after_reset == first  # /reset really forgot the conversation


def test_missing_run_is_an_error(tmp_path):
  p = subprocess.run(
      [sys.executable, "-m", "experiments.chat", f"--workdir={tmp_path}/nope"],
      input="",
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert p.returncode != 0 and "does not exist" in p.stderr


def _session(tok, script, color):
  out = io.StringIO()
  fake = _Scripted(script, tok.vocab_size)
  eng = E.Engine(fake, {}, tok, tools=[calculator.Calculator()], chunk_steps=2)
  return chat_cli.ChatSession(eng, tok, E.SamplingParams(max_new_tokens=40), out=out, color=color), out


def test_tool_calls_and_results_are_shown_dimmed(small_tokenizer):
  tok = tokenizer_lib.SentencePieceTokenizer.load(small_tokenizer)
  sp = tok.special_id
  prompt = chat.render_for_completion([{"role": "user", "content": "What is 6*7?"}], tok)
  result_len = len(tok.encode("42")) + 2
  script = (
      prompt
      + tok.encode("Let me see.")
      + [sp("tool_call_start")]
      + tok.encode("calculator: 6*7")
      + [sp("tool_call_end")]
      + [5] * result_len
      + tok.encode("It is 42.")
      + [sp("end")]
  )
  session, out = _session(tok, script, color=False)
  chat_cli.repl(session, io.StringIO("What is 6*7?\n"), interactive=False)  # ends at EOF
  assert out.getvalue() == "Let me see.\n[tool call: calculator: 6*7]\n[tool result: 42]\nIt is 42.\n"
  session, out = _session(tok, script, color=True)
  session.ask("What is 6*7?")
  shown = out.getvalue()
  assert f"{chat_cli.DIM}\n[tool call: {chat_cli.RESET}" in shown and f"{chat_cli.DIM}\n[tool result: " in shown
  assert shown.replace(chat_cli.DIM, "").replace(chat_cli.RESET, "") == (
      "Let me see.\n[tool call: calculator: 6*7]\n[tool result: 42]\nIt is 42.\n"
  )
  assert f"{chat_cli.DIM}It" not in shown  # the model's own answer is not dimmed


def test_search_uses_the_runs_own_index_and_is_declared(tmp_path):
  from nanolm_jax.synthetic import search_data

  index = tmp_path / "search_index"
  search_data.write_index(
      str(index), [{"id": "p0", "title": "Dena Priato", "text": "Dena Priato. Birthplace: Brelsmere."}]
  )
  (tool,) = chat_cli.build_tools(["search"], "", str(tmp_path))
  assert tool.fuzzy and "Brelsmere" in tool("Dena Priatto birthplace")  # typo-tolerant, over the run's index
  assert chat_cli.system_prompt("", [tool]) == search_data.SYSTEM_PROMPTS[0]
  assert chat_cli.system_prompt("Be terse.", [tool]) == "Be terse.\n" + search_data.SYSTEM_PROMPTS[0]
  (calc,) = chat_cli.build_tools(["calculator"], "", str(tmp_path))
  assert chat_cli.system_prompt("Be terse.", [calc]) == "Be terse."
