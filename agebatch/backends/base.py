"""The one small interface every way of running a model implements.

``backend.predict(uint8 NHWC) -> (age float32[N], p_female float32[N])``. Backends feed
raw uint8 pixels: every agebatch model preprocesses inside its graph (see
`agebatch.models.card`), so no backend holds a preprocessing constant. This module
imports no backend; `agebatch.backends.registry` knows them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from agebatch.models.card import ModelCard


class Backend(Protocol):
    name: str  # a key of agebatch.backends.registry.REGISTRY
    precision: str  # "fp32" | "fp16"
    card: ModelCard

    @property
    def input_size(self) -> tuple[int, int]: ...

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, 3) RGB -> (age in years, P(female)), both float32 (N,)."""
        ...


def check_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3):
        raise ValueError(f"expected uint8 (N, {size[0]}, {size[1]}, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def predict_in_chunks(
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], x: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """Call `run` on `x` in slices of at most `chunk` faces; (age, P(female)) as flat float32 arrays.

    Backends whose cost or memory grows past some batch size use this, so callers may
    pass any batch size (an empty one included) and get one row per face back.
    """
    ages, genders = [np.empty(0, np.float32)], [np.empty(0, np.float32)]
    for lo in range(0, len(x), chunk):
        age, gender = run(x[lo : lo + chunk])
        ages.append(np.asarray(age, np.float32).reshape(-1))
        genders.append(np.asarray(gender, np.float32).reshape(-1))
    return np.concatenate(ages), np.concatenate(genders)
