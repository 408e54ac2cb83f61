"""SFT stage end to end on a tiny model: probe, answer-first data, training from a run, eval.json, the control."""

import json
import math
import os

import pytest

from configs import sft as sft_configs
from nanolm_jax import metrics as metrics_lib
from nanolm_jax.stages import pretrain as pretraining
from nanolm_jax.stages import base
from nanolm_jax.stages import sft
from nanolm_jax import trainer
from nanolm_jax.posttrain import chat_eval
from nanolm_jax.data import conversations
from nanolm_jax.synthetic import facts
from tests.conftest import make_config

# End-to-end runs / subprocess CLIs: left out of the inner loop (pytest -m "not slow"), always in CI.
pytestmark = pytest.mark.slow

WORLD = "facts:seed=0,num_known=12,num_unknown=12,num_index_only=6,repeats=2,num_extras=10,num_qa=6,qa_repeats=2"


@pytest.fixture(scope="module")
def base_run(small_corpus, small_tokenizer, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("base"))
  cfg = make_config(
      "tiny",
      **{
          "model.vocab_size": 512,
          "model.num_layers": 2,
          "model.d_model": 64,
          "model.max_len": 256,
          "train.seq_len": 128,
          "train.batch_size": 8,
          "train.steps": 30,
          "optim.warmup_steps": 0,
          "train.eval_every": 0,
          "train.log_every": 2,
          "train.checkpoint_every": 30,
          "train.async_checkpointing": False,
          "data.sources": f"{small_corpus};{WORLD}",
          "tokenizer.path": small_tokenizer,
          "sample.max_new_tokens": 2,
      },
  )
  trainer.train(cfg, d, pretraining.build(None))
  return d


def _sft_config(base_run):
  s = sft_configs.get_config()
  s.init_from = base_run
  s.train.update(
      steps=4,
      batch_size=8,
      seq_len=128,
      eval_every=2,
      eval_batches=1,
      checkpoint_every=4,
      log_every=2,
      async_checkpointing=False,
  )
  s.sft.counts.update(identity=8, system_prompts=8, reasoning=8, facts=0, search=8)
  s.sft.world.update(num_known=12, num_unknown=12, num_index_only=6, repeats=2, num_extras=10, num_qa=6, qa_repeats=2)
  s.sft.search.update(train_people=20, outside_people=5)
  s.sft.answer_first_count = 8
  s.probe.samples = 2
  s.ablation.steps = 2
  s.eval.update(identity=3, facts_per_group=3, arithmetic=2, search=2, max_new_tokens=8)
  return s


def test_sft_run_writes_eval_and_control(base_run, tmp_path):
  out = base.run(sft.STAGE, _sft_config(base_run), str(tmp_path))
  ev = json.load(open(tmp_path / "eval.json"))
  for k in (
      "identity_accuracy",
      "known_fact_accuracy",
      "unknown_fact_hallucination_rate",
      "unknown_fact_idk_rate",
      "search_success_rate",
      "arithmetic_accuracy_answer_last",
      "arithmetic_accuracy_answer_first",
  ):
    assert 0.0 <= ev[k] <= 1.0, k
    assert k in ev["no_probe"]
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert "identity_accuracy" in rows[-1] and rows[-1]["step"] == 4
  assert any("val_loss" in r for r in rows)
  # The probe labelled every SFT-part person once per attribute (known -> answer, unknown -> I don't know).
  stats = json.load(open(tmp_path / "probe_stats.json"))
  assert stats["questions"] == (6 + 6) * 5 and stats["known"] + stats["idk"] + stats["skipped"] == stats["questions"]
  # ... and its judgements against the truth (pretrained = the world's known people), group by group.
  conf = stats["confusion"]
  assert conf["pretrained"]["questions"] == conf["never_pretrained"]["questions"] == 6 * 5
  assert sum(g["judged_known"] for g in conf.values()) == stats["known"]
  assert sum(g["judged_idk"] for g in conf.values()) == stats["idk"]
  # Every rate with its n and interval, in eval.json and in the control's column.
  assert ev["identity_accuracy_n"] == 3 and ev["unknown_fact_other_rate_n"] == 3
  assert ev["no_probe"]["known_fact_accuracy_n"] == 3 and len(ev["no_probe"]["known_fact_accuracy_ci"]) == 2
  for group in ("unknown_fact_idk_rate", "unknown_fact_hallucination_rate", "unknown_fact_other_rate"):
    assert 0.0 <= ev[group] <= 1.0
  assert ev["unknown_fact_idk_rate"] + ev["unknown_fact_hallucination_rate"] + ev[
      "unknown_fact_other_rate"
  ] == pytest.approx(1.0)
  probe = conversations.load_jsonl([str(tmp_path / "sft_data" / "probe.jsonl")])
  assert len(probe) == stats["known"] + stats["idk"]
  first = conversations.load_jsonl([str(tmp_path / "sft_data" / "answer_first.jsonl")])
  assert all(c[0]["content"] == chat_eval.ANSWER_FIRST_SYSTEM and "answer is" in c[-1]["content"] for c in first)
  # The control trained on the same data with the probe's questions answered from the truth for everyone.
  ab_cfg = json.load(open(tmp_path / "ablation_no_probe" / "config.json"))
  assert "probe.jsonl" not in ab_cfg["sft"]["sources"] and "answer_first" in ab_cfg["sft"]["sources"]
  assert (
      "oracle.jsonl" in ab_cfg["sft"]["sources"]
      and "oracle.jsonl" not in json.load(open(tmp_path / "config.json"))["sft"]["sources"]
  )
  oracle = conversations.load_jsonl([str(tmp_path / "sft_data" / "oracle.jsonl")])
  world = facts.world_from_config(_sft_config(base_run).sft.world)
  index = facts.question_index(world)
  assert len(oracle) == stats["questions"]
  asked = {c[0]["content"] for c in probe}
  assert asked <= {c[0]["content"] for c in oracle}  # the same questions ...
  for c in oracle:  # ... every one answered with the true fact, "I don't know" never
    e, a = index[c[0]["content"]]
    assert facts.answers_match(c[1]["content"], e.attributes[a])
  assert out["no_probe"]["step"] == 2
  # The starting run's weights, not a fresh init (whose near-uniform predictions cost log(vocab) nats a token).
  assert rows[0]["step"] == 0 and rows[0]["val_loss"] < math.log(512) - 0.5
  assert os.path.exists(tmp_path / "tokenizer.model")


def test_missing_init_run_is_named(tmp_path):
  s = sft_configs.get_config()
  s.init_from = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope"):
    base.prepare_config(sft.STAGE, s, str(tmp_path / "run"))
