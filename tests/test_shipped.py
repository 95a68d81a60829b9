"""The shipped models: present, loadable without TensorFlow, and their exports agree with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agebatch.artifacts import read_sidecar
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import resolve
from agebatch.engine import calibration_faces
from agebatch.models.card import load_card
from agebatch.models.shipped import DEFAULT_MODEL, models_dir

MODELS = Path(models_dir())


@pytest.mark.parametrize("name", ["modelA", "modelB"])
def test_shipped_model_files(name: str) -> None:
    for suffix in (".keras", ".card.json", ".fp32.onnx", ".fp32.onnx.json", ".curves.png", ".history.csv"):
        assert (MODELS / f"{name}{suffix}").is_file(), f"{name}{suffix} missing"
    card = load_card(MODELS / f"{name}.keras")
    assert card.input_size == (128, 128)
    test = card.metrics["test"]["all"]
    assert test["n"] > 1000 and test["age_mae"] is not None and test["gender_accuracy"] is not None
    meta = read_sidecar(MODELS / f"{name}.fp32.onnx", kind="onnx")
    assert meta["parity"]["max_age_diff"] <= 0.01 and meta["parity"]["reference_age_std"] > 1.0


def test_default_model_runs_through_its_onnx_export() -> None:
    model = resolve(None, "auto")
    assert model.backend in ("onnxruntime", "tensorrt")
    assert Path(model.artifact).name.startswith(DEFAULT_MODEL)


@pytest.mark.parametrize("name", ["modelA", "modelB"])
def test_onnx_export_matches_keras_on_real_faces(name: str, samples_dir: Path) -> None:
    pytest.importorskip("tensorflow", reason="the Keras reference needs the [train] extra")
    keras_backend = load_backend(MODELS / f"{name}.keras")
    onnx_backend = load_backend(MODELS / f"{name}.fp32.onnx")
    faces = calibration_faces(str(samples_dir), keras_backend.card)
    (ka, kg), (oa, og) = keras_backend.predict(faces), onnx_backend.predict(faces)
    assert ka.std() > 1.0, "a trained model's ages vary across faces"
    assert np.abs(ka - oa).max() <= 0.01
    assert ((kg >= 0.5) == (og >= 0.5)).all()
