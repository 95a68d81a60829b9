"""`agebatch infer --ray`: the same job with decode and prediction on a Ray cluster.

Ray replaces only the compute. The driver lists inputs with `agebatch.sources` (one set
of listing rules), hands them to a Ray Dataset, maps `agebatch.decode.decode_into`
over it as CPU tasks and the backend's `predict` over it in an actor pool (one model
load per actor, `gpus_per_actor` GPUs each), and consumes the results in input order
(``preserve_order``). `agebatch.infer` then writes them as the same atomic shards a
local run writes, so schema, resume (per shard) and summary are shared code.

Why not Ray's own Parquet writer: it names files by block, gives no per-shard
completion marker and no row order, so resuming "at shard granularity" and "one row
per input, in input order" would need bookkeeping that the shard writer already does.
The driver writes a few kilobytes per thousand rows; the pixels never reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from agebatch.decode import DecodeOptions
from agebatch.errors import AgebatchError
from agebatch.sources import Item

#: Rows handed to Ray per input block: big enough to amortise scheduling, small enough to stream.
INPUT_BLOCK_ROWS = 2048


@dataclass(frozen=True, slots=True)
class RayOptions:
    address: str | None = None  # None: a local instance; "auto" or "ray://host:port": an existing cluster
    actors: int = 1  # prediction actors (model copies)
    gpus_per_actor: float = 0.0
    num_cpus: int | None = None  # for a local instance only


def _init(opts: RayOptions) -> None:
    try:
        import ray
    except ImportError:
        raise AgebatchError("Ray is not installed; pip install 'agebatch[ray]'") from None
    if not ray.is_initialized():
        try:
            if opts.address in (None, "local"):
                ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=opts.address, log_to_driver=False, configure_logging=False)
        except Exception as e:
            raise AgebatchError(
                f"cannot start or reach Ray at {opts.address or 'a local instance'}: {str(e).splitlines()[0]}"
            ) from e


def _decode_batch(batch: dict[str, np.ndarray], opts: DecodeOptions) -> dict[str, np.ndarray]:
    """Ray task: decode a batch of paths into uint8 images plus error strings ('' when fine)."""
    from agebatch.decode import decode_into, limit_opencv_threads

    limit_opencv_threads()
    paths = [str(p) for p in batch["path"]]
    images = np.empty((len(paths), *opts.size, 3), np.uint8)
    errors = decode_into([Item(p, p) for p in paths], images, opts)
    return {"index": batch["index"], "image": images, "error": np.array([e or "" for e in errors], dtype=object)}


class _Predictor:
    """Ray actor: loads the model once, predicts every batch routed to it."""

    def __init__(self, artifact: str, kind: str) -> None:
        from agebatch.backends.base import load_backend

        self.engine = load_backend(artifact, kind)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from agebatch.infer import predict_ok

        ok = np.array([e == "" for e in batch["error"]], bool)
        age, prob = predict_ok(self.engine, np.asarray(batch["image"]), ok)
        return {"index": batch["index"], "age": age, "gender_prob": prob, "error": batch["error"]}


def ray_predictions(
    items: Iterator[Item], artifact: str, kind: str, opts: DecodeOptions, *, batch_size: int, options: RayOptions
) -> Iterator[tuple[list[Item], list[str | None], np.ndarray, np.ndarray]]:
    """Yield (items, errors, age, P(female)) in input order, computed on Ray."""
    _init(options)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    listed = list(items)  # paths and labels only: ~100 bytes per input on the driver
    if not listed:
        return
    blocks = [
        pa.table(
            {
                "index": np.arange(lo, min(lo + INPUT_BLOCK_ROWS, len(listed))),
                "path": [i.path for i in listed[lo : lo + INPUT_BLOCK_ROWS]],
            }
        )
        for lo in range(0, len(listed), INPUT_BLOCK_ROWS)
    ]
    ds = (
        ray.data.from_arrow(blocks)
        .map_batches(_decode_batch, batch_size=batch_size, fn_kwargs={"opts": opts}, batch_format="numpy")
        .map_batches(
            _Predictor,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"artifact": artifact, "kind": kind},
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_gpus=options.gpus_per_actor or None,
        )
    )
    expected = 0
    for out in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        index = out["index"]
        if len(index) and (index[0] != expected or not np.array_equal(index, np.arange(expected, expected + len(index)))):
            raise AgebatchError(f"Ray returned rows out of order (expected row {expected}, got {index[0]})", 1)
        chunk = listed[expected : expected + len(index)]
        errors = [e or None for e in out["error"]]
        yield chunk, errors, np.asarray(out["age"], np.float32), np.asarray(out["gender_prob"], np.float32)
        expected += len(index)
    if expected != len(listed):
        raise AgebatchError(f"Ray returned {expected} rows for {len(listed)} inputs", 1)
