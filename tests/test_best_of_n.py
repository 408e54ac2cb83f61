"""Best-of-n estimator against brute-force enumeration of every n-subset (with proxy ties broken uniformly at
random), its weights, and the best-of-n KL."""

import itertools
import math

import numpy as np
import pytest

from nanolm_jax.posttrain import best_of_n as bon


def brute_force(proxy_N, gold_N, n):
  """Mean over all n-subsets of the gold score of the proxy's pick (ties: mean gold of the tied maxima)."""
  picks = []
  for subset in itertools.combinations(range(len(proxy_N)), n):
    top = max(proxy_N[i] for i in subset)
    picks.append(np.mean([gold_N[i] for i in subset if proxy_N[i] == top]))
  return np.mean(picks)


def test_order_weights_by_hand():
  w = bon.order_weights(3)
  # n = 1: each sample equally; n = 2: pairs {12, 13, 23} have maxima 2, 3, 3; n = 3: always the largest
  np.testing.assert_allclose(w, [[1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3], [0, 0, 1]])
  np.testing.assert_allclose(bon.order_weights(9).sum(1), 1.0)


@pytest.mark.parametrize("with_ties", [False, True])
def test_matches_brute_force_enumeration(with_ties):
  rng = np.random.default_rng(0)
  p, n_samples = 5, 6
  proxy = rng.normal(size=(p, n_samples))
  if with_ties:
    proxy = np.round(proxy)  # many equal proxy scores, including tied maxima
    proxy[0] = [1.0, 1.0, 0.0, 1.0, 2.0, 2.0]
    proxy[1] = 3.0  # all tied: every n gives the mean gold
  gold = rng.normal(size=(p, n_samples))
  got = bon.best_of_n_per_prompt(proxy, gold)
  for k in range(p):
    for n in range(1, n_samples + 1):
      np.testing.assert_allclose(got["gold"][k, n - 1], brute_force(proxy[k], gold[k], n), rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(got["proxy"][k, n - 1], brute_force(proxy[k], proxy[k], n), rtol=1e-12, atol=1e-12)
  curve = bon.best_of_n(proxy, gold)
  np.testing.assert_allclose(curve["gold"], got["gold"].mean(0))
  np.testing.assert_array_equal(curve["n"], np.arange(1, 7))
  np.testing.assert_allclose(curve["gold"][0], gold.mean())  # best-of-1 is the policy's mean
  assert np.all(np.diff(curve["proxy"]) >= -1e-12)  # the proxy's best-of-n never decreases in n
  if with_ties:
    np.testing.assert_allclose(got["gold"][1], gold[1].mean())


def test_result_does_not_depend_on_sample_order():
  rng = np.random.default_rng(1)
  proxy, gold = np.round(rng.normal(size=(3, 7))), rng.normal(size=(3, 7))
  perm = rng.permutation(7)
  a, b = bon.best_of_n(proxy, gold), bon.best_of_n(proxy[:, perm], gold[:, perm])
  np.testing.assert_allclose(a["gold"], b["gold"], rtol=1e-12)


def test_bad_inputs():
  with pytest.raises(ValueError, match="P x N"):
    bon.best_of_n(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="finite"):
    bon.best_of_n(np.array([[np.nan, 1.0]]), np.zeros((1, 2)))


def test_bon_kl():
  assert bon.bon_kl(1) == 0.0
  np.testing.assert_allclose(bon.bon_kl(2), math.log(2) - 0.5)
  np.testing.assert_allclose(bon.bon_kl(np.array([1, 4, 16])), [0.0, math.log(4) - 0.75, math.log(16) - 15 / 16])
  with pytest.raises(ValueError):
    bon.bon_kl(0)
