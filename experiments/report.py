r"""The report card of a training chain: report.md + report.json + the plots, in one folder a reader can take away.

  python -m experiments.report --workdir=speedrun_out          # a speedrun folder (speedrun.json, crawl/, pretrain/...)
  python -m experiments.report --workdir=runs --samples=false  # a runs/ folder of default stage runs, no model loads

Reads every metric the chain's runs wrote (metrics.jsonl, eval.json, eval/<step>.json of experiments.evaluate,
probe_stats.json, fact_check.json, rlhf_fits.json); a stage or metric that is missing shows as "—".
"""

import os
import sys

from absl import app
from absl import flags

from nanolm_jax.report import card

_WORKDIR = flags.DEFINE_string("workdir", None, "The chain folder (a speedrun folder or a runs/ folder).")
_OUT = flags.DEFINE_string(
    "out", None, "report.md path (default <workdir>/report.md); report.json and plots beside it."
)
_SAMPLES = flags.DEFINE_bool("samples", True, "Answer a few fixed prompts greedily with each stage's model.")


def main(argv):
  del argv
  if not _WORKDIR.value or not os.path.isdir(_WORKDIR.value):
    sys.exit(f"error: --workdir={_WORKDIR.value!r} is not a folder")
  report = card.build(_WORKDIR.value, samples=_SAMPLES.value)
  md, js = card.write(report, _OUT.value or os.path.join(_WORKDIR.value, "report.md"))
  found = ", ".join(f"{k}={v['path']}" for k, v in report["stages"].items()) or "none"
  print(f"stages found: {found}")
  print(f"wrote {md} and {js} ({len(report.get('plots') or {})} plots)")


if __name__ == "__main__":
  app.run(main)
