"""The report card reads a chain folder's files into the right cells (hand-made folders with known numbers), shows
"—" for what is missing, and answers its prompts with each stage's model as a plain greedy decode does."""

import gzip
import json
import os
import shutil

import pytest

from nanolm_jax import report_card
from nanolm_jax.report import card
from nanolm_jax.report import collect
from nanolm_jax.report import render

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # a file to copy, not to look at


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  with open(path, mode) as f:
    f.write(data if isinstance(data, (bytes, str)) else json.dumps(data))


def _rows(path, rows, torn_tail=False):
  text = "".join(json.dumps(r) + "\n" for r in rows) + ('{"step": 99, "val_b' if torn_tail else "")
  _write(path, text)


def _config(stage, init_from=""):
  return {
      "stage": stage,
      "init_from": init_from,
      "model": {"style": "gpt2", "num_layers": 2, "num_heads": 2, "d_model": 64, "vocab_size": 512, "max_len": 128},
      "train": {"steps": 100, "batch_size": 8, "seq_len": 64},
      "data": {"sources": "stdlib"},
  }


@pytest.fixture
def speedrun_dir(tmp_path, small_tokenizer):
  """pretrain (metrics rows + an experiments.evaluate file), sft (eval.json), crawl; grpo stopped, no rlhf."""
  root = tmp_path / "speedrun"
  _write(
      str(root / "speedrun.json"),
      {
          "preset": "tiny",
          "started": "2026-12-03T10:00:00Z",
          "stages": {
              "crawl": {"status": "done", "wall_s": 12.5, "run": "crawl"},
              "pretrain": {"status": "done", "wall_s": 600.0, "run": "pretrain"},
              "sft": {"status": "done", "wall_s": 300.0, "run": "sft"},
              "eval_sft": {"status": "done", "wall_s": 7.0, "run": "sft"},
              "grpo": {"status": "failed", "wall_s": 5.0, "run": None},
          },
      },
  )
  pt = root / "pretrain"
  _write(str(pt / "config.json"), _config("pretrain"))
  shutil.copyfile(small_tokenizer, pt / "tokenizer.model")
  _rows(
      str(pt / "metrics.jsonl"),
      [
          {"step": 0, "val_bpb": 3.5},
          {"step": 50, "loss": 4.0},
          {"step": 100, "loss": 3.0, "val_bpb": 2.5},
          {"step": 100, "val_bpb": 2.25},  # experiments.evaluate logs the step again
      ],
      torn_tail=True,
  )
  _write(
      str(pt / "eval" / "100.json"),
      {
          "step": 100,
          "results": {
              "blimp": {"accuracy": 0.5, "examples": 100, "centered": 0.0},
              "core": {"centered": 0.125, "tasks": 6},
              "gsm8k": {"accuracy": 0.0, "examples": 20},
          },
      },
  )
  _write(str(pt / "eval" / "5.json"), {"step": 5, "results": {"blimp": {"accuracy": 0.9, "examples": 10}}})
  _write(str(pt / "loss.png"), PNG)
  sft = root / "sft"
  _write(str(sft / "config.json"), _config("sft", init_from=str(pt)))
  _write(
      str(sft / "eval.json"),
      {
          "identity_accuracy": 0.7,
          "identity_accuracy_n": 100,
          "identity_accuracy_ci": [0.6, 0.8],
          "known_fact_hallucination_rate": 0.25,
          "known_fact_hallucination_rate_n": 40,
      },
  )
  _rows(str(sft / "metrics.jsonl"), [{"step": 10, "val_bpb": 1.0, "identity_accuracy": 0.1}])
  crawl = root / "crawl" / "out"
  _write(
      str(crawl / "report.json"),
      {
          "input_records": 10,
          "kept": 6,
          "dropped": 3,
          "errored": 1,
          "chars_kept": 600,
          "stages": [
              {
                  "name": "read",
                  "docs_in": 10,
                  "docs_out": 9,
                  "chars_in": 0,
                  "chars_out": 900,
                  "dropped": {},
                  "errored": {"read:error": 1},
              },
              {
                  "name": "quality",
                  "docs_in": 9,
                  "docs_out": 6,
                  "chars_in": 900,
                  "chars_out": 600,
                  "dropped": {"short": 3},
                  "errored": {},
              },
          ],
      },
  )
  _write(str(crawl / "funnel.png"), PNG)
  with gzip.open(crawl / "crawl-00000-of-00001.jsonl.gz", "wt") as f:
    f.write(json.dumps({"id": "a", "text": "hello world " * 20, "url": "", "metadata": {}}) + "\n")
  os.makedirs(crawl / "_work")  # the runner's intermediate files are not the corpus
  with gzip.open(crawl / "_work" / "crawl-00000-of-00001.jsonl.gz", "wt") as f:
    f.write(json.dumps({"id": "b", "text": "intermediate"}) + "\n")
  return str(root)


