"""`agebatch ensemble`: several trained models served as one graph, weighed and calibrated on the validation split.

Why one graph (`agebatch.models.serving.ensemble_of`): Keras, ONNX Runtime and TensorRT then
run an ensemble like any other model, its card says what it is, and `infer`, `evaluate` and
`build-engine` need no special case. Its cost is the sum of its members' (README "Shipped
models": Model A + Model B takes about 1.3x Model B's time, since A is the smaller net).

The weights are the point of a 0.05 grid on the simplex with the lowest validation age MAE
(gender follows the same weights); the interval temperature is then fitted to the mixture
on the same split, as `agebatch.models.calibration` does for one model. The test split is only scored.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agebatch.errors import AgebatchError
from agebatch.io.splits import SplitSpec
from agebatch.models.calibration import Calibration

#: Spacing of the weight grid. On A + B a 0.1 grid's best val age MAE was 4.462 and this one's 4.460: finer would not pay.
WEIGHT_STEP = 0.05


@dataclass(frozen=True, slots=True)
class EnsembleResult:
    path: str
    weights: tuple[float, ...]
    calibration: Calibration
    val_age_mae: float
    val_gender_accuracy: float
    members_val_age_mae: tuple[float, ...]


def weight_grid(k: int, step: float = WEIGHT_STEP) -> list[tuple[float, ...]]:
    """Every weight vector of length `k` on a `step` grid that sums to one."""
    n = round(1 / step)
    if k == 1:
        return [(1.0,)]
    return [
        (*(c / n for c in head), (n - sum(head)) / n) for head in itertools.product(range(n + 1), repeat=k - 1) if sum(head) <= n
    ]


def choose_weights(ages: Sequence[np.ndarray], truth: np.ndarray, step: float = WEIGHT_STEP) -> tuple[float, ...]:
    """The grid point whose weighted mean of the members' `ages` has the lowest MAE against `truth`."""
    stacked = np.stack([np.asarray(a, np.float64) for a in ages])  # (k, N)
    grid = np.asarray(weight_grid(len(ages), step))  # (G, k)
    mae = np.abs(grid @ stacked - truth[None, :]).mean(axis=1)
    return tuple(round(float(w), 4) for w in grid[int(np.argmin(mae))])


def _check_compatible(paths: Sequence[str], cards: Sequence[Any]) -> None:
    """Members must be fed identically: one decode and one face crop serve them all."""
    first = cards[0]
    for path, card in zip(paths[1:], cards[1:], strict=True):
        for field in ("input_size", "interpolation", "fit", "face_template"):
            if getattr(card, field) != getattr(first, field):
                raise AgebatchError(
                    f"{path} and {paths[0]} are fed differently ({field}: {getattr(card, field)} vs "
                    f"{getattr(first, field)}); an ensemble's members must share input size, resize rule and face template"
                )


