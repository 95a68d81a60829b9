"""Which artifact runs a model: the shipped default, and a .keras model's fastest verified export.

The repository ships trained models in ``models/`` (override with ``AGEBATCH_MODELS``),
each as ``NAME.keras`` + ``NAME.card.json`` and its FP32 ONNX export with sidecar, so
CPU inference needs neither TensorFlow nor a build step.
"""

from __future__ import annotations

import os

from agebatch.artifacts import read_sidecar, sha256_file
from agebatch.backends.base import available_backends, kind_of
from agebatch.errors import AgebatchError

#: The better of Model A and Model B on validation age MAE (see README); `infer` uses it by default.
DEFAULT_MODEL = "modelB"


def models_dir() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("AGEBATCH_MODELS", os.path.join(here, "models"))


def default_model() -> str:
    path = os.path.join(models_dir(), f"{DEFAULT_MODEL}.keras")
    if not os.path.isfile(path):
        raise AgebatchError(f"no shipped model at {path}; pass --model PATH (a .keras model, .onnx export or .engine)")
    return path


def _derived(model: str, suffixes: tuple[str, ...]) -> str | None:
    """An export of `model` beside it or in engines/ whose sidecar names this exact model file."""
    stem = os.path.splitext(os.path.basename(model))[0]
    want = None
    for folder in (os.path.dirname(os.path.abspath(model)), "engines"):
        for suffix in suffixes:
            path = os.path.join(folder, stem + suffix)
            if not os.path.isfile(path):
                continue
            want = want or sha256_file(model)
            try:
                meta = read_sidecar(path, kind="tensorrt" if suffix.endswith(".engine") else "onnx", verify_hash=False)
            except AgebatchError:
                continue
            if meta.get("source_model", {}).get("sha256") == want:
                return path
    return None


def resolve(model: str | None, backend: str = "auto") -> tuple[str, str]:
    """Return (artifact path, backend name) for `model` (default: the shipped model)."""
    model = model or default_model()
    if not os.path.isfile(model):
        raise AgebatchError(f"model file not found: {model}")
    kind = kind_of(model)
    if kind != "keras":
        return model, kind
    have = available_backends()
    if backend in ("auto", "tensorrt") and "tensorrt" in have and (engine := _derived(model, (".fp16.engine", ".fp32.engine"))):
        return engine, "tensorrt"
    if backend == "tensorrt":
        raise AgebatchError(
            f"no TensorRT engine of {model} usable here; build one with `agebatch build-engine {model}` on a GPU machine"
        )
    if backend in ("auto", "onnxruntime") and (onnx := _derived(model, (".fp32.onnx", ".fp16.onnx"))):
        return onnx, "onnxruntime"
    if backend == "onnxruntime":
        raise AgebatchError(f"no ONNX export of {model} found; make one with `agebatch build-engine {model} --target onnx`")
    if "keras" not in have:
        raise AgebatchError(
            f"{model} has no ONNX export and Keras is not installed; "
            f"run `agebatch build-engine {model} --target onnx` where it is"
        )
    return model, "keras"
