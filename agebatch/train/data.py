"""Training data: items -> content-hash splits -> decoded uint8 arrays per split.

Training holds the decoded faces of its splits in memory (uint8 at model size:
20,000 faces at 128x128 are 1 GB), because every epoch reads them again and
decoding costs more than the small models' forward pass. Inference never does this.

Byte-identical groups whose copies disagree on a label are dropped from every split:
no copy's label can be trusted, and keeping one in test would score a guess.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from agebatch.batching import iter_batches
from agebatch.decode import DecodeOptions
from agebatch.errors import AgebatchError
from agebatch.manifest import SplitSpec, find_conflicts, hash_file
from agebatch.parallel import ordered_map
from agebatch.sources import Item, iter_items


@dataclass(slots=True)
class Split:
    images: np.ndarray  # uint8 (N, H, W, 3)
    age: np.ndarray  # float32 (N,)
    gender: np.ndarray  # float32 (N,)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.age)


@dataclass(slots=True)
class TrainingData:
    splits: dict[str, Split]
    fingerprint: str  # sha256 over (content hash, age, gender, split) of every kept file
    counts: dict[str, int] = field(default_factory=dict)


def _with_hashes(items: list[Item], workers: int = 8) -> list[Item]:
    """Fill in sha256 where the source (a manifest) did not provide it."""
    from dataclasses import replace

    if all(i.sha256 for i in items):
        return items
    hashes = ordered_map(lambda i: i.sha256 or hash_file(i.path)[0], items, workers=workers, max_pending=4 * workers)
    return [replace(i, sha256=h) for i, h in zip(items, hashes, strict=True)]


def load_training_data(
    source: str | os.PathLike[str],
    *,
    split: SplitSpec,
    options: DecodeOptions,
    limit: int | None = None,
    workers: int | None = None,
) -> TrainingData:
    """Read, split and decode every labelled face of `source`."""
    items = [i for i in iter_items(source) if i.age is not None and i.gender is not None]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise AgebatchError(
            f"no labelled faces in {source} (labels come from UTKFace-style names or manifest age/gender columns)"
        )
    items = _with_hashes(items)
    counts: dict[str, int] = {"labelled": len(items), "unreadable": sum(1 for i in items if i.sha256 is None)}
    items = [i for i in items if i.sha256 is not None]
    conflicts = find_conflicts((i.sha256, i.age, i.gender) for i in items).any
    counts["dropped_conflicts"] = sum(1 for i in items if i.sha256 in conflicts)
    items = [i for i in items if i.sha256 not in conflicts]

    by_split: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for i in items:
        by_split[split.assign(i.sha256)].append(i)  # type: ignore[arg-type]
    fp = hashlib.sha256()
    splits: dict[str, Split] = {}
    counts["corrupt"] = 0
    for name, members in by_split.items():
        images, ages, genders, paths = [], [], [], []
        for b in iter_batches(members, batch_size=512, options=options, workers=workers):
            ok = b.ok
            counts["corrupt"] += int((~ok).sum())
            images.append(b.images[ok])
            for item, good in zip(b.items, ok, strict=True):
                if good:
                    ages.append(item.age)
                    genders.append(item.gender)
                    paths.append(item.path)
                    fp.update(f"{item.sha256}:{item.age}:{item.gender}:{name}\n".encode())
        stacked = np.concatenate(images) if images else np.empty((0, *options.size, 3), np.uint8)
        splits[name] = Split(stacked, np.asarray(ages, np.float32), np.asarray(genders, np.float32), paths)
        counts[name] = len(ages)
    if len(splits["train"]) == 0 or len(splits["val"]) == 0:
        raise AgebatchError(f"too few labelled faces in {source} for a train and a validation split ({counts})")
    return TrainingData(splits, fp.hexdigest(), counts)
