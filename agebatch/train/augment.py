"""Augmentation on uint8 batches (NumPy + OpenCV), outside the model graph.

Kept out of the Keras graph on purpose: the exported model must be exactly the
inference model, and random layers would travel into ONNX as dead weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    flip: bool = True
    rotate_deg: float = 10.0
    shift: float = 0.06  # fraction of the side
    zoom: float = 0.10  # scale in [1 - zoom, 1 + zoom]
    brightness: float = 0.20  # additive, fraction of 255
    contrast: float = 0.20  # multiplicative around the mean


def augment_batch(images: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Return an augmented copy of a uint8 (N, H, W, 3) batch."""
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    center = (w / 2, h / 2)
    for i in range(n):
        img = images[i]
        if cfg.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        scale = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
        m = cv2.getRotationMatrix2D(center, angle, scale)
        m[:, 2] += rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
        warped = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        x = warped.astype(np.float32)
        mean = x.mean()
        x = (
            (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
            + mean
            + rng.uniform(-cfg.brightness, cfg.brightness) * 255
        )
        out[i] = np.clip(x, 0, 255).astype(np.uint8)
    return out
