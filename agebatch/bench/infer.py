"""End-to-end benchmark: `agebatch infer` vs the seeds' loop, whole-process wall time and peak RSS.

Each measurement is a separate process, timed from launch to exit (imports included,
as a user waits for them) and with its own peak RSS from ``os.wait4``. The page cache
is warmed first so both read cached files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agebatch.errors import EXIT_FAILED, AgebatchError

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class ProcessRun:
    label: str
    images: int
    seconds: float
    peak_rss_mb: float
    returncode: int


def run_measured(label: str, images: int, args: list[str]) -> ProcessRun:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise AgebatchError(f"{label} failed (exit {proc.returncode}): {err.strip()[-2000:]}", EXIT_FAILED)
    rss = usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return ProcessRun(label, images, seconds, rss, proc.returncode)


def run_infer_bench(
    source: str, model: str, *, limit: int = 2000, full: bool = True, workers: int | None = None
) -> list[ProcessRun]:
    from agebatch.bench.decode import warm_cache
    from agebatch.pipeline.job import InferJob

    total = warm_cache(source, None)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        head = InferJob(
            source, os.path.join(tmp, "a.parquet"), model=model, overwrite=True, workers=workers, limit=limit, faces="crop"
        )
        everything = replace(head, out=os.path.join(tmp, "b.parquet"), limit=None)
        agebatch = [sys.executable, "-m", "agebatch", "infer"]
        seeds = [sys.executable, "-m", "agebatch.bench.seeds_loop", source, model, "--limit", str(limit)]
        runs.append(run_measured("seeds loop", limit, seeds))
        runs.append(run_measured("agebatch infer", limit, [*agebatch, *head.cli_args()]))
        one_pass = replace(head, out=os.path.join(tmp, "c.parquet"), tta=False)
        runs.append(run_measured("agebatch infer --no-tta", limit, [*agebatch, *one_pass.cli_args()]))
        if full:
            runs.append(run_measured("agebatch infer (all)", total, [*agebatch, *everything.cli_args()]))
    return runs


def _process_table(runs: list[ProcessRun], title: str, console: Console) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("run", "images", "seconds", "images/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(r.label, f"{r.images:,}", f"{r.seconds:.1f}", f"{r.images / r.seconds:,.1f}", f"{r.peak_rss_mb:.0f}")
    console.print(table)


def report(runs: list[ProcessRun], console: Console) -> None:
    _process_table(runs, "end to end, whole process (imports included)", console)
    seeds, ours, one_pass = runs[0], runs[1], runs[2]
    speed = seeds.seconds / ours.seconds
    console.print(f"speed: agebatch infer is {speed:.2f}x the seeds' loop on {ours.images:,} faces (target >= 3x)")
    console.print(f"mirror TTA: --no-tta is {ours.seconds / one_pass.seconds:.2f}x as fast as --tta (whole process, same faces)")
    if len(runs) > 3:
        full = runs[3]
        console.print(
            f"memory: peak RSS {full.peak_rss_mb:.0f} MB on {full.images:,} faces vs {ours.peak_rss_mb:.0f} MB "
            f"on {ours.images:,} (+{full.peak_rss_mb - ours.peak_rss_mb:.0f} MB; targets < 1,500 MB and within 100 MB)"
        )
        console.print(f"the seeds' loop peaked at {seeds.peak_rss_mb:.0f} MB on {seeds.images:,} faces")


def read_bgr(path: str) -> np.ndarray:
    """A face of the pool, for composing benchmark photos (exit 2 naming it when it cannot be read)."""
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise AgebatchError(f"cannot read {path} to compose benchmark photos")
    return image


def make_photos(source: str, folder: str, *, count: int = 100, size: tuple[int, int] = (3000, 4000), seed: int = 0) -> int:
    """Write `count` JPEG photos of `size` (h, w; 12 MP by default), each 1-5 faces of `source` on a blurred backdrop.

    The backdrop is another face of the pool stretched and blurred (a photo's texture
    and colours, no face a detector would find); faces are pasted at random places,
    sizes (5-25% of the width) and tilts (+-10 degrees). Returns the faces placed.
    """
    import cv2
    import numpy as np

    from agebatch.io.sources import iter_items

    rng = np.random.default_rng(seed)
    paths = [i.path for i in iter_items(source, labels="none")]

    h, w = size
    placed = 0
    for k in range(count):
        back = read_bgr(paths[int(rng.integers(len(paths)))])
        canvas = cv2.GaussianBlur(cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
        for _ in range(int(rng.integers(1, 6))):
            face = read_bgr(paths[int(rng.integers(len(paths)))])
            side = float(rng.uniform(0.05, 0.25)) * w
            m = cv2.getRotationMatrix2D((face.shape[1] / 2, face.shape[0] / 2), float(rng.uniform(-10, 10)), side / face.shape[1])
            m[:, 2] += (rng.uniform(side, w - side) - face.shape[1] / 2, rng.uniform(side, h - side) - face.shape[0] / 2)
            warped = cv2.warpAffine(face, m, (w, h))
            mask = cv2.warpAffine(np.full(face.shape[:2], 255, np.uint8), m, (w, h)) > 0
            canvas[mask] = warped[mask]
            placed += 1
        cv2.imwrite(os.path.join(folder, f"photo{k:04d}.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return placed


def run_faces_bench(
    source: str, model: str, *, limit: int = 2000, photos: int = 100, workers: int | None = None
) -> tuple[list[ProcessRun], int]:
    """Detect vs crop mode on `limit` faces of `source` (whole processes), then detect mode on 12 MP photos."""
    from agebatch.bench.decode import warm_cache
    from agebatch.pipeline.job import InferJob

    warm_cache(source, limit)
    runs = []
    agebatch = [sys.executable, "-m", "agebatch", "infer"]
    with tempfile.TemporaryDirectory() as tmp:
        for faces in ("crop", "detect"):
            job = InferJob(
                source,
                os.path.join(tmp, f"{faces}.parquet"),
                model=model,
                overwrite=True,
                workers=workers,
                limit=limit,
                faces=faces,
            )
            runs.append(run_measured(f"infer --faces {faces}", limit, [*agebatch, *job.cli_args()]))
        folder = os.path.join(tmp, "photos")
        os.mkdir(folder)
        placed = make_photos(source, folder, count=photos)
        warm_cache(folder, None)
        job = InferJob(folder, os.path.join(tmp, "photos.parquet"), model=model, overwrite=True, workers=workers, faces="detect")
        runs.append(run_measured("infer --faces detect, 12 MP photos", photos, [*agebatch, *job.cli_args()]))
    return runs, placed


def report_faces(runs: list[ProcessRun], placed: int, console: Console) -> None:
    _process_table(runs, "detect vs crop mode, whole process (imports included)", console)
    crop, detect, photos = runs
    ratio = (detect.images / detect.seconds) / (crop.images / crop.seconds)
    console.print(
        f"speed: --faces detect runs at {ratio:.2f}x the images/s of --faces crop on {crop.images:,} crops (target >= 0.5x)"
    )
    console.print(
        f"memory: peak RSS {photos.peak_rss_mb:,.0f} MB on {photos.images} photos of 12 MP holding {placed} faces "
        "(target < 1,500 MB)"
    )
