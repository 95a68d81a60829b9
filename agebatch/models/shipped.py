"""Where the shipped models live and which one is the default.

The repository ships trained models in ``models/`` (override with ``AGEBATCH_MODELS``),
each as ``NAME.keras`` + ``NAME.card.json`` and its FP32 ONNX export with sidecar, so
CPU inference needs neither TensorFlow nor a build step. Choosing which artifact runs
a model is `agebatch.backends.resolve`'s job.
"""

from __future__ import annotations

import os

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
