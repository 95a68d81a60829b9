"""What this machine can run: installed runtimes and a visible GPU, checked without importing them.

Kept apart from the backends so `agebatch --help`, `registry.available_backends()` and
the CLI can ask cheaply: `importlib.util.find_spec` reads no module code.
"""

from __future__ import annotations

import importlib.util


def module_installed(name: str) -> bool:
    """True when `name` is an importable module with code, not just a folder of type stubs.

    ``tensorrt-stubs`` installs a bare ``tensorrt/`` folder of ``.pyi`` files, which
    Python would import as an empty namespace package; a real install has an origin.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None


def gpu_available() -> bool:
    """True when a CUDA GPU answers (checked through CuPy, which the TensorRT path uses)."""
    if not module_installed("cupy"):
        return False
    try:
        import cupy  # pyright: ignore[reportMissingImports]  # optional, GPU machines only

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # no driver, no device, a CUDA mismatch: all mean "no GPU for us"
        return False
