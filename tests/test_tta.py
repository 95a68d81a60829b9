"""Mirror test-time augmentation: the wrapped model is the mean over face and mirror, everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow, tf2onnx)")

from agebatch.artifacts import read_sidecar
from agebatch.backends.registry import load_backend
from agebatch.commands.engine import build_engine, calibration_faces
from agebatch.models.card import card_path, load_card


@pytest.fixture(scope="module")
def mirrored(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agebatch.backends.keras import load_keras_model
    from agebatch.models.serving import with_mirror_tta

    path = tmp_path_factory.mktemp("tta") / "tiny_tta.keras"
    with_mirror_tta(load_keras_model(str(tiny_model))).save(path)
    load_card(tiny_model).save(card_path(path))
    return path


def test_prediction_is_the_mean_over_face_and_mirror(tiny_model: Path, mirrored: Path, samples_dir: Path) -> None:
    plain, tta = load_backend(tiny_model, "keras"), load_backend(mirrored, "keras")
    faces = calibration_faces(str(samples_dir), plain.card)
    p, m, got = plain.predict(faces), plain.predict(np.ascontiguousarray(faces[:, :, ::-1])), tta.predict(faces)
    (age, gender), (age_m, gender_m) = (p.age, p.gender_prob), (m.age, m.gender_prob)
    got_age, got_gender = got.age, got.gender_prob
    assert np.abs(age - age_m).max() > 0.01, "real faces are not mirror-symmetric to the model"
    assert np.allclose(got_age, (age + age_m) / 2, atol=1e-4)
    assert np.allclose(got_gender, (gender + gender_m) / 2, atol=1e-5)
    one_age = tta.predict(faces[:1]).age
    assert one_age[0] == pytest.approx(got_age[0], abs=1e-4), "a batch of one is not mixed with anything"


def test_loads_in_a_fresh_process(mirrored: Path) -> None:
    code = f"from agebatch.backends.keras import load_keras_model; print(type(load_keras_model({str(mirrored)!r})).__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("Functional"), proc.stderr[-2000:]


def test_onnx_exports_keep_the_mirror_and_the_fp32_age_path(mirrored: Path, tmp_path: Path) -> None:
    result = build_engine(str(mirrored), target="onnx", precision="fp16", out_dir=str(tmp_path))
    fp32, fp16 = str(tmp_path / "tiny_tta.fp32.onnx"), str(tmp_path / "tiny_tta.fp16.onnx")
    assert result.parity[fp32]["max_age_diff"] <= 1e-3 and result.parity[fp32]["gender_agreement"] == 1.0
    assert result.parity[fp16]["mean_age_diff"] <= 0.1 and result.parity[fp16]["gender_agreement"] >= 0.995
    kept = read_sidecar(fp16, kind="onnx")["fp32_nodes"]
    assert any("age_mirror_mean" in n for n in kept), "the averaging of ages stays FP32 with the rest of the age head"
    import onnx

    mirror_ops = [n.op_type for n in onnx.load(fp32).graph.node if "/mirror" in n.name]
    assert sorted(mirror_ops) == ["Concat", "Slice"], f"the mirror is one reversed Slice, not a transpose chain: {mirror_ops}"
