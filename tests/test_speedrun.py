"""The speedrun chain at toy size: every stage end to end in one process, then a rerun that skips them all."""

import importlib
import json
import os

import pytest

import configs
from configs import crawl as crawl_configs
from configs import speedrun as speedrun_configs
from nanolm_jax import claims
from nanolm_jax import report_card
from nanolm_jax import runs
from nanolm_jax import speedrun

pytestmark = pytest.mark.slow

CONFIGS = speedrun.StageConfigs(
    stage=lambda name, preset: importlib.import_module(f"configs.{name}").get_config(preset),
    default=configs.default_config,
    crawl=crawl_configs.get_config,
    report=report_card.write_report,
)


def test_toy_chain_runs_every_stage_and_a_rerun_skips_them(tmp_path, capsys):
  cfg = speedrun_configs.get_config("toy")
  workdir = str(tmp_path / "sr")
  state = speedrun.Chain(cfg, workdir, CONFIGS).run()
  assert [s for s, v in state["stages"].items() if v["status"] == "done"] == list(speedrun_configs.STAGES)
  assert state["stages"]["crawl"]["kept"] > 0
  # The crawl's corpus is in the pretraining mix (and so in the tokenizer's training text).
  assert "files:" + os.path.join(workdir, "crawl") in runs.read_config(os.path.join(workdir, "pretrain")).data.sources
  for name in ("pretrain", "sft", "grpo", "reward_model", "rlhf"):
    assert runs.is_finished(os.path.join(workdir, name)), name
  # Each policy was evaluated on the same suite; the chat runs after SFT also on the SFT run's chat evaluation.
  for stage, run in speedrun.EVALUATES.items():
    results = json.load(open(os.path.join(workdir, state["stages"][stage]["eval"])))["results"]
    assert "blimp" in results and "arithmetic" in results, stage
    assert ("chat" in results) == (run != "pretrain"), stage
  # The chain is recorded where each stage starts from.
  assert runs.read_config(os.path.join(workdir, "grpo")).init_from == os.path.join(workdir, "sft")
  assert runs.read_config(os.path.join(workdir, "rlhf")).rlhf.policy_from == os.path.join(workdir, "sft")

  # The report card: every stage's column in report.json, report.md beside it.
  assert state["stages"]["report"]["report"] == "report.md"
  card = json.load(open(os.path.join(workdir, "report.json")))
  assert set(card["table"]) == {"pretrain", "sft", "grpo", "reward_model", "rlhf"}
  assert card["crawl"]["shards"] > 0 and (tmp_path / "sr" / "report.md").exists()
  assert "## The seed's claims, measured" in (tmp_path / "sr" / "report.md").read_text()
  assert set(state["stages"]["report"]["claims"]) == set(claims.READ_FROM_RUNS) | set(claims.COMPUTED)

  capsys.readouterr()
  again = speedrun.Chain(cfg, workdir, CONFIGS).run()
  out = capsys.readouterr().out
  assert out.count("skipped") == len(speedrun_configs.STAGES)
  assert again["stages"] == state["stages"]  # nothing re-ran: the same finish times and wall times


def test_bad_override_names_the_key(tmp_path):
  cfg = speedrun_configs.get_config("toy")
  cfg.sft.train.stepz = 3
  with pytest.raises(ValueError, match=r"sft\.train\.stepz"):
    speedrun.stage_config(cfg, "sft", str(tmp_path), CONFIGS)


def test_unknown_stage_is_an_error_before_any_work(tmp_path):
  cfg = speedrun_configs.get_config("toy")
  cfg.stages = "crawl,pretrian"
  with pytest.raises(ValueError, match="pretrian"):
    speedrun.Chain(cfg, str(tmp_path / "sr"), CONFIGS)
  assert not (tmp_path / "sr").exists()
