"""One small interface for every way of running a model.

``load_backend(artifact, backend) -> Backend``; ``backend.predict(uint8 NHWC) ->
(age float32[N], p_female float32[N])``. Backends feed raw uint8 pixels: every
agebatch model preprocesses inside its graph (see `agebatch.models.card`), so no
backend holds a preprocessing constant. Imports of heavy runtimes happen inside the
loaders, so choosing ONNX Runtime never imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from agebatch.errors import AgebatchError
from agebatch.models.card import ModelCard

KERAS_SUFFIXES = (".keras",)
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Backend(Protocol):
    name: str  # "onnxruntime" | "keras" | "tensorrt"
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


def gpu_available() -> bool:
    """True when a CUDA GPU answers (checked through CuPy, which the TensorRT path uses)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def available_backends() -> list[str]:
    """Backends whose runtime is importable here, fastest first."""
    found = []
    if importlib.util.find_spec("tensorrt") is not None and gpu_available():
        found.append("tensorrt")
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnxruntime")
    if importlib.util.find_spec("keras") is not None:
        found.append("keras")
    return found


def kind_of(artifact: str) -> str:
    lower = artifact.lower()
    if lower.endswith(KERAS_SUFFIXES):
        return "keras"
    if lower.endswith(ONNX_SUFFIXES):
        return "onnxruntime"
    if lower.endswith(ENGINE_SUFFIXES):
        return "tensorrt"
    raise AgebatchError(f"unknown model type {artifact}: expected .keras, .onnx or .engine")


def load_backend(artifact: str | os.PathLike[str], backend: str = "auto", **options: object) -> Backend:
    """Open `artifact` with the named backend ("auto": the one its file type calls for)."""
    artifact = os.fspath(artifact)
    kind = kind_of(artifact)
    if backend not in ("auto", kind):
        raise AgebatchError(
            f"{artifact} is a {kind} artifact; backend {backend} needs "
            + {"keras": "a .keras model", "onnxruntime": "an .onnx export", "tensorrt": "an .engine file"}[backend]
            + " (make one with `agebatch build-engine`)"
        )
    if kind == "onnxruntime":
        from agebatch.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact, **options)  # type: ignore[arg-type]
    if kind == "keras":
        from agebatch.backends.keras import KerasBackend

        return KerasBackend(artifact, **options)  # type: ignore[arg-type]
    from agebatch.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(artifact, **options)  # type: ignore[arg-type]
