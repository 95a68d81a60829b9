"""Keras backend: the reference every export is checked against. Runs on any Keras
backend (TensorFlow here; JAX on a GPU machine)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from agebatch.backends.base import Predictions, check_batch, predict_in_chunks
from agebatch.errors import AgebatchError
from agebatch.models.card import OUTPUT_NAMES, load_card


def load_keras_model(path: str) -> object:
    if not os.path.isfile(path):
        raise AgebatchError(f"model file not found: {path}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras itself would say "File not found" about a file that is right there.
        raise AgebatchError(
            f"{path} is not a Keras model: a .keras file is a zip archive and this one is not (damaged or another format)"
        )
    import keras

    import agebatch.models.layers  # noqa: F401  registers the layers an agebatch model may contain

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
            from agebatch.models.serving import without_mirror_tta

            self.model = without_mirror_tta(self.model)
        # Eager TensorFlow's peak memory grows with the faces per call: 512 faces of the
        # mirrored Lite0 in one call were OOM-killed at 24 GB. Per call of 128 / 64 / 32
        # faces, 512 faces peaked at 7.4 / 4.0 / 2.4 GB RSS and ran at 104 / 100 / 79 img/s.
        self.chunk = chunk

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_size

    def predict(self, images: np.ndarray) -> Predictions:
        import keras

        def run(x: np.ndarray) -> dict[str, np.ndarray]:
            out = self.model(x, training=False)  # type: ignore[operator]
            return {k: np.asarray(keras.ops.convert_to_numpy(out[k])) for k in OUTPUT_NAMES if k in out}

        return predict_in_chunks(run, check_batch(images, self.input_size), self.chunk)
