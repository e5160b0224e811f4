"""Confidence intervals the science reports: exact binomial (success rates) and Student t (replica means).

Why these two: a pose panel's success rate is k of n with n small (6-20), where
the normal approximation gives intervals outside [0, 1]; Clopper-Pearson is the
exact, conservative interval. MD replicas are few (3-25) independent samples;
the t interval widens correctly as n shrinks, where a bootstrap over 2-3 values
only returns their range (or the values themselves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["clopper_pearson", "t_interval", "describe_replicas", "MIN_REPLICAS_FOR_INTERVAL"]

MIN_REPLICAS_FOR_INTERVAL = 3  # below this, report the values themselves, never a +/-


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``successes`` of ``trials`` (Clopper and Pearson 1934)."""
    from scipy.stats import beta

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson: need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high): the Student-t interval of the mean, or None for fewer than 3 values.

    mean +/- t(1 - alpha/2, n - 1) * s / sqrt(n), s the sample standard deviation. With 2 values the
    interval exists in theory (t = 12.7) but says nothing useful; callers show the values instead.
    """
    from scipy.stats import t

    n = len(values)
    if n < MIN_REPLICAS_FOR_INTERVAL:
        return None
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def describe_replicas(values: Sequence[float], unit: str = "") -> str:
    """A replica mean as a chemist should read it: with its t interval from 3 replicas on, else the values.

    ``-25.7 [-27.9, -23.5] (t 95%, n=3)`` or ``-25.7 (n=2: -25.1, -26.3; too few for an interval)``.
    """
    if not values:
        return ""
    suffix = f" {unit}" if unit else ""
    interval = t_interval(values)
    if interval is None:
        listed = ", ".join(f"{v:.1f}" for v in values)
        mean = math.fsum(values) / len(values)
        return f"{mean:.1f}{suffix} (n={len(values)}: {listed}; too few for an interval)"
    mean, lo, hi = interval
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]{suffix} (t 95%, n={len(values)})"
