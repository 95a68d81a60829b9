"""Keras backend: the reference every export is checked against. Runs on any Keras
backend (TensorFlow here; JAX on a GPU machine)."""

from __future__ import annotations

import os

import numpy as np

from agebatch.backends.base import check_batch
from agebatch.errors import AgebatchError
from agebatch.models.card import OUTPUT_AGE, OUTPUT_GENDER, load_card


def load_keras_model(path: str) -> object:
    if not os.path.isfile(path):
        raise AgebatchError(f"model file not found: {path}")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise AgebatchError(f"cannot load Keras model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


class KerasBackend:
    name = "keras"
    precision = "fp32"

    def __init__(self, path: str) -> None:
        self.card = load_card(path)
        self.path = path
        self.model = load_keras_model(path)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_size

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import keras

        out = self.model(check_batch(images, self.input_size), training=False)  # type: ignore[operator]
        age = keras.ops.convert_to_numpy(out[OUTPUT_AGE])
        gender = keras.ops.convert_to_numpy(out[OUTPUT_GENDER])
        return age.astype(np.float32).reshape(-1), gender.astype(np.float32).reshape(-1)
