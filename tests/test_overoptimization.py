"""Gao et al.'s forms: exact recovery of α, β from points on the curves, the peak against finite differences, R²,
the gain from the starting point, and refusals of input that cannot be fitted."""

import math

import numpy as np
import pytest

from nanolm_jax.posttrain import best_of_n
from nanolm_jax.posttrain import overoptimization as oo


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.3), ("rl", 1.2, 0.5), ("rl", 0.4, -0.1)])
def test_fit_recovers_alpha_beta_from_points_on_the_form(form, alpha, beta):
  d = np.array([0.0, 0.3, 0.7, 1.1, 1.6, 2.4, 3.0])
  by_hand = d * (alpha - beta * d) if form == "bon" else d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))
  f = oo.fit(form, d, by_hand)
  assert f.alpha == pytest.approx(alpha, abs=1e-12) and f.beta == pytest.approx(beta, abs=1e-12)
  assert f.r2 == pytest.approx(1.0) and f.points == 6  # d = 0 says nothing about α, β
  np.testing.assert_allclose(f(d), by_hand, atol=1e-12)


def test_named_fits_are_the_forms():
  d = np.array([0.5, 1.0, 2.0])
  assert oo.fit_bon(d, d * (1.0 - 0.2 * d)).beta == pytest.approx(0.2)
  assert oo.fit_rl(d, d * (1.0 - 0.2 * np.log(d))).beta == pytest.approx(0.2)


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.3), ("rl", 1.2, 0.5), ("rl", 0.3, 0.6)])
def test_peak_is_where_the_finite_difference_derivative_vanishes(form, alpha, beta):
  f = oo.Fit(form=form, alpha=alpha, beta=beta, r2=1.0, points=2)
  peak, h = f.peak_d, 1e-5
  assert peak == pytest.approx(alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1.0))
  slope = (f(peak + h) - f(peak - h)) / (2 * h)
  assert abs(slope) < 1e-8
  assert f(peak * 0.9) < f(peak) and f(peak * 1.1) < f(peak)  # a maximum, not a minimum
  assert f.peak_reward == pytest.approx(float(f(peak)))
  out = f.as_dict()
  assert out["peak_kl"] == pytest.approx(peak**2) and out["alpha"] == alpha


@pytest.mark.parametrize("beta", [-0.1, 0.0, 1e-17])
def test_no_turn_down_has_no_peak(beta):
  f = oo.Fit(form="rl", alpha=1.0, beta=beta, r2=1.0, points=2)
  assert f.peak_d == math.inf and f.as_dict()["peak_d"] is None and f.as_dict()["peak_reward"] is None


def test_r2_of_a_noisy_fit_by_hand():
  # Points off a line through the origin, fitted by the bon form: R² = 1 − SS_res / SS_tot, computed here with
  # the normal equations instead of lstsq.
  d = np.array([0.5, 1.0, 1.5, 2.0])
  r = np.array([0.4, 0.55, 0.7, 0.6])
  a = np.stack([d, -(d**2)], 1)
  coef = np.linalg.solve(a.T @ a, a.T @ r)
  r2 = 1 - np.sum((r - a @ coef) ** 2) / np.sum((r - r.mean()) ** 2)
  f = oo.fit_bon(d, r)
  assert (f.alpha, f.beta) == pytest.approx(tuple(coef)) and f.r2 == pytest.approx(r2)
  assert 0 < f.r2 < 1


def test_gains_subtract_the_starting_reward_and_clip_negative_kl():
  d, r = oo.gains([0.0, 4.0, -0.5, 9.0], [0.2, 0.5, 0.1, 0.3])
  np.testing.assert_allclose(d, [0.0, 2.0, 0.0, 3.0])
  np.testing.assert_allclose(r, [0.0, 0.3, -0.1, 0.1])
  with pytest.raises(ValueError, match="KL == 0"):
    oo.gains([1.0, 2.0], [0.1, 0.2])


def test_bon_curve_from_bon_kl():
  # Points on R_bon over best-of-n's own KL (d = sqrt(bon_kl(n))) come back exactly.
  d = oo.d_of_kl(best_of_n.bon_kl(np.arange(1, 17)))
  f = oo.fit_bon(d, d * (0.5 - 0.25 * d))
  assert (f.alpha, f.beta) == pytest.approx((0.5, 0.25))


@pytest.mark.parametrize(
    "d,r,match",
    [
        ([0.0, 1.0], [0.0, 0.5], "at least 2 points with d > 0"),
        ([0.0, 0.0, 0.0], [0.0, 0.1, 0.2], "at least 2 points with d > 0"),
        ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3], "cannot determine"),
        ([0.5, 1.0], [0.1], "same length"),
        ([0.5, np.nan], [0.1, 0.2], "finite"),
        ([0.5, -1.0], [0.1, 0.2], "negative"),
    ],
)
def test_bad_input_is_refused(d, r, match):
  with pytest.raises(ValueError, match=match):
    oo.fit_rl(d, r)
  with pytest.raises(ValueError, match="form must be"):
    oo.fit("ppo", [0.5, 1.0], [0.1, 0.2])
