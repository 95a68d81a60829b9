from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agebatch import __version__
from agebatch.errors import AgebatchError
from agebatch.io.schemas import META_ROWS, META_SOURCE, META_VERSION, PREDICTIONS
from agebatch.io.writer import ParquetWriter, read_metadata


def _rows(n: int, start: int = 0) -> dict[str, list]:
    return {
        "path": [f"img{i}.jpg" for i in range(start, start + n)],
        "age": [float(i) for i in range(n)],
        "gender_prob": [0.5] * n,
        "gender": [1] * n,
        "error": [None] * n,
    }


def test_rows_and_metadata_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    with ParquetWriter(out, PREDICTIONS, metadata={META_SOURCE: "/photos"}) as w:
        w.write(_rows(3))
        w.write(_rows(2, start=3))
        assert not out.exists(), "nothing appears under the final name before close"
    t = pq.read_table(out)
    assert t.schema.equals(PREDICTIONS, check_metadata=False)
    assert t.column("path").to_pylist() == [f"img{i}.jpg" for i in range(5)]
    assert pq.ParquetFile(out).metadata.num_row_groups == 2, "one row group per write"
    meta = read_metadata(out)
    assert meta[META_VERSION] == __version__ and meta[META_SOURCE] == "/photos" and meta[META_ROWS] == "5"
    assert list(tmp_path.iterdir()) == [out], "no temporary file left"


def test_failure_inside_the_block_keeps_nothing_and_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError), ParquetWriter(out, PREDICTIONS, overwrite=True) as w:
        w.write(_rows(3))
        raise RuntimeError("model crashed")
    assert out.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [out]


def test_existing_output_is_not_overwritten_by_default(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(AgebatchError, match="already exists"):
        ParquetWriter(out, PREDICTIONS)
    assert out.read_bytes() == b"keep me"


def test_missing_or_readonly_output_folder(tmp_path: Path) -> None:
    with pytest.raises(AgebatchError, match="does not exist"):
        ParquetWriter(tmp_path / "nope" / "p.parquet", PREDICTIONS)
    with pytest.raises(AgebatchError, match="is a folder"):
        ParquetWriter(tmp_path, PREDICTIONS)


def test_schema_mismatch_is_rejected(tmp_path: Path) -> None:
    with (
        ParquetWriter(tmp_path / "p.parquet", PREDICTIONS) as w,
        pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError)),
    ):
        w.write({"path": ["a"], "age": ["not a number"], "gender_prob": [0.1], "gender": [0], "error": [None]})


def test_disk_full_leaves_no_file(tmp_path: Path) -> None:
    """A file-size limit makes writes fail with EFBIG, as a full disk fails with ENOSPC."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        from agebatch.errors import AgebatchError
        from agebatch.io.schemas import PREDICTIONS
        from agebatch.io.writer import ParquetWriter
        n = 50_000
        rows = {{"path": [f"/very/long/folder/name/image_{{i:08d}}.jpg" for i in range(n)], "age": [float(i) for i in range(n)],
                "gender_prob": [i / n for i in range(n)], "gender": [i % 2 for i in range(n)], "error": [None] * n}}
        try:
            with ParquetWriter({str(tmp_path / "p.parquet")!r}, PREDICTIONS) as w:
                for _ in range(20):
                    w.write(rows)
        except AgebatchError as e:
            print("ERROR", e.message)
            sys.exit(e.exit_code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "size limit reached" in proc.stdout or "disk full" in proc.stdout or "cannot write" in proc.stdout
    assert list(tmp_path.iterdir()) == [], "neither the output nor its temporary file survives"
