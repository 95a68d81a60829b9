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
from agebatch.faces.blazeface import NUM_KEYPOINTS, Detections
from agebatch.faces.detect import FaceFinder
from agebatch.io.atomic import write_bytes_atomic
from agebatch.io.batching import ImageBatch
from agebatch.io.decode import DecodeOptions, fit_resize
from agebatch.io.sources import Item

#: BlazeFace keypoints written to `face_keypoints`: right eye, left eye, nose tip, mouth (the ear tragions are
#: guesses whenever the head turns, and alignment leaves them out too).
OUTPUT_KEYPOINTS = (0, 1, 2, 3)

NO_FACE = "no face found"
#: Faces were found, but every one was narrower than --min-face.
ONLY_SMALL_FACES = "no face found at or above --min-face (only smaller ones)"


@dataclass(frozen=True, slots=True)
class FaceColumns:
    """Per row: which face of its image (-1: none), its box and keypoints in source pixels (NaN: none),
    detector score, and the share of its aligned crop inside the photo."""

    face: np.ndarray  # int16 (R,)
    boxes: np.ndarray  # float32 (R, 4): x, y, w, h
    scores: np.ndarray  # float32 (R,)
    keypoints: np.ndarray  # float32 (R, 4, 2): right eye, left eye, nose tip, mouth (x, y)
    visible: np.ndarray  # float32 (R,)


@dataclass(frozen=True, slots=True)
class FaceRows:
    items: list[Item]  # one per row: an image with three faces appears three times, consecutively
    errors: list[str | None]
    crops: np.ndarray  # uint8 (R, H, W, 3); zeros where the row has an error
    columns: FaceColumns
    inputs: int  # images covered


#: Where BlazeFace's box falls in an aligned training crop (x, y, w, h as fractions of its side): the median over
#: 287 UTKFace crops of the pool. A box given without keypoints is aligned by mapping it onto this one.
TEMPLATE_BOX = (0.034, 0.048, 0.914, 0.914)
#: Error rows of a manifest's face box (status "bad_box"); every message starts with these words.
BAD_BOX = "face box"


def given_face(item: Item, shape: tuple[int, ...], scale: float, template: FaceTemplate) -> Detections | str:
    """The face a manifest row gives (`Item.box`, source pixels) as one detection in work pixels, or why it is unusable.

    With keypoints, alignment uses them; without, the template's keypoints are placed
    in the box as they lie in `TEMPLATE_BOX`, so a box drawn like BlazeFace's (brow to
    chin, ear to ear) gives the crop a detection would. `face_score` is NaN: no detector ran.
    """
    assert item.box is not None
    x, y, w, h = item.box
    if not all(np.isfinite(v) for v in item.box) or w <= 0 or h <= 0:
        return f"{BAD_BOX} must have a positive width and height (got {w:g} x {h:g})"
    ih, iw = shape[0] * scale, shape[1] * scale  # the source image's size, in source pixels
    if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
        return f"{BAD_BOX} ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the {iw:.0f}x{ih:.0f} image"
    keypoints = np.zeros((NUM_KEYPOINTS, 2), np.float32)
    if item.keypoints is not None:
        if len(item.keypoints) != 2 * len(OUTPUT_KEYPOINTS) or any(v is None for v in item.keypoints):
            return f"{BAD_BOX} keypoints need {2 * len(OUTPUT_KEYPOINTS)} numbers (x, y of eyes, nose tip, mouth)"
        keypoints[list(OUTPUT_KEYPOINTS)] = np.asarray(item.keypoints, np.float32).reshape(-1, 2)
    else:
        tx, ty, tw, th = TEMPLATE_BOX
        rel = (np.asarray(template.keypoints, np.float32) - (tx, ty)) / (tw, th)
        keypoints[:] = rel * (w, h) + (x, y)
    box = np.array([[x, y, w, h]], np.float32) / scale
    return Detections(box, keypoints[None] / scale, np.full(1, np.nan, np.float32))


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
    decoded = [(i, image) for i, image in enumerate(batch.images) if image is not None and batch.items[i].box is None]
    found: dict[int, Detections] = dict(
        zip(
            (i for i, _ in decoded),
            finder.find([image for _, image in decoded], [batch.scales[i] for i, _ in decoded]),
            strict=True,
        )
    )
    errors_in = list(batch.errors)
    for i, item in enumerate(batch.items):
        image = batch.images[i]
        if item.box is not None and image is not None:
            given = given_face(item, image.shape, batch.scales[i], template)
            if isinstance(given, str):
                errors_in[i] = given
            else:
                found[i] = given
    n_rows = sum(max(1, len(found[i])) if i in found else 1 for i in range(len(batch)))
    crops = np.zeros((n_rows, *size, 3), np.uint8)
    face = np.full(n_rows, -1, np.int16)
    boxes = np.full((n_rows, 4), np.nan, np.float32)
    scores = np.full(n_rows, np.nan, np.float32)
    keypoints = np.full((n_rows, len(OUTPUT_KEYPOINTS), 2), np.nan, np.float32)
    visible = np.full(n_rows, np.nan, np.float32)
    items: list[Item] = []
    errors: list[str | None] = []
    r = 0
    for i, item in enumerate(batch.items):
        dets = found.get(i)
        if dets is None or not len(dets):
            items.append(item)
            errors.append(errors_in[i] if dets is None else (ONLY_SMALL_FACES if dets.too_small else NO_FACE))
            r += 1
            continue
        image = batch.images[i]
        assert image is not None
        for k in range(len(dets)):
            if item.box is None and already_aligned(image.shape, dets.keypoints[k], template):
                fit_resize(image, model_input, crops[r], rgb=True)  # the photo is RGB already: no round trip
                visible[r] = 1.0
            else:
                visible[r] = align(image, dets.keypoints[k], template, size, crops[r], finder.options.border)
            face[r], scores[r] = k, dets.scores[k]
            boxes[r] = dets.boxes[k] * batch.scales[i]
            keypoints[r] = dets.keypoints[k][list(OUTPUT_KEYPOINTS)] * batch.scales[i]
            items.append(item)
            errors.append(None)
            if save_crops is not None:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crops[r], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                if ok:
                    write_bytes_atomic(os.path.join(save_crops, crop_name(batch.start + i, item, k)), jpeg.tobytes())
            r += 1
    return FaceRows(items, errors, crops, FaceColumns(face, boxes, scores, keypoints, visible), len(batch))
