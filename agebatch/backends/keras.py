"""Keras backend: the reference every export is checked against. Runs on any Keras
backend (TensorFlow here; JAX on a GPU machine)."""

from __future__ import annotations

import os

import numpy as np

from agebatch.backends.base import check_batch, predict_in_chunks
from agebatch.errors import AgebatchError
from agebatch.models.card import OUTPUT_AGE, OUTPUT_GENDER, load_card


def load_keras_model(path: str) -> object:
    if not os.path.isfile(path):
        raise AgebatchError(f"model file not found: {path}")
    import keras

    import agebatch.models.tta  # noqa: F401  registers the mirror-TTA layers a shipped model may contain

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise AgebatchError(f"cannot load Keras model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


class KerasBackend:
    name = "keras"
    precision = "fp32"

    def __init__(self, path: str, *, chunk: int = 64, tta: bool = True) -> None:
        self.card = load_card(path)
        self.path = path
        self.model = load_keras_model(path)
        if not tta:  # the trained model inside the mirror-TTA wrapper: one pass per face
            from agebatch.models.tta import without_mirror_tta

            self.model = without_mirror_tta(self.model)
        # Eager TensorFlow's peak memory grows with the faces per call: 512 faces of the
        # mirrored Lite0 in one call were OOM-killed at 24 GB. Per call of 128 / 64 / 32
        # faces, 512 faces peaked at 7.4 / 4.0 / 2.4 GB RSS and ran at 104 / 100 / 79 img/s.
        self.chunk = chunk

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_size

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import keras

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = self.model(x, training=False)  # type: ignore[operator]
            return np.asarray(keras.ops.convert_to_numpy(out[OUTPUT_AGE])), np.asarray(
                keras.ops.convert_to_numpy(out[OUTPUT_GENDER])
            )

        return predict_in_chunks(run, check_batch(images, self.input_size), self.chunk)
