"""A newcomer's first hour, through the real CLI: joinable output, little lost on a stop, readable in a pipe,
shipped models by name, honest capability messages, the crop-mode warning, the Python API, progress."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runs import infer_args, many_faces, run_cli, start, wait_for_shards

from agebatch.errors import AgebatchError
from agebatch.io.decode import DecodeOptions
from agebatch.io.schemas import STATUSES
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer
from agebatch.progress import Progress

DATA = Path(__file__).resolve().parent / "data"


def _manifest(tmp_path: Path, samples_dir: Path) -> tuple[Path, list[str | None]]:
    """A manifest with a user `id`, a `batch` dictionary column, a null path and one path twice."""
    faces = [str(p) for p in sorted(samples_dir.glob("*.jpg"))[:5]]
    paths: list[str | None] = [faces[0], None, faces[1], faces[1], faces[2], str(tmp_path / "missing.jpg")]
    table = pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "id": pa.array([f"id-{k}" for k in range(len(paths))]),
            "batch": pa.array(["a", "a", "b", "b", "c", "c"]).dictionary_encode(),
            "blob": pa.array([b"x"] * len(paths), pa.binary()),
            "error": pa.array(["mine"] * len(paths)),  # the output has its own `error`: not copied
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    return tmp_path / "m.parquet", paths


def test_output_joins_back_to_the_manifest_by_input_and_passed_columns(
    tmp_path: Path, samples_dir: Path, onnx_model: str
) -> None:
    manifest, paths = _manifest(tmp_path, samples_dir)
    out = tmp_path / "p.parquet"
    r = run_cli("infer", str(manifest), "--out", str(out), "--model", onnx_model, "--faces", "crop")
    assert r.returncode == 0, r.stderr
    t = pq.read_table(out)
    names = t.schema.names
    assert names.index("input") < names.index("status") < names.index("id") < names.index("path_bytes") == len(names) - 1
    assert "blob" not in names, "binary columns are not copied by default (image bytes, once per face)"
    rows = t.to_pylist()
    assert [r["input"] for r in rows] == list(range(len(paths)))
    assert [r["id"] for r in rows] == [f"id-{k}" for k in range(len(paths))] and rows[3]["batch"] == "b"
    assert [r["path"] for r in rows] == paths  # null and repeated paths stay tied to their input
    assert [r["status"] for r in rows] == ["ok", "unreadable", "ok", "ok", "ok", "unreadable"]
    assert rows[1]["error"].startswith("no path") and rows[5]["error"] == "file not found"

    narrow = tmp_path / "narrow.parquet"
    r = run_cli(
        "infer", str(manifest), "--out", str(narrow), "--model", onnx_model, "--faces", "crop", "--keep-columns", "id,blob"
    )
    assert r.returncode == 0, r.stderr
    assert pq.read_table(narrow).schema.names[-3:] == ["id", "blob", "path_bytes"]
    for bad, says in (("error", "would replace output columns"), ("nope", "nope not in")):
        r = run_cli("infer", str(manifest), "--out", str(tmp_path / "x.parquet"), "--model", onnx_model, "--keep-columns", bad)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "y.parquet"), "--model", onnx_model, "--keep-columns", "id")
    assert r.returncode == 2 and "not a Parquet manifest" in r.stderr


def test_status_names_every_outcome_and_no_face_is_not_an_error(tmp_path: Path, fault_folder, samples_dir: Path) -> None:
    folder, _ = fault_folder
    out = tmp_path / "faults.parquet"
    result = run_infer(InferJob(str(folder), str(out), faces="crop"))
    rows = pq.read_table(out).to_pylist()
    assert {r["status"] for r in rows} <= set(STATUSES)
    unreadable = ("no path", "file not found", "permission denied", "is a folder", "cannot open", "not a regular file",
                  "read failed", "empty file")  # fmt: skip
    for r in rows:
        if r["error"] is None:
            assert r["status"] == "ok"
        elif r["error"].startswith(unreadable):
            assert r["status"] == "unreadable", r
        elif "too large" in r["error"]:
            assert r["status"] == "too_large", r
        else:
            assert r["status"] == "decode_error", r
    assert {"ok", "unreadable", "too_large", "decode_error"} <= {r["status"] for r in rows}
    assert result.errors == sum(r["status"] not in ("ok", "no_face") for r in rows) > 0

    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted(samples_dir.glob("*.jpg"))[:3]:
        shutil.copy(f, photos / f.name)
    shutil.copy(DATA / "coffee.jpg", photos / "0_0_0_coffee.jpg")  # labelled, and no face in it
    out = tmp_path / "photos.parquet"
    r = run_cli("infer", str(photos), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "0 errors, 1 without a face" in r.stdout, r.stdout
    t = pq.read_table(out)
    assert t.column("status").to_pylist().count("no_face") == 1
    summary = {row["scope"]: row for row in pq.read_table(tmp_path / "photos.summary.parquet").to_pylist()}
    assert summary["run:errors"]["n"] == 0 and summary["run:no_face"]["n"] == 1
    assert summary["all"]["n"] == 3, "the summary counts labelled faces scored, not inputs"


def test_a_stop_saves_what_was_predicted_and_resume_equals_a_clean_run(
    tmp_path: Path, samples_dir: Path, onnx_model: str
) -> None:
    """Shards of a million rows would keep nothing: SIGINT still keeps all but the batch in flight."""
    src = many_faces(tmp_path / "faces", samples_dir, 20)  # 780 inputs
    clean = tmp_path / "clean.parquet"
    run_infer(InferJob(str(src), str(clean), model=onnx_model, batch_size=16, faces="crop"))
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model, "--workers", "1", "--shard-seconds", "3600", shard_rows=1_000_000)
    proc = start(args, env={**os.environ, "AGEBATCH_PROGRESS_SECONDS": "0.05"})
    seen = [0]

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.match(r"infer: ([\d,]+)", line)
            if m:
                seen[0] = int(m.group(1).replace(",", ""))
            if "Error:" in line:
                seen.append(line)  # type: ignore[arg-type]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 120
    while seen[0] < 200 and time.time() < deadline:
        assert proc.poll() is None, "the run ended before 200 inputs"
        time.sleep(0.02)
    done_before = seen[0]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == 130
    message = next(str(x) for x in seen[1:])
    kept = int(re.search(r"after ([\d,]+) inputs were saved", message).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert done_before <= kept < 780 and kept % 16 == 0, (done_before, kept)
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept:,} inputs from the earlier run" in resumed.stdout
    a, b = pq.read_table(clean), pq.read_table(out)
    assert b.column("path").to_pylist() == a.column("path").to_pylist()
    assert b.column("input").to_pylist() == list(range(780))
    assert np.allclose(b.column("age").to_numpy(), a.column("age").to_numpy(), atol=1e-4)


def test_time_closes_shards_for_slow_runs(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    """With shards far too big to fill, shards still appear while the run goes on: closed by time."""
    src = many_faces(tmp_path / "faces", samples_dir, 8)
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model, "--workers", "1", "--shard-seconds", "0.001", shard_rows=1_000_000)
    proc = start(args)
    assert wait_for_shards(out, 2, proc) >= 2
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).column("input").to_pylist() == list(range(8 * 39))


def test_piped_output_fits_80_columns_and_scripts_get_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "agebatch", "models"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in r.stdout and "modelB.fp32.onnx *" in r.stdout, "the default: what infer runs without --model"
    r = subprocess.run([sys.executable, "-m", "agebatch", "models", "--json"], capture_output=True, text=True, env=env)
    listed = json.loads(r.stdout)
    names = {os.path.basename(m["path"]) for m in listed["models"]}
    assert {"modelA.keras", "modelB.keras", "modelB.fp32.onnx"} <= names and "backends" in listed["machine"]
    assert sum(m["default"] for m in listed["models"]) == 1


def test_brackets_in_paths_are_printed_not_read_as_markup(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    folder = tmp_path / "faces[red]x"
    folder.mkdir()
    for f in sorted(samples_dir.glob("*.jpg"))[:4]:
        shutil.copy(f, folder / f.name)
    out = tmp_path / "out[bold].parquet"
    r = run_cli("infer", str(folder), "--out", str(out), "--model", onnx_model, "--faces", "crop")
    assert r.returncode == 0, r.stderr
    assert f"-> {out}:" in r.stdout and f"summary: {tmp_path / 'out[bold].summary.parquet'}" in r.stdout, r.stdout


def test_shipped_models_by_name_and_evaluate_defaults(tmp_path: Path, samples_dir: Path) -> None:
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "a.parquet"), "--model", "modelA", "--faces", "crop")
    assert r.returncode == 0 and "modelA" in r.stdout, r.stderr
    r = run_cli("evaluate", str(samples_dir), "--split", "all", "--no-quality", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    scored = [r for r in pq.read_table(tmp_path / "modelB.all.parquet").to_pylist() if r["face"] == 0]
    assert report["model"] == "modelB" and report["scopes"][0]["scope"] == "all"
    assert report["scopes"][0]["n"] == len(scored) >= 35, "faces scored: each sample's face 0"
    r = run_cli("evaluate", "modelA", "modelB", str(samples_dir))
    assert r.returncode == 2 and "expected at most 1 model(s) and DATA" in r.stderr, r.stderr


def test_missing_capabilities_say_what_is_missing(tmp_path: Path, samples_dir: Path) -> None:
    from agebatch.backends.probe import gpu_available, module_installed

    out = str(tmp_path / "p.parquet")
    if not (module_installed("tensorrt") and gpu_available()):
        r = run_cli("infer", str(samples_dir), "--out", out, "--backend", "tensorrt")
        assert r.returncode == 2 and "--backend tensorrt is not available here" in r.stderr, r.stderr
        assert "agebatch[gpu]" in r.stderr and "Traceback" not in r.stderr
    if not module_installed("keras"):
        r = run_cli("infer", str(samples_dir), "--out", out, "--backend", "keras")
        assert r.returncode == 2 and "agebatch[train]" in r.stderr, r.stderr
    assert not os.path.exists(out)


def test_crop_mode_warns_once_when_inputs_are_not_face_crops(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.jpg", "rocket.jpg", "astronaut.jpg"):
        shutil.copy(DATA / name, photos / name)
    r = run_cli("infer", str(photos), "--out", str(tmp_path / "p.parquet"), "--model", onnx_model, "--faces", "crop")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("do not look like aligned face crops") == 1 and "3 of the first 3" in r.stdout, r.stdout
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "s.parquet"), "--model", onnx_model, "--faces", "crop")
    assert r.returncode == 0 and "do not look like" not in r.stdout, r.stdout


def test_python_api_predicts_paths_and_arrays_like_the_cli(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    import agebatch

    faces = sorted(samples_dir.glob("*.jpg"))[:3]
    bgr = cv2.imread(str(faces[1]))
    table = agebatch.predict([faces[0], bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), tmp_path / "none.jpg"], model=onnx_model,
                             faces="crop", bgr=True)  # fmt: skip
    rows = table.to_pylist()
    assert [r["input"] for r in rows] == [0, 1, 2, 3] and rows[1]["path"] is None and rows[0]["path"] == str(faces[0])
    assert rows[3]["status"] == "unreadable" and rows[3]["age"] is None
    cli = tmp_path / "cli.parquet"
    run_infer(InferJob(str(samples_dir), str(cli), model=onnx_model, faces="crop"))
    by_path = {r["path"]: r for r in pq.read_table(cli).to_pylist()}
    assert abs(rows[0]["age"] - by_path[str(faces[0])]["age"]) < 1e-4
    assert abs(rows[1]["age"] - by_path[str(faces[1])]["age"]) < 0.05, "a PNG of the decoded JPEG: same face, same age"
    assert abs(rows[2]["age"] - rows[1]["age"]) > 1e-3, "an RGB array read as BGR is another image"
    rgb = agebatch.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), model=onnx_model, faces="crop", bgr=False).to_pylist()
    assert abs(rgb[0]["age"] - rows[1]["age"]) < 1e-4
    with pytest.raises(AgebatchError, match="unknown options modle"):
        agebatch.predict([faces[0]], modle="modelA")


def test_progress_rates_count_this_runs_work_and_log_lines_carry_eta() -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    p = Progress(1000, "infer", console=Console(file=buf, width=200), log_every=0)
    p.skip(600)
    time.sleep(0.05)
    p.advance(100, errors=2, no_face=3)
    assert p.done == 700 and p.rate < 100 / 0.05 * 1.5, "skipped inputs are not speed"
    assert p.eta is not None and p.eta == pytest.approx(300 / p.rate, rel=0.05)
    line = buf.getvalue()
    assert "700/1,000 img" in line and "2 errors, 3 without a face" in line and "elapsed 0:00:00" in line and "eta 0:00:" in line


def test_face_predictor_for_map_batches_matches_infer(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    from agebatch.api import FacePredictor
    from agebatch.io.batching import iter_batches
    from agebatch.io.sources import iter_items

    predictor = FacePredictor(onnx_model)
    batch = next(iter_batches(iter_items(samples_dir), batch_size=64, options=DecodeOptions(size=predictor.input_size)))
    out = predictor({"image": batch.images, "id": np.arange(len(batch.images))})
    assert set(out) >= {"id", "age", "gender_prob", "age_p10", "age_p90", "age_group"} and "image" not in out
    cli = tmp_path / "cli.parquet"
    run_infer(InferJob(str(samples_dir), str(cli), model=onnx_model, faces="crop"))
    assert np.allclose(out["age"], pq.read_table(cli).column("age").to_numpy(), atol=1e-4)
    with pytest.raises(AgebatchError, match="wants uint8 crops"):
        predictor({"image": batch.images.astype(np.float32)})
