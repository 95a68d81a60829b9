from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agebatch.io.batching import iter_batches
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import Item, iter_items


def _items(samples_dir: Path, repeat: int = 1) -> list[Item]:
    return list(iter_items(samples_dir)) * repeat


def test_order_and_pixels_do_not_depend_on_worker_count(samples_dir: Path) -> None:
    items = _items(samples_dir, 3)
    runs = {}
    for workers in (0, 1, 2, 5):
        batches = list(iter_batches(items, batch_size=16, workers=workers, chunk_size=3))
        runs[workers] = (
            [i.path for b in batches for i in b.items],
            np.concatenate([b.images for b in batches]),
            [b.start for b in batches],
        )
    paths0, pix0, starts0 = runs[0]
    assert paths0 == [i.path for i in items]
    assert starts0 == list(range(0, len(items), 16))
    for paths, pix, starts in runs.values():
        assert paths == paths0 and starts == starts0
        assert np.array_equal(pix, pix0)


def test_every_input_is_in_exactly_one_batch_with_its_status(fault_folder) -> None:
    folder, expect = fault_folder
    items = list(iter_items(folder))
    got = {}
    for b in iter_batches(items, batch_size=4, workers=2):
        assert b.images.shape == (len(b), 128, 128, 3)
        assert list(b.ok) == [e is None for e in b.errors]
        for item, err in zip(b.items, b.errors, strict=True):
            assert item.key not in got
            got[item.key] = err
    assert sorted(Path(k).relative_to(folder).as_posix() for k in got) == sorted(expect)
    assert sum(e is not None for e in got.values()) == sum(e is not None for e in expect.values())


def test_memory_is_bounded_by_the_queue_not_the_input(samples_dir: Path) -> None:
    """A slow consumer must not let the reader run ahead of the queue bound."""
    base = _items(samples_dir)
    pulled = 0
    lock = threading.Lock()

    def endless() -> Iterator[Item]:
        nonlocal pulled
        while True:
            for it in base:
                with lock:
                    pulled += 1
                yield it

    batch_size, prefetch = 8, 2
    stream = iter_batches(endless(), batch_size=batch_size, workers=2, chunk_size=4, prefetch_batches=prefetch)
    for n, batch in enumerate(stream):
        time.sleep(0.02)  # the consumer is the bottleneck
        assert len(batch) == batch_size
        # consumer's batch + queued chunks (at most max(2*workers, prefetch*batch/chunk) = 4 chunks) + 1 partly cut batch
        assert pulled <= (n + 1) * batch_size + prefetch * batch_size + batch_size
        if n == 20:
            break
    stream.close()  # stopping early shuts the workers down without hanging


def test_partial_last_batch_and_empty_input(samples_dir: Path) -> None:
    items = _items(samples_dir)[:10]
    sizes = [len(b) for b in iter_batches(items, batch_size=4, workers=2)]
    assert sizes == [4, 4, 2]
    assert list(iter_batches([], batch_size=4)) == []


def test_target_size_is_respected(samples_dir: Path) -> None:
    b = next(iter_batches(_items(samples_dir)[:3], batch_size=3, options=DecodeOptions(size=(96, 64))))
    assert b.images.shape == (3, 96, 64, 3)


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        list(iter_batches([], batch_size=0))


@pytest.mark.pool
def test_full_pool_streams_without_errors(pool_dir: Path) -> None:
    n = errors = 0
    for b in iter_batches(iter_items(pool_dir), batch_size=512, workers=2):
        n += len(b)
        errors += b.n_errors
    assert (n, errors) == (20195, 0)