def _table_row(md: str, label: str) -> list[str]:
  line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
  return [c.strip() for c in line.strip("|").split("|")][1:]


def test_cells_hold_the_files_numbers(speedrun_dir, tmp_path):
  report = card.build(speedrun_dir, samples=False)
  md_path, json_path = card.write(report, os.path.join(speedrun_dir, "report.md"))
  md = open(md_path, encoding="utf-8").read()
  # columns: BASE, SFT, GRPO, RLHF (no reward model or DPO run in this chain)
  assert "| metric | BASE | SFT | GRPO | RLHF |" in md
  assert _table_row(md, "val bpb (own corpus; lower is better)") == ["2.250", "1.000", "—", "—"]
  # the newest evaluate file (step 100, not 5) wins; the Wilson interval of 50/100 is [0.404, 0.596]
  assert _table_row(md, "BLiMP accuracy")[0] == "0.500 [0.40, 0.60] n=100"
  assert _table_row(md, "CORE-style mean centered accuracy")[0] == "0.125"
  assert _table_row(md, "GSM8K")[0] == "0.000 [0.00, 0.16] n=20"  # Wilson upper bound of 0/20: 3.84 / 23.84
  # eval.json (with its own interval) overrides the metrics.jsonl row
  assert _table_row(md, "identity") == ["—", "0.700 [0.60, 0.80] n=100", "—", "—"]
  # n without an interval: the Wilson interval of 10/40
  lo, hi = report["table"]["sft"]["known_fact_hallucination_rate"]["ci"]
  assert (lo, hi) == pytest.approx((0.1419, 0.4019), abs=5e-4)
  assert all(c == "—" for c in _table_row(md, "proxy reward"))
  assert report["stages"]["pretrain"]["val_curve"] == [[0, 3.5], [100, 2.25]]  # the torn last line is skipped
  # the speedrun's own wall times and statuses, the crawl funnel, the tokenizer on the crawl's text
  assert "| grpo | failed | 5 s | `—` |" in md and "| pretrain | done | 10.0 min |" in md
  assert "| eval_sft | done | 7 s | `sft` |" in md
  assert "| **total** | | 15.4 min |" in md  # 12.5 + 600 + 300 + 7 + 5 s
  assert "| quality | 9 | 6 | 3 | 0 | 66.7 | 600 |" in md
  assert report["tokenizer"]["text"] == "1 crawl documents"
  assert report["tokenizer"]["bytes_per_token"] > 1.0
  # plots copied next to the report and embedded
  for name in ("crawl_funnel.png", "pretrain_loss.png"):
    assert os.path.exists(os.path.join(speedrun_dir, name)) and f"]({name})" in md
  # report.json round-trips: what was written is what build returned
  assert json.load(open(json_path, encoding="utf-8")) == json.loads(json.dumps(report))


