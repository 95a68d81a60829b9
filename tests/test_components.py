"""The pieces the pipeline is built from: atomic writes, the job object, the backend registry and probes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from agebatch.backends.probe import module_installed
from agebatch.backends.registry import BACKEND_CHOICES, check_backend, kind_of
from agebatch.errors import AgebatchError
from agebatch.faces.options import FaceOptions
from agebatch.io.atomic import AtomicFile, write_bytes_atomic
from agebatch.pipeline.job import InferJob, RayOptions


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_file_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    with AtomicFile(target) as f:
        assert f.tmp.endswith(".keras") and os.path.dirname(f.tmp) == str(tmp_path), "same folder, same extension"
        Path(f.tmp).write_bytes(b"new")
        assert target.read_bytes() == b"old", "nothing replaced before the block ends"
    assert target.read_bytes() == b"new" and _hidden(tmp_path) == []
    assert (target.stat().st_mode & 0o777) == 0o644
    with pytest.raises(RuntimeError), AtomicFile(target) as f:
        Path(f.tmp).write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"new" and _hidden(tmp_path) == [], "failure keeps the old file and leaves no temp"
    write_bytes_atomic(tmp_path / "engine.plan", b"\x00" * 10)
    assert (tmp_path / "engine.plan").stat().st_size == 10


def test_atomic_file_survives_kill_9_mid_write(tmp_path: Path) -> None:
    """A process killed while writing leaves the old file intact under the final name."""
    target = tmp_path / "card.json"
    target.write_text("{}")
    code = (
        "import os, signal\n"
        "from agebatch.io.atomic import AtomicFile\n"
        f"with AtomicFile({str(target)!r}) as f:\n"
        "    open(f.tmp, 'w').write('{\"half\": ')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert target.read_text() == "{}"


def test_infer_job_validates_once() -> None:
    for bad in ({"batch_size": 0}, {"shard_rows": 0}, {"workers": -1}, {"limit": 0}, {"backend": "tflite"}):
        with pytest.raises(AgebatchError):
            InferJob("photos", "p.parquet", **bad)  # type: ignore[arg-type]
    with pytest.raises(AgebatchError):
        RayOptions(actors=0)
    job = InferJob("photos/", "out/preds.parquet")
    assert job.summary_path == "out/preds.summary.parquet" and not job.folder_output
    assert InferJob("photos/", "out/ray/", ray=RayOptions()).summary_path == "out/ray.summary.parquet"
    with pytest.raises(AttributeError):
        job.batch_size = 3  # type: ignore[misc]  # frozen


def test_infer_job_round_trips_through_the_cli() -> None:
    """`cli_args()` (what bench runs) parses back into the same job: the CLI and the job cannot drift."""
    from agebatch.cli.infer import infer

    job = InferJob(
        "photos/", "p.parquet", model="m.onnx", backend="onnxruntime", batch_size=64, workers=3, resume=True,
        summary="s.parquet", limit=10, glob="*.jpg", shard_rows=100, ray=RayOptions("auto", actors=2, gpus_per_actor=0.5),
        faces="detect", face_options=FaceOptions(min_score=0.6, min_face=40, max_faces=3), save_crops="crops/", tta=False,
    )  # fmt: skip
    params = infer.make_context("infer", job.cli_args()).params
    direct = {f.name: getattr(job, f.name) for f in fields(job) if f.name not in ("ray", "face_options")}
    assert {k: params[k] for k in direct} == direct
    assert (params["ray_address"], params["actors"], params["gpus_per_actor"]) == ("auto", 2, 0.5)
    assert (params["min_score"], params["min_face"], params["max_faces"]) == (0.6, 40, 3)


def test_backend_registry_maps_file_types() -> None:
    assert [kind_of(p) for p in ("a.keras", "b.ONNX", "c.engine", "d.plan")] == ["keras", "onnxruntime", "tensorrt", "tensorrt"]
    assert BACKEND_CHOICES == ("auto", "tensorrt", "onnxruntime", "keras")
    assert check_backend("m.onnx", "auto") == "onnxruntime"
    with pytest.raises(AgebatchError, match=r"needs a \.keras model"):
        check_backend("m.onnx", "keras")
    with pytest.raises(AgebatchError, match="unknown model type"):
        kind_of("m.pt")


def test_type_stubs_alone_do_not_count_as_an_installed_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs installs a bare `tensorrt/` of .pyi files; that must not look like TensorRT."""
    (tmp_path / "stubonly").mkdir()
    (tmp_path / "stubonly" / "__init__.pyi").write_text("def f() -> int: ...\n")
    (tmp_path / "realmod").mkdir()
    (tmp_path / "realmod" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not module_installed("stubonly") and module_installed("realmod") and not module_installed("no_such_mod")
