r"""The overoptimisation report (issue 15): gold and proxy reward vs d = sqrt(KL) for RL, best-of-n and DPO, with
Gao et al.'s fitted forms, and GRPO's accuracy vs its own d as the verifiable-reward contrast.

  python -m experiments.rlhf_report     # the default runs: runs/rlhf_tiny, and runs/rlhf_dpo, runs/grpo_tiny if there
  python -m experiments.rlhf_report --rl_runs=runs/rlhf_tiny,runs/rlhf_kl --dpo_runs=runs/rlhf_dpo \
      --grpo_run=runs/grpo_tiny --out=runs/report/rlhf_curves.png

Writes --out (default <first RL run>/rlhf_curves.png) and rlhf_fits.json beside it (α, β, R², peak d of each fit;
nanolm_jax.posttrain.rlhf_report), and prints each fit.
"""

import sys

from absl import app
from absl import flags

from nanolm_jax import runs
from nanolm_jax.posttrain import rlhf_report
from nanolm_jax.stages import base
from nanolm_jax.stages import grpo
from nanolm_jax.stages import rlhf

_DEFAULT_RL = base.default_workdir(rlhf.STAGE)
_DEFAULT_DPO = base.default_workdir(rlhf.STAGE, "dpo")  # python -m experiments.rlhf --config=configs/rlhf.py:dpo
_DEFAULT_GRPO = base.default_workdir(grpo.STAGE)
_RL = flags.DEFINE_list("rl_runs", [_DEFAULT_RL], "RLHF run folders (eval rows; best-of-n from the first that has it).")
_DPO = flags.DEFINE_list(
    "dpo_runs", None, f"DPO run folders (rlhf.method=dpo), drawn as points; unset: {_DEFAULT_DPO} if it exists."
)
_GRPO = flags.DEFINE_string(
    "grpo_run", None, f"A GRPO run folder, panel (c): accuracy vs its eval_kl; unset: {_DEFAULT_GRPO} if it exists."
)
_OUT = flags.DEFINE_string("out", None, "The PNG (default <first RL run>/rlhf_curves.png); rlhf_fits.json beside it.")


def main(argv):
  del argv
  # Unset: the default runs that exist, so the no-flag chain's report shows every route it trained ("" = none).
  dpo_runs = _DPO.value if _DPO.value is not None else [r for r in [_DEFAULT_DPO] if runs.is_run(r)]
  grpo_run = _GRPO.value if _GRPO.value is not None else (_DEFAULT_GRPO if runs.is_run(_DEFAULT_GRPO) else None)
  grpo_run = grpo_run or None
  for run in [*_RL.value, *dpo_runs, *([grpo_run] if grpo_run else [])]:
    if not runs.is_run(run):
      hint = " (the default RLHF run: train it with python -m experiments.rlhf)" if run == _DEFAULT_RL else ""
      sys.exit(f"no run folder at {run}{hint}; pass the runs with --rl_runs / --dpo_runs / --grpo_run")
  try:
    out = rlhf_report.write_report(_RL.value, dpo_runs, grpo_run, _OUT.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  for entry in out["fits"]:
    print(rlhf_report.describe(entry))
  print(f"plot: {out['plot']}\nfits: {out['fits_file']}")


if __name__ == "__main__":
  app.run(main)
