"""The one small interface every way of running a model implements.

``backend.predict(uint8 NHWC) -> Predictions`` (age, P(female) and, for a model with an
age distribution, its spread, 80% interval and age group; see `Predictions`). Backends feed
raw uint8 pixels: every agebatch model preprocesses inside its graph (see
`agebatch.models.card`), so no backend holds a preprocessing constant. This module
imports no backend; `agebatch.backends.registry` knows them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from agebatch.models.card import OUTPUT_NAMES, ModelCard

#: `--device` (ONNX Runtime's execution provider): "cuda" means CUDA or an error; "auto" uses it when present.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class Predictions:
    """Per-face model outputs, float32 (N,) each, named as the graph outputs (`OUTPUT_NAMES`).

    A model without an age distribution (the ``regression`` head) has no ``age_std``,
    ``age_p10``, ``age_p90`` or ``age_group``: those are NaN, as are all outputs of a
    row that could not be predicted. ``age_group`` is an index into `agebatch.ages.AGE_GROUPS`.
    """

    age: np.ndarray
    gender_prob: np.ndarray
    age_std: np.ndarray
    age_p10: np.ndarray
    age_p90: np.ndarray
    age_group: np.ndarray

    def __len__(self) -> int:
        return len(self.age)

    @classmethod
    def nan(cls, n: int) -> Predictions:
        return cls(*(np.full(n, np.nan, np.float32) for _ in OUTPUT_NAMES))

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], n: int) -> Predictions:
        """From a graph's named outputs ((N,) or (N, 1)); outputs the model lacks are NaN."""
        return cls(
            *(
                np.asarray(outputs[k], np.float32).reshape(-1) if k in outputs else np.full(n, np.nan, np.float32)
                for k in OUTPUT_NAMES
            )
        )

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        if not parts:
            return cls.nan(0)
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def scatter(self, mask: np.ndarray) -> Predictions:
        """These predictions placed at the True positions of `mask`, NaN elsewhere (rows that failed before the model)."""
        out = Predictions.nan(len(mask))
        for f in fields(self):
            getattr(out, f.name)[mask] = getattr(self, f.name)
        return out

    @property
    def has_distribution(self) -> bool:
        return bool(np.isfinite(self.age_p10).any())


class Backend(Protocol):
    name: str  # a key of agebatch.backends.registry.REGISTRY
    precision: str  # "fp32" | "fp16"
    card: ModelCard

    @property
    def input_size(self) -> tuple[int, int]: ...

    def predict(self, images: np.ndarray) -> Predictions:
        """uint8 (N, H, W, 3) RGB -> one prediction per face."""
        ...


def check_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3):
        raise ValueError(f"expected uint8 (N, {size[0]}, {size[1]}, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def predict_in_chunks(run: Callable[[np.ndarray], Mapping[str, np.ndarray]], x: np.ndarray, chunk: int) -> Predictions:
    """Call `run` (a chunk -> the graph's named outputs) on `x` in slices of at most `chunk` faces.

    Backends whose cost or memory grows past some batch size use this, so callers may
    pass any batch size (an empty one included) and get one row per face back.
    """
    parts = [Predictions.from_outputs(run(x[lo : lo + chunk]), len(x[lo : lo + chunk])) for lo in range(0, len(x), chunk)]
    return Predictions.concat(parts)
