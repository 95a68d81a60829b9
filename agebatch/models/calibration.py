"""Calibration maths: one temperature on a model's age logits so that [p10, p90] holds 80% of ages.

A network trained with cross-entropy on one-year bins is usually too sure of itself: its
raw [p10, p90] holds fewer than 80% of true ages. One temperature T on the age logits
(`agebatch.ages.temper`) widens or narrows every face's distribution; it is fitted on the
validation split only, so that 80% of validation ages fall inside, then built into the
served graph (`agebatch.models.serving`) and recorded in the card. The test split is
only ever scored with the T the validation split chose. Training (`agebatch.train`) and
the `calibrate` / `ensemble` commands use it; it depends on neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agebatch.ages import AGE_BIN_CENTERS, INTERVAL, coverage, distribution_stats, fit_temperature


@dataclass(frozen=True, slots=True)
class Calibration:
    temperature: float
    n: int  # validation faces it was fitted on
    val_coverage: float  # share of validation ages in [p10, p90] at `temperature`
    val_coverage_uncalibrated: float  # the same at T = 1
    interval: tuple[float, float] = INTERVAL
    split: str = "val"
    method: str = "one temperature on the age logits, bisected to the target coverage"

    def summary(self) -> str:
        """One line for `train` and `calibrate` to print."""
        return (
            f"temperature {self.temperature:.3f}: [p10, p90] holds {self.val_coverage:.1%} of {self.n:,} val ages "
            f"({self.val_coverage_uncalibrated:.1%} before)"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def raw_outputs(
    model: Any, images: np.ndarray, *, mirror: bool, names: tuple[str, ...] | None = None, batch: int = 128
) -> dict[str, np.ndarray]:
    """{name: (N, width)} of the trained part's (mirror-averaged) outputs on `images`, before any
    temperature (`serving.raw_outputs_model`); `names` defaults to the age distribution alone."""
    from agebatch.models.serving import DISTRIBUTION, raw_outputs_model

    names = names or (DISTRIBUTION,)
    graph = raw_outputs_model(model, mirror=mirror, names=names)
    parts = [graph.predict_on_batch(images[i : i + batch]) for i in range(0, len(images), batch)]
    if not parts:
        return {k: np.zeros((0, len(AGE_BIN_CENTERS) if k == DISTRIBUTION else 1), np.float32) for k in names}
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]).reshape(len(images), -1) for k in names}


def distributions(model: Any, images: np.ndarray, *, mirror: bool) -> np.ndarray:
    """(N, 101) age distributions of `images`, averaged over each face and its mirror when `mirror`."""
    from agebatch.models.serving import DISTRIBUTION

    return raw_outputs(model, images, mirror=mirror)[DISTRIBUTION]


def fit_calibration(p: np.ndarray, ages: np.ndarray) -> Calibration:
    """The temperature that puts 80% of `ages` inside the [p10, p90] of the (N, 101) distributions `p`."""
    t, cov = fit_temperature(p, ages)
    raw = distribution_stats(p, 1.0)
    return Calibration(round(t, 4), len(ages), cov, coverage(raw["age_p10"], raw["age_p90"], ages))


def calibrate(model: Any, images: np.ndarray, ages: np.ndarray, *, mirror: bool) -> tuple[Any, Calibration]:
    """Fit the temperature on (`images`, `ages`) (the validation split) and return the served model built with it."""
    from agebatch.models.serving import serving_model

    cal = fit_calibration(distributions(model, images, mirror=mirror), ages)
    return serving_model(model, mirror=mirror, temperature=cal.temperature), cal
