"""Helpers for tests that run `agebatch infer` as a real process and stop it mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from agebatch.pipeline.shards import parts_dir


def many_faces(dst: Path, samples_dir: Path, copies: int) -> Path:
    """`copies` x the sample faces under distinct names (hard links: no extra disk)."""
    dst.mkdir()
    faces = sorted(samples_dir.glob("*.jpg"))
    for c in range(copies):
        for f in faces:
            os.link(f, dst / f"c{c:03d}_{f.name}")
    return dst


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """`python -m agebatch ARGS` to completion, output captured."""
    return subprocess.run([sys.executable, "-m", "agebatch", *args], capture_output=True, text=True, **kw)


def start(args: list[str], **kw) -> subprocess.Popen:
    """`python -m agebatch ARGS` in the background (stdout and stderr piped unless given)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "agebatch", *args], text=True, **kw)


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until the run writing `out` has saved `n` complete shards (failing if it ends first); return how many."""
    parts = Path(parts_dir(str(out)))
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, f"the run ended before {n} shards were saved"
        time.sleep(0.05)
    return len(list(parts.glob("part-*.parquet")))


def infer_args(source: Path, out: Path, model: str, *extra: str, batch_size: int = 16, shard_rows: int = 64) -> list[str]:
    """`agebatch infer` arguments for a crop-mode run in small batches and shards, so it can be stopped mid-run."""
    return ["infer", str(source), "--out", str(out), "--model", model, "--batch-size", str(batch_size),
            "--shard-rows", str(shard_rows), "--faces", "crop", *extra]  # fmt: skip
