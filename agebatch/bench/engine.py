"""Backend benchmark: images/s per batch size on real faces, decode excluded.

The faces are decoded once up front and tiled to the largest batch size, so the
timed loop measures only `backend.predict` (or Keras `model.predict` for the
reference). Every number printed comes from this one run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class EngineRun:
    backend: str
    precision: str
    batch_size: int
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _time(fn: object, batch: np.ndarray, seconds: float) -> tuple[int, float]:
    fn(batch)  # type: ignore[operator]  # warm-up: graph optimisation, allocations
    n, t0 = 0, time.perf_counter()
    while True:
        fn(batch)  # type: ignore[operator]
        n += len(batch)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n, dt


def run_engine_bench(
    artifact: str, batch_sizes: list[int], *, seconds: float = 3.0, keras_model: str | None = None
) -> list[EngineRun]:
    from agebatch.backends.registry import load_backend
    from agebatch.commands.engine import calibration_faces
    from agebatch.io.sources import samples_dir

    backend = load_backend(artifact)
    faces = calibration_faces(samples_dir(), backend.card)
    tiled = np.resize(faces, (max(batch_sizes), *faces.shape[1:]))  # repeat real faces up to the largest batch
    runs = []
    for bs in batch_sizes:
        n, dt = _time(backend.predict, tiled[:bs], seconds)
        runs.append(EngineRun(backend.name, backend.precision, bs, n, dt))
    if keras_model:
        from agebatch.backends.keras import KerasBackend

        model = KerasBackend(keras_model).model
        for bs in batch_sizes:
            n, dt = _time(lambda x, bs=bs: model.predict(x, batch_size=bs, verbose=0), tiled[:bs], seconds)  # type: ignore[attr-defined]
            runs.append(EngineRun("keras predict", "fp32", bs, n, dt))
    return runs


def report(runs: list[EngineRun], console: Console) -> None:
    from rich.table import Table

    table = Table(title="backend throughput (decode excluded)")
    for col in ("backend", "precision", "batch", "images", "seconds", "images/s"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(r.backend, r.precision, str(r.batch_size), f"{r.images:,}", f"{r.seconds:.2f}", f"{r.images_per_s:,.0f}")
    console.print(table)
    keras = {r.batch_size: r for r in runs if r.backend == "keras predict"}
    for r in runs:
        if r.backend != "keras predict" and r.batch_size in keras:
            console.print(
                f"batch {r.batch_size}: {r.backend} / keras predict = {r.images_per_s / keras[r.batch_size].images_per_s:.2f}x"
            )
