"""`agebatch infer --ray`: the prediction stream with decode and prediction on a Ray cluster.

Ray replaces only the compute. The driver lists inputs with `agebatch.sources` (one set
of listing rules), hands them to a Ray Dataset, maps `agebatch.decode.decode_into`
over it as CPU tasks and the backend's `predict` over it in an actor pool (one model
load per actor, `gpus_per_actor` GPUs each), and consumes the results in input order
(``preserve_order``). `agebatch.pipeline.run` then writes them as the same atomic shards
a local run writes, so schema, resume (per shard) and summary are shared code.

Why not Ray's own Parquet writer: it names files by block, gives no per-shard
completion marker and no row order, so resuming "at shard granularity" and "one row
per input, in input order" would need bookkeeping that the shard writer already does.
The driver writes a few kilobytes per thousand rows; the pixels never reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import ResolvedModel
from agebatch.decode import DecodeOptions
from agebatch.errors import AgebatchError
from agebatch.pipeline.job import InferJob, RayOptions
from agebatch.pipeline.stream import BatchResult, predict_ok
from agebatch.sources import Item

#: Rows handed to Ray per input block: big enough to amortise scheduling, small enough to stream.
INPUT_BLOCK_ROWS = 2048


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
        self.backend = load_backend(artifact, kind)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([e == "" for e in batch["error"]], bool)
        age, prob = predict_ok(self.backend, np.asarray(batch["image"]), ok)
        return {"index": batch["index"], "age": age, "gender_prob": prob, "error": batch["error"]}


class RayStream:
    """The prediction stream on Ray: decode tasks, an actor pool of models, results in input order.

    The driver loads no model (Ray actors do); it holds the input listing (~100 bytes per
    input) and the results of the batch it is writing, never pixels.
    """

    def __init__(self, model: ResolvedModel, job: InferJob) -> None:
        assert job.ray is not None, "RayStream needs job.ray"
        self.model = model
        self.options: RayOptions = job.ray
        self.batch_size = job.batch_size
        self.decode = model.card.decode_options()
        self.name = f"{model.backend} on ray"

    def predict(self, items: Iterator[Item]) -> Iterator[BatchResult]:
        _init(self.options)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        listed = list(items)  # paths and labels only: ~100 bytes per input on the driver
        if not listed:
            return
        blocks: list[pa.Table | bytes] = [  # the union is what from_arrow declares (its List is invariant)
            pa.table(
                {
                    "index": pa.array(np.arange(lo, min(lo + INPUT_BLOCK_ROWS, len(listed)))),
                    "path": pa.array([i.path for i in listed[lo : lo + INPUT_BLOCK_ROWS]], pa.string()),
                }
            )
            for lo in range(0, len(listed), INPUT_BLOCK_ROWS)
        ]
        decode: Any = _decode_batch  # Ray's stubs type batches as pandas | pyarrow | numpy dicts; ours are numpy
        ds = (
            ray.data.from_arrow(blocks)
            .map_batches(decode, batch_size=self.batch_size, fn_kwargs={"opts": self.decode}, batch_format="numpy")
            .map_batches(
                _Predictor,
                batch_size=self.batch_size,
                batch_format="numpy",
                fn_constructor_kwargs={"artifact": self.model.artifact, "kind": self.model.backend},
                compute=ray.data.ActorPoolStrategy(size=self.options.actors),
                num_gpus=self.options.gpus_per_actor or None,
            )
        )
        expected = 0
        out: dict[str, np.ndarray]
        for out in ds.iter_batches(batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2):  # type: ignore[assignment]
            index = out["index"]
            if len(index) and not np.array_equal(index, np.arange(expected, expected + len(index))):
                # A broken ordering promise is a bug (ours or Ray's), not a user error: keep the traceback.
                raise RuntimeError(f"Ray returned rows out of order (expected row {expected}, got {index[0]})")
            chunk = listed[expected : expected + len(index)]
            errors = [e or None for e in out["error"]]
            yield BatchResult(chunk, errors, np.asarray(out["age"], np.float32), np.asarray(out["gender_prob"], np.float32))
            expected += len(index)
        if expected != len(listed):
            raise RuntimeError(f"Ray returned {expected} rows for {len(listed)} inputs")
