"""Statistics for scores: confidence intervals and the adoption test.

Methods (no SciPy needed; the Student t distribution is computed here from the regularized
incomplete beta function, accurate to ~1e-10, which the tests check against reference values):

- `mean_ci`: the mean with a Student t interval, mean ± t_{(1+level)/2, n-1} · s / √n, s the
  sample standard deviation (n - 1 in the denominator). One value has no spread to estimate:
  the interval is (nan, nan). Identical values give a zero-width interval.
- `wilson_interval`: the Wilson score interval for a binomial proportion k / n (the interval
  the STOP paper reports for its sandbox-flag rates).
- `improvement_test`: does a candidate beat the incumbent by more than a margin? Adopted only
  when BOTH the candidate's mean exceeds the incumbent's mean by more than `margin` AND a
  one-sided Welch t-test rejects "candidate mean - incumbent mean <= margin" at level `alpha`.
  Welch (unequal variances, Welch-Satterthwaite degrees of freedom) because the two score lists
  come from independent improver runs and need not share a variance. With alpha=None, or when
  either side has fewer than two scores, only the difference of means decides, and the result
  says so in `method`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

NAN = float("nan")


def _values(values: Sequence[float], what: str) -> list[float]:
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError(f"{what}: no values")
    if any(math.isnan(x) or math.isinf(x) for x in xs):
        raise ValueError(f"{what}: values must be finite numbers")
    return xs


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df (real, > 0) degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < p < 1.0:
        raise ValueError("quantile level must be strictly between 0 and 1")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def normal_ppf(p: float) -> float:
    """Standard normal quantile (bisection on erf; used to turn a level into a z value)."""
    if not 0.0 < p < 1.0:
        raise ValueError("quantile level must be strictly between 0 and 1")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 denominator); nan for a single value."""
    xs = _values(values, "sample_sd")
    n = len(xs)
    if n < 2:
        return NAN
    m = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean with a two-sided Student t interval at `level`.

    One value: (x, nan, nan), since a spread cannot be estimated from one observation.
    No values: ValueError.
    """
    xs = _values(values, "mean_ci")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be strictly between 0 and 1")
    n = len(xs)
    m = math.fsum(xs) / n
    if n < 2:
        return m, NAN, NAN
    half = t_ppf((1.0 + level) / 2.0, n - 1) * sample_sd(xs) / math.sqrt(n)
    return m, m - half, m + half


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (lo, hi) for k successes in n trials."""
    if n <= 0:
        raise ValueError("wilson_interval: n must be positive")
    if not 0 <= k <= n:
        raise ValueError("wilson_interval: k must be between 0 and n")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    """The outcome of `improvement_test`, with everything needed to explain it."""

    better: bool
    reason: str
    method: str
    margin: float
    alpha: float | None
    incumbent_mean: float
    incumbent_ci: tuple[float, float]
    candidate_mean: float
    candidate_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    t: float
    df: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def welch(a: Sequence[float], b: Sequence[float], *, shift: float = 0.0,
          level: float = 0.95) -> tuple[float, float, float, float, tuple[float, float]]:
    """Welch's test of mean(b) - mean(a) against `shift`.

    Returns (diff, t, df, p_greater, diff_ci): p_greater is the one-sided p-value of
    H0: mean(b) - mean(a) <= shift; diff_ci the two-sided Welch interval for the difference.
    Needs at least two values on each side. Zero variance on both sides gives t = ±inf.
    """
    xa, xb = _values(a, "welch"), _values(b, "welch")
    na, nb = len(xa), len(xb)
    if na < 2 or nb < 2:
        raise ValueError("welch: needs at least two values on each side")
    diff = math.fsum(xb) / nb - math.fsum(xa) / na
    va, vb = sample_sd(xa) ** 2 / na, sample_sd(xb) ** 2 / nb
    se2 = va + vb
    if se2 == 0.0:
        gap = diff - shift
        t = math.inf if gap > 0 else (-math.inf if gap < 0 else 0.0)
        p = 0.0 if gap > 0 else (1.0 if gap < 0 else 0.5)
        return diff, t, math.inf, p, (diff, diff)
    se = math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    t = (diff - shift) / se
    p = 1.0 - t_cdf(t, df)
    half = t_ppf((1.0 + level) / 2.0, df) * se
    return diff, t, df, p, (diff - half, diff + half)


def improvement_test(incumbent_scores: Sequence[float], candidate_scores: Sequence[float],
                     margin: float = 0.0, *, alpha: float | None = 0.05,
                     level: float = 0.95) -> Comparison:
    """Does the candidate beat the incumbent by more than `margin`? See the module docstring."""
    inc = _values(incumbent_scores, "incumbent scores")
    cand = _values(candidate_scores, "candidate scores")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be strictly between 0 and 1, or None")
    mi, ilo, ihi = mean_ci(inc, level)
    mc, clo, chi = mean_ci(cand, level)
    diff = mc - mi
    means_ok = diff > margin
    if alpha is None or len(inc) < 2 or len(cand) < 2:
        why = "alpha=None" if alpha is None else "fewer than two scores on a side"
        method = f"difference of means only ({why})"
        t, df, p, dci = NAN, NAN, NAN, (NAN, NAN)
        better = means_ok
    else:
        method = f"one-sided Welch t-test at alpha={alpha:g} and difference of means"
        diff, t, df, p, dci = welch(inc, cand, shift=margin, level=level)
        better = means_ok and p < alpha
    if better:
        reason = f"candidate {mc:.4f} beats incumbent {mi:.4f} by {diff:+.4f} > margin {margin:g}"
        if not math.isnan(p):
            reason += f" (p={p:.3g} < {alpha:g})"
    elif not means_ok:
        reason = f"candidate {mc:.4f} vs incumbent {mi:.4f}: difference {diff:+.4f} <= margin {margin:g}"
    else:
        reason = (f"candidate {mc:.4f} vs incumbent {mi:.4f}: difference {diff:+.4f} > margin {margin:g}"
                  f" but not significant (p={p:.3g} >= {alpha:g})")
    return Comparison(
        better=better, reason=reason, method=method, margin=margin, alpha=alpha,
        incumbent_mean=mi, incumbent_ci=(ilo, ihi), candidate_mean=mc, candidate_ci=(clo, chi),
        diff=diff, diff_ci=dci, t=t, df=df, p_value=p,
    )
