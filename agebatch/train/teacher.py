"""Soft targets from a trained model for `train --teacher` (knowledge distillation, Hinton et al. 2015).

Why: Model A learns from scratch on ~16k faces. Model B, fine-tuned from ImageNet, is more accurate
and reads age the same way on a face and on its sharpened or softened copies (README "Image quality").
Its one-year age distribution and P(female) on each *clean* training crop carry what a hard label
does not (a face that could be 30 or 36; a baby whose gender is a guess), and because the target is
taken on the clean crop while the student sees the augmented one, the student is pushed towards the
teacher's invariance as well. The targets are computed once per run (a forward pass over the train
split, face and mirror averaged), never on validation or test faces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agebatch.errors import AgebatchError


@dataclass(frozen=True, slots=True)
class TeacherTargets:
    """The teacher's outputs per training face: `bins` (N, 101) age distribution, `gender` (N,) P(female)."""

    bins: np.ndarray
    gender: np.ndarray

    def take(self, idx: np.ndarray) -> TeacherTargets:
        return TeacherTargets(self.bins[idx], self.gender[idx])

    def tile(self, copies: int) -> TeacherTargets:
        """The same targets for each augmented copy of the faces (the feature cache's layout)."""
        return TeacherTargets(np.tile(self.bins, (copies, 1)), np.tile(self.gender, copies))


def teacher_targets(path: str, images: np.ndarray, *, log: Any = print) -> TeacherTargets:
    """Run the model at `path` over uint8 `images`, face and mirror averaged; its raw, uncalibrated outputs.

    The same read-out calibration and `ensemble` use (`calibration.raw_outputs`): the trained part's
    distribution before any temperature.
    """
    from agebatch.backends.keras import load_keras_model
    from agebatch.models.calibration import raw_outputs
    from agebatch.models.serving import DISTRIBUTION, OUTPUT_GENDER, trained_part

    model = load_keras_model(path)
    trained = trained_part(model)
    names = {layer.name for layer in trained.layers}
    if DISTRIBUTION not in names or OUTPUT_GENDER not in names:
        raise AgebatchError(
            f"--teacher {path} has no age distribution ({DISTRIBUTION}) to learn from: train it with --age-head bins or coral"
        )
    t0 = time.perf_counter()
    size = tuple(trained.input_shape[1:3])
    if size != images.shape[1:3]:
        ours = f"{images.shape[1]}x{images.shape[2]}"
        log(f"teacher {path} reads {size[0]}x{size[1]} px faces: this run's {ours} crops are resized for it")
        images = resized(images, (int(size[0]), int(size[1])))
    out = raw_outputs(model, images, mirror=True, names=(DISTRIBUTION, OUTPUT_GENDER))
    soft = TeacherTargets(out[DISTRIBUTION].astype(np.float32), out[OUTPUT_GENDER].reshape(-1).astype(np.float32))
    log(f"teacher {path}: soft targets for {len(images):,} training faces in {time.perf_counter() - t0:.0f} s")
    return soft


def resized(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 `images` (N, H, W, 3) resized to `size` (height, width), area-averaged when shrinking.

    Why: a student at another input size (e.g. 160 px) can learn from a teacher trained at 128 px.
    Both sizes are cut from the same aligned face by the same template, so a resize of the student's
    crop is the teacher's crop up to interpolation; cutting the pool again at the teacher's size would
    hold a second copy of every face for the same targets.
    """
    import cv2

    h, w = size
    shrink = h * w < images.shape[1] * images.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.empty((len(images), h, w, images.shape[3]), images.dtype)
    for i, face in enumerate(images):
        out[i] = cv2.resize(face, (w, h), interpolation=interp)
    return out
