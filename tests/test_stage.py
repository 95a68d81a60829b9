"""One face stage for every caller: local inference, the Ray task and training's crop cache cut the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from photos import compose, save_jpeg

from agebatch.faces.align import default_template
from agebatch.faces.options import FaceOptions
from agebatch.faces.stage import DETECT_BATCH_IMAGES, FaceStage
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import Item


@pytest.fixture(scope="module")
def photos(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    faces = sorted(samples_dir.glob("*.jpg"))
    folder = tmp_path_factory.mktemp("stage")
    group, _ = compose("rocket.jpg", faces[3:6], [(300, 260, 180, 0), (700, 300, 150, 8), (1050, 280, 200, -6)], (700, 1300))
    items = [Item(str(save_jpeg(group, folder / "group.jpg")), "group.jpg")]
    items += [Item(str(f), f.name) for f in faces[:5]]  # crops: resized whole, as crop mode would
    items.append(Item(str(folder / "missing.jpg"), "missing.jpg"))
    return items


def test_local_ray_and_training_cut_identical_crops(photos: list[Item]) -> None:
    from agebatch.pipeline.ray_stream import _detect_batch, _given
    from agebatch.train.crops import _detect

    model_input = DecodeOptions(size=(128, 128))
    stage = FaceStage("detect", model_input, FaceOptions(), default_template(), batch_size=256, workers=2)
    local = list(stage.rows(photos))
    assert sum(r.inputs for r in local) == len(photos)
    local_crops = np.concatenate([r.crops for r in local])
    local_faces = np.concatenate([r.columns.face for r in local if r.columns is not None])
    assert (local_faces >= 0).sum() >= 8, "three faces in the group photo and one per crop"

    batch = {  # a block as the Ray driver builds it
        "index": np.arange(len(photos)),
        "path": np.array([p.path.encode() for p in photos], dtype=object),
        "given": np.array([_given(p) for p in photos], dtype=object),
    }
    ray_rows = _detect_batch(batch, stage)  # the Ray task's function, called in this process
    assert np.array_equal(ray_rows["image"], local_crops) and np.array_equal(ray_rows["face"], local_faces)

    crops, found = _detect(photos, model_input, default_template(), FaceOptions(), workers=0)
    starts = np.flatnonzero(local_faces <= 0)
    assert found.tolist() == [bool(local_faces[r] == 0) for r in starts]
    assert all(np.array_equal(crops[i], local_crops[r]) for i, r in enumerate(starts) if found[i]), "largest face, same pixels"


def test_the_stage_owns_the_photo_decode_limits() -> None:
    model_input = DecodeOptions(size=(96, 96), max_pixels=1_000_000, max_bytes=5_000_000)
    stage = FaceStage("detect", model_input, FaceOptions(work_side=800))
    photo = stage.photo_options
    assert photo.size == (800, 800) and photo.max_pixels == 1_000_000 and photo.max_bytes == 5_000_000
    assert stage.photos_per_batch == DETECT_BATCH_IMAGES and FaceStage("detect", batch_size=8).photos_per_batch == 8
