"""The shipped models: present, loadable without TensorFlow, and their exports agree with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agebatch.artifacts import read_sidecar
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import resolve
from agebatch.commands.engine import calibration_faces
from agebatch.models.card import load_card
from agebatch.models.shipped import DEFAULT_MODEL, models_dir

MODELS = Path(models_dir())


@pytest.mark.parametrize("name", ["modelA", "modelB", "modelAB"])
def test_shipped_model_files(name: str) -> None:
    trained = (".curves.png", ".history.csv") if name != "modelAB" else ()  # an ensemble has no training curves
    for suffix in (".keras", ".card.json", ".fp32.onnx", ".fp32.onnx.json", *trained):
        assert (MODELS / f"{name}{suffix}").is_file(), f"{name}{suffix} missing"
    card = load_card(MODELS / f"{name}.keras")
    assert card.input_size == (128, 128)
    test = card.metrics["test"]["all"]
    assert test["n"] > 1000 and test["age_mae"] is not None and test["gender_accuracy"] is not None
    meta = read_sidecar(MODELS / f"{name}.fp32.onnx", kind="onnx")
    assert meta["parity"]["max_age_diff"] <= 0.01 and meta["parity"]["reference_age_std"] > 1.0
    assert meta["source_model"]["path"] == f"{name}.keras", "relative to the sidecar: the pair moves together"


def test_default_model_runs_through_its_onnx_export() -> None:
    model = resolve(None, "auto")
    assert model.backend in ("onnxruntime", "tensorrt")
    assert Path(model.artifact).name.startswith(DEFAULT_MODEL)


def test_shipped_ensemble_is_built_from_the_shipped_models() -> None:
    """modelAB's card names the exact modelA / modelB files it averages: reshipping either means rebuilding it."""
    from agebatch.artifacts import sha256_file

    card = load_card(MODELS / "modelAB.keras")
    members = card.training["ensemble"]["members"]
    assert [m["file"] for m in members] == ["modelA.keras", "modelB.keras"]
    for m in members:
        assert m["sha256"] == sha256_file(MODELS / m["file"]), f"{m['file']} changed since modelAB was built"
    assert abs(sum(m["weight"] for m in members) - 1) < 1e-9 and card.calibration is not None
    assert card.face_template == load_card(MODELS / "modelB.keras").face_template


@pytest.mark.parametrize("name", ["modelA", "modelB", "modelAB"])
def test_onnx_export_matches_keras_on_real_faces(name: str, samples_dir: Path) -> None:
    pytest.importorskip("tensorflow", reason="the Keras reference needs the [train] extra")
    keras_backend = load_backend(MODELS / f"{name}.keras")
    onnx_backend = load_backend(MODELS / f"{name}.fp32.onnx")
    faces = calibration_faces(str(samples_dir), keras_backend.card)
    k, o = keras_backend.predict(faces), onnx_backend.predict(faces)
    (ka, kg), (oa, og) = (k.age, k.gender_prob), (o.age, o.gender_prob)
    assert ka.std() > 1.0, "a trained model's ages vary across faces"
    assert np.abs(ka - oa).max() <= 0.01
    assert ((kg >= 0.5) == (og >= 0.5)).all()


def test_a_wheel_carries_the_models_and_runs_from_any_folder(tmp_path: Path, samples_dir: Path) -> None:
    """Build the wheel, unpack it elsewhere, and run `infer` from an unrelated folder on its shipped default model."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("agebatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("modelA", "modelB"):
        for suffix in (".keras", ".card.json", ".fp32.onnx", ".fp32.onnx.json"):
            assert f"agebatch/shipped_models/{name}{suffix}" in names
    assert {"agebatch/faces/models/blazeface_short.onnx", "agebatch/faces/utkface_template.json"} <= names
    assert not [n for n in names if "modelAB" in n], "the ensemble stays in the repository (pyproject exclude-package-data)"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "from agebatch.cli import main\n"
        f"main(['infer', {str(samples_dir)!r}, '--out', 'p.parquet'], standalone_mode=False)\n"
        "import agebatch, agebatch.models.shipped as s\n"
        "print('FROM=' + agebatch.__file__ + ' MODELS=' + s.models_dir())\n"
        "print('TF=' + str(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGEBATCH_MODELS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"FROM={site}" in proc.stdout and f"MODELS={site}/agebatch/shipped_models" in proc.stdout and "TF=[]" in proc.stdout
    assert len(set(pq.read_table(elsewhere / "p.parquet").column("path").to_pylist())) == 39


def test_mirror_tta_is_chosen_at_inference_time(tmp_path: Path, samples_dir: Path) -> None:
    """--no-tta runs the plain model inside the TTA wrapper through its own verified export; exports refuse a mismatch."""
    from agebatch.errors import AgebatchError
    from agebatch.pipeline.job import InferJob
    from agebatch.pipeline.run import run_infer

    both = resolve(None, "auto")
    one = resolve(None, "auto", tta=False)
    assert both.tta and Path(both.artifact).name == f"{DEFAULT_MODEL}.fp32.onnx"
    assert not one.tta and Path(one.artifact).name == f"{DEFAULT_MODEL}.notta.fp32.onnx"
    meta = read_sidecar(one.artifact, kind="onnx")
    assert meta["mirror_tta"] is False and meta["parity"]["max_age_diff"] <= 0.01
    with pytest.raises(AgebatchError, match="exported with mirror TTA"):
        resolve(both.artifact, "auto", tta=False)
    with pytest.raises(AgebatchError, match="exported without mirror TTA"):
        resolve(one.artifact, "auto", tta=True)
    a = run_infer(InferJob(str(samples_dir), str(tmp_path / "a.parquet"), faces="crop"))
    b = run_infer(InferJob(str(samples_dir), str(tmp_path / "b.parquet"), faces="crop", tta=False))
    assert a.artifact == both.artifact and b.artifact == one.artifact
    ages_a = np.array(pq.read_table(tmp_path / "a.parquet").column("age").to_pylist())
    ages_b = np.array(pq.read_table(tmp_path / "b.parquet").column("age").to_pylist())
    diff = np.abs(ages_a - ages_b)
    assert diff.max() > 0.01 and diff.mean() < 2.0, "a face and its mirror give nearly, not exactly, the same age"


def test_a_shipped_keras_model_loads_in_plain_keras(samples_dir: Path) -> None:
    """As the README documents it: `import agebatch.models.layers` registers agebatch's layers, then plain Keras."""
    pytest.importorskip("keras", reason="needs the [train] extra")
    code = (
        "import cv2, numpy as np, keras\n"
        "import agebatch.models.layers  # registers agebatch's Keras layers\n"
        "from agebatch.models.shipped import shipped_model\n"
        "model = keras.saving.load_model(shipped_model('modelA'))\n"
        f"faces = sorted(__import__('glob').glob({str(samples_dir)!r} + '/*.jpg'))[:4]\n"
        "x = np.stack([cv2.resize(cv2.imread(f)[:, :, ::-1], (128, 128), interpolation=cv2.INTER_LINEAR) for f in faces])\n"
        "out = model.predict(x, verbose=0)\n"
        "out = out if isinstance(out, dict) else dict(zip(model.output_names, out))\n"
        "print(sorted(out), np.round(np.ravel(out['age']), 1).tolist())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    names, ages = r.stdout.strip().split("] [")
    assert "'age'" in names and "'gender_prob'" in names and "'age_p10'" in names
    assert all(0 < float(a) < 100 for a in ages.rstrip("]").split(", "))
