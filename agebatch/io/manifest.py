"""Manifests: one row per input file with labels, content hash, size and split.

Splits are a pure function of (content hash, seed, fractions), so byte-identical
files always share a split, a file keeps its split when others are added or
removed, and no list of assignments has to be stored anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from agebatch.errors import AgebatchError
from agebatch.io.parallel import ordered_map
from agebatch.io.schemas import MANIFEST, META_SCHEMA, META_SCHEMA_VERSION, META_SOURCE, META_STATS, SCHEMA_VERSION, SPLITS
from agebatch.io.sources import Item, display_key, iter_items, key_bytes
from agebatch.io.splits import SplitSpec

#: Metadata key holding the split parameters as JSON.
META_SPLIT = "agebatch.split"
_READ_CHUNK = 1 << 20


@dataclass(slots=True)
class ManifestReport:
    """What `build_manifest` found; printed by the CLI and stored in the file's metadata."""

    files: int = 0
    unreadable: int = 0
    labelled: int = 0
    distinct: int = 0
    duplicate_groups: int = 0
    duplicate_files: int = 0
    conflict_groups: int = 0
    conflict_age_groups: int = 0
    conflict_gender_groups: int = 0
    dropped_files: int = 0
    rows: int = 0
    splits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def hash_file(path: str) -> tuple[str | None, int | None]:
    """(sha256 hex, size in bytes) of a file, or (None, None) when it cannot be read."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError:
        return None, None
    return h.hexdigest(), size


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Content-hash groups whose copies carry different labels."""

    age: frozenset[str]
    gender: frozenset[str]

    @property
    def any(self) -> frozenset[str]:
        return self.age | self.gender


def find_conflicts(rows: Iterable[tuple[str | None, int | None, int | None]]) -> Conflicts:
    """Given (sha256, age, gender) per file, the hashes whose labelled copies disagree.

    An unlabelled copy never conflicts: unknown is not a different answer.
    """
    ages: dict[str, set[int]] = defaultdict(set)
    genders: dict[str, set[int]] = defaultdict(set)
    for sha, age, gender in rows:
        if sha is None:
            continue
        if age is not None:
            ages[sha].add(age)
        if gender is not None:
            genders[sha].add(gender)
    return Conflicts(
        age=frozenset(s for s, v in ages.items() if len(v) > 1),
        gender=frozenset(s for s, v in genders.items() if len(v) > 1),
    )


def build_manifest(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: SplitSpec | None = None,
    drop_conflicts: bool = False,
    absolute_paths: bool = False,
    overwrite: bool = False,
    workers: int = 8,
    glob: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ManifestReport:
    """Hash every file of `source`, assign splits and write the manifest to `out`.

    Paths are stored relative to the manifest's folder (so folder and manifest can
    move together) unless `absolute_paths`. Files that cannot be read keep their row
    with a null hash and null split, and are counted as unreadable.
    """
    from agebatch.io.writer import ParquetWriter, check_output_path

    split = split or SplitSpec()
    out = check_output_path(out, overwrite=overwrite)
    out_dir = os.path.dirname(os.path.abspath(out))
    items: list[Item] = list(iter_items(source, glob=glob))
    if not items:
        raise AgebatchError(f"no image files found in {source}")

    def hash_item(item: Item) -> tuple[str | None, int | None]:
        return hash_file(item.path)

    # I/O-bound: more threads than cores keeps the disk queue full.
    hashes: list[tuple[str | None, int | None]] = []
    for result in ordered_map(hash_item, items, workers=workers, max_pending=4 * workers, thread_name="agebatch-hash"):
        hashes.append(result)
        if progress:
            progress(1)

    conflicts = find_conflicts((h[0], it.age, it.gender) for it, h in zip(items, hashes, strict=True))
    rep = ManifestReport(files=len(items))
    group_sizes: dict[str, int] = defaultdict(int)
    for sha, _ in hashes:
        if sha is None:
            rep.unreadable += 1
        else:
            group_sizes[sha] += 1
    rep.labelled = sum(it.has_labels for it in items)
    rep.distinct = len(group_sizes)
    rep.duplicate_groups = sum(1 for n in group_sizes.values() if n > 1)
    rep.duplicate_files = sum(n for n in group_sizes.values() if n > 1)
    rep.conflict_groups = len(conflicts.any)
    rep.conflict_age_groups = len(conflicts.age)
    rep.conflict_gender_groups = len(conflicts.gender)

    columns: dict[str, list] = {name: [] for name in MANIFEST.names}
    splits: dict[str, int] = defaultdict(int)
    for item, (sha, size) in zip(items, hashes, strict=True):
        if drop_conflicts and sha in conflicts.any:
            rep.dropped_files += 1
            continue
        path = os.path.abspath(item.path)
        path = path if absolute_paths else os.path.relpath(path, out_dir)
        columns["path"].append(display_key(path))
        columns["path_bytes"].append(key_bytes(path))
        columns["age"].append(item.age)
        columns["gender"].append(item.gender)
        columns["race"].append(item.race)
        columns["sha256"].append(sha)
        columns["bytes"].append(size)
        s = split.assign(sha) if sha is not None else None
        columns["split"].append(s)
        splits[s or "none"] += 1
    rep.rows = len(columns["path"])
    rep.splits = {s: splits[s] for s in (*SPLITS, "none") if splits.get(s)}

    meta = {
        META_SCHEMA: "manifest",
        META_SCHEMA_VERSION: SCHEMA_VERSION,
        META_SOURCE: os.fspath(source),
        META_SPLIT: json.dumps({"method": "sha256(seed:content_sha256)", **asdict(split)}),
    }
    with ParquetWriter(out, MANIFEST, metadata=meta, overwrite=overwrite) as writer:
        step = 65536
        for lo in range(0, rep.rows, step):
            writer.write({k: v[lo : lo + step] for k, v in columns.items()})
        writer.close({META_STATS: json.dumps(rep.as_dict())})
    return rep
