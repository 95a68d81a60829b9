"""The face stage: items -> rows of model-input crops, for one face mode. One object for every caller.

Inference (local and Ray), training's crop cache, the template estimate and `evaluate`'s
quality check all cut faces through a `FaceStage`, so they decode photos with the same
options (size, `max_pixels`, `max_bytes`), batch them the same way and cut the same
pixels. ``detect`` finds, aligns and cuts every face (`agebatch.faces.cut`);
``crop`` feeds each input whole, resized to the model's input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from agebatch.faces.align import FaceTemplate, default_template
from agebatch.faces.options import FaceOptions
from agebatch.io.batching import ImageBatch, iter_batches, iter_images
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import Item

if TYPE_CHECKING:
    from agebatch.faces.cut import FaceColumns, FaceRows
    from agebatch.faces.detect import FaceFinder

#: Crop mode looks at this many of a run's first decodable inputs with the detector, to warn when they are
#: not face crops (a coffee cup read as a face gets a confident age all the same).
CROP_CHECK_INPUTS = 64
#: Share of checked inputs without a face where the template puts it, above which crop mode warns.
CROP_CHECK_SHARE = 0.25

#: Photos decoded per detector batch in detect mode: ~100 MB of 1,024-px photos in flight per batch,
#: and 8 photos per ONNX call inside it (README "Measured": 12 MP photos peak at 1.3 GB).
DETECT_BATCH_IMAGES = 32


@dataclass(frozen=True, slots=True)
class StageRows:
    """Rows of consecutive inputs: one per input (crop mode) or per face (detect mode)."""

    items: list[Item]  # one per row
    errors: list[str | None]
    crops: np.ndarray  # uint8 (R, H, W, 3) at the model's input; zeros where the row has an error
    input_items: list[Item]  # one per input covered, in order
    columns: FaceColumns | None = None  # detect mode: face index, box, score per row

    @property
    def inputs(self) -> int:
        return len(self.input_items)


@dataclass(frozen=True)
class FaceStage:
    """How one run cuts faces: the face mode, the model's input, the detector's options and the template."""

    mode: str  # "detect" | "crop"
    model_input: DecodeOptions = field(default_factory=DecodeOptions)
    faces: FaceOptions = field(default_factory=FaceOptions)
    template: FaceTemplate = field(default_factory=default_template)
    batch_size: int = 256  # crop mode: rows per batch; detect mode: at most DETECT_BATCH_IMAGES photos
    workers: int | None = None
    save_crops: str | None = None

    @property
    def photo_options(self) -> DecodeOptions:
        """How detect mode decodes a photo: long side at most `work_side`, the model's file and pixel limits."""
        side = self.faces.work_side
        return DecodeOptions(size=(side, side), max_pixels=self.model_input.max_pixels, max_bytes=self.model_input.max_bytes)

    @property
    def photos_per_batch(self) -> int:
        return min(DETECT_BATCH_IMAGES, self.batch_size)

    @cached_property
    def finder(self) -> FaceFinder:
        from agebatch.faces.detect import FaceFinder  # loads the detector models: only in detect mode

        return FaceFinder(self.faces)

    def rows(self, items: Iterable[Item]) -> Iterator[StageRows]:
        """Every item exactly once, in order, as rows with crops (an image's faces never split)."""
        if self.mode == "crop":
            for b in iter_batches(items, batch_size=self.batch_size, options=self.model_input, workers=self.workers):
                yield StageRows(b.items, b.errors, b.images, b.items)
            return
        for batch in iter_images(items, options=self.photo_options, batch_size=self.photos_per_batch, workers=self.workers):
            rows = self.cut(batch)
            yield StageRows(rows.items, rows.errors, rows.crops, batch.items, rows.columns)

    def crop_check(self, crops: np.ndarray) -> str | None:
        """Crop mode's one warning: a note when many of `crops` (model-input RGB) are not aligned face crops.

        A crop passes when the detector finds a face in it that already sits where the
        template puts one (the rule detect mode uses to feed an aligned crop as it is).
        """
        from agebatch.faces.align import already_aligned

        crops = crops[:CROP_CHECK_INPUTS]
        if not len(crops):
            return None
        found = self.finder.find(list(crops))
        unlike = sum(
            not (len(d) and already_aligned(c.shape, d.keypoints[0], self.template)) for c, d in zip(crops, found, strict=True)
        )
        if unlike <= CROP_CHECK_SHARE * len(crops):
            return None
        return (
            f"--faces crop: {unlike} of the first {len(crops)} readable inputs do not look like aligned face crops "
            "(no face where the model expects one), and their ages and genders are guesses; "
            "for photos use --faces detect, which finds and aligns every face"
        )

    def cut(self, batch: ImageBatch, finder: FaceFinder | None = None) -> FaceRows:
        """Detect and align the faces of decoded photos (Ray tasks pass their own long-lived finder)."""
        from agebatch.faces.cut import detect_rows

        return detect_rows(batch, finder or self.finder, self.template, self.model_input, self.save_crops)

    def largest_faces(self, items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
        """(crops, found): each item's largest face (detect) or whole file (crop), as inference cuts it."""
        crops = np.zeros((len(items), *self.model_input.size, 3), np.uint8)
        found = np.zeros(len(items), bool)
        at = 0
        for rows in self.rows(items):
            if rows.columns is None:
                ok = np.fromiter((e is None for e in rows.errors), bool, len(rows.errors))
                crops[at : at + rows.inputs][ok] = rows.crops[ok]
                found[at : at + rows.inputs] = ok
            else:
                # Rows come image by image; each image starts with face 0 (its largest) or -1 (no face, unreadable).
                starts = np.flatnonzero(rows.columns.face <= 0)
                for i, r in enumerate(starts):
                    if rows.columns.face[r] == 0:
                        crops[at + i] = rows.crops[r]
                        found[at + i] = True
            at += rows.inputs
        return crops, found
