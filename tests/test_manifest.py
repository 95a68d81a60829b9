from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agebatch.errors import AgebatchError
from agebatch.io.manifest import build_manifest, hash_file
from agebatch.io.schemas import MANIFEST, META_STATS
from agebatch.io.sources import iter_items
from agebatch.io.splits import SplitSpec
from agebatch.io.writer import read_metadata

GENDER_CONFLICT = {"15_1_4_20170103234910356.jpg.chip.jpg", "23_0_1_20170117194105675.jpg.chip.jpg"}
AGREEING_PAIR = {"14_0_0_20170110231657425.jpg.chip.jpg", "14_0_0_20170110232651186.jpg.chip.jpg"}


def test_split_is_a_pure_function_of_hash_and_seed() -> None:
    spec = SplitSpec(val=0.2, test=0.3, seed=1)
    hashes = [f"{i:064x}" for i in range(20000)]
    splits = [spec.assign(h) for h in hashes]
    assert splits == [SplitSpec(val=0.2, test=0.3, seed=1).assign(h) for h in hashes]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(frac["test"] - 0.3) < 0.02 and abs(frac["val"] - 0.2) < 0.02
    assert splits != [SplitSpec(val=0.2, test=0.3, seed=2).assign(h) for h in hashes]
    with pytest.raises(AgebatchError):
        SplitSpec(val=0.6, test=0.5)


def test_samples_manifest(tmp_path: Path, samples_dir: Path) -> None:
    out = tmp_path / "m.parquet"
    rep = build_manifest(samples_dir, out)
    t = pq.read_table(out)
    assert t.schema.equals(MANIFEST, check_metadata=False)
    n = len(list(samples_dir.glob("*.jpg")))
    assert t.num_rows == rep.files == rep.rows == n
    rows = {Path(r["path"]).name: r for r in t.to_pylist()}
    for name, r in rows.items():
        sha, size = hash_file(str(samples_dir / name))
        assert (r["sha256"], r["bytes"]) == (sha, size)
    a, b = (rows[x] for x in sorted(GENDER_CONFLICT))
    assert a["sha256"] == b["sha256"] and a["split"] == b["split"] and a["gender"] != b["gender"]
    assert (rep.duplicate_groups, rep.duplicate_files, rep.conflict_groups, rep.conflict_gender_groups) == (2, 4, 1, 1)
    assert json.loads(read_metadata(out)[META_STATS])["conflict_groups"] == 1
    # Paths are relative to the manifest and resolve back to the same files.
    assert not os.path.isabs(t.column("path")[0].as_py())
    assert {os.path.realpath(i.path) for i in iter_items(out)} == {os.path.realpath(p) for p in samples_dir.glob("*.jpg")}


def test_drop_conflicts(tmp_path: Path, samples_dir: Path) -> None:
    rep = build_manifest(samples_dir, tmp_path / "m.parquet", drop_conflicts=True)
    names = {Path(p).name for p in pq.read_table(tmp_path / "m.parquet").column("path").to_pylist()}
    assert rep.dropped_files == 2 and not (names & GENDER_CONFLICT)
    assert names >= AGREEING_PAIR, "agreeing duplicates stay"


def test_unreadable_file_keeps_its_row(tmp_path: Path, samples_dir: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(samples_dir, src)
    os.symlink("nowhere.jpg", src / "broken.jpg")
    rep = build_manifest(src, tmp_path / "m.parquet")
    rows = {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    assert rep.unreadable == 1 and rows["broken.jpg"]["sha256"] is None and rows["broken.jpg"]["split"] is None


def test_empty_source_and_existing_output(tmp_path: Path, samples_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgebatchError, match="no image files"):
        build_manifest(tmp_path / "empty", tmp_path / "m.parquet")
    (tmp_path / "m.parquet").write_bytes(b"x")
    with pytest.raises(AgebatchError, match="already exists"):
        build_manifest(samples_dir, tmp_path / "m.parquet")


@pytest.mark.pool
def test_full_pool_manifest(tmp_path: Path, pool_dir: Path) -> None:
    out = tmp_path / "m.parquet"
    rep = build_manifest(pool_dir, out, split=SplitSpec(val=0.1, test=0.1, seed=0))
    t = pq.read_table(out).to_pylist()
    assert len(t) == rep.rows == 20195
    # Hashes match the published SHA256SUMS, labels match the documented name prefix.
    sums = {}
    for line in (pool_dir.parent / "utkface.SHA256SUMS").read_text().splitlines():
        sha, name = line.split(None, 1)
        sums[name.strip()] = sha
    prefix = re.compile(r"^(\d+)_([01])_")
    by_hash: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for r in t:
        name = Path(r["path"]).name
        assert r["sha256"] == sums[name]
        m = prefix.match(name)
        assert (r["age"], r["gender"]) == (int(m[1]), int(m[2]))
        by_hash[r["sha256"]].add(r["split"])
        labels[r["sha256"]].add((r["age"], r["gender"]))
    assert all(len(s) == 1 for s in by_hash.values()), "byte-identical files share a split"
    copies: dict[str, int] = defaultdict(int)
    for r in t:
        copies[r["sha256"]] += 1
    assert rep.duplicate_groups == sum(1 for n in copies.values() if n > 1)
    assert rep.duplicate_files == sum(n for n in copies.values() if n > 1)
    assert rep.conflict_groups == sum(1 for v in labels.values() if len(v) > 1)
    assert rep.distinct == len(by_hash)
