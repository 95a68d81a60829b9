"""Artifact sidecars: the JSON beside every ONNX export and TensorRT engine.

A sidecar embeds the model card (so an artifact is usable without the .keras file),
says what precision and batch profile it was built for, records its parity against
Keras, and pins the artifact's own hash so a corrupted or swapped file is caught at
load time instead of producing wrong numbers.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from agebatch.errors import AgebatchError
from agebatch.io.jsonio import read_json, write_json_atomic
from agebatch.models.card import ModelCard
from agebatch.version import __version__

SIDECAR_FORMAT = "agebatch.artifact"
SIDECAR_VERSION = 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(artifact: str | os.PathLike[str]) -> str:
    return os.fspath(artifact) + ".json"


def write_sidecar(artifact: str, *, kind: str, precision: str, card: ModelCard, extra: dict[str, Any]) -> str:
    data = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "kind": kind,
        "precision": precision,
        "artifact_sha256": sha256_file(artifact),
        "agebatch_version": __version__,
        "card": card.to_dict(),
        **extra,
    }
    path = sidecar_path(artifact)
    write_json_atomic(path, data)
    return path


def read_sidecar(artifact: str | os.PathLike[str], *, kind: str, verify_hash: bool = True) -> dict[str, Any]:
    """Load and check an artifact's sidecar; every failure is a clear AgebatchError."""
    artifact = os.fspath(artifact)
    if not os.path.isfile(artifact):
        raise AgebatchError(f"model file not found: {artifact}")
    path = sidecar_path(artifact)
    data = read_json(path, missing=f"{artifact} has no sidecar {path}; rebuild it with `agebatch build-engine`")
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or data.get("version") != SIDECAR_VERSION:
        raise AgebatchError(f"{path} is not an agebatch artifact sidecar (version {SIDECAR_VERSION})")
    if data.get("kind") != kind:
        raise AgebatchError(f"{artifact} is a {data.get('kind')} artifact, not {kind}")
    if verify_hash and sha256_file(artifact) != data.get("artifact_sha256"):
        raise AgebatchError(
            f"{artifact} does not match its sidecar (corrupt or replaced); rebuild it with `agebatch build-engine`"
        )
    data["card"] = ModelCard.from_dict(data.get("card"), where=f"{path} (card)")
    return data
