"""Every backend agebatch knows, in one table: file types, availability, how to open one.

Adding a backend is one module with a class that satisfies `agebatch.backends.base.Backend`
and one `BackendSpec` entry here. The runtime is imported only inside `load`, so asking
which backends exist (the CLI's choices, `available_backends`) imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agebatch.artifacts import read_sidecar, sha256_file
from agebatch.backends.probe import gpu_available, module_installed
from agebatch.errors import AgebatchError
from agebatch.models.card import ModelCard, load_card

if TYPE_CHECKING:  # the interface only; keeps this table free of NumPy for `agebatch --help`
    from agebatch.backends.base import Backend


def _load_tensorrt(path: str, options: dict[str, Any]) -> Backend:
    from agebatch.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(path, **options)


def _load_onnxruntime(path: str, options: dict[str, Any]) -> Backend:
    from agebatch.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, **options)


def _load_keras(path: str, options: dict[str, Any]) -> Backend:
    from agebatch.backends.keras import KerasBackend

    return KerasBackend(path, **options)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    suffixes: tuple[str, ...]  # lower-case file endings this backend opens
    sidecar: str | None  # the artifact sidecar's kind; None: the model card sits beside the file
    artifact: str  # what a user needs, for messages
    available: Callable[[], bool]
    load: Callable[[str, dict[str, Any]], Backend]


#: Fastest first: `resolve` tries them in this order.
REGISTRY: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "tensorrt",
            (".engine", ".plan", ".trt"),
            "tensorrt",
            "an .engine file",
            lambda: module_installed("tensorrt") and gpu_available(),
            _load_tensorrt,
        ),
        BackendSpec(
            "onnxruntime", (".onnx",), "onnx", "an .onnx export", lambda: module_installed("onnxruntime"), _load_onnxruntime
        ),
        BackendSpec("keras", (".keras",), None, "a .keras model", lambda: module_installed("keras"), _load_keras),
    )
}
#: What `--backend` accepts.
BACKEND_CHOICES: tuple[str, ...] = ("auto", *REGISTRY)


def kind_of(artifact: str) -> str:
    """The backend a model file's type calls for."""
    lower = artifact.lower()
    for spec in REGISTRY.values():
        if lower.endswith(spec.suffixes):
            return spec.name
    endings = ", ".join(s for spec in REGISTRY.values() for s in spec.suffixes)
    raise AgebatchError(f"unknown model type {artifact}: expected one of {endings}")


def available_backends() -> list[str]:
    """Backends whose runtime is importable here, fastest first."""
    return [name for name, spec in REGISTRY.items() if spec.available()]


#: What each backend needs, and how to get it, for the error when one is asked for and missing.
_NEEDS = {
    "tensorrt": "TensorRT and CuPy on a machine with an NVIDIA GPU: pip install 'agebatch[gpu]'",
    "onnxruntime": "ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)",
    "keras": "Keras and TensorFlow: pip install 'agebatch[train]'",
}


def why_unavailable(name: str) -> str:
    """What backend `name` lacks on this machine, and how to get it (say it, rather than hint at a wrong fix)."""
    if name == "tensorrt" and module_installed("tensorrt") and not gpu_available():
        return "TensorRT is installed but no CUDA GPU answers here (through CuPy: pip install cupy-cuda12x)"
    return f"it needs {_NEEDS[name]}"


def check_backend(artifact: str, backend: str) -> str:
    """The backend that opens `artifact` ("auto": the one its type calls for); refuse a mismatch."""
    kind = kind_of(artifact)
    if backend not in ("auto", kind):
        if backend not in REGISTRY:
            raise AgebatchError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
        raise AgebatchError(
            f"{artifact} is a {kind} artifact; backend {backend} needs {REGISTRY[backend].artifact}"
            " (make one with `agebatch build-engine`)"
        )
    return kind


def load_backend(artifact: str | os.PathLike[str], backend: str = "auto", **options: Any) -> Backend:
    """Open `artifact` with the named backend ("auto": the one its file type calls for)."""
    artifact = os.fspath(artifact)
    return REGISTRY[check_backend(artifact, backend)].load(artifact, options)


def describe(artifact: str, kind: str) -> tuple[ModelCard, str, str]:
    """(model card, precision, verified sha256) of an artifact without importing its runtime.

    A Ray driver needs these for the output's metadata but never loads the model.
    """
    sidecar = REGISTRY[kind].sidecar
    if sidecar is None:
        return load_card(artifact), "fp32", sha256_file(artifact)
    meta = read_sidecar(artifact, kind=sidecar)  # checks the file against the hash it pins
    return meta["card"], str(meta["precision"]), str(meta["artifact_sha256"])
