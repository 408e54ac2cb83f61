"""Best-of-n against a proxy reward, measured on a gold reward: the unbiased estimator over N samples per prompt.

Best-of-n draws n samples from the policy and keeps the one the proxy scores highest. With N ≥ n samples per prompt
already drawn, the expected gold score of that pick, for a random n-subset drawn without replacement, is exact and
uses all N (Nakano et al. 2021, WebGPT, Appendix I): sort the N samples by proxy score; the i-th smallest (i = 1..N)
is the best of a random n-subset with probability C(i − 1, n − 1) / C(N, n) (it must be in the subset and the other
n − 1 must come from the i − 1 below it). So

  E[gold of best-of-n] = Σ_i C(i − 1, n − 1) / C(N, n) · gold_(i)

Ties in the proxy are broken uniformly at random, and the estimate is that expectation (deterministic): by symmetry
within a tied group each member is equally likely to be the pick, so the group's weight (the sum of its members'
order-statistic weights, whatever order the sort left them in) multiplies the group's mean gold score.

The KL of best-of-n from the policy (Stiennon et al. 2020; Gao et al. 2022) is bon_kl(n) = log n − (n − 1) / n nats.
Shapes: P prompts, N samples per prompt (numpy, float64).
"""

from __future__ import annotations

import math

import numpy as np


def order_weights(num_samples: int) -> np.ndarray:
  """W (n x N, float64): W[n − 1, i − 1] = C(i − 1, n − 1) / C(N, n), the probability that the i-th smallest of N is
  the maximum of a uniformly random n-subset; each row sums to 1."""
  big_n = num_samples
  w = np.zeros((big_n, big_n))
  for n in range(1, big_n + 1):
    total = math.comb(big_n, n)
    w[n - 1] = [math.comb(i - 1, n - 1) / total for i in range(1, big_n + 1)]
  return w


def _tie_means(sorted_proxy_N: np.ndarray, sorted_gold_N: np.ndarray) -> np.ndarray:
  """Each gold score replaced by the mean gold of its proxy-tie group (sorted_proxy_N ascending)."""
  _, group_N, counts = np.unique(sorted_proxy_N, return_inverse=True, return_counts=True)
  sums = np.bincount(group_N, weights=sorted_gold_N, minlength=counts.size)
  return (sums / counts)[group_N]


def best_of_n_per_prompt(proxy_PxN: np.ndarray, gold_PxN: np.ndarray) -> dict[str, np.ndarray]:
  """Expected scores of the proxy's best of n, for n = 1..N, per prompt: {'gold': P x N, 'proxy': P x N}
  (column n − 1 is best-of-n). Scores must be finite."""
  proxy = np.asarray(proxy_PxN, np.float64)
  gold = np.asarray(gold_PxN, np.float64)
  if proxy.ndim != 2 or proxy.shape != gold.shape or proxy.shape[1] == 0:
    raise ValueError(f"proxy and gold must both be P x N with N >= 1, got {proxy.shape} and {gold.shape}")
  if not (np.isfinite(proxy).all() and np.isfinite(gold).all()):
    raise ValueError("proxy and gold scores must be finite")
  order = np.argsort(proxy, axis=1, kind="stable")
  proxy_s = np.take_along_axis(proxy, order, axis=1)
  gold_s = np.take_along_axis(gold, order, axis=1)
  gold_s = np.stack([_tie_means(p, g) for p, g in zip(proxy_s, gold_s)])
  w_NxN = order_weights(proxy.shape[1])
  return {"gold": gold_s @ w_NxN.T, "proxy": proxy_s @ w_NxN.T}


def best_of_n(proxy_PxN: np.ndarray, gold_PxN: np.ndarray) -> dict[str, np.ndarray]:
  """The best-of-n curve averaged over prompts: {'n': 1..N, 'gold': N, 'proxy': N, 'kl': N (bon_kl(n), nats)}."""
  per_prompt = best_of_n_per_prompt(proxy_PxN, gold_PxN)
  n = np.arange(1, per_prompt["gold"].shape[1] + 1)
  return {"n": n, "gold": per_prompt["gold"].mean(0), "proxy": per_prompt["proxy"].mean(0), "kl": bon_kl(n)}


def bon_kl(n: int | np.ndarray) -> float | np.ndarray:
  """KL(best-of-n ‖ policy) = log n − (n − 1) / n nats (an upper bound; exact for continuous distinct scores)."""
  n_arr = np.asarray(n, np.float64)
  if np.any(n_arr < 1):
    raise ValueError(f"n must be >= 1, got {n}")
  out = np.log(n_arr) - (n_arr - 1.0) / n_arr
  return float(out) if out.ndim == 0 else out
