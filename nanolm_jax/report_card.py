"""The report card of a chain folder in one call (the speedrun's report hook); nanolm_jax.report holds the work:
collect (reading the runs), render (report.md), samples (each stage's replies), env (the header), card (both files).
"""

from __future__ import annotations

from nanolm_jax.report import card


def write_report(workdir: str, samples: bool = True, out: str | None = None) -> str:
  """Writes report.md, report.json and the plots (default into workdir); returns report.md's path."""
  return card.report(workdir, samples=samples, out=out)
