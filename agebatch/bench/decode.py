"""Decode-queue benchmark: images/s and peak RSS for several worker counts.

Each configuration runs in a fresh child process so that its peak RSS is its own
(``ru_maxrss`` only ever grows within a process) and no run inherits another's warm
allocator. The page cache is warmed once first, so every run reads the same
cached files and the numbers compare decode work, not disk luck.

Run: ``agebatch bench decode ../shared/data/utkface`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class DecodeRun:
    workers: int
    images: int
    errors: int
    seconds: float
    images_per_s: float
    peak_rss_mb: float


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def measure(source: str, *, workers: int, size: int, batch_size: int, limit: int | None, interpolation: str) -> DecodeRun:
    """Stream `source` through the decode queue once, in this process."""
    from agebatch.io.batching import iter_batches
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items

    opts = DecodeOptions(size=(size, size), interpolation=interpolation)  # type: ignore[arg-type]
    items = islice(iter_items(source), limit)
    n = errors = 0
    t0 = time.perf_counter()
    for batch in iter_batches(items, batch_size=batch_size, options=opts, workers=workers):
        n += len(batch)
        errors += batch.n_errors
    dt = time.perf_counter() - t0
    return DecodeRun(workers, n, errors, dt, n / dt if dt > 0 else 0.0, peak_rss_mb())


def measure_in_child(source: str, **kwargs: object) -> DecodeRun:
    args = [sys.executable, "-m", "agebatch.bench.decode", source]
    for k, v in kwargs.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return DecodeRun(**json.loads(out.stdout.strip().splitlines()[-1]))


def warm_cache(source: str, limit: int | None) -> int:
    """Read every input once so that all timed runs see the same (cached) files."""
    from agebatch.io.sources import iter_items

    n = 0
    for item in islice(iter_items(source, labels="none"), limit):
        try:
            with open(item.path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except OSError:
            pass
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    """Child-process entry: measure one configuration and print it as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--interpolation", default="linear")
    a = p.parse_args(argv)
    run = measure(a.source, workers=a.workers, size=a.size, batch_size=a.batch_size, limit=a.limit, interpolation=a.interpolation)
    print(json.dumps(asdict(run)))


#: Targets from the foundation issue, checked on every run.
TARGET_IMAGES_PER_S_2_WORKERS = 3000
TARGET_PEAK_RSS_MB = 400


def _verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]NOT met[/]"


def report(runs: list[DecodeRun], console: Console) -> None:
    """Print the runs, their speed-up over the first one, and the targets."""
    from rich.table import Table

    base = runs[0].images_per_s or 1.0
    table = Table()
    for col in ("workers", "images", "errors", "seconds", "images/s", f"vs {runs[0].workers} worker(s)", "peak RSS MB"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            str(r.workers),
            f"{r.images:,}",
            str(r.errors),
            f"{r.seconds:.2f}",
            f"{r.images_per_s:,.0f}",
            f"{r.images_per_s / base:.2f}x",
            f"{r.peak_rss_mb:.0f}",
        )
    console.print(table)
    for r in runs:
        if r.workers == 2:
            ok = r.images_per_s >= TARGET_IMAGES_PER_S_2_WORKERS
            console.print(f"target: 2 workers >= {TARGET_IMAGES_PER_S_2_WORKERS:,} img/s: {r.images_per_s:,.0f} {_verdict(ok)}")
    worst = max(r.peak_rss_mb for r in runs)
    console.print(f"target: peak RSS < {TARGET_PEAK_RSS_MB} MB: {worst:.0f} MB {_verdict(worst < TARGET_PEAK_RSS_MB)}")


def default_worker_counts() -> list[int]:
    n = os.cpu_count() or 1
    return sorted({1, 2, n})


if __name__ == "__main__":
    main()
