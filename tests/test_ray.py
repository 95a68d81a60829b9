"""`infer --ray` on a local Ray instance over real faces: same rows as a local run, shard resume."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="needs the [ray] extra")

from agebatch.errors import AgebatchError  # noqa: E402
from agebatch.pipeline.job import InferJob, RayOptions  # noqa: E402
from agebatch.pipeline.run import run_infer  # noqa: E402
from agebatch.pipeline.shards import SUCCESS  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield RayOptions(actors=1)
    ray.shutdown()


def _rows(folder: Path) -> dict[str, list]:
    return pq.read_table(sorted(str(p) for p in folder.glob("part-*.parquet"))).to_pydict()


def test_ray_rows_equal_the_local_run(tmp_path: Path, fault_folder, onnx_model: str, local_ray) -> None:
    folder, expect = fault_folder
    local = run_infer(InferJob(str(folder), str(tmp_path / "local.parquet"), model=onnx_model, batch_size=8, faces="crop"))
    remote = run_infer(InferJob(str(folder), str(tmp_path / "ray"), model=onnx_model, batch_size=8, ray=local_ray, faces="crop"))
    a = pq.read_table(tmp_path / "local.parquet").to_pydict()
    b = _rows(tmp_path / "ray")
    assert b["path"] == a["path"], "every input once, in the same order"
    assert b["error"] == a["error"], "the same error rows"
    ok = [e is None for e in a["error"]]
    diff = np.abs(np.array(a["age"], float)[ok] - np.array(b["age"], float)[ok])
    assert diff.max() <= 1e-4
    assert remote.inputs == len(expect) and remote.errors == local.errors
    assert (tmp_path / "ray" / SUCCESS).is_file()
    sa = pq.read_table(tmp_path / "local.summary.parquet").to_pylist()
    sb = pq.read_table(tmp_path / "ray.summary.parquet").to_pylist()
    assert [r["n"] for r in sa] == [r["n"] for r in sb], "the same summary file"


def test_ray_resume_skips_completed_shards(tmp_path: Path, samples_dir: Path, onnx_model: str, local_ray) -> None:
    out = tmp_path / "ray"
    run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, batch_size=8, shard_rows=8, ray=local_ray, faces="crop"))
    shards = sorted(out.glob("part-*.parquet"))
    assert len(shards) == 5  # 39 rows in shards of 8
    job = InferJob(str(samples_dir), str(out), model=onnx_model, batch_size=8, shard_rows=8, ray=local_ray, faces="crop")
    with pytest.raises(AgebatchError, match="already complete"):
        run_infer(job)
    assert run_infer(replace(job, resume=True)).nothing_to_do, "--resume on a complete folder: nothing to do"
    # Simulate a run that died after three shards.
    (out / SUCCESS).unlink()
    for s in shards[3:]:
        s.unlink()
    kept = {s.name: os.stat(s).st_mtime_ns for s in shards[:3]}
    with pytest.raises(AgebatchError, match="--resume"):
        run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, batch_size=8, shard_rows=8, ray=local_ray, faces="crop"))
    result = run_infer(
        InferJob(
            str(samples_dir), str(out), model=onnx_model, batch_size=8, shard_rows=8, ray=local_ray, resume=True, faces="crop"
        )
    )
    assert result.resumed_inputs == 24 and result.inputs == 39
    assert {s.name: os.stat(s).st_mtime_ns for s in shards[:3]} == kept, "completed shards are not recomputed"
    assert _rows(out)["path"] == sorted(str(p) for p in samples_dir.glob("*.jpg"))


def test_ray_detect_mode_equals_the_local_run(tmp_path: Path, samples_dir: Path, onnx_model: str, local_ray) -> None:
    """Multi-face photos on Ray: the same face rows, in the same order, as a local run (faces never split)."""
    import cv2
    from photos import DATA, compose, save_jpeg

    src = tmp_path / "photos"
    src.mkdir()
    faces = sorted(samples_dir.glob("*.jpg"))
    for i in range(6):
        image, _ = compose(
            "coffee.jpg", faces[i : i + 3], [(400, 400, 500, 0), (1300, 500, 380, 6), (900, 1000, 300, -6)], (1200, 1800)
        )
        save_jpeg(image, src / f"group{i}.jpg")
    cv2.imwrite(str(src / "nobody.jpg"), cv2.imread(str(DATA / "rocket.jpg")))
    local = run_infer(InferJob(str(src), str(tmp_path / "local.parquet"), model=onnx_model, batch_size=4, faces="detect"))
    remote = run_infer(InferJob(str(src), str(tmp_path / "ray"), model=onnx_model, batch_size=4, ray=local_ray, faces="detect"))
    a = pq.read_table(tmp_path / "local.parquet").to_pydict()
    b = _rows(tmp_path / "ray")
    assert local.rows == remote.rows == 19 and local.inputs == remote.inputs == 7
    assert b["path"] == a["path"] and b["face"] == a["face"] and b["error"] == a["error"]
    ok = [e is None for e in a["error"]]
    assert np.abs(np.array(a["age"], float)[ok] - np.array(b["age"], float)[ok]).max() <= 1e-4
    assert np.allclose(np.array(a["face_w"], float)[ok], np.array(b["face_w"], float)[ok])


def test_ray_aligns_the_boxes_a_manifest_gives(tmp_path: Path, samples_dir: Path, onnx_model: str, local_ray) -> None:
    """Manifest face boxes (with and without keypoints, bad ones, a row without) reach the Ray tasks: the local rows."""
    import pyarrow as pa
    from photos import compose, save_jpeg

    faces = sorted(samples_dir.glob("*.jpg"))
    image, placed = compose("coffee.jpg", faces[:2], [(400, 400, 500, 0), (1300, 500, 380, 6)], (1200, 1800))
    photo = str(save_jpeg(image, tmp_path / "pair.jpg"))
    kp = placed[1].keypoints[:4].reshape(-1).tolist()
    rows = [
        (photo, 170.0, 170.0, 460.0, 460.0, None),
        (photo, 1130.0, 330.0, 350.0, 350.0, kp),
        (photo, 1130.0, 330.0, 350.0, 350.0, [*kp[:7], None]),  # a keypoint missing: error row
        (photo, 10.0, 10.0, -5.0, 50.0, None),  # non-positive width: error row
        (photo, None, None, None, None, None),  # no box: detected
    ]
    cols = list(zip(*rows, strict=True))
    manifest = tmp_path / "boxes.parquet"
    names = ("path", "face_x", "face_y", "face_w", "face_h")
    table = {n: pa.array(c, pa.string() if n == "path" else pa.float64()) for n, c in zip(names, cols, strict=False)}
    pq.write_table(pa.table({**table, "face_keypoints": pa.array(cols[5], pa.list_(pa.float64()))}), manifest)
    run_infer(InferJob(str(manifest), str(tmp_path / "local.parquet"), model=onnx_model, batch_size=4))
    run_infer(InferJob(str(manifest), str(tmp_path / "ray"), model=onnx_model, batch_size=4, ray=local_ray))
    a = pq.read_table(tmp_path / "local.parquet").to_pydict()
    b = _rows(tmp_path / "ray")
    assert a["input"] == b["input"] == [0, 1, 2, 3, 4, 4], "one row per given box; the last row detects both faces"
    assert a["status"] == b["status"] and a["status"][2:4] == ["bad_box", "bad_box"]
    assert a["error"] == b["error"]
    assert a["face_score"][:2] == b["face_score"][:2] == [None, None], "no detector ran on a given box"
    ok = [e is None for e in a["error"]]
    assert np.abs(np.array(a["age"], float)[ok] - np.array(b["age"], float)[ok]).max() <= 1e-4
    assert np.allclose(np.array(a["face_x"], float)[ok], np.array(b["face_x"], float)[ok])
