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


class SummaryAccumulator:
    """Streaming version of `summarize`: feed batches, read the rows at the end.

    Keeps a few sums per scope, so a summary over millions of rows costs no memory.
    """

    def __init__(self) -> None:
        scopes = ["all", *(f"age:{label}" for label, _, _ in AGE_BANDS), *(f"gender:{g}" for g in GENDER_NAMES.values())]
        self._sums = {s: [0, 0.0, 0, 0, 0] for s in scopes}  # n, abs err sum, n with age, hits, n with gender

    def update(self, age_pred: np.ndarray, gender_prob: np.ndarray, age_true: np.ndarray, gender_true: np.ndarray) -> None:
        age_pred = np.asarray(age_pred, np.float64)
        age_true = np.asarray(age_true, np.float64)
        gender_true = np.asarray(gender_true, np.float64)
        prob = np.asarray(gender_prob, np.float64)
        err = np.abs(age_pred - age_true)
        hit = (prob >= 0.5).astype(np.float64) == gender_true
        has_age = ~np.isnan(age_true) & ~np.isnan(age_pred)
        has_gender = ~np.isnan(gender_true) & ~np.isnan(prob)
        masks = {"all": np.ones(len(age_true), bool)}
        with np.errstate(invalid="ignore"):
            for label, lo, hi in AGE_BANDS:
                masks[f"age:{label}"] = (age_true >= lo) & (age_true <= hi)
            for value, label in GENDER_NAMES.items():
                masks[f"gender:{label}"] = gender_true == value
        for scope, mask in masks.items():
            s = self._sums[scope]
            a, g = mask & has_age, mask & has_gender
            s[0] += int(mask.sum())
            s[1] += float(err[a].sum())
            s[2] += int(a.sum())
            s[3] += int(hit[g].sum())
            s[4] += int(g.sum())

    def rows(self) -> list[ScopeMetrics]:
        return [
            ScopeMetrics(scope, n, err / n_age if n_age else None, hits / n_gender if n_gender else None)
            for scope, (n, err, n_age, hits, n_gender) in self._sums.items()
        ]


def summarize(age_pred: np.ndarray, gender_prob: np.ndarray, age_true: np.ndarray, gender_true: np.ndarray) -> list[ScopeMetrics]:
    """Metrics per scope; NaN in a true column means unknown and is left out of that metric."""
    acc = SummaryAccumulator()
    acc.update(age_pred, gender_prob, age_true, gender_true)
    return acc.rows()
