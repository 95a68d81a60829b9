"""`agebatch build-engine`: Keras model -> checked ONNX export(s) -> optional TensorRT engine.

Every artifact is checked against the Keras model on real faces and gets a sidecar
(`agebatch.artifacts`) with the card, precision, batch profile and parity numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agebatch.artifacts import sha256_file, write_sidecar
from agebatch.backends.base import Predictions
from agebatch.backends.export import convert_fp16, export_onnx, parity  # each imports its converter when called
from agebatch.backends.keras import KerasBackend
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import NO_TTA, has_tta
from agebatch.errors import AgebatchError
from agebatch.io.batching import iter_batches
from agebatch.io.lock import OutputLock
from agebatch.io.sources import iter_items, samples_dir
from agebatch.models.card import ModelCard

MAX_PARITY_FACES = 512


@dataclass(slots=True)
class BuildResult:
    artifacts: list[str] = field(default_factory=list)
    parity: dict[str, dict[str, float]] = field(default_factory=dict)


def calibration_faces(folder: str, card: ModelCard, limit: int = MAX_PARITY_FACES) -> np.ndarray:
    """Up to `limit` decoded faces spread evenly over `folder`'s listing, as the model sees them.

    Evenly spaced, not the first N: sorted UTKFace names start with one narrow range of ages.
    """
    listing = list(iter_items(folder, labels="none"))  # paths only
    spots: list[int] | np.ndarray = (
        np.unique(np.linspace(0, len(listing) - 1, min(limit, len(listing))).round().astype(int)) if listing else []
    )
    picks = [listing[i] for i in spots]
    batches = list(iter_batches(picks, batch_size=max(1, len(picks)), options=card.decode_options()))
    images = np.concatenate([b.images[b.ok] for b in batches]) if batches else np.empty((0, *card.input_size, 3), np.uint8)
    if len(images) == 0:
        raise AgebatchError(f"no decodable faces in {folder} for the parity check")
    return images


def build_engine(
    model_path: str,
    *,
    target: str = "tensorrt",
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int = 256,
    max_batch: int = 1024,
    calib: str | None = None,
    out_dir: str = "engines",
) -> BuildResult:
    """Export `model_path` to ONNX (FP32, plus FP16 when asked), check parity, and build a TensorRT engine if targeted."""
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise AgebatchError(f"batch profile must satisfy 1 <= min <= opt <= max (got {min_batch}, {opt_batch}, {max_batch})")
    if target == "tensorrt":
        from agebatch.backends.tensorrt import require_tensorrt

        require_tensorrt()  # fail before minutes of export work
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(model_path))[0])
    with OutputLock(stem):  # one build per model and folder at a time: both would write the same exports
        reference = KerasBackend(model_path)
        card = reference.card
        faces = calibration_faces(calib or samples_dir(), card)
        ref = reference.predict(faces)
        profile = {"min": min_batch, "opt": opt_batch, "max": max_batch}
        # Relative to the sidecar's folder: exports travel with their model (a wheel, another machine).
        source = {
            "path": os.path.relpath(os.path.abspath(model_path), os.path.abspath(out_dir)),
            "sha256": sha256_file(model_path),
        }
        result = BuildResult()
        calib_label = calib or "bundled samples"

        def finish(artifact: str, kind: str, prec: str, extra: dict[str, Any], expect: Predictions) -> None:
            """Sidecar first (loading needs it), then parity against Keras, stored in the sidecar."""
            extra = {"source_model": source, "batch_profile": profile, **extra}
            write_sidecar(artifact, kind=kind, precision=prec, card=card, extra=extra)
            stats = parity(expect, load_backend(artifact, "onnxruntime" if kind == "onnx" else "tensorrt").predict(faces))
            write_sidecar(
                artifact,
                kind=kind,
                precision=prec,
                card=card,
                extra={**extra, "parity": {"reference": "keras", "faces": calib_label, **stats}},
            )
            result.parity[artifact] = stats
            result.artifacts.append(artifact)

        # A model with mirror TTA in its graph also gets exports of the plain model inside it (`--no-tta`:
        # half the compute); both come from the same .keras file and name it in their sidecars.
        variants = [("", reference.model, ref, has_tta(card))]
        if has_tta(card):
            plain = KerasBackend(model_path, tta=False)
            variants.append((NO_TTA, plain.model, plain.predict(faces), False))
        for infix, keras_model, expect, tta in variants:
            onnx_for_trt = export_onnx(keras_model, f"{stem}{infix}.fp32.onnx")
            finish(onnx_for_trt, "onnx", "fp32", {"mirror_tta": tta}, expect)
            if precision == "fp16":
                onnx16 = f"{stem}{infix}.fp16.onnx"
                finish(onnx16, "onnx", "fp16", {"fp32_nodes": convert_fp16(onnx_for_trt, onnx16), "mirror_tta": tta}, expect)
                onnx_for_trt = onnx16
            if target == "tensorrt":
                from agebatch.backends.tensorrt import build_engine_file

                engine = f"{stem}{infix}.{precision}.engine"
                cache = os.path.join(out_dir, "timing.cache")
                info = build_engine_file(
                    onnx_for_trt, engine, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, timing_cache=cache
                )
                extra = {"tensorrt": info, "onnx": os.path.basename(onnx_for_trt), "mirror_tta": tta}
                finish(engine, "tensorrt", precision, extra, expect)
        return result
