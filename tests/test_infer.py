"""`agebatch infer` on real files: one row per input, faults, resume after kill -9, clean failures."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runs import infer_args, many_faces, run_cli, start, wait_for_shards

from agebatch.errors import AgebatchError
from agebatch.io.sources import iter_items
from agebatch.io.writer import read_metadata
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer
from agebatch.pipeline.shards import parts_dir


def test_every_input_gets_one_row_in_order(tmp_path: Path, fault_folder, onnx_model: str) -> None:
    folder, expect = fault_folder
    out = tmp_path / "p.parquet"
    result = run_infer(InferJob(str(folder), str(out), model=onnx_model, batch_size=4, faces="crop"))
    _check_fault_rows(out, folder, expect, result)


def test_detect_mode_keeps_every_input_and_its_error(tmp_path: Path, fault_folder, onnx_model: str) -> None:
    """With --faces detect: the same decode errors, the real faces found, a picture of lines has 'no face found'."""
    folder, expect = fault_folder
    out = tmp_path / "p.parquet"
    run_infer(InferJob(str(folder), str(out), model=onnx_model, batch_size=4, faces="detect"))
    rows = pq.read_table(out).to_pylist()
    keys = [i.key for i in iter_items(folder)]
    firsts = [r["path"] for r in rows if r["face"] in (None, 0)]
    assert firsts == keys, "every input once (its first row), in input order"
    by_name = {Path(r["path"]).relative_to(folder).as_posix(): r for r in rows if r["face"] in (None, 0)}
    for name, expected in expect.items():
        r = by_name[name]
        if expected is not None:
            assert expected in r["error"] and r["face"] is None and r["age"] is None, name
    faces = [n for n in expect if n.endswith(".jpg") and expect[n] is None and n not in ("huge.jpg", "unreadable.jpg")]
    for name in faces:
        r = by_name[name]
        assert r["error"] is None and r["face"] == 0 and 0 < r["face_score"] <= 1 and 0 < r["age"] < 120, name
    assert by_name["huge.jpg"]["error"] == "no face found" and by_name["huge.jpg"]["face"] is None


def _check_fault_rows(out: Path, folder: Path, expect: dict, result) -> None:
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == [i.key for i in iter_items(folder)], "one row per input, in input order"
    by_name = {Path(r["path"]).relative_to(folder).as_posix(): r for r in rows}
    assert sorted(by_name) == sorted(expect)
    for name, expected in expect.items():
        r = by_name[name]
        if expected is None:
            assert r["error"] is None and 0 < r["age"] < 120 and r["gender"] in (0, 1), name
            assert r["gender"] == int(r["gender_prob"] >= 0.5)
        else:
            assert expected in r["error"] and r["age"] is None and r["gender"] is None, name
    assert result.inputs == len(expect) and result.errors == sum(e is not None for e in expect.values())
    # Labels come from the UTKFace names of the real faces; the rest have none.
    assert "age_true" in table.column_names and by_name["empty.jpg"]["age_true"] is None
    meta = read_metadata(out)
    assert (
        meta["agebatch.backend"] == "onnxruntime"
        and meta["agebatch.model_id"] == "tiny"
        and meta["agebatch.rows"] == str(len(rows))
    )
    assert not os.path.exists(parts_dir(str(out))), "shards are removed once the file is complete"


def test_summary_matches_the_predictions(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    from agebatch.metrics import summarize

    out = tmp_path / "p.parquet"
    result = run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, faces="crop"))
    t = pq.read_table(out).to_pydict()
    expected = summarize(
        np.array(t["age"]), np.array(t["gender_prob"]), np.array(t["age_true"], float), np.array(t["gender_true"], float)
    )
    summary = {r["scope"]: r for r in pq.read_table(tmp_path / "p.summary.parquet").to_pylist()}
    for row in expected:
        assert summary[row.scope]["n"] == row.n
        assert (
            summary[row.scope]["age_mae"] == pytest.approx(row.age_mae)
            if row.age_mae is not None
            else summary[row.scope]["age_mae"] is None
        )
    assert summary["run:inputs"]["n"] == 39 and summary["run:errors"]["n"] == 0
    assert result.summary_path == str(tmp_path / "p.summary.parquet")


def test_manifest_source_limit_and_no_labels(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    faces = sorted(samples_dir.glob("*.jpg"))[:5]
    pq.write_table(pa.table({"path": [str(f) for f in faces]}), tmp_path / "m.parquet")
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    for i, f in enumerate(faces):
        shutil.copy(f, unlabelled / f"img{i}.jpg")
    r = run_infer(InferJob(str(tmp_path / "m.parquet"), str(tmp_path / "a.parquet"), model=onnx_model, limit=3, faces="crop"))
    assert r.inputs == 3 and pq.read_table(tmp_path / "a.parquet").column("path").to_pylist() == [str(f) for f in faces[:3]]
    r = run_infer(InferJob(str(unlabelled), str(tmp_path / "b.parquet"), model=onnx_model, faces="crop"))
    base = ["path", "age", "gender_prob", "gender", "error", "age_std", "age_p10", "age_p90", "age_group", "input", "status"]
    base += ["path_bytes"]
    assert pq.read_table(tmp_path / "b.parquet").column_names == base
    assert r.summary_path is None and not (tmp_path / "b.summary.parquet").exists()


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 40)  # 1,560 inputs
    clean = tmp_path / "clean.parquet"
    run_infer(InferJob(str(src), str(clean), model=onnx_model, batch_size=16, shard_rows=64, faces="crop"))
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model, "--workers", "1")
    proc = start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(parts_dir(str(out)))
    wait_for_shards(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = len(list(parts.glob("part-*.parquet")))
    assert saved >= 3 and not out.exists(), "killed mid-run: shards exist, no output presented as complete"
    again = run_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr, "an unfinished run is never silently restarted"
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = pq.read_table(clean).to_pydict(), pq.read_table(out).to_pydict()
    assert b["path"] == a["path"], "every input exactly once, in order"
    assert np.allclose(b["age"], a["age"], atol=1e-4) and b["gender"] == a["gender"]
    assert int(read_metadata(out)["agebatch.rows"]) == 1560
    assert "from the earlier run" in resumed.stdout


def test_existing_output_and_resume_rules(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    out = tmp_path / "p.parquet"
    run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, faces="crop"))
    with pytest.raises(AgebatchError, match="already exists"):
        run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, faces="crop"))
    before = out.stat().st_mtime_ns
    again = run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, resume=True, faces="crop"))
    assert again.nothing_to_do and again.inputs == 39 and out.stat().st_mtime_ns == before, "--resume on done work: a no-op"
    r = run_infer(InferJob(str(samples_dir), str(out), model=onnx_model, overwrite=True, faces="crop"))
    assert r.inputs == 39 and not r.nothing_to_do
    args = ["infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--faces", "crop"]
    done = run_cli(*args, "--resume")
    assert done.returncode == 0 and "nothing to do" in done.stdout, "a retry loop that passes --resume terminates"
    refused = run_cli(*args)
    assert refused.returncode == 2 and "already exists" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{samples}", "--out", "{tmp}/nope/p.parquet"], "output folder does not exist"),
        (["{samples}", "--out", "/proc/p.parquet"], "cannot write"),
        (["{tmp}/empty", "--out", "{tmp}/p.parquet"], "no image files"),
        (["{tmp}/missing", "--out", "{tmp}/p.parquet"], "no such file or folder"),
        (["{samples}", "--out", "{tmp}/p.parquet", "--model", "{tmp}/corrupt.onnx"], "does not match its sidecar"),
        (["{samples}", "--out", "{tmp}/p.parquet", "--model", "{tmp}/none.onnx"], "model file not found"),
    ],
)
def test_clear_failures(tmp_path: Path, samples_dir: Path, onnx_model: str, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy(onnx_model, tmp_path / "corrupt.onnx")
    shutil.copy(onnx_model + ".json", tmp_path / "corrupt.onnx.json")
    with open(tmp_path / "corrupt.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 32)
    args = [a.format(tmp=tmp_path, samples=samples_dir) for a in args]
    if "--model" not in args:
        args += ["--model", onnx_model]
    proc = run_cli("infer", *args)
    assert proc.returncode in (1, 2), proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.parquet").exists()


def test_disk_full_fails_cleanly(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    """A file-size limit (EFBIG) stands in for a full disk (ENOSPC): same code path, same promise."""
    src = many_faces(tmp_path / "faces", samples_dir, 20)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    out = tmp_path / "p.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "agebatch", "infer", str(src), "--out", str(out), "--model", onnx_model, "--shard-rows", "256",
         "--faces", "crop"],
        capture_output=True, text=True, preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "limit reached" in proc.stderr or "disk full" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cpu_infer_command_never_imports_tensorflow(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    code = (
        "import sys\n"
        "from agebatch.cli import main\n"
        f"argv = ['infer', {str(samples_dir)!r}, '--out', {str(tmp_path / 'p.parquet')!r}, '--model', {onnx_model!r}]\n"
        "main(argv, standalone_mode=False)\n"
        "print('TF=' + str(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "TF=[]" in proc.stdout
    assert len(set(pq.read_table(tmp_path / "p.parquet").column("path").to_pylist())) == 39, "default: detect mode"
