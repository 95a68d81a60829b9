"""What models agebatch can use here, and what this machine can run them with (`agebatch models`).

The first thing a user on a new machine (a GPU one above all) wants to know: which model
files are there, how good each is, and which runtime would run it here. Reading it costs
no runtime import: cards and sidecars are JSON, runtimes are probed with `find_spec`
(ONNX Runtime, already a base dependency, is asked for its providers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata

from agebatch.artifacts import read_sidecar
from agebatch.backends.probe import gpu_available, module_installed
from agebatch.backends.registry import REGISTRY, available_backends, describe, kind_of
from agebatch.backends.resolve import has_tta, resolve_artifact
from agebatch.errors import AgebatchError
from agebatch.models.shipped import models_dir


@dataclass(frozen=True, slots=True)
class ModelEntry:
    path: str
    name: str  # the card's model name
    backend: str  # the runtime its file type calls for
    precision: str
    input_size: tuple[int, int]
    test_age_mae: float | None
    test_gender_accuracy: float | None
    runnable: bool  # that runtime is installed (and, for TensorRT, a GPU answers)
    default: bool  # the artifact `infer` runs without --model
    problem: str | None = None  # why the file could not be read, if it could not
    tta: bool | None = None  # averages each face with its mirror
    test_interval_coverage: float | None = None  # share of test ages in [age_p10, age_p90]; None: no age distribution


@dataclass(frozen=True, slots=True)
class Environment:
    backends: list[str]  # runnable here, fastest first
    onnxruntime: str | None  # version
    onnxruntime_providers: list[str] = field(default_factory=list)
    gpu: bool = False
    tensorrt: str | None = None
    keras: str | None = None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> Environment:
    providers: list[str] = []
    ort = None
    if module_installed("onnxruntime"):
        import onnxruntime

        ort, providers = onnxruntime.__version__, list(onnxruntime.get_available_providers())
    trt = _version("tensorrt") if module_installed("tensorrt") else None
    keras = _version("keras") if module_installed("keras") else None
    return Environment(available_backends(), ort, providers, gpu_available(), trt, keras)


def find_models(folders: list[str] | None = None) -> list[ModelEntry]:
    """Every model file (.keras, .onnx, .engine) in `folders` (default: the shipped models, and ./engines if present)."""
    if folders is None:
        folders = [models_dir(), *(["engines"] if os.path.isdir("engines") else [])]
    try:  # what `infer` without --model runs: the default model's fastest verified export usable here
        default = os.path.realpath(resolve_artifact(None, "auto")[0])
    except AgebatchError:
        default = ""
    have = set(available_backends())
    entries = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise AgebatchError(f"not a folder: {folder}")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            try:
                kind = kind_of(name)
            except AgebatchError:
                continue  # cards, sidecars, plots
            try:
                card, precision, _ = describe(path, kind)
            except AgebatchError as e:
                entries.append(ModelEntry(path, name, kind, "?", (0, 0), None, None, False, False, e.message))
                continue
            tta = has_tta(card)
            if kind != "keras":
                sidecar = REGISTRY[kind].sidecar
                assert sidecar is not None
                tta = bool(read_sidecar(path, kind=sidecar, verify_hash=False).get("mirror_tta", tta))
            # The card's test metrics are the model's as trained; a one-pass export of a TTA model has none of its own.
            test = card.metrics.get("test", {}).get("all", {}) if tta == has_tta(card) else {}
            entries.append(
                ModelEntry(
                    path,
                    card.name,
                    kind,
                    precision,
                    card.input_size,
                    test.get("age_mae"),
                    test.get("gender_accuracy"),
                    kind in have,
                    os.path.realpath(path) == default,
                    tta=tta,
                    test_interval_coverage=test.get("interval_coverage"),
                )
            )
    return entries
