"""Ages as the models see them: one-year bins, the 80% interval and the Adience age groups.

The served graph (`agebatch.models.serving`) reads a spread, an interval and a group off
each face's age distribution; `distribution_stats` is its NumPy twin, used to calibrate a
model on the validation split and to test that every backend computes the same thing.
NumPy only, so the sink, metrics and CLI can use it without Keras.
"""

from __future__ import annotations

import numpy as np

#: Age bins of the distribution head: one per year 0..100 (older clipped into the last). Bin k stands for [k - 0.5, k + 0.5).
AGE_BIN_CENTERS = np.arange(0, 101, dtype=np.float32)
#: The interval written as ``age_p10`` / ``age_p90``: it should hold the true age of 80% of faces.
INTERVAL = (0.1, 0.9)

#: Adience's 8 age groups (the classes of Levi & Hassner 2015). Their gaps (3, 7, 14, 21-24, 33-37, 44-47, 54-59)
#: are split at the midpoint between neighbours, ties to the younger group, so every age has exactly one group.
AGE_GROUPS: tuple[str, ...] = ("0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+")
#: First age (years) of each group after the gaps are split; the last group runs to the top bin.
AGE_GROUP_STARTS = (0, 4, 8, 15, 23, 36, 46, 57)


def group_of(age: np.ndarray) -> np.ndarray:
    """Age group index (int8) of true or predicted ages in years (rounded to the nearest year first)."""
    years = np.rint(np.asarray(age, np.float64))
    return (np.searchsorted(np.asarray(AGE_GROUP_STARTS), years, side="right") - 1).clip(0).astype(np.int8)


def group_matrix() -> np.ndarray:
    """(bins, groups) 0/1 matrix: which group each one-year bin belongs to."""
    g = group_of(AGE_BIN_CENTERS)
    return (g[:, None] == np.arange(len(AGE_GROUPS))[None, :]).astype(np.float32)


def temper(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` written on the probabilities: ``p ** (1/T)`` renormalised.

    T > 1 widens the distribution, T < 1 narrows it; T = 1 leaves it unchanged.
    """
    q = np.power(np.asarray(p, np.float64), 1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def quantile(p: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile (years) of each row's distribution, with each bin's mass spread evenly over its year.

    ``-0.5 + sum_k clip((q - C_{k-1}) / p_k, 0, 1)``: bins wholly below the quantile add
    a year each, the bin holding it a fraction. Only sums and clips, so the graph can do
    the same without a gather (`agebatch.models.serving.AgeStats`).
    """
    p = np.asarray(p, np.float64)
    before = np.cumsum(p, axis=1) - p  # C_{k-1}
    return np.maximum(-0.5 + np.clip((q - before) / np.maximum(p, 1e-12), 0, 1).sum(axis=1), 0.0)


def distribution_stats(p: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """``age_std``, ``age_p10``, ``age_p90`` and ``age_group`` of (N, bins) distributions, as the served graph computes them."""
    t = temper(p, temperature)
    mean = t @ AGE_BIN_CENTERS
    # + 1/12: the variance of a year spread evenly over its bin (so a one-bin distribution has a spread, not 0).
    var = t @ (AGE_BIN_CENTERS.astype(np.float64) ** 2) - mean**2 + 1 / 12
    return {
        "age_std": np.sqrt(np.maximum(var, 0)).astype(np.float32),
        "age_p10": quantile(t, INTERVAL[0]).astype(np.float32),
        "age_p90": quantile(t, INTERVAL[1]).astype(np.float32),
        "age_group": (t @ group_matrix()).argmax(axis=1).astype(np.float32),
    }


def coverage(p10: np.ndarray, p90: np.ndarray, age_true: np.ndarray) -> float:
    """Share of true ages inside [p10, p90]."""
    inside = (np.asarray(age_true) >= p10) & (np.asarray(age_true) <= p90)
    return float(inside.mean()) if len(inside) else float("nan")


def fit_temperature(p: np.ndarray, age_true: np.ndarray, target: float = INTERVAL[1] - INTERVAL[0]) -> tuple[float, float]:
    """The temperature whose [p10, p90] holds `target` of `age_true` (bisection in log T); (T, coverage at T).

    Coverage grows with T (a wider distribution, a wider interval), so bisection finds the
    one T that hits the target on these faces; the validation split's faces, never test.
    """
    lo, hi = np.log(0.05), np.log(20.0)

    def cov(log_t: float) -> float:
        s = distribution_stats(p, float(np.exp(log_t)))
        return coverage(s["age_p10"], s["age_p90"], age_true)

    for _ in range(40):
        mid = (lo + hi) / 2
        if cov(mid) < target:
            lo = mid
        else:
            hi = mid
    t = float(np.exp((lo + hi) / 2))
    return t, cov(np.log(t))
