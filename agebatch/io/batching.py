"""The streaming decode queue: items -> ordered, fixed-size uint8 batches with per-item status.

Shared by training and inference. Work is cut into chunks of a few dozen images that
threads decode straight into the rows of a preallocated batch array (no per-image
copies). At most `prefetch_batches` batches beyond the one the consumer holds are
in flight, so memory is bounded by ``(prefetch_batches + 2) * batch_size * H * W * 3``
bytes whatever the number of inputs, and decoding of the next batches overlaps
whatever the consumer does with the current one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from agebatch.io.decode import DecodeOptions, decode_into, decode_work_images, limit_opencv_threads
from agebatch.io.parallel import ordered_map
from agebatch.io.sources import Item


def ok_mask(errors: Sequence[str | None]) -> np.ndarray:
    """The rows that decoded (and so can be predicted): True where there is no error."""
    return np.fromiter((e is None for e in errors), dtype=bool, count=len(errors))


@dataclass(slots=True)
class Batch:
    """Up to `batch_size` consecutive items of the stream and their pixels.

    `start` is the stream index of the first item. Rows whose `errors` entry is not
    None failed to decode and hold zeros; `ok` is the mask of good rows.
    """

    start: int
    items: list[Item]
    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    errors: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ok(self) -> np.ndarray:
        return ok_mask(self.errors)

    @property
    def n_errors(self) -> int:
        return sum(e is not None for e in self.errors)


def default_workers() -> int:
    return os.cpu_count() or 1


def iter_batches(
    items: Iterable[Item],
    *,
    batch_size: int = 256,
    options: DecodeOptions | None = None,
    workers: int | None = None,
    chunk_size: int = 32,
    prefetch_batches: int = 2,
) -> Iterator[Batch]:
    """Decode `items` with `workers` threads and yield `Batch`es in input order.

    Every item appears in exactly one batch, failed or not. The last batch may be
    shorter than `batch_size`. ``workers=0`` decodes in the calling thread.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    opts = options or DecodeOptions()
    workers = default_workers() if workers is None else workers
    chunk_size = min(chunk_size, batch_size)
    limit_opencv_threads()

    def tasks() -> Iterator[tuple[Batch, int, int]]:
        it = iter(items)
        start = 0
        while batch_items := list(islice(it, batch_size)):
            n = len(batch_items)
            batch = Batch(start, batch_items, np.empty((n, *opts.size, 3), np.uint8), [None] * n)
            for lo in range(0, n, chunk_size):
                yield batch, lo, min(lo + chunk_size, n)
            start += n

    def run(task: tuple[Batch, int, int]) -> tuple[Batch, int, int]:
        batch, lo, hi = task
        batch.errors[lo:hi] = decode_into(batch.items[lo:hi], batch.images[lo:hi], opts)
        return task

    max_pending = max(2 * workers, math.ceil(prefetch_batches * batch_size / chunk_size))
    for batch, _lo, hi in ordered_map(run, tasks(), workers=workers, max_pending=max_pending, thread_name="agebatch-decode"):
        if hi == len(batch):  # results arrive in order, so the batch's last chunk completes it
            yield batch


@dataclass(slots=True)
class ImageBatch:
    """Consecutive items decoded as whole photos (any size), for face detection.

    `images[i]` is None where `errors[i]` says why; `scales[i]` is source pixels per
    image pixel (libjpeg reduction times any shrink to the working size).
    """

    start: int
    items: list[Item]
    images: list[np.ndarray | None]
    scales: list[float]
    errors: list[str | None]

    def __len__(self) -> int:
        return len(self.items)


def iter_images(
    items: Iterable[Item],
    *,
    options: DecodeOptions,
    batch_size: int = 32,
    workers: int | None = None,
    chunk_size: int = 4,
    prefetch_batches: int = 2,
) -> Iterator[ImageBatch]:
    """Decode `items` as photos with their long side at most ``max(options.size)``, in order, in threads.

    Like `iter_batches`, bounded: at most `prefetch_batches` batches beyond the one the
    consumer holds are in flight, so memory is about ``(prefetch_batches + 2) *
    batch_size * side^2 * 3`` bytes (32 photos at 1,024 px: ~100 MB per batch) whatever
    the photos' size or number.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError("batch_size and chunk_size must be positive")
    workers = default_workers() if workers is None else workers
    chunk_size = min(chunk_size, batch_size)
    limit_opencv_threads()

    def tasks() -> Iterator[tuple[list[Item], int, bool]]:
        it = iter(items)
        start = 0
        while batch_items := list(islice(it, batch_size)):
            for lo in range(0, len(batch_items), chunk_size):
                yield batch_items[lo : lo + chunk_size], start, lo + chunk_size >= len(batch_items)
            start += len(batch_items)

    def run(
        task: tuple[list[Item], int, bool],
    ) -> tuple[list[Item], int, bool, list[tuple[np.ndarray | None, float, str | None]]]:
        chunk, start, last = task
        return chunk, start, last, decode_work_images(chunk, options)

    max_pending = max(2 * workers, math.ceil(prefetch_batches * batch_size / chunk_size))
    current: ImageBatch | None = None
    for chunk, start, last, decoded in ordered_map(
        run, tasks(), workers=workers, max_pending=max_pending, thread_name="agebatch-decode"
    ):
        if current is None:
            current = ImageBatch(start, [], [], [], [])
        current.items += chunk
        for image, scale, error in decoded:
            current.images.append(image)
            current.scales.append(scale)
            current.errors.append(error)
        if last:
            yield current
            current = None
