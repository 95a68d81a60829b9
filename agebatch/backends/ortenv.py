"""ONNX Runtime, imported once with its telemetry events turned off.

Every ONNX Runtime session agebatch opens (the age/gender backend, the face detectors)
imports it through here, so a run sends no telemetry events. What agebatch cannot stop:
ONNX Runtime 1.2x on Linux creates ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``
(``deviceid``, ``onnxruntime.db``) while the module is imported, before any API call
exists to prevent it (README "Guarantees").
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def onnxruntime() -> ModuleType:
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort
