"""Which artifact runs a model: a .keras model's fastest verified export, or the file as given.

"Verified" means the export's sidecar names this exact model file's sha256, so an
export left over from an older model is never picked up by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agebatch.artifacts import read_sidecar, sha256_file
from agebatch.backends.registry import REGISTRY, available_backends, check_backend, describe, kind_of
from agebatch.errors import AgebatchError
from agebatch.models.card import ModelCard
from agebatch.models.shipped import default_model

#: Export file endings per backend, preferred first.
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "tensorrt": (".fp16.engine", ".fp32.engine"),
    "onnxruntime": (".fp32.onnx", ".fp16.onnx"),
}
#: Folder searched for exports besides the model's own.
ENGINES_DIR = "engines"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """The artifact a job runs, with what it says about itself (read once, no runtime imported)."""

    artifact: str
    backend: str  # a key of REGISTRY
    card: ModelCard
    precision: str
    sha256: str


def _derived(model: str, backend: str) -> str | None:
    """An export of `model` for `backend`, beside it or in engines/, whose sidecar names this exact model file."""
    stem = os.path.splitext(os.path.basename(model))[0]
    kind = REGISTRY[backend].sidecar
    assert kind is not None, f"{backend} artifacts have no sidecar"
    want = None
    for folder in (os.path.dirname(os.path.abspath(model)), ENGINES_DIR):
        for suffix in EXPORT_SUFFIXES[backend]:
            path = os.path.join(folder, stem + suffix)
            if not os.path.isfile(path):
                continue
            want = want or sha256_file(model)
            try:
                meta = read_sidecar(path, kind=kind, verify_hash=False)
            except AgebatchError:
                continue
            if meta.get("source_model", {}).get("sha256") == want:
                return path
    return None


def resolve_artifact(model: str | None, backend: str = "auto") -> tuple[str, str]:
    """(artifact path, backend name) for `model` (default: the shipped model)."""
    model = model or default_model()
    if not os.path.isfile(model):
        raise AgebatchError(f"model file not found: {model}")
    kind = check_backend(model, backend) if kind_of(model) != "keras" else "keras"
    if kind != "keras":
        return model, kind
    have = available_backends()
    if backend in ("auto", "tensorrt") and "tensorrt" in have and (engine := _derived(model, "tensorrt")):
        return engine, "tensorrt"
    if backend == "tensorrt":
        raise AgebatchError(
            f"no TensorRT engine of {model} usable here; build one with `agebatch build-engine {model}` on a GPU machine"
        )
    if backend in ("auto", "onnxruntime") and (onnx := _derived(model, "onnxruntime")):
        return onnx, "onnxruntime"
    if backend == "onnxruntime":
        raise AgebatchError(f"no ONNX export of {model} found; make one with `agebatch build-engine {model} --target onnx`")
    if "keras" not in have:
        raise AgebatchError(
            f"{model} has no ONNX export and Keras is not installed; "
            f"run `agebatch build-engine {model} --target onnx` where it is"
        )
    return model, "keras"


def resolve(model: str | None, backend: str = "auto") -> ResolvedModel:
    """Pick the artifact for `model` and read its card, precision and hash (no runtime is imported)."""
    artifact, kind = resolve_artifact(model, backend)
    card, precision, sha256 = describe(artifact, kind)
    return ResolvedModel(artifact, kind, card, precision, sha256)
