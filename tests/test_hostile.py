"""A hostile tester's cases, one class each: planted links, silent overwrites, odd names, stale or foreign
outputs, tampered shards, late failures, bombs, orientation, library callers. Real files, processes, signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faults import IS_ROOT, make_bombs
from runs import infer_args, many_faces, run_cli, start, wait_for_shards

from agebatch.errors import RunInterrupted, RunStopped, RunTerminated
from agebatch.io.decode import DecodeOptions, decode_bytes
from agebatch.pipeline.shards import parts_dir


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr


def _refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


# ------------------------------------------------------------------ 1. planted symbolic links


def test_planted_links_are_never_followed(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".p.parquet.lock").symlink_to(victim)  # the lock file
    r = run_cli("infer", str(samples_dir), "--out", str(out / "p.parquet"), "--model", onnx_model, "--faces", "crop")
    _refused(r, "symbolic link")
    assert victim.read_text() == "precious\n" and not (out / "p.parquet").exists()

    (out / ".p.parquet.lock").unlink()
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("mine")
    Path(parts_dir(str(out / "p.parquet"))).symlink_to(victim_dir)  # the shard folder, with and without --overwrite
    for extra in ([], ["--overwrite"], ["--resume"]):
        r = run_cli("infer", str(samples_dir), "--out", str(out / "p.parquet"), "--model", onnx_model, "--faces", "crop", *extra)
        _refused(r, "symbolic link")
    assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"], "nothing written into, or removed from, the target"


def test_a_link_at_the_output_name_is_replaced_not_followed(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    victim = tmp_path / "victim.parquet"
    pq.write_table(pa.table({"mine": [1]}), victim)
    out = tmp_path / "p.parquet"
    out.symlink_to(victim)
    r = run_cli("infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--faces", "crop")
    _refused(r, "already exists")  # a link counts as an existing file, dangling or not
    _ok(run_cli("infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--faces", "crop", "--overwrite"))
    assert pq.read_table(victim).column_names == ["mine"], "the link's target is untouched"
    assert not out.is_symlink() and pq.read_table(out).num_rows == 39


# ------------------------------------------------------------------ 2. summary and crops never replaced silently


def test_summary_and_crops_follow_the_outputs_rules(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    out = tmp_path / "p.parquet"
    default_summary = tmp_path / "p.summary.parquet"
    default_summary.write_text("my notes")
    r = run_cli("infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--faces", "crop")
    _refused(r, "summary", "already exists")
    assert default_summary.read_text() == "my notes" and not out.exists(), "refused before any work"

    explicit = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"x": [1]}), explicit)
    r = run_cli(
        "infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--faces", "crop", "--summary", str(explicit)
    )
    _refused(r, "already exists")
    assert pq.read_table(explicit).column_names == ["x"]

    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "00000000-x.jpg.face0.jpg").write_text("not yours")
    args = ["infer", str(samples_dir), "--out", str(tmp_path / "q.parquet"), "--model", onnx_model, "--save-crops", str(crops)]
    _refused(run_cli(*args), "--save-crops", "not empty")
    assert (crops / "00000000-x.jpg.face0.jpg").read_text() == "not yours"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args[-1] = str(a_file)
    _refused(run_cli(*args), "not a folder")
    _refused(
        run_cli("infer", str(samples_dir), "--out", str(tmp_path / "r.parquet"), "--summary", "/no/such/dir/s.parquet"),
        "does not exist",
    )


@pytest.mark.skipif(not IS_ROOT and not hasattr(os, "geteuid"), reason="needs POSIX")
def test_a_read_only_crops_folder_is_refused_up_front(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = (
        IS_ROOT
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0
    )
    if not mounted:
        if IS_ROOT:
            pytest.skip("root ignores permission bits and cannot mount a read-only tmpfs here")
        ro.chmod(0o555)
    try:
        out = tmp_path / "p.parquet"
        r = run_cli("infer", str(samples_dir), "--out", str(out), "--model", onnx_model, "--save-crops", str(ro))
        _refused(r, "not writable")
        assert not out.exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
        ro.chmod(0o755)


# ------------------------------------------------------------------ 3. file names that are not UTF-8


def test_a_non_utf8_file_name_is_kept_losslessly(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    faces = sorted(samples_dir.glob("*.jpg"))[:3]
    raw = os.fsencode(str(src)) + b"/a\xff face.jpg"
    with open(raw, "wb") as f:
        f.write(faces[0].read_bytes())
    for face in faces[1:]:
        shutil.copy(face, src / face.name)
    out = tmp_path / "p.parquet"
    _ok(run_cli("infer", str(src), "--out", str(out), "--model", onnx_model, "--faces", "crop", "--shard-rows", "1"))
    rows = pq.read_table(out).to_pylist()
    odd = [r for r in rows if r["path_bytes"] is not None]
    assert len(rows) == 3 and len(odd) == 1 and odd[0]["path_bytes"] == raw and odd[0]["age"] is not None
    assert odd[0]["path"].endswith("a\ufffd face.jpg"), "path is readable UTF-8; path_bytes holds the exact name"

    manifest = tmp_path / "m.parquet"
    _ok(run_cli("manifest", str(src), "--out", str(manifest)))
    listed = pq.read_table(manifest).to_pylist()
    assert sum(r["path_bytes"] is not None for r in listed) == 1
    again = tmp_path / "again.parquet"
    _ok(run_cli("infer", str(manifest), "--out", str(again), "--model", onnx_model, "--faces", "crop"))
    assert sum(r["age"] is not None for r in pq.read_table(again).to_pylist()) == 3, "the manifest's bytes find the file"


# ------------------------------------------------------------------ 4. finished output of another run


def test_resume_on_a_finished_output_checks_whose_it_is(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    out = tmp_path / "p.parquet"
    base = ["infer", str(samples_dir), "--out", str(out), "--model", onnx_model]
    _ok(run_cli(*base, "--faces", "crop"))
    r = run_cli(*base, "--faces", "crop", "--resume")
    _ok(r)
    assert "nothing to do" in (r.stdout + r.stderr).lower()
    _refused(run_cli(*base, "--faces", "detect", "--resume"), "another source, model")
    other = tmp_path / "other"
    shutil.copytree(samples_dir, other)
    (other / sorted(p.name for p in other.iterdir())[0]).unlink()
    _refused(run_cli("infer", str(other), "--out", str(out), "--model", onnx_model, "--faces", "crop", "--resume"), "another")

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    _refused(run_cli("infer", str(samples_dir), "--out", str(foreign), "--model", onnx_model, "--resume"), "not written by")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(os.urandom(1000))
    _refused(run_cli("infer", str(samples_dir), "--out", str(junk), "--model", onnx_model, "--resume"), "not a readable")


# ------------------------------------------------------------------ 5, 6, 9. tampered shards and run.json


def _stopped_run(tmp_path: Path, src: Path, onnx_model: str, shards: int = 3) -> tuple[Path, list[str]]:
    out = tmp_path / "p.parquet"
    args = infer_args(src, out, onnx_model, shard_rows=16)
    proc = start(args)
    wait_for_shards(out, shards, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    return out, args


def test_resume_checks_every_shard_against_the_source(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 30)
    out, args = _stopped_run(tmp_path, src, onnx_model)
    parts = Path(parts_dir(str(out)))
    names = sorted(p.name for p in parts.glob("part-*.parquet"))
    # One file removed and another added before the last saved row: same count, same last path.
    listing = sorted(p.name for p in src.iterdir())
    (src / listing[3]).rename(src / (listing[3][:4] + "zz" + listing[3][4:]))
    os.link(src / listing[40], src / ("c000_" + "0" + listing[40][5:]))
    r = run_cli(*args, "--resume")
    _refused(r, names[0])
    assert not out.exists()


def test_a_shard_replaced_by_another_is_caught(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 30)
    out, args = _stopped_run(tmp_path, src, onnx_model)
    parts = sorted(Path(parts_dir(str(out))).glob("part-*.parquet"))
    shutil.copy(parts[1], parts[0])
    _refused(run_cli(*args, "--resume"), parts[0].name)


def test_damaged_shards_and_lost_run_json_are_refused(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 30)
    out, args = _stopped_run(tmp_path, src, onnx_model)
    parts = Path(parts_dir(str(out)))
    shard = sorted(parts.glob("part-*.parquet"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _refused(run_cli(*args, "--resume"), shard.name, "unreadable")
    shard.write_bytes(data)
    (parts / "run.json").unlink()
    for extra in (["--resume"], []):
        r = run_cli(*args, *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists(), "never a wrong file under the final name"
    _ok(run_cli(*args, "--overwrite"))
    assert pq.read_table(out).num_rows == 30 * 39


# ------------------------------------------------------------------ 8. late failures found up front


def test_bad_labels_are_found_before_any_work(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    paths = [str(p) for p in sorted(samples_dir.glob("*.jpg"))] * 300
    ages = [30] * len(paths)
    ages[9000] = 200
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": paths, "age": ages, "gender": [0] * len(paths)}), manifest)
    out = tmp_path / "p.parquet"
    r = run_cli("infer", str(manifest), "--out", str(out), "--model", onnx_model, "--faces", "crop")
    _refused(r, "row 9,000", "age")
    assert not out.exists() and not Path(parts_dir(str(out))).exists()


def test_glob_is_refused_where_it_cannot_apply(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"path": [str(sorted(samples_dir.glob("*.jpg"))[0])]}), manifest)
    _refused(run_cli("infer", str(manifest), "--out", str(tmp_path / "p.parquet"), "--glob", "*.png"), "--glob")
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "q.parquet"), "--model", onnx_model, "--glob", "*.png")
    _refused(r, "*.png")


def test_a_random_bytes_keras_file_says_what_it_is(tmp_path: Path, samples_dir: Path) -> None:
    pytest.importorskip("keras")
    model = tmp_path / "m.keras"
    model.write_bytes(os.urandom(4000))
    r = run_cli("infer", str(samples_dir), "--out", str(tmp_path / "p.parquet"), "--model", str(model), "--backend", "keras")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "File not found" not in r.stderr, r.stderr


# ------------------------------------------------------------------ 7. decompression bombs


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bombs")
    return folder, make_bombs(folder)


def _peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run `agebatch ARGS` as the only child of a fresh Python and return its peak RSS (MB)."""
    code = (
        "import resource, subprocess, sys; "
        "r = subprocess.run([sys.executable, '-m', 'agebatch', *sys.argv[1:]], capture_output=True, text=True); "
        "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    return int(r.stdout.strip().splitlines()[-1]) / 1024, r


def test_every_bomb_is_an_error_row_and_memory_is_bounded_per_run(
    tmp_path: Path, bombs: tuple[Path, dict[str, str]], samples_dir: Path, onnx_model: str
) -> None:
    folder, expected = bombs
    faces = [str(f) for f in sorted(samples_dir.glob("*.jpg"))[:2]]
    manifest = tmp_path / "m.parquet"  # a manifest lists any file (a folder scan skips .gif)
    pq.write_table(pa.table({"path": [str(folder / name) for name in expected] + faces}), manifest)
    env = {**os.environ, "AGEBATCH_DECODE_BUDGET_MIB": "256"}
    peaks = {}
    for workers in (2, 16):
        out = tmp_path / f"w{workers}.parquet"
        args = ["infer", str(manifest), "--out", str(out), "--model", onnx_model, "--faces", "crop", "--workers", str(workers)]
        peaks[workers], _ = _peak_rss_mb(args, env)
        rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
        for name, reason in expected.items():
            assert reason in (rows[name]["error"] or ""), (name, rows[name]["error"])
        assert sum(row["error"] is None for row in rows.values()) == 2, "the real faces still decode"
    # The model and ONNX Runtime take ~300 MB; without the guards one of these files alone took 1.4-3.5 GB.
    assert max(peaks.values()) < 700, peaks


def test_a_big_decode_waits_for_the_shared_budget_instead_of_adding_memory() -> None:
    import threading

    from agebatch.io.decode import DecodeBudget, DecodeError

    budget = DecodeBudget(100)
    inside, peak, lock = [0], [0], threading.Lock()

    def use(n: int) -> None:
        with budget.reserve(n):
            with lock:
                inside[0] += n
                peak[0] = max(peak[0], inside[0])
            threading.Event().wait(0.02)
            with lock:
                inside[0] -= n

    threads = [threading.Thread(target=use, args=(60,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 60, "two 60-byte decodes never held the 100-byte budget at once"
    with pytest.raises(DecodeError, match="too large to decode"), budget.reserve(101):
        pass


# ------------------------------------------------------------------ 10. orientation of every format that carries it


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "JPEG"])
def test_exif_orientation_is_honoured_for_every_format(fmt: str) -> None:
    import io

    from PIL import Image, ImageOps

    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:10, :, 1] = 255
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(a).save(
            buf, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {"quality": 100} if fmt == "JPEG" else {})
        )
        want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        got = decode_bytes(buf.getvalue(), DecodeOptions(size=(1000, 1000)))[..., ::-1]
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() < 40, (fmt, orientation)


# ------------------------------------------------------------------ 11. library callers keep Ctrl-C


def test_stops_are_base_exceptions_that_still_read_as_interrupts() -> None:
    from agebatch.errors import Terminated

    assert not issubclass(RunStopped, Exception)
    assert issubclass(RunInterrupted, KeyboardInterrupt) and issubclass(RunTerminated, Terminated)


def test_a_library_retry_loop_does_not_swallow_ctrl_c(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    src = many_faces(tmp_path / "faces", samples_dir, 60)
    out = tmp_path / "p.parquet"
    code = f"""
import sys
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer
for attempt in range(3):
    try:
        job = InferJob({str(src)!r}, {str(out)!r}, model={onnx_model!r}, faces="crop", batch_size=16, shard_rows=16,
                       resume=attempt > 0)
        run_infer(job)
        break
    except Exception as e:  # a caller's retry loop: must not catch Ctrl-C
        print("swallowed", type(e).__name__, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_shards(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert "swallowed" not in stdout and "RunInterrupted" in stderr and proc.returncode != 0, (stdout, stderr[-500:])
