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


def default_model() -> str:
    path = os.path.join(models_dir(), f"{DEFAULT_MODEL}.keras")
    if not os.path.isfile(path):
        raise AgebatchError(f"no shipped model at {path}; pass --model PATH (a .keras model, .onnx export or .engine)")
    return path
