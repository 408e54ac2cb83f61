"""The overoptimisation report (issue 15): rlhf_curves.png and rlhf_fits.json from RLHF, DPO and GRPO run folders.

Every point's x is d = sqrt(KL(π ‖ π_init)) in sqrt-nats: an RLHF or DPO run's eval rows (proxy_reward, gold_reward,
kl), the best-of-n rows of the starting policy (bon_n, bon_gold, bon_proxy, bon_kl = log n − (n − 1)/n) and a GRPO
run's eval rows (eval_accuracy, eval_kl). Panels: (a) gold reward vs d — RL points with the fitted R_RL, best-of-n
points with the fitted R_bon, DPO points; (b) the proxy's, the same way; (c) when a GRPO run is given, its held-out
accuracy vs its own d, the verifiable-reward contrast (a verifier cannot be over-optimised: no turn-down expected).

The fits (posttrain.overoptimization) are of each curve's gain over its own start (the KL = 0 point: an RL run's
step 0, best-of-1); a curve with too few points is drawn without one. rlhf_fits.json lists each fit (route, reward,
run, α, β, R², peak d, KL and reward gain) and the points it was fitted on.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging
from matplotlib import figure

from nanolm_jax import fs
from nanolm_jax import metrics as metrics_lib
from nanolm_jax.posttrain import overoptimization as oo

PLOT_FILE = "rlhf_curves.png"
FITS_FILE = "rlhf_fits.json"
ROUTE_FORM = {"rl": "rl", "bon": "bon", "grpo": "rl"}  # best-of-n gets its own form; the rest Gao's RL one


def series(rows: Sequence[dict[str, Any]], kl_key: str, keys: dict[str, str]) -> dict[str, np.ndarray]:
  """{'kl', 'd', name: ...} from the rows holding kl_key and every key of ``keys`` ({name: metrics key}), in order."""
  picked = [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in (kl_key, *keys.values()))]
  out = {name: np.array([r[k] for r in picked], np.float64) for name, k in keys.items()}
  out["kl"] = np.array([r[kl_key] for r in picked], np.float64)
  out["d"] = oo.d_of_kl(out["kl"])
  return out


def eval_series(rows) -> dict[str, np.ndarray]:
  """An RLHF (or DPO) run's eval curve: kl, d, proxy, gold."""
  return series(rows, "kl", {"proxy": "proxy_reward", "gold": "gold_reward"})


def bon_series(rows) -> dict[str, np.ndarray]:
  """Best-of-n from the starting policy: kl (bon_kl), d, proxy, gold, n."""
  return series(rows, "bon_kl", {"proxy": "bon_proxy", "gold": "bon_gold", "n": "bon_n"})


def grpo_series(rows) -> dict[str, np.ndarray]:
  """A GRPO run's eval curve: kl (eval_kl), d, accuracy."""
  return series(rows, "eval_kl", {"accuracy": "eval_accuracy"})


def fit_entry(route: str, reward: str, run: str, s: dict[str, np.ndarray]) -> dict[str, Any] | None:
  """The JSON entry of one fit (None, logged, when the curve cannot be fitted: no start, too few points)."""
  if s["kl"].size == 0:
    return None
  try:
    d, r = oo.gains(s["kl"], s[reward])
    f = oo.fit(ROUTE_FORM[route], d, r)
  except ValueError as e:
    logging.info("no %s fit of %s %s: %s", ROUTE_FORM[route], route, reward, e)
    return None
  start = float(s[reward][s["kl"] == 0].mean())
  return {"route": route, "reward": reward, "run": run, **f.as_dict(), "start": start, "d": d.tolist(), "r": r.tolist()}


def _fit_of(entry: dict[str, Any]) -> oo.Fit:
  return oo.Fit(entry["form"], entry["alpha"], entry["beta"], entry["r2"], entry["points"])


def describe(entry: dict[str, Any]) -> str:
  """One line: route, reward, α, β, R², peak d (and KL)."""
  peak = "no peak" if entry["peak_d"] is None else f"peak d={entry['peak_d']:.2f} (KL {entry['peak_kl']:.1f})"
  return (
      f"{entry['route']} {entry['reward']} ({os.path.basename(entry['run'].rstrip('/'))}): α={entry['alpha']:.3f} "
      f"β={entry['beta']:.3f} R²={entry['r2']:.2f} {peak}"
  )


def _label(entry: dict[str, Any] | None, name: str) -> str:
  if entry is None:
    return name
  peak = "∞" if entry["peak_d"] is None else f"{entry['peak_d']:.2f}"
  return f"{name}: α={entry['alpha']:.3f} β={entry['beta']:.3f} R²={entry['r2']:.2f} d*={peak}"


