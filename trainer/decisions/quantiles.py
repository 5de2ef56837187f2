"""Small-sample quantiles in NumPy: the regularized incomplete beta function and the Harrell-Davis estimator.

No SciPy: the incomplete beta is a continued fraction (Lentz's method), exact to about 1e-13.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.checks import ArgumentError, check_number, check_positive

_TINY = 1e-300
_TOLERANCE = 1e-15
_MAX_TERMS = 100_000


def _beta_continued_fraction(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """The continued fraction of I_x(a, b) (Numerical Recipes' `betacf`), vectorised over `x`.

    Converges fast for `x < (a + 1) / (a + b + 2)`; the caller uses the
    symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` elsewhere. Takes
    O(sqrt(max(a, b))) terms.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
    h = d.copy()
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            delta = d * c
            h = h * delta
        if np.all(np.abs(delta - 1.0) <= _TOLERANCE):
            return h
    raise RuntimeError(f"The incomplete beta continued fraction did not converge for a={a}, b={b}.")


def _scalar_continued_fraction(x: float, a: float, b: float) -> float:
    """`_beta_continued_fraction` for one `x` in plain floats (fast for the bisection of `beta_quantile`)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) >= _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) >= _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) >= _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) <= _TOLERANCE:
            return h
    raise RuntimeError(f"The incomplete beta continued fraction did not converge for a={a}, b={b}.")


def _scalar_incomplete_beta(x: float, a: float, b: float) -> float:
    """`I_x(a, b)` for one `x` in [0, 1], checked arguments."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:  # e.g. a bisection midpoint that rounds to 1
        return 1.0
    log_front = (a * math.log(x) + b * math.log1p(-x)
                 - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    if x < (a + 1.0) / (a + b + 2.0):
        return min(max(math.exp(log_front) * _scalar_continued_fraction(x, a, b) / a, 0.0), 1.0)
    return min(max(1.0 - math.exp(log_front) * _scalar_continued_fraction(1.0 - x, b, a) / b, 0.0), 1.0)


def regularized_incomplete_beta(x: np.ndarray | float, a: float, b: float) -> np.ndarray:
    """`I_x(a, b)`, the CDF at `x` of a Beta(a, b) variable, elementwise over `x`.

    Args:
      x: Values in [0, 1].
      a: First shape parameter, > 0.
      b: Second shape parameter, > 0.

    Returns:
      float64 array of the shape of `x`.

    Raises:
      ArgumentError: naming `a`, `b` or `x` when out of range.
    """
    a = check_positive(a, "a")
    b = check_positive(b, "b")
    x = np.asarray(x, np.float64)
    if not np.all((x >= 0.0) & (x <= 1.0)):
        raise ArgumentError("x", x, "must be in [0, 1]")
    result = np.where(x >= 1.0, 1.0, 0.0)
    inner = (x > 0.0) & (x < 1.0)
    if not inner.any():
        return result
    xs = x[inner]
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    front = np.exp(a * np.log(xs) + b * np.log1p(-xs) - log_beta)
    direct = xs < (a + 1.0) / (a + b + 2.0)
    values = np.where(direct, 0.0, 1.0)  # where `front` underflows, I is 0 or 1 to double precision
    for lower, mask in ((True, direct & (front > 0)), (False, ~direct & (front > 0))):
        if mask.any():
            if lower:
                values[mask] = front[mask] * _beta_continued_fraction(xs[mask], a, b) / a
            else:
                values[mask] = 1.0 - front[mask] * _beta_continued_fraction(1.0 - xs[mask], b, a) / b
    result[inner] = np.clip(values, 0.0, 1.0)
    return result


def harrell_davis_weights(n: int, q: float) -> np.ndarray:
    """The Harrell-Davis weights of the order statistics `x_(1) <= ... <= x_(n)` for quantile `q`.

    `w_i = I_{i/n}(a, b) - I_{(i-1)/n}(a, b)` with `a = q (n + 1)`,
    `b = (1 - q)(n + 1)`: the probability that a Beta(a, b) variable, the
    distribution of the (n+1)q-th order statistic of uniforms, falls in the
    i-th of n equal slices of [0, 1]. They are non-negative and sum to 1.

    Args:
      n: Number of values, >= 1.
      q: Quantile level in (0, 1).
    """
    cumulative = harrell_davis_cumulative_weights(n, q)
    return np.diff(cumulative)


def harrell_davis_cumulative_weights(n: int, q: float) -> np.ndarray:
    """`I_{m/n}(a, b)` for m = 0..n: the weight of the m lowest order statistics (`[n + 1]`, 0 to 1)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ArgumentError("n", n, "must be a positive integer")
    q = check_number(q, "q", minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    cumulative = regularized_incomplete_beta(np.arange(n + 1) / n, q * (n + 1), (1.0 - q) * (n + 1))
    cumulative[0], cumulative[-1] = 0.0, 1.0
    return cumulative


def harrell_davis_quantile(values: np.ndarray, q: float) -> float:
    """The Harrell-Davis estimate of the `q` quantile of the distribution `values` were drawn from.

    A weighted mean of all order statistics (`harrell_davis_weights`):
    smoother than one order statistic, with a smaller mean squared error in
    small samples (Harrell and Davis, Biometrika 1982). With n = 1 it is the
    value itself; it always lies between the smallest and the largest value.

    Args:
      values: A non-empty 1-D sample of finite numbers.
      q: Quantile level in (0, 1).

    Raises:
      ArgumentError: naming `values` or `q` when malformed or out of range.
    """
    values = np.sort(np.asarray(values, np.float64).reshape(-1))
    if len(values) == 0 or not np.all(np.isfinite(values)):
        raise ArgumentError("values", values, "must be a non-empty sample of finite numbers")
    return float(harrell_davis_weights(len(values), q) @ values)


def beta_quantile(p: float, a: float, b: float) -> float:
    """The `p` quantile of Beta(a, b): `x` with `I_x(a, b) = p`, by bisection to ~1e-15.

    Args:
      p: Probability in [0, 1].
      a: First shape parameter, > 0.
      b: Second shape parameter, > 0.
    """
    p = check_number(p, "p", minimum=0, maximum=1)
    a = check_positive(a, "a")
    b = check_positive(b, "b")
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if _scalar_incomplete_beta(middle, a, b) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def binomial_interval(successes: float, trials: float, level: float) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval of a proportion `successes / trials` at `level`.

    `[B_{alpha/2}(s, n - s + 1), B_{1-alpha/2}(s + 1, n - s)]` with `B_p` the
    Beta quantile and `alpha = 1 - level` (0 when s = 0, 1 when s = n); each
    side holds with probability at least `1 - alpha / 2`. Non-integer counts
    (an effective sample size) are accepted.

    Args:
      successes: In [0, trials].
      trials: > 0.
      level: In (0, 1).
    """
    trials = check_positive(trials, "trials")
    successes = check_number(successes, "successes", minimum=0, maximum=trials)
    level = check_number(level, "level", minimum=0, maximum=1, exclusive_minimum=True,
                         exclusive_maximum=True)
    alpha = 1.0 - level
    low = 0.0 if successes <= 0 else beta_quantile(alpha / 2.0, successes, trials - successes + 1.0)
    high = 1.0 if successes >= trials else beta_quantile(1.0 - alpha / 2.0, successes + 1.0,
                                                         trials - successes)
    return low, high
