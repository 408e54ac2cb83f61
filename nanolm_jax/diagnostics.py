"""Measurements of a run that are not a stage's evaluation: what a model can do, read off its log-probs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import runs
from nanolm_jax.synthetic import facts


def name_nll(run: runs.Run, n: int) -> tuple[float, float]:
  """(first-mention, later-mention) mean NLL of the name tokens of `n` fresh people, nats/token.

  Each gets a three-sentence biography (`facts.make_people`: never in any training data). A model that copies from
  its context predicts the later mentions far better; the search tool (copy the name into a query) depends on it.
  """
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
