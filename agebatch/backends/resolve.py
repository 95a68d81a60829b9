"""Which artifact runs a model: a .keras model's fastest verified export, or the file as given.

"Verified" means the export's sidecar names this exact model file's sha256, so an
export left over from an older model is never picked up by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agebatch.artifacts import read_sidecar, sha256_file
from agebatch.backends.registry import REGISTRY, available_backends, check_backend, describe, kind_of, why_unavailable
from agebatch.errors import AgebatchError
from agebatch.models.card import ModelCard, load_card
from agebatch.models.shipped import find_model

#: Export file endings per backend, preferred first.
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "tensorrt": (".fp16.engine", ".fp32.engine"),
    "onnxruntime": (".fp32.onnx", ".fp16.onnx"),
}
#: Infix of the exports of a mirror-TTA model's plain inner model (`--no-tta`): ``modelB.notta.fp32.onnx``.
NO_TTA = ".notta"


def has_tta(card: ModelCard) -> bool:
    """Whether the model (and so its default exports) averages each face with its mirror."""
    return bool(card.training.get("test_time_augmentation"))


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
    tta: bool  # what this artifact runs: each face averaged with its mirror, or one pass
    options: dict[str, Any] = field(default_factory=dict)  # for load_backend (keras: tta=False)


def _onnx_on_gpu(device: str) -> bool:
    """Whether ONNX Runtime would run on CUDA for `device` (then its FP16 export is preferred)."""
    if device == "cpu":
        return False
    import onnxruntime  # a base dependency, and cheap next to loading a model

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _derived(model: str, backend: str, infix: str = "", suffixes: tuple[str, ...] | None = None) -> str | None:
    """An export of `model` for `backend`, beside it or in engines/, whose sidecar names this exact model file."""
    stem = os.path.splitext(os.path.basename(model))[0]
    kind = REGISTRY[backend].sidecar
    assert kind is not None, f"{backend} artifacts have no sidecar"
    want = None
    for folder in (os.path.dirname(os.path.abspath(model)), ENGINES_DIR):
        for suffix in suffixes or EXPORT_SUFFIXES[backend]:
            path = os.path.join(folder, stem + infix + suffix)
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


def resolve_artifact(model: str | None, backend: str = "auto", *, tta: bool = True, device: str = "auto") -> tuple[str, str]:
    """(artifact path, backend name) for `model` (default: the shipped model); `tta=False` wants a one-pass export."""
    model = find_model(model)  # a path, a shipped model's name (modelA, modelA.keras), or the default
    kind = check_backend(model, backend) if kind_of(model) != "keras" else "keras"
    have = available_backends()
    if backend != "auto" and backend not in have:
        raise AgebatchError(f"--backend {backend} is not available here: {why_unavailable(backend)}")
    if kind != "keras":
        if kind not in have:
            raise AgebatchError(f"{model} runs on {kind}, which is not available here: {why_unavailable(kind)}")
        return model, kind
    infix = "" if tta or not has_tta(load_card(model)) else NO_TTA
    if backend in ("auto", "tensorrt") and "tensorrt" in have and (engine := _derived(model, "tensorrt", infix)):
        return engine, "tensorrt"
    if backend == "tensorrt":
        raise AgebatchError(
            f"no TensorRT engine of {model} for this machine; build one here with `agebatch build-engine {model}`"
        )
    # On a GPU the FP16 export halves memory traffic (its parity is in its sidecar); on a CPU FP32 is faster.
    onnx_order = (".fp16.onnx", ".fp32.onnx") if backend in ("auto", "onnxruntime") and _onnx_on_gpu(device) else None
    if backend in ("auto", "onnxruntime") and (onnx := _derived(model, "onnxruntime", infix, onnx_order)):
        return onnx, "onnxruntime"
    if backend == "onnxruntime":
        raise AgebatchError(f"no ONNX export of {model} found; make one with `agebatch build-engine {model} --target onnx`")
    if "keras" not in have:
        raise AgebatchError(
            f"{model} has no ONNX export and Keras is not installed; "
            f"run `agebatch build-engine {model} --target onnx` where it is"
        )
    return model, "keras"


def resolve(model: str | None, backend: str = "auto", *, tta: bool = True, device: str = "auto") -> ResolvedModel:
    """Pick the artifact for `model` and read its card, precision and hash (no runtime is imported).

    With `tta=False`, a mirror-TTA model runs its plain inner model: its ``.notta`` export,
    or Keras unwrapping it. An export given directly runs as it was built; asking it for
    the other TTA setting is an error rather than a silent mismatch.
    """
    artifact, kind = resolve_artifact(model, backend, tta=tta, device=device)
    card, precision, sha256 = describe(artifact, kind)
    if kind == "keras":
        return ResolvedModel(artifact, kind, card, precision, sha256, tta and has_tta(card), {} if tta else {"tta": False})
    sidecar = REGISTRY[kind].sidecar
    assert sidecar is not None
    built_tta = bool(read_sidecar(artifact, kind=sidecar, verify_hash=False).get("mirror_tta", has_tta(card)))
    if tta != built_tta and has_tta(card):
        want = "with" if tta else "without"
        raise AgebatchError(
            f"{artifact} was exported {'with' if built_tta else 'without'} mirror TTA; for a run {want} it, pass the .keras "
            "model (its matching export is picked), or re-export with `agebatch build-engine`"
        )
    return ResolvedModel(artifact, kind, card, precision, sha256, built_tta)