def _draw(ax, s: dict[str, np.ndarray], reward: str, entry, name: str, color: str, marker: str) -> None:
  """Points of one curve; with a fit, its curve over the points' d range (offset by the start back to rewards)."""
  ax.plot(s["d"], s[reward], marker, color=color, markersize=4, alpha=0.8, label=None if entry else name)
  if entry is not None:
    grid = np.linspace(0.0, max(float(s["d"].max()), 1e-6) * 1.05, 200)
    ax.plot(grid, entry["start"] + _fit_of(entry)(grid), "-", color=color, label=_label(entry, name))


def plot(
    rl: dict[str, dict], bon: dict | None, dpo: dict[str, dict], grpo: dict | None, fits: list[dict], path: str
) -> str:
  """rlhf_curves.png; rl and dpo are {run: series}, bon a series (or None), grpo a series (or None)."""
  by_key = {(e["route"], e["reward"], e["run"]): e for e in fits}
  cols = 3 if grpo is not None else 2
  fig = figure.Figure(figsize=(6.2 * cols, 5.2), dpi=100)
  axes = fig.subplots(1, cols, squeeze=False, sharex=True)[0]  # one d scale: GRPO's KL beside RL's and best-of-n's
  bon_run = bon.get("run", "") if bon else ""
  for ax, reward, title in zip(axes, ("gold", "proxy"), ("(a) gold reward", "(b) proxy reward (reward model)")):
    for i, (run, s) in enumerate(rl.items()):
      name = "RL" + (f" {os.path.basename(run.rstrip('/'))}" if len(rl) > 1 else "")
      _draw(ax, s, reward, by_key.get(("rl", reward, run)), name, f"C{2 * i}", "o")
    if bon is not None:
      _draw(ax, bon, reward, by_key.get(("bon", reward, bon_run)), "best-of-n", "C1", "s")
    for i, (run, s) in enumerate(dpo.items()):
      name = "DPO" + (f" {os.path.basename(run.rstrip('/'))}" if len(dpo) > 1 else "")
      ax.plot(s["d"], s[reward], "^--", color=f"C{3 + 2 * i}", markersize=5, label=name)
    ax.set_title(title)
    ax.set_xlabel("d = sqrt(KL(π ‖ π_init)), sqrt-nats")
    ax.set_ylabel(f"{reward} reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
  if grpo is not None:
    ax = axes[2]
    entry = by_key.get(("grpo", "accuracy", grpo.get("run", "")))
    _draw(ax, grpo, "accuracy", entry, "GRPO (verifier reward)", "C4", "D")
    ax.plot(grpo["d"], grpo["accuracy"], ":", color="C4", alpha=0.5)
    ax.set_title("(c) verifiable RL: GRPO held-out accuracy")
    ax.set_xlabel("d = sqrt(KL(π ‖ π_init)), sqrt-nats")
    ax.set_ylabel("eval accuracy (pass@1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  fs.write_bytes(path, buf.getvalue())
  return path


def _read(run: str) -> list[dict[str, Any]]:
  if not fs.exists(fs.join(run, "metrics.jsonl")):
    raise FileNotFoundError(f"{run} has no metrics.jsonl: not a run folder, or a run that has not evaluated yet")
  return metrics_lib.read_metrics(run)


def write_report(
    rl_runs: Sequence[str], dpo_runs: Sequence[str] = (), grpo_run: str | None = None, out: str | None = None
) -> dict[str, Any]:
  """Reads the runs, fits, writes ``out`` (default <first RL run>/rlhf_curves.png) and rlhf_fits.json beside it.

  Returns {'plot', 'fits_file', 'fits': [entry, ...]}. FileNotFoundError for a run folder without metrics."""
  if not rl_runs:
    raise ValueError("at least one RLHF run is needed")
  out = out or fs.join(rl_runs[0], PLOT_FILE)
  rl = {run: eval_series(_read(run)) for run in rl_runs}
  bon = None
  for run in rl_runs:  # best-of-n from the first run that has it (it is of the starting policy)
    s = bon_series(_read(run))
    if s["kl"].size:
      bon = {**s, "run": run}
      break
  dpo = {run: eval_series(_read(run)) for run in dpo_runs}
  grpo = {**grpo_series(_read(grpo_run)), "run": grpo_run} if grpo_run else None
  fits = [fit_entry("rl", reward, run, s) for run, s in rl.items() for reward in ("gold", "proxy")]
  if bon is not None:
    fits += [fit_entry("bon", reward, bon["run"], bon) for reward in ("gold", "proxy")]
  if grpo is not None:
    fits.append(fit_entry("grpo", "accuracy", grpo_run, grpo))
  fits = [e for e in fits if e is not None]
  plot(rl, bon, dpo, grpo, fits, out)
  fits_file = fs.join(os.path.dirname(out) or ".", FITS_FILE)
  doc = {"plot": out, "rl_runs": list(rl_runs), "dpo_runs": list(dpo_runs), "grpo_run": grpo_run, "fits": fits}
  fs.write_text(fits_file, json.dumps(doc, indent=1, allow_nan=False) + "\n")
  return {"plot": out, "fits_file": fits_file, "fits": fits}
