"""The age distribution's read-outs: spread, 80% interval, Adience group; calibration; the same in every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agebatch.ages import (
    AGE_BIN_CENTERS,
    AGE_GROUPS,
    coverage,
    distribution_stats,
    fit_temperature,
    group_of,
    quantile,
    temper,
)


def _gaussians(means: np.ndarray, sigma: float) -> np.ndarray:
    p = np.exp(-0.5 * ((AGE_BIN_CENTERS[None, :] - means[:, None]) / sigma) ** 2)
    return p / p.sum(axis=1, keepdims=True)


def test_one_bin_spreads_its_mass_over_its_year() -> None:
    p = np.zeros((1, 101))
    p[0, 30] = 1.0
    s = distribution_stats(p)
    assert s["age_p10"][0] == pytest.approx(29.6) and s["age_p90"][0] == pytest.approx(30.4)
    assert s["age_std"][0] == pytest.approx(np.sqrt(1 / 12), rel=1e-4)
    assert AGE_GROUPS[int(s["age_group"][0])] == "25-32"


def test_quantiles_of_a_wide_distribution() -> None:
    p = _gaussians(np.array([40.0]), 8.0)
    assert quantile(p, 0.5)[0] == pytest.approx(40.0, abs=0.05)
    # A normal's 10th/90th percentiles sit 1.2816 sigma from its mean.
    assert quantile(p, 0.1)[0] == pytest.approx(40 - 1.2816 * 8, abs=0.1)
    assert quantile(p, 0.9)[0] == pytest.approx(40 + 1.2816 * 8, abs=0.1)
    assert distribution_stats(p)["age_std"][0] == pytest.approx(8.0, abs=0.05)


def test_temperature_widens_and_narrows() -> None:
    p = _gaussians(np.array([40.0]), 5.0)
    width = {t: float(np.diff([quantile(temper(p, t), q)[0] for q in (0.1, 0.9)])[0]) for t in (0.5, 1.0, 2.0)}
    assert width[0.5] < width[1.0] < width[2.0]
    assert np.allclose(temper(p, 1.0), p)


def test_age_groups_split_the_gaps_at_their_midpoints() -> None:
    ages = [0, 2, 3, 4, 7, 8, 14, 15, 22, 23, 35, 36, 45, 46, 56, 57, 99, 120]
    want = ["0-2", "0-2", "0-2", "4-6", "4-6", "8-13", "8-13", "15-20", "15-20", "25-32", "25-32", "38-43", "38-43",
            "48-53", "48-53", "60+", "60+", "60+"]  # fmt: skip
    assert [AGE_GROUPS[g] for g in group_of(np.array(ages))] == want


def test_fit_temperature_turns_an_overconfident_model_into_80_percent() -> None:
    rng = np.random.default_rng(0)
    centers = rng.uniform(15, 70, 4000)
    truth = centers + rng.normal(0, 6.0, len(centers))  # true ages scatter 6 years around the prediction
    p = _gaussians(centers, 3.0)  # the model claims 3
    raw = distribution_stats(p)
    assert coverage(raw["age_p10"], raw["age_p90"], truth) < 0.6
    t, cov = fit_temperature(p, truth)
    assert t > 1.5 and cov == pytest.approx(0.8, abs=0.005)
    # The same temperature holds on fresh faces of the same kind: it is a property of the model, not of these ages.
    fresh = centers + rng.normal(0, 6.0, len(centers))
    s = distribution_stats(p, t)
    assert coverage(s["age_p10"], s["age_p90"], fresh) == pytest.approx(0.8, abs=0.03)


def test_every_backend_gives_the_numpy_read_outs(tiny_model: Path, built, samples_dir: Path) -> None:
    """Keras and ONNX Runtime compute spread, interval and group in the graph exactly as `agebatch.ages` does."""
    from agebatch.backends.keras import load_keras_model
    from agebatch.backends.registry import load_backend
    from agebatch.commands.engine import calibration_faces
    from agebatch.models.calibration import distributions
    from agebatch.models.serving import temperature_of

    out, _ = built
    model = load_keras_model(str(tiny_model))
    keras_backend = load_backend(tiny_model, "keras")
    faces = calibration_faces(str(samples_dir), keras_backend.card)
    t = temperature_of(model)
    assert t == pytest.approx(1.3)
    want = distribution_stats(distributions(model, faces, mirror=False), float(t))
    for backend in (keras_backend, load_backend(out / "tiny.fp32.onnx", "onnxruntime")):
        got = backend.predict(faces)
        assert got.has_distribution
        for k in ("age_std", "age_p10", "age_p90"):
            assert np.abs(getattr(got, k) - want[k]).max() < 0.01, (backend.name, k)
        assert np.array_equal(got.age_group, want["age_group"]), backend.name
        assert (got.age_p10 <= got.age_p90).all() and (got.age_std > 0).all()
        assert np.unique(got.age_p90).size > 5, "intervals differ between faces"


def test_infer_writes_the_interval_and_group_columns(tiny_model: Path, tmp_path: Path, fault_folder) -> None:
    from agebatch.pipeline.job import InferJob
    from agebatch.pipeline.run import run_infer

    folder, _ = fault_folder
    out = tmp_path / "p.parquet"
    run_infer(InferJob(str(folder), str(out), model=str(tiny_model), faces="crop"))
    t = pq.read_table(out)
    names = t.column_names
    assert names[:9] == ["path", "age", "gender_prob", "gender", "error", "age_std", "age_p10", "age_p90", "age_group"]
    bad = t.column("error").is_valid().to_numpy(zero_copy_only=False)
    assert bad.any() and (~bad).any()
    for c in ("age_std", "age_p10", "age_p90", "age_group"):
        valid = t.column(c).is_valid().to_numpy(zero_copy_only=False)
        assert np.array_equal(valid, ~bad), f"{c}: a value on every predicted row, null on every error row"
    assert set(t.column("age_group").drop_null().to_pylist()) <= set(AGE_GROUPS)
    ok = t.filter(t.column("error").is_null())
    p10, p90 = (ok.column(c).to_numpy() for c in ("age_p10", "age_p90"))
    assert (p10 <= p90).all()


def test_evaluate_reports_coverage_and_group_accuracy(tiny_model: Path, samples_dir: Path, tmp_path: Path) -> None:
    from agebatch.commands.evaluate import evaluate
    from agebatch.io.splits import SplitSpec

    ev = evaluate(str(tiny_model), str(samples_dir), str(tmp_path / "e.parquet"), split="all", spec=SplitSpec(), faces="crop")
    rows = {r.scope: r for r in ev.rows}
    everyone = rows["all"]
    assert everyone.interval_coverage is not None and 0 <= everyone.interval_coverage <= 1
    assert everyone.group_exact is not None and everyone.group_one_off is not None
    assert everyone.group_exact <= everyone.group_one_off
    # The summary Parquet carries the same numbers.
    summary = pq.read_table(ev.result.summary_path).to_pylist()
    first = next(r for r in summary if r["scope"] == "all")
    assert first["age_interval_coverage"] == pytest.approx(everyone.interval_coverage)
    assert first["age_group_one_off"] == pytest.approx(everyone.group_one_off)
    # Recomputed here from the predictions file: the coverage is what the rows say.
    t = pq.read_table(tmp_path / "e.parquet")
    t = t.filter(t.column("error").is_null())
    cov = coverage(t.column("age_p10").to_numpy(), t.column("age_p90").to_numpy(), t.column("age_true").to_numpy())
    assert cov == pytest.approx(everyone.interval_coverage)
    truth = group_of(t.column("age_true").to_numpy())
    pred = np.array([AGE_GROUPS.index(g) for g in t.column("age_group").to_pylist()])
    assert (pred == truth).mean() == pytest.approx(everyone.group_exact)
