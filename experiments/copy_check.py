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
import jax
import jax.numpy as jnp
import numpy as np

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_tiny", "Run folder to check.")
_PEOPLE = flags.DEFINE_integer("people", 40, "Fresh people (one biography each).")


def name_nll(run, n: int) -> tuple[float, float]:
  """(first-mention, later-mention) mean NLL of the name tokens, nats/token."""
  from nanolm_jax.posttrain import facts  # pylint: disable=g-import-not-at-top

  tok = run.tokenizer
  people = facts.make_people(facts.world_from_config(facts.default_world_config()), n, "copy_check")
  first, later = [], []
  for e in people:
    a = e.attributes
    doc = (
        f"{e.name} was born in {a['birthplace']}. {e.name} worked as a {a['profession']}. "
        f"{e.name} liked the color {a['favorite_color']}."
    )
    ids = tok.encode(doc, bos=True)
    out = run.model.apply({"params": run.params}, jnp.asarray([ids[:-1]]))
    logits = out[0] if isinstance(out, tuple) else out
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), -1)[0])
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    name = tok.encode(" " + e.name)[1:]  # the name's tokens after its first piece (that piece depends on context)
    starts = [i for i in range(1, len(ids)) if ids[i : i + len(name)] == name]
    for k, s in enumerate(starts):
      (first if k == 0 else later).append(float(nll[s - 1 : s - 1 + len(name)].mean()))
  return float(np.mean(first)), float(np.mean(later))


def main(argv):
  del argv
  from nanolm_jax import metrics, runs  # pylint: disable=g-import-not-at-top

  metrics.quiet_library_logs()
  run = runs.load_run(_WORKDIR.value)
  first, later = name_nll(run, _PEOPLE.value)
  print(
      f"{_WORKDIR.value}: name-token NLL first mention {first:.2f}, later mentions {later:.2f} nats/token "
      f"(ratio {later / first:.2f}; {_PEOPLE.value} unseen people)"
  )


if __name__ == "__main__":
  app.run(main)
