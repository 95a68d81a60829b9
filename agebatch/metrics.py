"""Age MAE and gender accuracy, overall, per age band and per true gender.

One implementation for `train` (test metrics), `evaluate`/`compare` and the infer
summary, so every number agebatch prints about accuracy is computed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (label, lowest age, highest age) inclusive.
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, 10_000),
)
GENDER_NAMES = {0: "male", 1: "female"}


@dataclass(frozen=True, slots=True)
class ScopeMetrics:
    scope: str  # "all" | "age:20-39" | "gender:female"
    n: int
    age_mae: float | None
    gender_accuracy: float | None


def summarize(age_pred: np.ndarray, gender_prob: np.ndarray, age_true: np.ndarray, gender_true: np.ndarray) -> list[ScopeMetrics]:
    """Metrics per scope; NaN in a true column means unknown and is left out of that metric."""
    age_pred = np.asarray(age_pred, np.float64)
    age_true = np.asarray(age_true, np.float64)
    gender_true = np.asarray(gender_true, np.float64)
    hit = (np.asarray(gender_prob) >= 0.5).astype(np.float64) == gender_true

    def scope(name: str, mask: np.ndarray) -> ScopeMetrics:
        a = mask & ~np.isnan(age_true) & ~np.isnan(age_pred)
        g = mask & ~np.isnan(gender_true)
        mae = float(np.abs(age_pred[a] - age_true[a]).mean()) if a.any() else None
        acc = float(hit[g].mean()) if g.any() else None
        return ScopeMetrics(name, int(mask.sum()), mae, acc)

    everything = np.ones(len(age_true), bool)
    rows = [scope("all", everything)]
    with np.errstate(invalid="ignore"):
        for label, lo, hi in AGE_BANDS:
            rows.append(scope(f"age:{label}", (age_true >= lo) & (age_true <= hi)))
        for value, label in GENDER_NAMES.items():
            rows.append(scope(f"gender:{label}", gender_true == value))
    return rows
