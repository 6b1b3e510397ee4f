"""Two groups of runs (say, BN seeds and no-BN seeds) compared on one quantity: means, spreads,
the difference with a bootstrap interval over runs (``scipy.stats.bootstrap``) and Hedges' g."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GroupDiff", "group_diff", "hedges_g"]

NO_INTERVAL = "one run per group: no interval"


@dataclass(frozen=True)
class GroupDiff:
    """``a - b`` of two groups' per-run values (see :func:`group_diff`)."""

    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    n_a: int
    n_b: int
    diff: float
    ci_low: float
    ci_high: float
    effect_size: float
    note: str


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size >= 2 else math.nan


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g: ``(mean a - mean b) / s_pooled`` times ``J = 1 - 3 / (4 (n_a + n_b) - 9)``,
    with ``s_pooled^2 = ((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)`` (sample variances).
    NaN when a group has fewer than 2 runs or both have no spread.

    Hedges, *Distribution theory for Glass's estimator of effect size*, J. Educ. Stat. 6 (1981).

    >>> round(hedges_g(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0])), 4)
    0.8
    """
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return math.nan
    pooled = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2)
    if pooled == 0:
        return math.nan
    return float((a.mean() - b.mean()) / math.sqrt(pooled) * (1 - 3 / (4 * (na + nb) - 9)))


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def group_diff(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 9999,
               random_state: int = 0) -> GroupDiff:
    """Compare two groups' per-run values.

    The interval is the percentile bootstrap of ``mean(a) - mean(b)``, each group resampled with
    replacement independently (``scipy.stats.bootstrap((a, b), ..., paired=False,
    method="percentile")``, seeded by ``random_state``). It needs at least 2 runs in each group;
    otherwise the interval is NaN and ``note`` says so. With 2-4 runs a group has few distinct
    resamples, so the interval is coarse: read it as "how far apart could seeds put these", not
    as a test.

    Parameters
    ----------
    a, b : array-like of shape (n_runs,)
        One value per run (NaN entries are dropped).

    Returns
    -------
    GroupDiff
        Means, sample standard deviations (``ddof=1``), run counts, ``diff = mean a - mean b``,
        ``ci_low``, ``ci_high``, ``effect_size`` (:func:`hedges_g`) and ``note`` ("" or why
        something is missing).
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    mean_a = float(a.mean()) if a.size else math.nan
    mean_b = float(b.mean()) if b.size else math.nan
    lo = hi = math.nan
    note = ""
    if a.size == 0 or b.size == 0:
        note = "not measured in " + ("either group" if a.size == b.size else ("group a" if a.size == 0 else "group b"))
    elif a.size < 2 or b.size < 2:
        note = NO_INTERVAL if a.size == b.size == 1 else "a group has one run: no interval"
    elif np.ptp(a) == 0 and np.ptp(b) == 0:
        lo = hi = mean_a - mean_b  # every resample gives the same difference
        note = "no spread within either group"
    else:
        res = stats.bootstrap((a, b), _mean_diff, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", paired=False, vectorized=True, random_state=random_state)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return GroupDiff(mean_a, mean_b, _std(a), _std(b), int(a.size), int(b.size), mean_a - mean_b, lo, hi,
                     hedges_g(a, b), note)
