"""A bounded, order-preserving parallel map on threads.

`ordered_map` is the engine under the decode queue and the manifest hasher. It
keeps at most `max_pending` tasks submitted at once, so memory stays bounded however
long the input is, and it yields results in input order, so outputs are
deterministic. Threads (not processes) suffice because the heavy calls (file reads,
`cv2.imdecode`, `cv2.resize`, `hashlib`) release the GIL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    iterable: Iterable[T],
    *,
    workers: int,
    max_pending: int,
    thread_name: str = "agebatch-worker",
) -> Iterator[R]:
    """Yield ``fn(x)`` for every x of `iterable`, in order, computed by `workers` threads.

    The input is pulled lazily: a new task is submitted each time a result is taken,
    before it is yielded, so workers keep busy while the consumer handles it.
    ``workers=0`` runs everything inline in the caller's thread (handy for debugging
    and for callers that parallelise at another level, such as Ray tasks).
    """
    if workers <= 0:
        yield from map(fn, iterable)
        return
    max_pending = max(max_pending, workers)
    it = iter(iterable)
    pending: deque[Future[R]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name)
    try:
        for x in islice(it, max_pending):
            pending.append(pool.submit(fn, x))
        while pending:
            result = pending.popleft().result()
            for x in islice(it, 1):
                pending.append(pool.submit(fn, x))
            yield result
    finally:
        # Reached on normal end, on an error, and when the consumer stops early
        # (GeneratorExit): drop queued work and wait only for tasks already running.
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
