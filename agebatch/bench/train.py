"""`agebatch bench train`: training steps per second of Model A and Model B, and the machine's load.

Training speed on a CPU halves when anything else runs beside it, so this bench prints
the CPU model, core count and load average before and after its timed steps: a slow
number from a contended machine can be told from a slow machine. Each model is built
exactly as `agebatch train` builds it (`trainer._build`, Lite0 frozen below
`train_from_block`, the same losses), fed real faces through the training augmentation,
and timed over `steps` `train_on_batch` calls after `warmup` untimed ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agebatch.machine import load_average, machine_facts


@dataclass(frozen=True, slots=True)
class TrainSpeed:
    model: str  # "custom" (Model A) | "pretrained" (Model B)
    image_size: int
    batch_size: int
    steps: int
    seconds_per_step: float
    load_before: tuple[float, float, float] | None
    load_after: tuple[float, float, float] | None

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds_per_step


def faces_for_bench(source: str, n: int, size: int) -> np.ndarray:
    """`n` real faces of `source` at the model's input (repeated when the source has fewer)."""
    from agebatch.io.batching import iter_batches
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items

    items = []
    for item in iter_items(source, labels="none"):
        items.append(item)
        if len(items) >= n:
            break
    batch = next(iter_batches(items, batch_size=len(items), options=DecodeOptions(size=(size, size))))
    faces = batch.images[batch.ok]
    return np.resize(faces, (n, *faces.shape[1:])) if len(faces) else faces


def time_training(kind: str, faces: np.ndarray, *, batch_size: int, steps: int, warmup: int, **config: Any) -> TrainSpeed:
    """Seconds per training step of one model, as `agebatch train` would run it."""
    from agebatch.train.augment import augment_batch
    from agebatch.train.config import TrainConfig
    from agebatch.train.trainer import _build, _compile, _targets, _training_model

    cfg = TrainConfig(kind=kind, batch_size=batch_size, **config)  # type: ignore[arg-type]
    size = (cfg.image_size, cfg.image_size)
    model, _, _ = _build(cfg, size)
    if kind == "pretrained" and cfg.backbone == "efficientnet-lite0":
        from agebatch.models.pretrained import freeze_lite0_below

        freeze_lite0_below(model, cfg.train_from_block)
    train_model = _training_model(model, cfg.age_head)
    _compile(train_model, cfg)
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, batch_size).astype(np.float32)
    genders = rng.integers(0, 2, batch_size).astype(np.float32)
    targets = _targets(ages, genders, cfg.age_head)

    def step() -> None:
        idx = rng.integers(0, len(faces), batch_size)
        train_model.train_on_batch(augment_batch(faces[idx], rng, cfg.augment), targets)

    for _ in range(warmup):
        step()
    before = load_average()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    return TrainSpeed(kind, cfg.image_size, batch_size, steps, seconds, before, load_average())


def report(runs: list[TrainSpeed], console: Any) -> None:
    from rich.table import Table

    facts = machine_facts()
    table = Table(title=f"training steps on {facts['cpu']} ({facts['cores']} cores)")
    for col in ("model", "px", "batch", "steps", "s/step", "img/s", "load before", "load after"):
        table.add_column(col, justify="left" if col == "model" else "right")
    names = {"custom": "A (custom)", "pretrained": "B (Lite0)"}
    for r in runs:
        table.add_row(
            names.get(r.model, r.model), str(r.image_size), str(r.batch_size), str(r.steps),
            f"{r.seconds_per_step:.2f}", f"{r.images_per_s:.1f}",
            _load(r.load_before), _load(r.load_after),
        )  # fmt: skip
    console.print(table)
    by = {r.model: r for r in runs}
    if "custom" in by and "pretrained" in by:
        console.print(
            f"Model A trains {by['custom'].images_per_s / by['pretrained'].images_per_s:.2f}x as fast as Model B (this run)"
        )
    busy = [r for r in runs if r.load_before and r.load_before[0] > 0.5 + (facts["cores"] or 1)]
    if busy:
        console.print("note: the 1-minute load exceeded the core count before a timed run: something else was running")


def _load(load: tuple[float, float, float] | None) -> str:
    return "-" if load is None else f"{load[0]:.2f}"
