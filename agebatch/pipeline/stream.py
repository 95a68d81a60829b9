"""The prediction stream: items in, `BatchResult`s out, in input order.

A `PredictionStream` is the swappable middle of the pipeline (decode, then predict),
behind one signature: `LocalStream` runs it in this process (decode threads, one
backend), `agebatch.pipeline.ray_stream.RayStream` on a Ray cluster. Everything before
(sources) and after (`rows`, `shards`) is shared, so both give the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agebatch.backends.base import Backend, Predictions
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import ResolvedModel
from agebatch.batching import iter_batches, iter_images, ok_mask
from agebatch.decode import DecodeOptions
from agebatch.faces.align import template_for
from agebatch.pipeline.detect import FaceColumns, detect_rows
from agebatch.pipeline.job import DETECT_BATCH_IMAGES, InferJob
from agebatch.sources import Item


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Consecutive inputs and what the model said; NaN predictions where `errors` has a reason.

    One row per input in crop mode; one row per face in detect mode (`faces` set), where
    an input's rows are consecutive and never split across results.
    """

    items: list[Item]  # one per row
    errors: list[str | None]
    pred: Predictions  # one per row
    faces: FaceColumns | None = None
    inputs: int = -1  # inputs covered; -1: one per row

    def __post_init__(self) -> None:
        if self.inputs < 0:
            object.__setattr__(self, "inputs", len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ok(self) -> np.ndarray:
        return ok_mask(self.errors)


class PredictionStream(Protocol):
    #: How the output's metadata names where predictions ran ("onnxruntime", "onnxruntime on ray").
    name: str
    #: One-line notes for the user (a requested device that is missing, ...).
    notes: list[str]

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        """Every item exactly once, in input order, batched."""
        ...


def runtime_options(model: ResolvedModel, job: InferJob) -> dict[str, object]:
    """What `load_backend` gets: the model's own (Keras: tta) plus the job's device for ONNX Runtime."""
    return {**model.options, **({"device": job.device} if model.backend == "onnxruntime" else {})}


def predict_ok(backend: Backend, images: np.ndarray, ok: np.ndarray) -> Predictions:
    """Predict the decodable rows of a batch; failed rows get NaN."""
    return backend.predict(images[ok]).scatter(ok) if ok.any() else Predictions.nan(len(images))


class LocalStream:
    """Decode with `job.workers` threads (bounded, ordered) and predict in this process.

    The backend is loaded here, before any work, so a broken model fails the run at once.
    """

    def __init__(self, model: ResolvedModel, job: InferJob) -> None:
        self.backend = load_backend(model.artifact, model.backend, **runtime_options(model, job))
        self.name = model.backend
        note = getattr(self.backend, "note", None)
        self.notes = [note] if note else []
        self.options = model.card.decode_options()
        self.batch_size = job.batch_size
        self.workers = job.workers
        self.job = job
        self.template = template_for(model.card.face_template)

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        if self.job.faces == "detect":
            yield from self._detect(items)
            return
        for batch in iter_batches(items, batch_size=self.batch_size, options=self.options, workers=self.workers):
            yield BatchResult(batch.items, batch.errors, predict_ok(self.backend, batch.images, batch.ok))

    def _detect(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        from agebatch.faces.detect import FaceFinder  # loads the detector models: only in detect mode

        finder = FaceFinder(self.job.face_options)
        side = self.job.face_options.work_side
        photos = DecodeOptions(size=(side, side), max_pixels=self.options.max_pixels, max_bytes=self.options.max_bytes)
        if self.job.save_crops is not None:
            os.makedirs(self.job.save_crops, exist_ok=True)
        per_batch = min(DETECT_BATCH_IMAGES, self.batch_size)
        for batch in iter_images(items, options=photos, batch_size=per_batch, workers=self.workers):
            rows = detect_rows(batch, finder, self.template, self.options, self.job.save_crops)
            pred = predict_ok(self.backend, rows.crops, ok_mask(rows.errors))
            yield BatchResult(rows.items, rows.errors, pred, rows.columns, rows.inputs)
