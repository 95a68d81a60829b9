from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agebatch.errors import AgebatchError
from agebatch.io.sources import count_items, iter_folder, iter_items, iter_manifest


def _touch(root: Path, *names: str) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folder_is_recursive_sorted_and_filters_extensions(tmp_path: Path) -> None:
    _touch(tmp_path, "b.jpg", "a.PNG", "c.txt", "z/y.jpeg", "z/x.JPG", "m/n.webp", ".hidden/h.jpg", "readme.md")
    rel = [os.path.relpath(p, tmp_path) for p in iter_folder(tmp_path)]
    assert rel == [".hidden/h.jpg", "a.PNG", "b.jpg", "m/n.webp", "z/x.JPG", "z/y.jpeg"]
    assert list(iter_folder(tmp_path)) == list(iter_folder(tmp_path)), "order is deterministic"


def test_folder_symlink_loop_is_visited_once(tmp_path: Path) -> None:
    _touch(tmp_path, "d/a.jpg")
    os.symlink("..", tmp_path / "d" / "up")  # d/up -> tmp_path: a loop
    os.symlink("d", tmp_path / "alias")  # same folder under a second name
    rel = [os.path.relpath(p, tmp_path) for p in iter_folder(tmp_path)]
    assert rel == ["alias/a.jpg"], "each real folder is listed once, loops end"


def test_folder_glob(tmp_path: Path) -> None:
    _touch(tmp_path, "2017/a_face.jpg", "2018/b_face.jpg", "2018/other.jpg")
    assert [Path(p).name for p in iter_folder(tmp_path, glob="*_face.jpg")] == ["a_face.jpg", "b_face.jpg"]
    assert [Path(p).name for p in iter_folder(tmp_path, glob="2018/*")] == ["b_face.jpg", "other.jpg"]


def test_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AgebatchError, match="no such file or folder"):
        list(iter_items(tmp_path / "missing"))
    with pytest.raises(AgebatchError, match="not a folder"):
        list(iter_folder(tmp_path / "missing"))


def test_items_from_folder_carry_filename_labels(samples_dir: Path) -> None:
    items = list(iter_items(samples_dir))
    assert len(items) == len(list(samples_dir.glob("*.jpg")))
    by_name = {Path(i.path).name: i for i in items}
    it = by_name["90_0_2_20170111210301275.jpg.chip.jpg"]
    assert (it.age, it.gender, it.race) == (90, 0, 2)
    assert all(i.key == i.path for i in items)
    assert all(i.age is None for i in iter_items(samples_dir, labels="none"))


def test_manifest_resolves_relative_paths_and_reads_labels(tmp_path: Path, samples_dir: Path) -> None:
    faces = sorted(samples_dir.glob("*.jpg"))[:3]
    (tmp_path / "imgs").mkdir()
    for f in faces:
        (tmp_path / "imgs" / f.name).write_bytes(f.read_bytes())
    table = pa.table(
        {
            "path": [f"imgs/{faces[0].name}", str(tmp_path / "imgs" / faces[1].name), f"imgs/{faces[2].name}"],
            "age": pa.array([30, None, 41.0], pa.float64()),
            "gender": pa.array([1, 0, None], pa.int8()),
            "note": ["a", "b", "c"],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    items = list(iter_items(tmp_path / "m.parquet"))
    assert [i.key for i in items] == table.column("path").to_pylist()
    assert all(os.path.isfile(i.path) for i in items)
    assert [(i.age, i.gender) for i in items] == [(30, 1), (None, 0), (41, None)]
    assert count_items(tmp_path / "m.parquet") == 3
    # Without label columns, "auto" falls back to the UTKFace names.
    pq.write_table(table.select(["path"]), tmp_path / "paths.parquet")
    named = list(iter_manifest(tmp_path / "paths.parquet"))
    assert named[0].age is not None and named[0].gender is not None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"file": ["a.jpg"]}), "no 'path' column"),
        (pa.table({"path": [1]}), "must be strings"),
        (pa.table({"path": ["a.jpg"], "gender": [2]}), "outside 0..1"),
        (pa.table({"path": ["a.jpg"], "age": [20.5]}), "whole numbers"),
        (pa.table({"path": ["a.jpg"], "age": ["old"]}), "must be numeric"),
    ],
)
def test_bad_manifests_fail_with_a_message(tmp_path: Path, table: pa.Table, message: str) -> None:
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(AgebatchError, match=message):
        list(iter_items(tmp_path / "m.parquet"))


def test_not_parquet_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.parquet").write_text("nope")
    with pytest.raises(AgebatchError, match="not a readable Parquet manifest"):
        list(iter_items(tmp_path / "m.parquet"))


def test_single_image_source(samples_dir: Path) -> None:
    f = sorted(samples_dir.glob("*.jpg"))[0]
    assert [i.path for i in iter_items(f)] == [str(f)]