def test_empty_folder_still_gets_a_report(tmp_path):
  md_path = report_card.write_report(str(tmp_path), samples=False, out=str(tmp_path / "out" / "report.md"))
  md = open(md_path, encoding="utf-8").read()
  report = json.load(open(tmp_path / "out" / card.REPORT_JSON, encoding="utf-8"))
  assert report["stages"] == {} and report["tokenizer"] is None
  assert all(c == "—" for c in _table_row(md, "identity"))
  assert "no crawl report" in md


def test_runs_folder_layout_and_the_base_run_found_through_init_from(tmp_path):
  """A runs/ folder of default names; the SFT run's relative init_from names a pretraining run beside the chain."""
  chain = tmp_path / "chain"
  _write(str(tmp_path / "elsewhere" / "pt" / "config.json"), _config("pretrain"))
  _write(str(chain / "runs" / "sft_tiny" / "config.json"), _config("sft", init_from="elsewhere/pt"))
  _write(str(chain / "runs" / "rlhf_tiny" / "config.json"), _config("rlhf") | {"rlhf": {"method": "rl"}})
  _rows(
      str(chain / "runs" / "rlhf_tiny" / "metrics.jsonl"),
      [
          {"step": 0, "proxy_reward": -0.5, "gold_reward": 0.25, "kl": 0.0},
          {"step": 1, "loss": 1.0},
          {"step": 10, "proxy_reward": 1.5, "gold_reward": 0.125, "kl": 4.0},
      ],
  )
  _write(str(chain / "runs" / "dpo_tiny" / "config.json"), _config("rlhf") | {"rlhf": {"method": "dpo"}})
  _write(str(chain / "runs" / "reward_model_tiny" / "config.json"), _config("reward_model"))
  _write(str(chain / "runs" / "reward_model_tiny" / "eval.json"), {"rm_accuracy": 0.75, "rm_n": 8})
  found = collect.find_runs(str(chain), None)
  assert found["pretrain"] == os.path.join(str(tmp_path), "elsewhere/pt")
  assert list(found) == ["pretrain", "sft", "reward_model", "rlhf", "dpo"]
  report = card.build(str(chain), samples=False)
  table = report["table"]
  assert table["rlhf"]["proxy_reward"]["value"] == 1.5 and table["rlhf"]["proxy_reward_start"]["value"] == -0.5
  assert table["rlhf"]["gold_reward"]["value"] == 0.125 and table["rlhf"]["kl"]["value"] == 4.0
  assert table["reward_model"]["rm_accuracy"]["n"] == 8
  md = render.markdown(report)
  assert "| metric | BASE | SFT | GRPO | RLHF | RM | DPO |" in md
  # a single run folder as the workdir is that one stage
  assert list(collect.find_runs(str(chain / "runs" / "rlhf_tiny"), None)) == ["rlhf"]
  assert _table_row(md, "gold reward") == ["—", "—", "—", "0.125", "—", "—"]


def test_samples_are_the_greedy_decode_of_each_stage(one_step_run, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top

  from nanolm_jax import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from nanolm_jax import runs  # pylint: disable=g-import-not-at-top
  from nanolm_jax.report import samples  # pylint: disable=g-import-not-at-top

  os.symlink(one_step_run, tmp_path / "pretrain")
  report = card.build(str(tmp_path), samples=True)
  got = report["samples"]["pretrain"]
  assert [r["prompt"] for r in got] == list(samples.PROMPTS)
  run = runs.load_run(one_step_run)
  ids = run.tokenizer.encode(f"Question: {samples.PROMPTS[0]}\nAnswer:", bos=True)
  sampling = engine_lib.SamplingParams(temperature=0.0, max_new_tokens=samples.MAX_NEW_TOKENS)
  tokens = engine_lib.generate(run.model, run.params, [ids], sampling, jax.random.PRNGKey(1), run.tokenizer.eos_id)[0]
  want = run.tokenizer.decode(tokens).split("\n")[0].strip()
  assert got[0]["reply"] == want
  md = render.markdown(report)
  assert f"- **{samples.PROMPTS[0]}** →" in md
