"""Can a model copy a name it has never seen? Loss on a new name's first mention vs its later mentions.

  python -m experiments.copy_check [--workdir=runs/pretrain_tiny] [--people=40]

Writes a three-sentence biography of each of ``--people`` fresh people (``facts.make_people``, never in any training
data) and prints the mean negative log-likelihood (nats/token) of the name's tokens at its first mention and at
its later mentions. A model that copies from its context predicts the later mentions far better; the search tool
(copy the name into a query) depends on it. Measured on the tiny default: 10.70 -> 10.31 before the 'people'
pretraining source existed, 5.66 -> 2.78 with it.
"""

from absl import app
from absl import flags

from nanolm_jax import diagnostics
from nanolm_jax import metrics
from nanolm_jax import runs

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_tiny", "Run folder to check.")
_PEOPLE = flags.DEFINE_integer("people", 40, "Fresh people (one biography each).")


def main(argv):
  del argv
  metrics.quiet_library_logs()
  run = runs.load_run(_WORKDIR.value)
  first, later = diagnostics.name_nll(run, _PEOPLE.value)
  print(
      f"{_WORKDIR.value}: name-token NLL first mention {first:.2f}, later mentions {later:.2f} nats/token "
      f"(ratio {later / first:.2f}; {_PEOPLE.value} unseen people)"
  )


if __name__ == "__main__":
  app.run(main)
