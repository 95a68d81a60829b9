"""Age MAE, gender accuracy, interval coverage and age-group accuracy, overall, per age band and per true gender.

One implementation for `train` (test metrics), `evaluate`/`compare` and the infer
summary, so every number agebatch prints about accuracy is computed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agebatch.ages import group_of

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
    n: int  # faces scored in this scope: with a prediction and a true age or gender
    age_mae: float | None
    gender_accuracy: float | None
    #: Share of true ages inside [age_p10, age_p90] (target 0.8); None without an age distribution.
    interval_coverage: float | None = None
    #: Adience age group: predicted == true, and within one group of it.
    group_exact: float | None = None
    group_one_off: float | None = None


class SummaryAccumulator:
    """Streaming version of `summarize`: feed batches, read the rows at the end.

    Keeps a few sums per scope, so a summary over millions of rows costs no memory.
    """

    def __init__(self) -> None:
        scopes = ["all", *(f"age:{label}" for label, _, _ in AGE_BANDS), *(f"gender:{g}" for g in GENDER_NAMES.values())]
        # n, abs err sum, n with age, hits, n with gender, n with interval, inside, n with group, exact, one-off
        self._sums = {s: [0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0] for s in scopes}

    def update(
        self,
        age_pred: np.ndarray,
        gender_prob: np.ndarray,
        age_true: np.ndarray,
        gender_true: np.ndarray,
        p10: np.ndarray | None = None,
        p90: np.ndarray | None = None,
        group_pred: np.ndarray | None = None,
    ) -> None:
        """Add a batch; `p10`, `p90`, `group_pred` (group index, NaN for none) where the model has an age distribution."""
        nan = np.full(len(age_true), np.nan)
        p10 = nan if p10 is None else np.asarray(p10, np.float64)
        p90 = nan if p90 is None else np.asarray(p90, np.float64)
        group_pred = nan if group_pred is None else np.asarray(group_pred, np.float64)
        age_pred = np.asarray(age_pred, np.float64)
        age_true = np.asarray(age_true, np.float64)
        gender_true = np.asarray(gender_true, np.float64)
        prob = np.asarray(gender_prob, np.float64)
        err = np.abs(age_pred - age_true)
        hit = (prob >= 0.5).astype(np.float64) == gender_true
        has_age = ~np.isnan(age_true) & ~np.isnan(age_pred)
        has_gender = ~np.isnan(gender_true) & ~np.isnan(prob)
        has_interval = ~np.isnan(age_true) & ~np.isnan(p10) & ~np.isnan(p90)
        with np.errstate(invalid="ignore"):
            inside = (age_true >= p10) & (age_true <= p90)
        has_group = ~np.isnan(age_true) & ~np.isnan(group_pred)
        group_true = group_of(np.nan_to_num(age_true))
        group_diff = np.abs(np.nan_to_num(group_pred, nan=-9) - group_true)
        masks = {"all": np.ones(len(age_true), bool)}
        with np.errstate(invalid="ignore"):
            for label, lo, hi in AGE_BANDS:
                masks[f"age:{label}"] = (age_true >= lo) & (age_true <= hi)
            for value, label in GENDER_NAMES.items():
                masks[f"gender:{label}"] = gender_true == value
        for scope, mask in masks.items():
            s = self._sums[scope]
            a, g = mask & has_age, mask & has_gender
            s[0] += int((a | g).sum())  # faces scored: an error row or an unlabelled one is not counted
            s[1] += float(err[a].sum())
            s[2] += int(a.sum())
            s[3] += int(hit[g].sum())
            s[4] += int(g.sum())
            i, k = mask & has_interval, mask & has_group
            s[5] += int(i.sum())
            s[6] += int(inside[i].sum())
            s[7] += int(k.sum())
            s[8] += int((group_diff[k] == 0).sum())
            s[9] += int((group_diff[k] <= 1).sum())

    def rows(self) -> list[ScopeMetrics]:
        def share(a: float, b: int) -> float | None:
            return a / b if b else None

        return [
            ScopeMetrics(
                scope,
                n,
                share(err, n_age),
                share(hits, n_gender),
                share(inside, n_interval),
                share(exact, n_group),
                share(one_off, n_group),
            )
            for scope, (n, err, n_age, hits, n_gender, n_interval, inside, n_group, exact, one_off) in self._sums.items()
        ]


def summarize(
    age_pred: np.ndarray,
    gender_prob: np.ndarray,
    age_true: np.ndarray,
    gender_true: np.ndarray,
    p10: np.ndarray | None = None,
    p90: np.ndarray | None = None,
    group_pred: np.ndarray | None = None,
) -> list[ScopeMetrics]:
    """Metrics per scope; NaN in a true column means unknown and is left out of that metric."""
    acc = SummaryAccumulator()
    acc.update(age_pred, gender_prob, age_true, gender_true, p10, p90, group_pred)
    return acc.rows()
