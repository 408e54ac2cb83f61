"""Gao et al. 2022's reward-overoptimisation forms, fitted by least squares (numpy, float64).

With d = sqrt(KL(π ‖ π_init)) in sqrt-nats and R the reward gained over the starting policy (its value at d = 0):

  best-of-n   R_bon(d) = d (α − β d)       peak at d* = α / (2β)         (β > 0)
  RL          R_RL(d)  = d (α − β log d)   peak at d* = exp(α / β − 1)   (β > 0; dR/dd = α − β log d − β)

Both are linear in (α, β) — R = α·d − β·g(d) with g = d² or d log d — so one np.linalg.lstsq solves each. The fit
uses the points with d > 0 (at d = 0 both forms are 0 whatever α, β); R² is over those points. β ≤ 0 means the
curve never turns down within the form: peak_d is inf. The best-of-n KL is best_of_n.bon_kl(n).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FORMS = ("bon", "rl")


def d_of_kl(kl: np.ndarray) -> np.ndarray:
  """d = sqrt(KL), KL in nats; a (noisy, unbiased) KL estimate below 0 reads as 0."""
  return np.sqrt(np.maximum(np.asarray(kl, np.float64), 0.0))


def _g(form: str, d: np.ndarray) -> np.ndarray:
  """The β term's shape: R = α d − β g(d)."""
  d = np.asarray(d, np.float64)
  if form == "bon":
    return d * d
  if form == "rl":
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)  # d log d → 0 as d → 0
  raise ValueError(f"form must be one of {FORMS}, got {form!r}")


@dataclasses.dataclass(frozen=True)
class Fit:
  """A fitted form: R(d) = d (α − β d) ('bon') or d (α − β log d) ('rl'); call it on d (sqrt-nats)."""

  form: str
  alpha: float
  beta: float
  r2: float  # of the fit on the points with d > 0, against their mean
  points: int  # how many points with d > 0 it was fitted on

  def __call__(self, d: np.ndarray | float) -> np.ndarray:
    d = np.asarray(d, np.float64)
    return self.alpha * d - self.beta * _g(self.form, d)

  @property
  def peak_d(self) -> float:
    """The d where R is largest (dR/dd = 0); inf when β ≤ 0 (no turn-down) or the peak is past any float."""
    if self.beta <= 0:
      return math.inf
    if self.form == "bon":
      return self.alpha / (2.0 * self.beta)
    log_peak = self.alpha / self.beta - 1.0
    return math.exp(log_peak) if log_peak < 700 else math.inf  # a β ~ 0 puts the peak past any float

  @property
  def peak_reward(self) -> float:
    """R at peak_d (the most the form says this route gains); inf when it never turns down."""
    peak = self.peak_d
    return float(self(peak)) if math.isfinite(peak) else math.inf

  def as_dict(self) -> dict[str, float | int | str | None]:
    """JSON-ready: α, β, R², the peak's d, KL (= d²) and reward (None where there is no peak)."""
    finite = math.isfinite(self.peak_d)
    return {
        "form": self.form,
        "alpha": self.alpha,
        "beta": self.beta,
        "r2": self.r2,
        "points": self.points,
        "peak_d": self.peak_d if finite else None,
        "peak_kl": self.peak_d**2 if finite else None,
        "peak_reward": self.peak_reward if finite else None,
    }


def fit(form: str, d: np.ndarray, r: np.ndarray) -> Fit:
  """Least-squares (α, β) of `form` to gains r (reward minus its value at d = 0) at distances d (sqrt-nats).

  ValueError on fewer than 2 points with d > 0, on points that cannot tell α from β (rank < 2), on non-finite input."""
  d = np.asarray(d, np.float64).ravel()
  r = np.asarray(r, np.float64).ravel()
  if d.shape != r.shape:
    raise ValueError(f"d and r must have the same length, got {d.size} and {r.size}")
  if not (np.isfinite(d).all() and np.isfinite(r).all()):
    raise ValueError("d and r must be finite")
  if (d < 0).any():
    raise ValueError("d = sqrt(KL) cannot be negative")
  live = d > 0
  if live.sum() < 2:
    raise ValueError(f"fitting R_{form}(d) needs at least 2 points with d > 0, got {int(live.sum())}")
  d, r = d[live], r[live]
  a_Nx2 = np.stack([d, -_g(form, d)], axis=1)
  (alpha, beta), _, rank, _ = np.linalg.lstsq(a_Nx2, r, rcond=None)
  if rank < 2:
    raise ValueError(f"the {d.size} points (distinct d: {np.unique(d).size}) cannot determine both α and β")
  resid = r - a_Nx2 @ np.array([alpha, beta])
  ss_tot = float(np.sum((r - r.mean()) ** 2))
  r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else (1.0 if np.allclose(resid, 0) else 0.0)
  return Fit(form=form, alpha=float(alpha), beta=float(beta), r2=r2, points=int(d.size))


def fit_bon(d: np.ndarray, r: np.ndarray) -> Fit:
  """R_bon(d) = d (α − β d); see fit."""
  return fit("bon", d, r)


def fit_rl(d: np.ndarray, r: np.ndarray) -> Fit:
  """R_RL(d) = d (α − β log d); see fit."""
  return fit("rl", d, r)


def gains(kl: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(d, r): d = sqrt(KL) and the reward minus its value at the start (the point with KL == 0; with several, their
  mean). ValueError when no point has KL == 0 (no starting policy to measure the gain from)."""
  kl = np.asarray(kl, np.float64).ravel()
  reward = np.asarray(reward, np.float64).ravel()
  start = kl == 0
  if not start.any():
    raise ValueError("no point with KL == 0: the gain is measured from the starting policy's reward")
  return d_of_kl(kl), reward - reward[start].mean()
