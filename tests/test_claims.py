"""Claims read off hand-made run folders: the verdicts follow the 95 % intervals, the numbers are the files'."""

import dataclasses
import json

import pytest

from nanolm_jax import claims
from nanolm_jax import claims_vocab


def _run(root, name, stage, cfg=None, eval_json=None, rows=()):
  d = root / name
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps({"stage": stage, **(cfg or {})}))
  (d / "checkpoints").mkdir()
  if eval_json is not None:
    (d / "eval.json").write_text(json.dumps(eval_json))
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return d


def _rates(**values):
  out = {}
  for k, (v, n) in values.items():
    out |= {k: v, f"{k}_n": n}  # no _ci: the claims recompute Wilson intervals from n
  return out


def _chain(tmp_path, hall_probe=0.02, hall_ctl=0.6, n=100, grpo_acc=(0.2, 0.3, 0.5), gold=(0.2, 0.4, 0.1)):
  sft = _rates(
      unknown_fact_idk_rate=(0.9, n),
      unknown_fact_hallucination_rate=(hall_probe, n),
      known_fact_accuracy=(0.4, n),
      search_success_rate=(0.3, n),
      search_no_tool_accuracy=(0.25, n),
      arithmetic_accuracy_answer_last=(0.4, n),
      arithmetic_accuracy_answer_first=(0.1, n),
  )
  sft["no_probe"] = _rates(
      unknown_fact_idk_rate=(0.1, n), unknown_fact_hallucination_rate=(hall_ctl, n), known_fact_accuracy=(0.5, n)
  )
  _run(tmp_path, "sft_tiny", "sft", eval_json=sft)
  rows = [{"step": 10 * i, "eval_accuracy": a, "eval_kl": float(i)} for i, a in enumerate(grpo_acc)]
  _run(tmp_path, "grpo_tiny", "grpo", cfg={"eval": {"num_problems": 100, "samples": 2}}, rows=rows)
  rows = [{"step": i, "kl": float(i), "proxy_reward": float(i), "gold_reward": g} for i, g in enumerate(gold)]
  _run(tmp_path, "rlhf_tiny", "rlhf", rows=rows)
  return str(tmp_path)


def test_verdicts_follow_the_intervals(tmp_path):
  by = {c.name: c for c in claims.measure(_chain(tmp_path), str(tmp_path / "out"), compute=False)}
  assert by["hallucination"].shows is True
  assert by["hallucination"].numbers["no_probe"]["unknown_fact_hallucination_rate"]["value"] == 0.6
  lo, hi = claims.wilson(0.02, 100)
  assert by["hallucination"].numbers["probe"]["unknown_fact_hallucination_rate"]["ci"] == [lo, hi]
  assert by["tools"].shows is False  # 0.30 vs 0.25 at n = 100: the intervals overlap
  assert by["computation_per_token"].shows is True
  assert by["verifiable_rl"].shows is True and by["verifiable_rl"].numbers["end"]["n"] == 200
  assert by["rlhf_overoptimisation"].shows is True and by["rlhf_overoptimisation"].numbers["gold_peak"] == 0.4
  saved = json.load(open(tmp_path / "out" / claims.CLAIMS_FILE))
  assert [c["name"] for c in saved] == list(claims.READ_FROM_RUNS)
  for c in saved:
    assert (tmp_path / "out" / c["plot"]).exists()


def test_a_turn_down_and_a_monotone_gold_are_not_shown(tmp_path):
  chain = _chain(tmp_path, grpo_acc=(0.2, 0.6, 0.2), gold=(0.1, 0.2, 0.3))
  by = {
      c.name: c for c in claims.measure(chain, str(tmp_path / "out"), only=["verifiable_rl", "rlhf_overoptimisation"])
  }
  assert by["verifiable_rl"].shows is False and "fell from its best" in by["verifiable_rl"].sentence
  assert by["rlhf_overoptimisation"].shows is False


def test_missing_runs_are_not_measured_and_bad_names_are_errors(tmp_path):
  by = {c.name: c for c in claims.measure(str(tmp_path), str(tmp_path / "out"))}
  assert set(by) == set(claims.READ_FROM_RUNS) | set(claims.COMPUTED)
  assert all(c.shows is None and c.plot is None for c in by.values())
  with pytest.raises(ValueError, match="halucination"):
    claims.measure(str(tmp_path), only=["halucination"])


def test_equal_flop_steps_spend_the_reference_budget():
  from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top

  from nanolm_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  cfg = pretrain_configs.get_config("tiny")
  steps = claims_vocab.equal_flop_steps(cfg, (1024, 4096, 16384), 100)
  assert steps[4096] == 100  # the config's own vocabulary: the reference itself
  mc = model_lib.ModelConfig.from_config(cfg.model)
  per_token = {v: model_lib.flops_per_token(dataclasses.replace(mc, vocab_size=v), cfg.train.seq_len) for v in steps}
  for v, n in steps.items():  # each within one step of the reference's FLOPs
    assert abs(n * per_token[v] - 100 * per_token[4096]) <= per_token[v]
  assert steps[1024] > steps[4096] > steps[16384]


@pytest.mark.slow
def test_vocab_claim_trains_one_run_per_size_and_reads_bytes_per_token(small_corpus, small_tokenizer, tmp_path):
  from tests.conftest import make_config, tiny_overrides  # pylint: disable=g-import-not-at-top

  cfg = make_config("tiny", **tiny_overrides(small_corpus, small_tokenizer))
  claim = claims_vocab.measure(
      cfg, str(tmp_path / "runs"), str(tmp_path), sizes=(claims_vocab.BYTES_VOCAB, 512), ref_steps=2
  )
  small, big = claim.numbers[str(claims_vocab.BYTES_VOCAB)], claim.numbers["512"]
  assert big["bytes_per_token"] > small["bytes_per_token"] > 1.0 and claim.shows is True
  assert small["steps"] >= big["steps"] == 2 and small["val_bpb"] > 0
  assert (tmp_path / claim.plot).exists()
