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
        head = InferJob(source, os.path.join(tmp, "a.parquet"), model=model, overwrite=True, workers=workers, limit=limit)
        everything = replace(head, out=os.path.join(tmp, "b.parquet"), limit=None)
        agebatch = [sys.executable, "-m", "agebatch", "infer"]
        seeds = [sys.executable, "-m", "agebatch.bench.seeds_loop", source, model, "--limit", str(limit)]
        runs.append(run_measured("seeds loop", limit, seeds))
        runs.append(run_measured("agebatch infer", limit, [*agebatch, *head.cli_args()]))
        if full:
            runs.append(run_measured("agebatch infer (all)", total, [*agebatch, *everything.cli_args()]))
    return runs


def report(runs: list[ProcessRun], console: Console) -> None:
    from rich.table import Table

    table = Table(title="end to end, whole process (imports included)")
    for col in ("run", "images", "seconds", "images/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(r.label, f"{r.images:,}", f"{r.seconds:.1f}", f"{r.images / r.seconds:,.0f}", f"{r.peak_rss_mb:.0f}")
    console.print(table)
    seeds, ours = runs[0], runs[1]
    speed = seeds.seconds / ours.seconds
    console.print(f"speed: agebatch infer is {speed:.2f}x the seeds' loop on {ours.images:,} faces (target >= 3x)")
    if len(runs) > 2:
        full = runs[2]
        console.print(
            f"memory: peak RSS {full.peak_rss_mb:.0f} MB on {full.images:,} faces vs {ours.peak_rss_mb:.0f} MB "
            f"on {ours.images:,} (+{full.peak_rss_mb - ours.peak_rss_mb:.0f} MB; targets < 1,500 MB and within 100 MB)"
        )
        console.print(f"the seeds' loop peaked at {seeds.peak_rss_mb:.0f} MB on {seeds.images:,} faces")
