r"""Where a run's facts are: recall of the fact world in three forms, per group of people (greedy decoding).

  python -m experiments.fact_check --workdir=runs/pretrain_tiny     # a base run
  python -m experiments.fact_check --workdir=runs/sft_tiny          # a chat run (its world is the SFT config's)

Forms: `cloze` (a biography sentence to complete — how pretraining stored the fact), `qa` ("Question: …\nAnswer:",
the form mixed training adds to pretraining) and `chat` (the question as a user turn, as the chat evaluation asks
it). Groups: `sft_known` (known people whose QA SFT may train on), `eval_known` (known people only evaluated) and
`eval_unknown` (never in pretraining: recall there is chance). A base run that recalls `eval_known` in cloze form
but not in qa/chat form has the facts and lacks the way to reach them (issue 14); a chat run that lost the cloze
form forgot them in SFT. Prints a table and writes fact_check.json in the run folder.
"""

import json
import os
import sys

from absl import app
from absl import flags

from nanolm_jax import metrics
from nanolm_jax import runs
from nanolm_jax.posttrain import fact_recall
from nanolm_jax.stages import base
from nanolm_jax.stages import pretrain

_WORKDIR = flags.DEFINE_string("workdir", base.default_workdir(pretrain.STAGE), "Run folder to read.")
_FORMS = flags.DEFINE_list("forms", list(fact_recall.FORMS), "Forms to ask in.")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  try:
    run = runs.load_run(_WORKDIR.value)
    world, eval_fraction = fact_recall.run_world(run.cfg)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  table = fact_recall.recall_table(run.model, run.params, run.tokenizer, world, eval_fraction, _FORMS.value)
  print(fact_recall.format_table(table))
  path = os.path.join(run.workdir, "fact_check.json")
  with open(path, "w") as f:
    json.dump(table, f, indent=1)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
