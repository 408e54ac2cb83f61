"""The overoptimisation report on hand-made run folders: the fits are Gao's forms of the logged points' gains, the
plot and the JSON are written, curves too short to fit are drawn without one, a missing run is named."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nanolm_jax.posttrain import best_of_n
from nanolm_jax.posttrain import rlhf_report
from tests.conftest import REPO


def _write(folder, rows):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (folder / "config.json").write_text("{}")
  return str(folder)


def _rl_rows(alpha=0.3, beta=0.2, start=0.1):
  """Eval rows whose gold gain is exactly R_RL(d) = d (α − β log d), a training row between (ignored)."""
  kl = np.array([0.0, 0.5, 2.0, 6.0, 12.0, 25.0])
  d = np.sqrt(kl)
  gold = start + np.where(d > 0, d * (alpha - beta * np.log(np.where(d > 0, d, 1.0))), 0.0)
  rows = [
      {"step": 10 * i, "proxy_reward": float(0.5 * di), "gold_reward": float(g), "kl": float(k)}
      for i, (k, di, g) in enumerate(zip(kl, d, gold))
  ]
  return rows[:2] + [{"step": 11, "loss": 0.5, "kl": 9.0}] + rows[2:]


def _bon_rows(alpha=0.4, beta=0.1, start=0.2):
  n = np.arange(1, 9)
  d = np.sqrt(best_of_n.bon_kl(n))
  return [
      {"step": 50, "bon_n": int(k), "bon_gold": float(start + di * (alpha - beta * di)), "bon_proxy": float(di),
       "bon_kl": float(di**2)}
      for k, di in zip(n, d)
  ]  # fmt: skip


def test_report_fits_gao_forms_to_the_gains_and_writes_plot_and_json(tmp_path):
  rl = _write(tmp_path / "rl", _rl_rows() + _bon_rows())
  dpo = _write(tmp_path / "dpo", _rl_rows(alpha=0.1, beta=0.05)[:3])
  grpo = _write(tmp_path / "grpo", [{"step": s, "eval_accuracy": a, "eval_kl": k} for s, a, k in
                                    [(0, 0.2, 0.0), (10, 0.3, 1.0), (20, 0.35, 4.0), (30, 0.4, 9.0)]])  # fmt: skip
  out = rlhf_report.write_report([rl], [dpo], grpo, out=str(tmp_path / "report" / "curves.png"))
  fits = {(e["route"], e["reward"]): e for e in out["fits"]}
  assert set(fits) == {("rl", "gold"), ("rl", "proxy"), ("bon", "gold"), ("bon", "proxy"), ("grpo", "accuracy")}
  assert (fits["rl", "gold"]["alpha"], fits["rl", "gold"]["beta"]) == pytest.approx((0.3, 0.2))
  assert fits["rl", "gold"]["start"] == pytest.approx(0.1) and fits["rl", "gold"]["points"] == 5
  assert fits["rl", "gold"]["peak_d"] == pytest.approx(np.exp(0.3 / 0.2 - 1))
  assert (fits["bon", "gold"]["alpha"], fits["bon", "gold"]["beta"]) == pytest.approx((0.4, 0.1))
  assert fits["bon", "gold"]["peak_d"] == pytest.approx(2.0)
  assert (fits["rl", "proxy"]["alpha"], fits["rl", "proxy"]["beta"]) == pytest.approx((0.5, 0.0), abs=1e-9)
  assert (tmp_path / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  saved = json.loads((tmp_path / "report" / rlhf_report.FITS_FILE).read_text())
  assert saved["fits"] == json.loads(json.dumps(out["fits"])) and saved["grpo_run"] == grpo
  assert "α=0.300 β=0.200 R²=1.00 peak d=1.65" in rlhf_report.describe(fits["rl", "gold"])


def test_a_curve_too_short_to_fit_is_drawn_without_one(tmp_path):
  rl = _write(tmp_path / "rl", _rl_rows()[:2])  # the start and one point: d > 0 once
  out = rlhf_report.write_report([rl])
  assert out["fits"] == [] and out["plot"] == str(tmp_path / "rl" / rlhf_report.PLOT_FILE)
  assert (tmp_path / "rl" / rlhf_report.PLOT_FILE).exists()


def test_cli_names_a_missing_run_and_with_no_flags_reads_the_default_runs_there_are(tmp_path):
  missing = str(tmp_path / "nowhere")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.rlhf_report", f"--rl_runs={missing}"],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode != 0 and f"no run folder at {missing}" in proc.stderr
  # No flags, from a folder holding the default RL and DPO runs (no GRPO run): both drawn, panel (c) left out.
  _write(tmp_path / "runs" / "rlhf_tiny", _rl_rows() + _bon_rows())
  _write(tmp_path / "runs" / "rlhf_dpo", _rl_rows(alpha=0.1, beta=0.05)[:3])
  env = {**os.environ, "PYTHONPATH": REPO}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.rlhf_report"],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  saved = json.loads((tmp_path / "runs" / "rlhf_tiny" / rlhf_report.FITS_FILE).read_text())
  assert saved["dpo_runs"] == [os.path.join("runs", "rlhf_dpo")] and saved["grpo_run"] is None
