"""The detect + align stage: decoded photos -> one row per face, each with an aligned crop.

Shared by the local stream and the Ray tasks, so both cut the same faces. An image gives
k >= 1 rows: one per face (largest first), or exactly one row with the error ``no face
found`` (or its decode error) and no crop. Every row of one image stays in the same
batch, which is what lets the shard store resume at image boundaries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from agebatch.faces.align import FaceTemplate, align, already_aligned
from agebatch.faces.detect import FaceFinder
from agebatch.io.atomic import write_bytes_atomic
from agebatch.io.batching import ImageBatch
from agebatch.io.decode import DecodeOptions, fit_resize
from agebatch.io.sources import Item

NO_FACE = "no face found"
#: Faces were found, but every one was narrower than --min-face.
ONLY_SMALL_FACES = "no face found at or above --min-face (only smaller ones)"


@dataclass(frozen=True, slots=True)
class FaceColumns:
    """Per row: which face of its image (-1: none), its box in source pixels (NaN: none), detector score."""

    face: np.ndarray  # int16 (R,)
    boxes: np.ndarray  # float32 (R, 4): x, y, w, h
    scores: np.ndarray  # float32 (R,)


@dataclass(frozen=True, slots=True)
class FaceRows:
    items: list[Item]  # one per row: an image with three faces appears three times, consecutively
    errors: list[str | None]
    crops: np.ndarray  # uint8 (R, H, W, 3); zeros where the row has an error
    columns: FaceColumns
    inputs: int  # images covered


def crop_name(index: int, item: Item, face: int) -> str:
    """``<input index>-<file name>.face<k>.jpg``: unique, sorted like the output, traceable to its row."""
    base = os.path.basename(item.path) or "input"
    return f"{index:08d}-{base}.face{face}.jpg"


def detect_rows(
    batch: ImageBatch, finder: FaceFinder, template: FaceTemplate, model_input: DecodeOptions, save_crops: str | None = None
) -> FaceRows:
    """Detect the faces of `batch` and cut each at the model's input (`model_input`: its card's size and resize rule).

    A face that already sits where the template puts it (the input is a face crop) is
    resized whole, exactly as `--faces crop` would feed it; any other face is warped
    onto the template (`agebatch.faces.align`).
    """
    size = model_input.size
    decoded = [(i, image) for i, image in enumerate(batch.images) if image is not None]
    found = dict(
        zip(
            (i for i, _ in decoded),
            finder.find([image for _, image in decoded], [batch.scales[i] for i, _ in decoded]),
            strict=True,
        )
    )
    n_rows = sum(max(1, len(found[i])) if i in found else 1 for i in range(len(batch)))
    crops = np.zeros((n_rows, *size, 3), np.uint8)
    face = np.full(n_rows, -1, np.int16)
    boxes = np.full((n_rows, 4), np.nan, np.float32)
    scores = np.full(n_rows, np.nan, np.float32)
    items: list[Item] = []
    errors: list[str | None] = []
    r = 0
    for i, item in enumerate(batch.items):
        dets = found.get(i)
        if dets is None or not len(dets):
            items.append(item)
            errors.append(batch.errors[i] if dets is None else (ONLY_SMALL_FACES if dets.too_small else NO_FACE))
            r += 1
            continue
        image = batch.images[i]
        assert image is not None
        for k in range(len(dets)):
            if already_aligned(image.shape, dets.keypoints[k], template):
                fit_resize(image, model_input, crops[r], rgb=True)  # the photo is RGB already: no round trip
            else:
                align(image, dets.keypoints[k], template, size, crops[r])
            face[r], scores[r] = k, dets.scores[k]
            boxes[r] = dets.boxes[k] * batch.scales[i]
            items.append(item)
            errors.append(None)
            if save_crops is not None:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crops[r], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                if ok:
                    write_bytes_atomic(os.path.join(save_crops, crop_name(batch.start + i, item, k)), jpeg.tobytes())
            r += 1
    return FaceRows(items, errors, crops, FaceColumns(face, boxes, scores), len(batch))