def build_ensemble(
    models: Sequence[str],
    data: str,
    *,
    out: str,
    split: SplitSpec | None = None,
    weights: Sequence[float] | None = None,
    cache_dir: str | None = None,
    overwrite: bool = False,
    log: Callable[[str], object] = print,
) -> EnsembleResult:
    """Serve `models` as one weighted, calibrated model at `out` (a .keras path) with its card.

    `weights` (one per model, summing to 1) skips the search. Rebuild the exports afterwards
    (`agebatch build-engine OUT`).
    """
    import keras

    from agebatch.artifacts import sha256_file
    from agebatch.backends.keras import load_keras_model
    from agebatch.faces.align import template_for
    from agebatch.io.lock import OutputLock
    from agebatch.models.calibration import distributions, fit_calibration, raw_outputs
    from agebatch.models.card import OUTPUT_AGE, ModelCard, card_path, load_card, model_outputs
    from agebatch.models.serving import DISTRIBUTION, ensemble_of, has_distribution, is_mirrored, serving_model
    from agebatch.train.data import load_training_data
    from agebatch.train.record import save_model, split_metrics
    from agebatch.version import __version__

    if len(models) < 2:
        raise AgebatchError("an ensemble needs at least two models")
    if not out.endswith(".keras"):
        raise AgebatchError(f"--out must be a .keras path (got {out})")
    if os.path.abspath(out) in {os.path.abspath(m) for m in models}:
        raise AgebatchError(f"--out {out} is one of the members; write the ensemble to a new file")
    if os.path.exists(out) and not overwrite:
        raise AgebatchError(f"{out} exists; pass --overwrite to replace it")
    if weights is not None and (len(weights) != len(models) or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6):
        raise AgebatchError(f"--weights needs {len(models)} non-negative numbers that sum to 1 (got {list(weights)})")
    for m in models:
        if not os.path.isfile(m) or not m.endswith(".keras"):
            raise AgebatchError(f"ensemble members are .keras models; not found or not one: {m}")
    cards = [load_card(m) for m in models]
    _check_compatible(models, cards)
    members = [load_keras_model(m) for m in models]
    for path, member in zip(models, members, strict=True):
        if not has_distribution(member):
            raise AgebatchError(f"{path} has no age distribution (a regression head); ensemble members need one")
    mirror = all(is_mirrored(m) for m in members)

    spec = split or SplitSpec()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with OutputLock(os.path.splitext(out)[0]):
        data_ = load_training_data(
            data,
            split=spec,
            options=cards[0].decode_options(),
            template=template_for(cards[0].face_template),
            cache_dir=cache_dir,
            log=log,
        )
        va = data_.splits["val"]
        raw = [raw_outputs(member, va.images, mirror=mirror, names=(OUTPUT_AGE, DISTRIBUTION)) for member in members]
        ages = [r[OUTPUT_AGE][:, 0] for r in raw]
        members_mae = tuple(round(float(np.abs(a - va.age).mean()), 4) for a in ages)
        chosen = tuple(float(w) for w in weights) if weights is not None else choose_weights(ages, va.age)
        mixture = sum(w * r[DISTRIBUTION] for w, r in zip(chosen, raw, strict=True))
        assert isinstance(mixture, np.ndarray)
        cal = fit_calibration(mixture, va.age)
        name = os.path.splitext(os.path.basename(out))[0]
        served = serving_model(ensemble_of(members, chosen, name=name), mirror=mirror, temperature=cal.temperature)
        # The served graph reproduces the mixture it was calibrated on (a wiring check, not a metric).
        check = distributions(served, va.images[:64], mirror=mirror)
        if not np.allclose(check, mixture[:64], atol=1e-4):
            raise AssertionError("the ensemble graph does not reproduce its members' weighted distributions")
        metrics = {"val": split_metrics(served, va), "test": split_metrics(served, data_.splits["test"])}
        first = cards[0]
        terms = [f"{w:g} x {c.name} ({c.architecture})" for w, c in zip(chosen, cards, strict=True)]
        card = ModelCard(
            name=name,
            architecture="ensemble: " + " + ".join(terms),
            input_size=first.input_size,
            preprocessing="each member's own, inside its graph: " + "; ".join(f"{c.name}: {c.preprocessing}" for c in cards),
            interpolation=first.interpolation,
            fit=first.fit,
            face_template=first.face_template,
            outputs=model_outputs(True),
            training={
                "ensemble": {
                    "members": [
                        {"name": c.name, "file": os.path.basename(m), "sha256": sha256_file(m), "weight": w, "val_age_mae": e}
                        for m, c, w, e in zip(models, cards, chosen, members_mae, strict=True)
                    ],
                    "weights": "given" if weights is not None else f"lowest val age MAE on a {WEIGHT_STEP} grid",
                },
                "data_fingerprint": data_.fingerprint,
                "counts": data_.counts,
                "split": {"method": "sha256(seed:content_sha256)", "seed": spec.seed, "val": spec.val, "test": spec.test},
                "test_time_augmentation": first.training.get("test_time_augmentation") if mirror else None,
                "params": int(served.count_params()),
            },
            metrics=metrics,
            versions={"agebatch": __version__, "keras": keras.__version__, "numpy": np.__version__},
            calibration=cal.to_dict(),
        )
        save_model(served, out)
        card.save(card_path(out))
    val = metrics["val"]["all"]
    return EnsembleResult(out, chosen, cal, val["age_mae"], val["gender_accuracy"], members_mae)
