"""The prediction stream: items in, `BatchResult`s out, in input order.

A `PredictionStream` is the swappable middle of the pipeline (decode, then predict),
behind one signature: `LocalStream` runs it in this process (decode threads, one
backend), `agebatch.pipeline.ray_stream.RayStream` on a Ray cluster. Everything before
(sources) and after (`rows`, `shards`) is shared, so both give the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agebatch.backends.base import Backend, Predictions
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import ResolvedModel
from agebatch.faces.align import template_for
from agebatch.faces.cut import FaceColumns
from agebatch.faces.stage import FaceStage
from agebatch.io.batching import ok_mask
from agebatch.io.sources import Item
from agebatch.pipeline.job import InferJob


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
    input_items: list[Item] | None = None  # one per input (detect mode); None: `items`, one row per input

    def __post_init__(self) -> None:
        if self.inputs < 0:
            object.__setattr__(self, "inputs", len(self.items))

    @property
    def input_keys(self) -> list[str | None]:
        """The keys of the inputs covered, once each and in order (what a shard's footer digests)."""
        return [i.key for i in (self.items if self.input_items is None else self.input_items)]

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


def runtime_options(model: ResolvedModel, device: str) -> dict[str, object]:
    """What `load_backend` gets: the model's own (Keras: tta) plus the device for ONNX Runtime."""
    return {**model.options, **({"device": device} if model.backend == "onnxruntime" else {})}


def predict_ok(backend: Backend, images: np.ndarray, ok: np.ndarray) -> Predictions:
    """Predict the decodable rows of a batch; failed rows get NaN."""
    return backend.predict(images[ok]).scatter(ok) if ok.any() else Predictions.nan(len(images))


class LocalStream:
    """Decode with `job.workers` threads (bounded, ordered), cut faces (`FaceStage`) and predict in this process.

    The backend is loaded here, before any work, so a broken model fails the run at once.
    """

    def __init__(self, model: ResolvedModel, job: InferJob) -> None:
        self.backend = load_backend(model.artifact, model.backend, **runtime_options(model, job.device))
        self.name = model.backend
        note = getattr(self.backend, "note", None)
        self.notes = [note] if note else []
        self.stage = face_stage(model, job)

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        checking = self.stage.mode == "crop"
        for rows in self.stage.rows(items):
            ok = ok_mask(rows.errors)
            if checking and ok.any():  # once, on the first batch with readable inputs
                checking = False
                note = self.stage.crop_check(rows.crops[ok])
                if note:
                    self.notes.append(note)
            pred = predict_ok(self.backend, rows.crops, ok)
            yield BatchResult(rows.items, rows.errors, pred, rows.columns, rows.inputs, rows.input_items)


def face_stage(model: ResolvedModel, job: InferJob) -> FaceStage:
    """The one `FaceStage` of a run: the job's face mode and options, the model card's input and template."""
    return FaceStage(
        job.faces,
        model.card.decode_options(),
        job.face_options,
        template_for(model.card.face_template),
        job.batch_size,
        job.workers,
        job.save_crops,
    )
