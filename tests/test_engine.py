"""ONNX export, FP16 graph, sidecars and backends, on a tiny Model A trained on real faces.

Parity on an untrained BatchNorm net proves nothing (it can give one output for every
input), so the fixture trains for a few seconds and the tests check the reference
predictions really vary before comparing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow, tf2onnx) to build and export models")

from agebatch.artifacts import read_sidecar
from agebatch.backends.registry import load_backend
from agebatch.cli import main
from agebatch.commands.engine import build_engine, calibration_faces
from agebatch.errors import AgebatchError


def test_reference_predictions_vary(built) -> None:
    _, result = built
    for stats in result.parity.values():
        assert stats["reference_age_std"] > 0.2, "a degenerate model would make parity meaningless"


def test_fp32_onnx_parity(built) -> None:
    out, result = built
    p = result.parity[str(out / "tiny.fp32.onnx")]
    assert p["n"] == 39 and p["max_age_diff"] <= 0.01 and p["gender_agreement"] == 1.0


def test_fp16_onnx_parity_and_graph(built) -> None:
    import onnx

    out, result = built
    path = out / "tiny.fp16.onnx"
    p = result.parity[str(path)]
    assert p["mean_age_diff"] <= 0.1 and p["gender_agreement"] >= 0.995
    model = onnx.load(path)
    types = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types, "weights really are FP16"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    kept = read_sidecar(path, kind="onnx")["fp32_nodes"]
    assert any("age_bins" in n and n.endswith("Softmax") for n in kept), "the age head stays FP32"


def test_sidecar_round_trip(built, tiny_model: Path) -> None:
    from agebatch.models.card import load_card

    out, _ = built
    meta = read_sidecar(out / "tiny.fp16.onnx", kind="onnx")
    assert meta["card"] == load_card(tiny_model)
    assert meta["precision"] == "fp16" and meta["batch_profile"] == {"min": 1, "opt": 256, "max": 1024}
    assert meta["parity"]["reference"] == "keras" and meta["parity"]["n"] == 39
    assert len(meta["source_model"]["sha256"]) == 64
    assert not os.path.isabs(meta["source_model"]["path"]), "relative to the sidecar, so exports can move with their model"


def test_dynamic_batch_gives_the_same_rows(built, samples_dir: Path) -> None:
    out, _ = built
    backend = load_backend(out / "tiny.fp32.onnx")
    faces = calibration_faces(str(samples_dir), backend.card)
    whole = backend.predict(faces)
    parts = [backend.predict(faces[i : i + 7]) for i in range(0, len(faces), 7)]
    assert np.allclose(np.concatenate([p.age for p in parts]), whole.age, atol=1e-4)
    assert np.allclose(np.concatenate([p.gender_prob for p in parts]), whole.gender_prob, atol=1e-6)
    assert np.allclose(np.concatenate([p.age_p90 for p in parts]), whole.age_p90, atol=1e-3)
    assert backend.predict(faces[:1]).age.shape == (1,)
    with pytest.raises(ValueError, match="expected uint8"):
        backend.predict(faces.astype(np.float32))


def test_keras_model_reloads_to_the_same_predictions(tiny_model: Path, samples_dir: Path) -> None:
    a = load_backend(tiny_model)
    faces = calibration_faces(str(samples_dir), a.card)
    b = load_backend(tiny_model)
    assert np.array_equal(a.predict(faces).age, b.predict(faces).age)


def test_artifact_errors(built, tmp_path: Path) -> None:
    out, _ = built
    src = out / "tiny.fp32.onnx"
    with pytest.raises(AgebatchError, match="model file not found"):
        load_backend(tmp_path / "none.onnx")
    lone = tmp_path / "lone.onnx"
    shutil.copy(src, lone)
    with pytest.raises(AgebatchError, match="has no sidecar"):
        load_backend(lone)
    corrupt = tmp_path / "corrupt.onnx"
    shutil.copy(src, corrupt)
    shutil.copy(str(src) + ".json", str(corrupt) + ".json")
    with open(corrupt, "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 64)
    with pytest.raises(AgebatchError, match="does not match its sidecar"):
        load_backend(corrupt)
    foreign = tmp_path / "foreign.onnx"
    shutil.copy(src, foreign)
    (tmp_path / "foreign.onnx.json").write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(AgebatchError, match="not an agebatch artifact sidecar"):
        load_backend(foreign)
    with pytest.raises(AgebatchError, match=r"needs an \.engine file"):
        load_backend(src, "tensorrt")
    with pytest.raises(AgebatchError, match="unknown model type"):
        load_backend(tmp_path / "model.bin")


def test_corrupt_keras_model_is_a_clear_error(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    shutil.copy(str(tiny_model).replace(".keras", ".card.json"), tmp_path / "bad.card.json")
    with pytest.raises(AgebatchError, match="is not a Keras model"):
        load_backend(bad)


def _tensorrt_ready() -> bool:
    from agebatch.backends.registry import available_backends

    return "tensorrt" in available_backends()


@pytest.mark.skipif(_tensorrt_ready(), reason="TensorRT and a GPU are present: the build test below runs instead")
def test_tensorrt_target_fails_cleanly_without_it(tiny_model: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["build-engine", str(tiny_model), "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "--target onnx" in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == [], "nothing is exported before the check"


@pytest.mark.skipif(not _tensorrt_ready(), reason="needs `import tensorrt` and a CUDA GPU (neither exists on CI)")
def test_tensorrt_engine_parity(tiny_model: Path, tmp_path: Path) -> None:
    result = build_engine(str(tiny_model), target="tensorrt", precision="fp16", out_dir=str(tmp_path), max_batch=64, opt_batch=32)
    p = result.parity[str(tmp_path / "tiny.fp16.engine")]
    assert p["mean_age_diff"] <= 0.1 and p["gender_agreement"] >= 0.995


def test_build_engine_cli_onnx(tiny_model: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main, ["build-engine", str(tiny_model), "--target", "onnx", "--precision", "fp32", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "parity against Keras" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fp32.onnx", "tiny.fp32.onnx.json"]
    bad = CliRunner().invoke(main, ["build-engine", str(tiny_model), "--target", "onnx", "--min-batch", "8", "--opt-batch", "4"])
    assert bad.exit_code == 2 and "batch profile" in bad.output


def test_cpu_inference_does_not_import_tensorflow(built, samples_dir: Path) -> None:
    out, _ = built
    code = (
        "import sys\n"
        "from agebatch.backends.registry import load_backend\n"
        "from agebatch.commands.engine import calibration_faces\n"
        f"b = load_backend({str(out / 'tiny.fp16.onnx')!r})\n"
        f"p = b.predict(calibration_faces({str(samples_dir)!r}, b.card))\n"
        "assert len(p.age) == 39\n"
        "print('TF=' + str(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "TF=False" in proc.stdout


def test_bench_engine_prints_ratios(built, tiny_model: Path) -> None:
    out, _ = built
    args = [
        "bench",
        "engine",
        str(out / "tiny.fp32.onnx"),
        "--batch-sizes",
        "1,8",
        "--seconds",
        "0.2",
        "--compare-keras",
        str(tiny_model),
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "onnxruntime / keras predict" in r.output


def test_onnxruntime_device_choice_and_fallback() -> None:
    from agebatch.backends.onnxruntime import choose_providers

    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert choose_providers("auto", [cpu]) == ([cpu], None)
    assert choose_providers("auto", [cuda, cpu]) == ([cuda, cpu], None)
    assert choose_providers("cpu", [cuda, cpu]) == ([cpu], None)
    with pytest.raises(AgebatchError, match=r"no CUDA provider .*onnxruntime-gpu.*--device auto"):
        choose_providers("cuda", [cpu])
    with pytest.raises(AgebatchError, match="unknown device"):
        choose_providers("tpu", [cpu])


def test_io_binding_path_gives_the_same_predictions(built, samples_dir: Path) -> None:
    """The bound-buffer path used on GPUs runs on the CPU provider too: same numbers as session.run."""
    from agebatch.backends.onnxruntime import OnnxRuntimeBackend

    out, _ = built
    plain = OnnxRuntimeBackend(str(out / "tiny.fp32.onnx"), device="cpu")
    bound = OnnxRuntimeBackend(str(out / "tiny.fp32.onnx"), device="cpu", io_binding=True, chunk=16)
    faces = calibration_faces(str(samples_dir), plain.card)
    p1, p2 = plain.predict(faces), bound.predict(faces)
    (a1, g1), (a2, g2) = (p1.age, p1.gender_prob), (p2.age, p2.gender_prob)
    assert not plain.io_binding and bound.io_binding and len(a2) == 39
    assert np.allclose(a1, a2, atol=1e-5) and np.allclose(g1, g2, atol=1e-6)


def test_cuda_request_without_a_gpu_is_an_error_not_a_cpu_run(built, samples_dir: Path, tmp_path: Path) -> None:
    """`--device cuda` means CUDA: exit 2 naming the wheel to install, no output; `auto` runs on the CPU."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA: the refusal cannot happen here")
    out, _ = built
    args = ["infer", str(samples_dir), "--out", str(tmp_path / "p.parquet"), "--model", str(out / "tiny.fp32.onnx")]
    r = subprocess.run(
        [sys.executable, "-m", "agebatch", *args, "--device", "cuda", "--faces", "crop"], capture_output=True, text=True
    )
    assert r.returncode == 2, r.stderr
    assert "agebatch[gpu-ort]" in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "p.parquet").exists()
    r = subprocess.run(
        [sys.executable, "-m", "agebatch", *args, "--device", "auto", "--faces", "crop"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "39 inputs" in r.stdout, r.stderr


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU (neither exists on CI)",
)
def test_cuda_provider_matches_the_cpu(built, samples_dir: Path) -> None:
    from agebatch.backends.onnxruntime import OnnxRuntimeBackend

    out, _ = built
    cpu = OnnxRuntimeBackend(str(out / "tiny.fp32.onnx"), device="cpu")
    gpu = OnnxRuntimeBackend(str(out / "tiny.fp32.onnx"), device="cuda")
    faces = calibration_faces(str(samples_dir), cpu.card)
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.io_binding
    assert np.abs(cpu.predict(faces).age - gpu.predict(faces).age).max() < 0.05
