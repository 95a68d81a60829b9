"""Training faces cut by inference's own detect + align stage, cached by content hash.

``infer --faces detect`` feeds a model the crop `agebatch.faces.cut.detect_rows`
cuts around the largest face; training calls the same function on the same decode of
the file, so training and inference see one crop geometry (a UTKFace crop whose face
already sits on the template is resized whole there and here alike). Detection costs
more than the decode, so each file's crop is computed once and kept under
``<cache>/crops-<key>/``: ``crops.npy`` (uint8 N x H x W x 3) and ``index.parquet``
(one row per crop: ``sha256``, ``found``). The key hashes everything that shapes a
crop (input size, resize rule, template, detector options, `CROP_VERSION`), so a
change to any of them starts a new cache instead of reusing a wrong one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from agebatch.faces.align import FaceTemplate
from agebatch.faces.options import FaceOptions
from agebatch.io.atomic import AtomicFile
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import Item

#: Bump when detect_rows changes the pixels it cuts for the same inputs.
CROP_VERSION = 1


def default_cache_dir() -> str:
    """``$AGEBATCH_CACHE`` or ``~/.cache/agebatch``."""
    return os.environ.get("AGEBATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agebatch")


def crop_key(model_input: DecodeOptions, template: FaceTemplate, faces: FaceOptions) -> str:
    """A short hash of every setting that decides a crop's pixels."""
    spec = {
        "version": CROP_VERSION,
        "size": list(model_input.size),
        "interpolation": model_input.interpolation,
        "fit": model_input.fit,
        "template": template.to_dict(),
        "faces": asdict(faces),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(slots=True)
class AlignedFaces:
    crops: np.ndarray  # uint8 (N, H, W, 3), one per requested item; zeros where no face was found
    found: np.ndarray  # bool (N,)
    computed: int  # crops detected in this call (the rest came from the cache)
    note: str | None = None  # why the cache could not be written, if it could not


def _detect(
    items: Sequence[Item], model_input: DecodeOptions, template: FaceTemplate, faces: FaceOptions, workers: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The largest face of each item, cut exactly as `infer --faces detect` cuts it (the same `FaceStage`)."""
    from agebatch.faces.stage import FaceStage

    return FaceStage("detect", model_input, faces, template, workers=workers).largest_faces(items)


def _read_cache(folder: str) -> tuple[dict[str, int], np.ndarray | None, np.ndarray]:
    import pyarrow.parquet as pq

    index_path, crops_path = os.path.join(folder, "index.parquet"), os.path.join(folder, "crops.npy")
    if not (os.path.isfile(index_path) and os.path.isfile(crops_path)):
        return {}, None, np.zeros(0, bool)
    table = pq.read_table(index_path)
    crops = np.load(crops_path, mmap_mode="r")
    hashes = [str(h) for h in table.column("sha256").to_pylist()]
    if len(hashes) != len(crops):  # an index and crops from different writes: rebuild rather than trust either
        return {}, None, np.zeros(0, bool)
    return {h: i for i, h in enumerate(hashes)}, crops, table.column("found").to_numpy(zero_copy_only=False)


def _write_cache(folder: str, hashes: list[str], crops: np.ndarray, found: np.ndarray) -> None:
    """Crops first, then the index: a reader pairs them only when their lengths agree (`_read_cache`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    with AtomicFile(os.path.join(folder, "crops.npy")) as out:
        np.save(out.tmp, crops)
    with AtomicFile(os.path.join(folder, "index.parquet")) as out:
        pq.write_table(pa.table({"sha256": pa.array(hashes, pa.string()), "found": pa.array(found, pa.bool_())}), out.tmp)


def aligned_faces(
    items: Sequence[Item],
    *,
    model_input: DecodeOptions,
    template: FaceTemplate,
    faces: FaceOptions | None = None,
    cache_dir: str | None = None,
    workers: int | None = None,
) -> AlignedFaces:
    """The detect + align crop of every item (each needs its `sha256`), from the cache where it has them.

    ``cache_dir=""`` turns the cache off (every crop is computed, nothing is written).
    """
    faces = faces or FaceOptions()
    if any(i.sha256 is None for i in items):
        raise ValueError("aligned_faces needs each item's content hash")
    hashes = [str(i.sha256) for i in items]
    folder = (
        None
        if cache_dir == ""
        else os.path.join(cache_dir or default_cache_dir(), f"crops-{crop_key(model_input, template, faces)}")
    )
    index, cached, cached_found = _read_cache(folder) if folder else ({}, None, np.zeros(0, bool))
    todo = [j for j, h in enumerate(hashes) if h not in index]
    new_crops, new_found = _detect([items[j] for j in todo], model_input, template, faces, workers) if todo else (None, None)
    crops = np.zeros((len(items), *model_input.size, 3), np.uint8)
    found = np.zeros(len(items), bool)
    have = [j for j, h in enumerate(hashes) if h in index]
    if have and cached is not None:
        rows = np.asarray([index[hashes[j]] for j in have])
        crops[have], found[have] = cached[rows], cached_found[rows]
    if todo and new_crops is not None and new_found is not None:
        crops[todo], found[todo] = new_crops, new_found
        if folder:
            first = {}  # a file listed twice (a duplicate) is stored once
            for j in todo:
                first.setdefault(hashes[j], j)
            add = list(first.values())
            old = list(index)  # insertion order = row order
            all_crops = np.concatenate([np.asarray(cached) if cached is not None else crops[:0], crops[add]])
            all_found = np.concatenate([cached_found if cached is not None else found[:0], found[add]])
            try:
                _write_cache(folder, old + [hashes[j] for j in add], all_crops, all_found)
            except OSError as e:  # a read-only or full cache folder costs the next run time, not this run
                return AlignedFaces(crops, found, len(todo), f"crop cache not written ({folder}: {e.strerror or e})")
    return AlignedFaces(crops, found, len(todo))
