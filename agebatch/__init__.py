"""agebatch: batch age and gender estimation for large archives of face images.

From Python: ``agebatch.predict(paths_or_arrays)`` returns the table ``agebatch infer``
writes; for archives, ``agebatch.run_infer(agebatch.InferJob("photos/", "preds.parquet"))``
streams, resumes and keeps memory flat. Both are loaded on first use (PEP 562), so
``import agebatch`` and ``agebatch --help`` stay free of NumPy, pyarrow and every runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agebatch.version import __version__

if TYPE_CHECKING:  # what __getattr__ loads on first use, for type checkers and readers
    from agebatch.api import FacePredictor, predict
    from agebatch.pipeline.job import InferJob
    from agebatch.pipeline.run import run_infer

__all__ = ["FacePredictor", "InferJob", "__version__", "predict", "run_infer"]

#: Public names and the module that defines each.
_LAZY = {
    "predict": "agebatch.api",
    "FacePredictor": "agebatch.api",
    "InferJob": "agebatch.pipeline.job",
    "run_infer": "agebatch.pipeline.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agebatch' has no attribute {name!r}")
