"""Detect mode on large photos with small faces: recall and photos/s with the tiled pass on and off, and where
the time goes (decode / detect / align / model).

The photos are composed: faces of the pool pasted at known places, sizes (their crop
3-8% of the photo's long side, the face inside about 60% of that) and tilts onto a
blurred backdrop of another face of the pool, so recall is counted against geometry the
bench set itself. A face counts as found when an output row's box centre lies within a
third of its crop's side from where it was pasted; a row matching no pasted face is a
false face.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agebatch.bench.infer import ProcessRun, read_bgr, run_measured
from agebatch.errors import AgebatchError

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class TileRun:
    label: str
    run: ProcessRun
    placed: int
    found: int
    false_faces: int

    @property
    def recall(self) -> float:
        return self.found / self.placed if self.placed else 0.0


def compose_small_faces(
    source: str, folder: str, *, count: int, size: tuple[int, int] = (3000, 4000), sides: tuple[float, float] = (0.03, 0.08),
    per_photo: tuple[int, int] = (4, 8), seed: int = 1,
) -> dict[str, list[tuple[float, float, float]]]:  # fmt: skip
    """Write `count` JPEGs of `size` (h, w); return, per file name, each pasted face's (cx, cy, crop side) in pixels."""
    import cv2
    import numpy as np

    from agebatch.io.sources import iter_items

    rng = np.random.default_rng(seed)
    paths = [i.path for i in iter_items(source, labels="none")]
    if not paths:
        raise AgebatchError(f"no faces in {source} to compose photos from")

    h, w = size
    truth: dict[str, list[tuple[float, float, float]]] = {}
    for k in range(count):
        back = read_bgr(paths[int(rng.integers(len(paths)))])
        canvas = cv2.GaussianBlur(cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
        boxes: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(per_photo[0], per_photo[1] + 1))):
            face = read_bgr(paths[int(rng.integers(len(paths)))])
            side = float(rng.uniform(*sides)) * max(h, w)
            for _attempt in range(20):  # faces must not overlap, or "which face was found" is ambiguous
                cx, cy = float(rng.uniform(side, w - side)), float(rng.uniform(side, h - side))
                if all(abs(cx - x) > (side + s) / 2 or abs(cy - y) > (side + s) / 2 for x, y, s in boxes):
                    break
            else:
                continue
            m = cv2.getRotationMatrix2D((face.shape[1] / 2, face.shape[0] / 2), float(rng.uniform(-10, 10)), side / face.shape[1])
            m[:, 2] += (cx - face.shape[1] / 2, cy - face.shape[0] / 2)
            warped = cv2.warpAffine(face, m, (w, h))
            mask = cv2.warpAffine(np.full(face.shape[:2], 255, np.uint8), m, (w, h)) > 0
            canvas[mask] = warped[mask]
            boxes.append((cx, cy, side))
        name = f"small{k:04d}.jpg"
        cv2.imwrite(os.path.join(folder, name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        truth[name] = boxes
    return truth


def match(out: str, truth: dict[str, list[tuple[float, float, float]]]) -> tuple[int, int]:
    """(pasted faces found, rows matching no pasted face) of a detect-mode output."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out, columns=["path", "face", "face_x", "face_y", "face_w", "face_h"]).to_pylist()
    found = false = 0
    hits: dict[str, set[int]] = {}
    for r in rows:
        if r["face"] is None:
            continue
        cx, cy = r["face_x"] + r["face_w"] / 2, r["face_y"] + r["face_h"] / 2
        placed = truth.get(os.path.basename(r["path"]), [])
        near = [j for j, (x, y, s) in enumerate(placed) if abs(cx - x) < s / 3 and abs(cy - y) < s / 3]
        if near:
            hits.setdefault(r["path"], set()).add(near[0])
        else:
            false += 1
    found = sum(len(v) for v in hits.values())
    return found, false


def run_tiles_bench(
    source: str, model: str, *, photos: int = 20, workers: int | None = None
) -> tuple[list[TileRun], dict[str, dict[str, float]]]:
    """`agebatch infer --faces detect` with --no-tiles and --tiles on the same composed photos (whole processes),
    then `stage_times` of both on the same photos."""
    from agebatch.bench.decode import warm_cache
    from agebatch.faces.options import FaceOptions
    from agebatch.pipeline.job import InferJob

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "photos")
        os.mkdir(folder)
        truth = compose_small_faces(source, folder, count=photos)
        placed = sum(len(v) for v in truth.values())
        warm_cache(folder, None)
        for tiles in (False, True):
            label = f"--tiles {'on' if tiles else 'off'}"
            out = os.path.join(tmp, f"tiles-{tiles}.parquet")
            job = InferJob(folder, out, model=model, overwrite=True, workers=workers, face_options=FaceOptions(tiles=tiles))
            run = run_measured(label, photos, [sys.executable, "-m", "agebatch", "infer", *job.cli_args()])
            found, false = match(out, truth)
            runs.append(TileRun(label, run, placed, found, false))
        stages = {f"--tiles {'on' if t else 'off'}": stage_times(folder, model, tiles=t) for t in (False, True)}
    return runs, stages


def stage_times(source: str, model: str, *, tiles: bool = True, limit: int = 20) -> dict[str, float]:
    """Seconds per photo in each stage, in this process, one thread: decode, detect, align (cut), model."""
    from agebatch.backends.registry import load_backend
    from agebatch.backends.resolve import resolve
    from agebatch.faces.options import FaceOptions
    from agebatch.io.batching import ImageBatch
    from agebatch.io.decode import decode_work_images
    from agebatch.io.sources import iter_items
    from agebatch.pipeline.job import InferJob
    from agebatch.pipeline.stream import face_stage, runtime_options

    job = InferJob(source, "unused.parquet", model=model, workers=0, face_options=FaceOptions(tiles=tiles))
    resolved = resolve(model)
    backend = load_backend(resolved.artifact, resolved.backend, **runtime_options(resolved, job.device))
    stage = face_stage(resolved, job)
    items = list(iter_items(source, labels="none"))[:limit]
    finder = stage.finder
    spent = {"decode": 0.0, "detect": 0.0, "align": 0.0, "model": 0.0}
    for lo in range(0, len(items), stage.photos_per_batch):
        chunk = items[lo : lo + stage.photos_per_batch]
        t0 = time.perf_counter()
        decoded = decode_work_images(chunk, stage.photo_options)
        t1 = time.perf_counter()
        images = [d[0] for d in decoded if d[0] is not None]
        finder.find(images)
        t2 = time.perf_counter()
        batch = ImageBatch(lo, chunk, [d[0] for d in decoded], [d[1] for d in decoded], [d[2] for d in decoded])
        rows = stage.cut(batch)  # detects again, then aligns: align = this minus the detect time above
        t3 = time.perf_counter()
        ok = [e is None for e in rows.errors]
        if any(ok):
            backend.predict(rows.crops[ok])
        t4 = time.perf_counter()
        spent["decode"] += t1 - t0
        spent["detect"] += t2 - t1
        spent["align"] += max(0.0, (t3 - t2) - (t2 - t1))
        spent["model"] += t4 - t3
    return {k: v / max(1, len(items)) for k, v in spent.items()}


def report_tiles(runs: list[TileRun], stages: dict[str, dict[str, float]], console: Console) -> None:
    from rich.table import Table

    table = Table(title="small faces in 12 MP photos (crop side 3-8% of the long side), whole process")
    for col in ("run", "photos", "placed", "found", "recall", "false", "photos/s", "faces/s"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for t in runs:
        r = t.run
        table.add_row(t.label, f"{r.images}", f"{t.placed}", f"{t.found}", f"{t.recall:.0%}", f"{t.false_faces}",
                      f"{r.images / r.seconds:.2f}", f"{t.found / r.seconds:.2f}")  # fmt: skip
    console.print(table)
    off, on = runs
    console.print(
        f"tiles: recall {off.recall:.0%} -> {on.recall:.0%}, photos/s x{(off.run.seconds / on.run.seconds):.2f} "
        "(whole process, imports and model load included)"
    )
    split = Table(title="where a photo's time goes (ms per photo, one thread, in process)")
    split.add_column("tiles")
    for name in ("decode", "detect", "align", "model"):
        split.add_column(name, justify="right")
    for label, times in stages.items():
        split.add_row(label, *(f"{1000 * times[k]:.1f}" for k in ("decode", "detect", "align", "model")))
    console.print(split)
