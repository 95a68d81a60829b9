"""Where the shipped models live and which one is the default.

The trained models ship inside the package, in ``agebatch/shipped_models/`` (a checkout
also reaches them as ``models/``, a link), each as ``NAME.keras`` + ``NAME.card.json`` and
its FP32 ONNX export with sidecar, so a plain ``pip install`` runs CPU inference from any
folder with neither TensorFlow nor a build step. ``AGEBATCH_MODELS`` points elsewhere.
Choosing which artifact runs a model is `agebatch.backends.resolve`'s job.
"""

from __future__ import annotations

import os
from importlib import resources

from agebatch.errors import AgebatchError

#: The better of Model A and Model B on validation age MAE (see README); `infer` uses it by default.
DEFAULT_MODEL = "modelB"


def models_dir() -> str:
    """``$AGEBATCH_MODELS``, else the package's own ``shipped_models`` folder (found with importlib.resources)."""
    return os.environ.get("AGEBATCH_MODELS") or str(resources.files("agebatch").joinpath("shipped_models"))


def shipped_model(name: str) -> str | None:
    """The shipped model a bare name means (``modelA``, ``modelA.keras``, ``modelB.fp32.onnx``), or None.

    Only a name without a folder part is looked up, so a path the user typed is never
    silently replaced by a shipped file.
    """
    if not name or os.sep in name or (os.altsep and os.altsep in name):
        return None
    folder = models_dir()
    for candidate in (name, f"{name}.keras"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_model(model: str | None) -> str:
    """`model` as given when it is a file, else the shipped model of that name, else the default; or exit 2."""
    if model is None:
        return default_model()
    if os.path.isfile(model):
        return model
    shipped = shipped_model(model)
    if shipped is None:
        raise AgebatchError(f"model file not found: {model} (shipped models are named as `agebatch models` lists them)")
    return shipped


def default_model() -> str:
    path = os.path.join(models_dir(), f"{DEFAULT_MODEL}.keras")
    if not os.path.isfile(path):
        raise AgebatchError(f"no shipped model at {path}; pass --model PATH (a .keras model, .onnx export or .engine)")
    return path
