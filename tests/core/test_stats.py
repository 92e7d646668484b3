"""Intervals and the adoption test against reference values.

Reference numbers marked "scipy" were computed with SciPy 1.17.1 (scipy.stats.t.ppf / t.cdf /
t.interval / ttest_ind(equal_var=False)) and are hard-coded so SciPy is not needed to run them.
The Wilson intervals are the ones the STOP paper publishes for its sandbox-flag rates.
"""

from __future__ import annotations

import math

import pytest

from stop.core.stats import (
    improvement_test,
    mean_ci,
    normal_ppf,
    t_cdf,
    t_ppf,
    welch,
    wilson_interval,
)

INC = [0.5, 0.52, 0.49, 0.51, 0.5]
CAND = [0.6, 0.62, 0.58, 0.61, 0.65]
NOISY = [0.6, 0.2, 0.58, 0.61, 0.65]


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706204736174694),  # scipy
        (0.975, 4, 2.7764451051977934),  # scipy
        (0.975, 29, 2.045229642132703),  # scipy
        (0.975, 7.3, 2.345066736547703),  # scipy, non-integer df as in Welch
        (0.975, 1000, 1.9623390808264083),  # scipy
        (0.995, 2, 9.924843200918287),  # scipy
        (0.9999, 1, 3183.098757118502),  # scipy, far tail
        (0.025, 4, -2.7764451051977934),
        (0.5, 3, 0.0),
    ],
)
def test_t_quantiles(p: float, df: float, expected: float) -> None:
    assert t_ppf(p, df) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_t_cdf() -> None:
    assert t_cdf(2.0, 3.5) == pytest.approx(0.9369307387120432, rel=1e-10)  # scipy
    assert t_cdf(-1.3, 10) == pytest.approx(0.1113829086034223, rel=1e-10)  # scipy
    assert t_cdf(50.0, 3) == pytest.approx(0.9999911914239794, rel=1e-12)  # scipy
    assert t_cdf(1.96, 1e6) == pytest.approx(0.9750019662073651, rel=1e-9)  # scipy, near normal
    assert t_cdf(0.0, 5) == 0.5


def test_normal_quantile() -> None:
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-9)


def test_mean_ci_student_t() -> None:
    m, lo, hi = mean_ci([0.5, 0.6, 0.7, 0.55, 0.65])
    assert m == pytest.approx(0.6)
    # scipy: t.interval(0.95, 4, loc=mean, scale=sem)
    assert lo == pytest.approx(0.5018378419261221, rel=1e-9)
    assert hi == pytest.approx(0.6981621580738778, rel=1e-9)


def test_mean_ci_by_hand_two_values() -> None:
    # n=2, values 0 and 1: s = sqrt(0.5), sem = 0.5, t_{0.975,1} = 12.7062...
    m, lo, hi = mean_ci([0.0, 1.0])
    assert m == 0.5
    assert hi - m == pytest.approx(0.5 * 12.706204736174694, rel=1e-9)
    assert m - lo == pytest.approx(hi - m)


def test_mean_ci_edge_cases() -> None:
    m, lo, hi = mean_ci([0.3])
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([0.1, float("nan")])
    # a wider level gives a wider interval
    _, lo90, hi90 = mean_ci([0.1, 0.4, 0.3], level=0.90)
    _, lo99, hi99 = mean_ci([0.1, 0.4, 0.3], level=0.99)
    assert lo99 < lo90 and hi99 > hi90


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # STOP paper, sandbox-flag rates over 10,000 attempts (two decimals of a percentage)
        (42, 10000, 0.0031, 0.0057),
        (46, 10000, 0.0035, 0.0061),
        (12, 10000, 0.0007, 0.0021),
        (17, 10000, 0.0011, 0.0027),
    ],
)
def test_wilson_matches_published(k: int, n: int, lo: float, hi: float) -> None:
    got_lo, got_hi = wilson_interval(k, n)
    assert round(got_lo, 4) == lo
    assert round(got_hi, 4) == hi


def test_wilson_by_hand() -> None:
    # k=0, n=10: centre = half = (z^2/20) / (1 + z^2/10) with z = 1.96
    z2 = 1.96**2
    half = (z2 / 20) / (1 + z2 / 10)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(2 * half))
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 2 * half)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_welch_matches_reference() -> None:
    diff, t, df, p, (lo, hi) = welch(INC, CAND)
    assert diff == pytest.approx(0.108)
    assert t == pytest.approx(8.538149682454605, rel=1e-9)  # scipy
    assert df == pytest.approx(5.495920996135682, rel=1e-9)  # scipy
    assert p == pytest.approx(0.00011243270892379407, rel=1e-6)  # scipy, alternative="greater"
    assert lo == pytest.approx(0.07634740535502411, rel=1e-9)  # scipy, two-sided 95% CI
    assert hi == pytest.approx(0.13965259464497565, rel=1e-9)
    # testing against a margin is testing the shifted samples
    _, t_shift, _, p_shift, _ = welch(INC, CAND, shift=0.1)
    assert t_shift == pytest.approx(0.632455532033667, rel=1e-9)  # scipy on CAND - 0.1
    assert p_shift == pytest.approx(0.2762353441254349, rel=1e-8)


def test_improvement_clear_win() -> None:
    c = improvement_test(INC, CAND, margin=0.0)
    assert c.better
    assert c.incumbent_mean == pytest.approx(0.504)
    assert c.candidate_mean == pytest.approx(0.612)
    assert c.diff == pytest.approx(0.108)
    assert c.p_value == pytest.approx(0.00011243270892379407, rel=1e-6)
    assert "Welch" in c.method
    assert c.to_dict()["better"] is True


def test_improvement_higher_mean_but_noisy_is_rejected() -> None:
    c = improvement_test(INC, NOISY, margin=0.0)
    assert c.diff > 0
    assert c.p_value == pytest.approx(0.3932957441809024, rel=1e-8)  # scipy
    assert not c.better
    assert "not significant" in c.reason


def test_improvement_margin() -> None:
    # the difference (0.108) clears 0.1 but not significantly; it does not clear 0.2 at all
    assert not improvement_test(INC, CAND, margin=0.1).better
    c = improvement_test(INC, CAND, margin=0.2)
    assert not c.better and "<= margin" in c.reason
    # without the significance requirement, the means alone decide
    assert improvement_test(INC, CAND, margin=0.1, alpha=None).better


def test_improvement_ties_and_degenerate_inputs() -> None:
    same = [0.5, 0.5, 0.5]
    assert not improvement_test(same, same).better  # equal is not better
    # zero variance on both sides: any real gap is decisive
    c = improvement_test([0.5, 0.5], [0.6, 0.6])
    assert c.better and c.p_value == 0.0
    # one score a side: means only, and the result says so
    c = improvement_test([0.4], [0.45])
    assert c.better and "means only" in c.method and math.isnan(c.p_value)
    assert not improvement_test([0.4], [0.4]).better
    with pytest.raises(ValueError):
        improvement_test([], [0.5])
    with pytest.raises(ValueError):
        improvement_test([0.5], [0.5], alpha=1.5)
