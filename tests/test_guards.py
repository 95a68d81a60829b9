"""The user's files are safe: no output over an input, one writer per output, clean stops on disk full and SIGTERM."""

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
from agebatch.io.lock import OutputLock
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer
from agebatch.pipeline.shards import parts_dir


def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock"))


def test_an_output_never_overwrites_an_input(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(samples_dir, photos)
    first = sorted(photos.glob("*.jpg"))[0]
    before = first.read_bytes()
    r = run_cli("infer", str(photos), "--out", str(first), "--model", onnx_model, "--overwrite")
    assert r.returncode == 2 and "must be a .parquet file" in r.stderr and "Traceback" not in r.stderr
    assert first.read_bytes() == before, "the user's JPEG is untouched"

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": [str(p) for p in sorted(photos.glob("*.jpg"))[:3]]}), manifest)
    r = run_cli("infer", str(manifest), "--out", str(manifest), "--model", onnx_model, "--overwrite")
    assert r.returncode == 2 and "is the source itself" in r.stderr
    assert pq.read_table(manifest).num_rows == 3, "the manifest is untouched"

    r = run_cli("infer", str(photos), "--out", str(tmp_path / "p.parquet"), "--summary", str(tmp_path / "p.parquet"))
    assert r.returncode == 2 and "name the same file" in r.stderr

    # A manifest may list any file, a Parquet one included: found while streaming, before anything is replaced.
    victim = tmp_path / "old.parquet"
    pq.write_table(pa.table({"x": [1]}), victim)
    listing = tmp_path / "lists-victim.parquet"
    pq.write_table(pa.table({"path": [str(first), str(victim)]}), listing)
    with pytest.raises(AgebatchError, match="is also an output"):
        run_infer(InferJob(str(listing), str(victim), model=onnx_model, overwrite=True, faces="crop"))
    assert pq.read_table(victim).column_names == ["x"]


def test_one_writer_per_output_and_kill_9_leaves_no_stale_lock(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 100)  # 3,900 inputs
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model)
    first = start([*args, "--workers", "1"])
    wait_for_shards(out, 2, first)
    job = InferJob(str(src), str(out), model=onnx_model, batch_size=16, shard_rows=64, faces="crop", resume=True)
    with pytest.raises(AgebatchError, match=rf"another agebatch run \(pid {first.pid}\) is writing {out}"):
        run_infer(job)  # in this process: no start-up delay that would let the first run finish meanwhile
    assert first.poll() is None, "the first run was still running when the second was refused"
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = run_cli(*args, "--resume")  # the kernel dropped the dead run's lock
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).num_rows == 3900 and _hidden_leftovers(tmp_path) == []

    with OutputLock(str(tmp_path / "held.parquet")), pytest.raises(AgebatchError, match=f"pid {os.getpid()}"):
        OutputLock(str(tmp_path / "held.parquet")).acquire()
    assert not (tmp_path / ".held.parquet.lock").exists(), "a clean release removes the lock file"


def test_sigterm_stops_like_ctrl_c_and_resume_finishes(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 40)
    clean = tmp_path / "clean.parquet"
    run_infer(InferJob(str(src), str(clean), model=onnx_model, batch_size=16, shard_rows=64, faces="crop"))
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model)
    proc = start([*args, "--workers", "1"])
    wait_for_shards(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM) after" in err and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = pq.read_table(clean).to_pydict(), pq.read_table(out).to_pydict()
    assert b["path"] == a["path"] and np.allclose(b["age"], a["age"], atol=1e-4)


def test_a_sigterm_lost_in_a_finalizer_is_raised_again_at_the_next_check() -> None:
    """The race CI once hit: SIGTERM landing in pyarrow's ParquetWriter.__del__, its exception swallowed, exit 0."""
    code = (
        "import os, signal\n"
        "from agebatch.errors import Terminated, check_stopped, raise_on_sigterm\n"
        "raise_on_sigterm()\n"
        "class Closer:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        sum(range(1000))  # the handler runs here, inside __del__\n"
        "Closer()\n"
        "print('carried on')\n"
        "try:\n"
        "    check_stopped()\n"
        "except Terminated:\n"
        "    print('raised again')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in proc.stderr and "Terminated" in proc.stderr, "Python swallowed it, as in the race"
    assert proc.stdout.split() == ["carried", "on", "raised", "again"]


def test_a_ctrl_c_lost_in_a_finalizer_is_raised_again_at_the_next_check() -> None:
    """The same race for SIGINT (CI: a Ctrl-C sent as the first shard closed, the run exited 0)."""
    code = (
        "import os, signal\n"
        "from agebatch.errors import check_stopped, remember_ctrl_c\n"
        "class Closer:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sum(range(1000))  # the handler runs here, inside __del__\n"
        "with remember_ctrl_c():\n"
        "    Closer()\n"
        "    print('carried on')\n"
        "    try:\n"
        "        check_stopped()\n"
        "    except KeyboardInterrupt:\n"
        "        print('raised again')\n"
        "check_stopped()\n"
        "print('cleared', signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
        "own = lambda *a: print('own handler')\n"
        "signal.signal(signal.SIGINT, own)\n"
        "with remember_ctrl_c():\n"
        "    print('kept', signal.getsignal(signal.SIGINT) is own)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in proc.stderr and "KeyboardInterrupt" in proc.stderr, "Python swallowed it, as in the race"
    assert proc.stdout.split() == ["carried", "on", "raised", "again", "cleared", "True", "kept", "True"], proc.stderr


def test_disk_full_leaves_no_temporary_file_and_says_how_to_resume(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 20)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "p.parquet"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    args = infer_args(src, out, onnx_model)
    proc = subprocess.run([sys.executable, "-m", "agebatch", *args], capture_output=True, text=True, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert ("limit reached" in proc.stderr or "disk full" in proc.stderr) and "Traceback" not in proc.stderr
    assert "--resume" in proc.stderr and "inputs stay saved" in proc.stderr
    parts = Path(parts_dir(str(out)))
    leftovers = [p.name for folder in (out_dir, parts) for p in folder.iterdir() if ".tmp-" in p.name or p.suffix == ".lock"]
    assert leftovers == [] and not out.exists()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).num_rows == 780


def test_null_manifest_path_stays_null_and_traceable(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    faces = [str(p) for p in sorted(samples_dir.glob("*.jpg"))[:2]]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": pa.array([faces[0], None, "", faces[1]], pa.string())}), manifest)
    run_infer(InferJob(str(manifest), str(tmp_path / "p.parquet"), model=onnx_model, faces="crop"))
    rows = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [r["path"] for r in rows] == [faces[0], None, "", faces[1]], "same position, null kept null"
    assert rows[1]["error"] == rows[2]["error"] == "no path (null or empty in the manifest)"
    assert rows[1]["age"] is None and rows[0]["age"] is not None


def test_batch_size_is_capped_with_a_clear_message(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "p.parquet"), "--batch-size", "100000")
    assert r.returncode == 2 and "--batch-size" in r.stderr and "4096" in r.stderr
    with pytest.raises(AgebatchError, match=r"batch size must be 1\.\.4,096"):
        InferJob(str(samples_dir), "p.parquet", batch_size=100_000, faces="crop")
