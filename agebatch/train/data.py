"""Training data: items -> content-hash splits -> decoded uint8 arrays per split.

Training holds the decoded faces of its splits in memory (uint8 at model size:
20,000 faces at 128x128 are 1 GB), because every epoch reads them again and
decoding costs more than the small models' forward pass. Inference never does this.

With ``faces="detect"`` (the default) each face is the crop inference's detect + align
stage cuts from the file (`agebatch.train.crops`, cached by content hash); a file where
no face is found is left out of training and counted (``no_face``), since inference
would not predict it either.

Byte-identical groups whose copies disagree on a label are dropped from every split:
no copy's label can be trusted, and keeping one in test would score a guess.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agebatch.errors import AgebatchError
from agebatch.faces.align import FaceTemplate, default_template
from agebatch.io.batching import iter_batches
from agebatch.io.decode import DecodeOptions
from agebatch.io.manifest import find_conflicts, hash_file
from agebatch.io.parallel import ordered_map
from agebatch.io.sources import Item, iter_items
from agebatch.io.splits import SplitSpec
from agebatch.train.crops import aligned_faces


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


def _decoded(members: list[Item], options: DecodeOptions, workers: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``--faces crop``: each file resized whole; (images, readable)."""
    images, ok = [], []
    for b in iter_batches(members, batch_size=512, options=options, workers=workers):
        images.append(b.images)
        ok.append(b.ok)
    if not images:
        return np.empty((0, *options.size, 3), np.uint8), np.zeros(0, bool)
    return np.concatenate(images), np.concatenate(ok)


def load_training_data(
    source: str | os.PathLike[str],
    *,
    split: SplitSpec,
    options: DecodeOptions,
    limit: int | None = None,
    workers: int | None = None,
    faces: str = "detect",
    template: FaceTemplate | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], object] = print,
) -> TrainingData:
    """Read, split and decode (``faces="crop"``) or detect and align (``"detect"``) every labelled face of `source`."""
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
    if faces == "detect":
        counts["no_face"] = 0
    for name, members in by_split.items():
        if faces == "detect":
            got = aligned_faces(
                members, model_input=options, template=template or default_template(), cache_dir=cache_dir, workers=workers
            )
            images, ok = got.crops, got.found
            counts["no_face"] += int((~ok).sum())
            if got.note:
                log(got.note)
            if got.computed:
                log(f"{name}: detected and aligned {got.computed:,} faces ({len(members) - got.computed:,} from the crop cache)")
        else:
            images, ok = _decoded(members, options, workers)
            counts["corrupt"] += int((~ok).sum())
        kept = [item for item, good in zip(members, ok, strict=True) if good]
        for item in kept:
            fp.update(f"{item.sha256}:{item.age}:{item.gender}:{name}\n".encode())
        ages = np.asarray([i.age for i in kept], np.float32)
        genders = np.asarray([i.gender for i in kept], np.float32)
        splits[name] = Split(np.ascontiguousarray(images[ok]), ages, genders, [i.path for i in kept])
        counts[name] = len(kept)
    if len(splits["train"]) == 0 or len(splits["val"]) == 0:
        raise AgebatchError(f"too few labelled faces in {source} for a train and a validation split ({counts})")
    return TrainingData(splits, fp.hexdigest(), counts)
