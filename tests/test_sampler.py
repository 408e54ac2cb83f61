"""Sampler: the bisection top-k / top-p equals a sort-based reference; the all-greedy fast path equals the general one."""

import jax
import jax.numpy as jnp
import numpy as np

from nanolm_jax import sampling as S


def _sorted_filter(logits, temperature, top_k, top_p):
  """The definition, by a full sort (numpy, per row): top-k keeps logits >= the k-th largest, ties included; top-p
  then keeps the largest down to the first whose mass ranked strictly before it reaches top_p (ties kept together)."""
  out = []
  for row, t, k, p in zip(np.asarray(logits, np.float64), temperature, top_k, top_p):
    x = (row / max(t, 1e-6)).astype(np.float32)
    s = np.sort(x)[::-1]
    kth = s[min(k, len(x)) - 1] if k > 0 else s[-1]
    x = np.where(x < kth, -np.inf, x)
    if p < 1:
      s = np.sort(x)[::-1]
      probs = np.exp(s - s[0]) / np.exp(s - s[0]).sum()
      first = np.r_[True, s[1:] != s[:-1]]  # the mass before a value is the mass of the strictly larger values
      before = np.cumsum(probs) - probs
      keep = [v for v, b, f in zip(s, before, first) if f and b < p]
      x = np.where(x < min(keep), -np.inf, x)
    out.append(x)
  return np.stack(out)


def test_bisection_filter_equals_the_sort_based_definition():
  rng = np.random.default_rng(0)
  b, v = 12, 300
  logits = rng.normal(size=(b, v)).astype(np.float32) * 3
  logits[:4] = np.round(logits[:4])  # many ties
  logits[4, :50] = -np.inf  # already-excluded tokens
  logits[5, 7] = 40.0  # one dominant token: the nucleus is one token
  logits[6] = np.where(rng.random(v) < 0.5, 0.0, -0.0)  # signed zeros count as equal
  temperature = rng.choice([0.5, 1.0, 1.7], b).astype(np.float32)
  top_k = np.array([0, 1, 5, 17, 0, 3, 10, 0, 299, 300, 1000, 40], np.int32)
  top_p = np.array([0.9, 1.0, 0.5, 0.95, 0.3, 0.99, 1.0, 0.01, 0.7, 1.0, 0.8, 1.0], np.float32)
  got = np.asarray(jax.jit(S.filter_logits)(logits, temperature, top_k, top_p))
  want = _sorted_filter(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  np.testing.assert_allclose(got[~np.isinf(got)], want[~np.isinf(want)], rtol=1e-6)
  assert (~np.isinf(got)).sum(1).min() >= 1


def test_all_greedy_fast_path_matches_the_general_sampler():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(5, 257)).astype(np.float32) * 4)
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  zeros = jnp.zeros((5,))
  fast = jax.jit(S.sample_rows)(logits, keys, zeros, jnp.zeros((5,), jnp.int32), jnp.ones((5,)))
  # One sampled row sends the batch down the general path; its greedy rows must come out the same.
  temps = zeros.at[4].set(1.0)
  general = jax.jit(S.sample_rows)(logits, keys, temps, jnp.zeros((5,), jnp.int32), jnp.ones((5,)))
  np.testing.assert_array_equal(fast[0][:4], general[0][:4])
  np.testing.assert_array_equal(fast[0], jnp.argmax(logits, -1))
  np.testing.assert_allclose(fast[1][:4], general[1][:4], atol=1e-6)
  ref = jax.nn.log_softmax(logits, -1)[jnp.arange(5), fast[0]]
  np.testing.assert_allclose(fast[1], ref, atol=1e-6)
  np.testing.assert_array_equal(fast[2], 0.0)


def test_two_level_inverse_cdf_equals_the_flat_one():
  """Block sums then one block's running sum pick the token a flat cumsum picks (and never a zero-mass one)."""
  rng = np.random.default_rng(2)
  b, v = 64, 1000  # not a multiple of the block
  logits = rng.normal(size=(b, v)) * 3
  logits[::3, rng.random(v) < 0.7] = -np.inf  # many zero-probability tokens, whole empty blocks among them
  logits[1, :-1] = -np.inf  # all mass on the last token
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  u = jnp.asarray(np.r_[rng.random(b - 2), 0.0, np.nextafter(np.float32(1), np.float32(0))], jnp.float32)
  got = np.asarray(jax.jit(S._inverse_cdf_sample)(logp, u))  # pylint: disable=protected-access
  probs = np.exp(np.asarray(logp, np.float64))
  cdf = np.cumsum(probs, -1)
  want = np.minimum((cdf <= (np.asarray(u, np.float64) * cdf[:, -1])[:, None]).sum(-1), v - 1)
  assert (probs[np.arange(b), got] > 0).all()
  np.testing.assert_array_equal(got, want)
