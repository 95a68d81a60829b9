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

from agebatch.backends.base import Backend
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import ResolvedModel
from agebatch.batching import iter_batches, ok_mask
from agebatch.pipeline.job import InferJob
from agebatch.sources import Item


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Consecutive inputs and what the model said about each; NaN predictions where `errors` has a reason."""

    items: list[Item]
    errors: list[str | None]
    age: np.ndarray  # float32 (N,), years
    gender_prob: np.ndarray  # float32 (N,), P(female)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ok(self) -> np.ndarray:
        return ok_mask(self.errors)


class PredictionStream(Protocol):
    #: How the output's metadata names where predictions ran ("onnxruntime", "onnxruntime on ray").
    name: str

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        """Every item exactly once, in input order, batched."""
        ...


def predict_ok(backend: Backend, images: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predict the decodable rows of a batch; failed rows get NaN."""
    age = np.full(len(images), np.nan, np.float32)
    prob = np.full(len(images), np.nan, np.float32)
    if ok.any():
        age[ok], prob[ok] = backend.predict(images[ok])
    return age, prob


class LocalStream:
    """Decode with `job.workers` threads (bounded, ordered) and predict in this process.

    The backend is loaded here, before any work, so a broken model fails the run at once.
    """

    def __init__(self, model: ResolvedModel, job: InferJob) -> None:
        self.backend = load_backend(model.artifact, model.backend)
        self.name = model.backend
        self.options = model.card.decode_options()
        self.batch_size = job.batch_size
        self.workers = job.workers

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        for batch in iter_batches(items, batch_size=self.batch_size, options=self.options, workers=self.workers):
            yield BatchResult(batch.items, batch.errors, *predict_ok(self.backend, batch.images, batch.ok))
