"""Inference backends behind one interface; see `agebatch.backends.base`."""

from agebatch.backends.base import Backend, available_backends, load_backend

__all__ = ["Backend", "available_backends", "load_backend"]
