"""Image quality: the copies `evaluate` scores, the training augmentation that covers them, and the metric itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from runs import run_cli

from agebatch.errors import AgebatchError
from agebatch.io.batching import iter_batches
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import iter_items
from agebatch.quality import PRESS_SHARPNESS, consistency, half_resolution, sharpen_to, sharpness
from agebatch.train.augment import augment_batch
from agebatch.train.config import AugmentConfig, QualityConfig


@pytest.fixture(scope="module")
def crops(samples_dir: Path) -> np.ndarray:
    b = next(iter_batches(iter_items(samples_dir), batch_size=64, options=DecodeOptions(size=(128, 128))))
    return b.images[b.ok]


def test_the_two_copies_move_sharpness_where_they_claim(crops: np.ndarray) -> None:
    base = np.array([sharpness(c) for c in crops])
    sharp = np.array([sharpness(sharpen_to(c)) for c in crops])
    half = np.array([sharpness(half_resolution(c)) for c in crops])
    soft = base < PRESS_SHARPNESS
    assert soft.sum() > 20, "UTKFace's crops are softer than press photos"
    assert np.all(np.abs(sharp[soft] - PRESS_SHARPNESS) < 0.25 * PRESS_SHARPNESS), "sharpened to press-photo sharpness"
    assert np.all(sharp[~soft] == base[~soft]), "a crop already that sharp is left alone"
    assert np.all(half < base), "a 2x down/up copy is softer"


def test_sharpness_is_measured_at_one_size_whatever_the_model_input(samples_dir: Path, crops: np.ndarray) -> None:
    import cv2

    b = next(iter_batches(iter_items(samples_dir), batch_size=64, options=DecodeOptions(size=(160, 160))))
    large = b.images[b.ok]
    assert len(large) == len(crops)
    at_128 = np.array([sharpness(c) for c in crops])
    at_160 = np.array([sharpness(c) for c in large])
    raw_160 = np.array([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for c in large])
    assert np.median(raw_160 / at_128) < 0.7, "drawn larger, the same faces have a lower Laplacian variance"
    assert 0.9 < np.median(at_160 / at_128) < 1.1, "measured at SHARPNESS_SIDE, the two sizes agree"
    soft = at_160 < PRESS_SHARPNESS
    sharp = np.array([sharpness(sharpen_to(c)) for c in large[soft]])
    assert np.all(np.abs(sharp - PRESS_SHARPNESS) < 0.25 * PRESS_SHARPNESS), "a 160-px crop is sharpened to the same 500"


def test_quality_augmentation_makes_faces_sharper_and_softer(crops: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    batch = np.concatenate([crops] * 8)
    plain = np.array([sharpness(c) for c in augment_batch(batch, rng, AugmentConfig(quality=QualityConfig.off()))])
    mixed = np.array([sharpness(c) for c in augment_batch(batch, rng)])
    assert np.percentile(mixed, 90) > 1.5 * np.percentile(plain, 90), "the default stage reaches press-photo sharpness"
    off = QualityConfig.off()
    soft = QualityConfig(**{**off.to_dict(), "resize_p": 0.5, "blur_p": 0.5, "resize_px": (24, 96)})  # type: ignore[arg-type]
    sharp = QualityConfig(**{**off.to_dict(), "sharpen_p": 1.0, "sharpen_to": (300.0, 1500.0)})  # type: ignore[arg-type]
    softer = np.array([sharpness(c) for c in augment_batch(batch, np.random.default_rng(0), AugmentConfig(quality=soft))])
    sharper = np.array([sharpness(c) for c in augment_batch(batch, np.random.default_rng(0), AugmentConfig(quality=sharp))])
    assert np.median(softer / plain) < 0.7 and np.median(sharper / plain) > 1.5, "each knob moves sharpness its way"
    # The amount is solved per crop: even the softest crops reach the drawn sharpness, not just the typical one.
    assert np.percentile(sharper, 5) > 300 * 0.75 and np.percentile(sharper, 95) < 1500 * 1.25


@pytest.mark.parametrize(
    "bad",
    [
        {"jpeg_p": 1.5},
        {"sharpen_p": 0.6, "resize_p": 0.6},
        {"jpeg_quality": (95, 20)},
        {"resize_px": (2, 96)},
        {"gamma": (0.0, 2.0)},
    ],
)
def test_quality_knobs_are_validated(bad: dict) -> None:
    with pytest.raises(AgebatchError):
        QualityConfig(**bad)


def test_the_card_records_every_quality_knob() -> None:
    from dataclasses import asdict

    from agebatch.train.config import TrainConfig

    recorded = asdict(TrainConfig(kind="custom"))["augment"]["quality"]
    assert recorded == asdict(QualityConfig()) and {"sharpen_p", "jpeg_quality", "temperature"} <= set(recorded)


def test_consistency_measures_a_model_that_reads_sharpness_as_age(crops: np.ndarray) -> None:
    ages = np.full(len(crops), 30.0)
    # A stand-in "model" whose age is the crop's sharpness in disguise: the metric must see it.
    report = consistency([(crops, ages)], lambda x: np.array([20 + sharpness(c) / 50 for c in x]))
    assert report.row("quality:sharpened").age_shift > 1 and report.row("quality:down-up-2x").age_shift < 0
    biases = [report.row(f"sharpness:q{q}").age_bias for q in range(1, 6)]
    assert biases == sorted(biases) and not report.meets_targets()
    steady = consistency([(crops, ages)], lambda x: np.full(len(x), 31.0))
    assert steady.row("quality:sharpened").age_change == 0 and steady.meets_targets()


def test_evaluate_prints_and_stores_the_quality_rows(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    out = tmp_path / "p.parquet"
    r = run_cli("evaluate", onnx_model, str(samples_dir), "--split", "all", "--out", str(out), "--faces", "crop")
    assert r.returncode == 0, r.stderr
    assert "quality:down-up-2x" in r.stdout and "sharpness:q5" in r.stdout
    summary = {row["scope"]: row for row in pq.read_table(tmp_path / "p.summary.parquet").to_pylist()}
    assert summary["quality:sharpened"]["age_change"] is not None and summary["sharpness:q1"]["age_bias"] is not None
    assert summary["all"]["age_mae"] is not None and summary["all"]["age_shift"] is None


def test_the_shipped_model_is_steady_under_quality_changes(tmp_path: Path, samples_dir: Path) -> None:
    """The default model on the bundled faces: a degraded copy moves its age less than the metric's bound."""
    from agebatch.commands.evaluate import quality_of
    from agebatch.pipeline.job import InferJob
    from agebatch.quality import CHANGE_TARGET

    report = quality_of(InferJob(str(samples_dir), str(tmp_path / "unused.parquet")))
    for scope in ("quality:down-up-2x", "quality:sharpened"):
        row = report.row(scope)
        assert row.n >= 35 and row.age_change is not None and row.age_change <= CHANGE_TARGET, row
