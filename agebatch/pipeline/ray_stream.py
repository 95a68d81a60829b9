"""`agebatch infer --ray`: the prediction stream with decode and prediction on a Ray cluster.

Ray replaces only the compute. The driver lists inputs with `agebatch.io.sources` (one set
of listing rules), hands them to a Ray Dataset, maps `agebatch.io.decode.decode_into`
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

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa

from agebatch.backends.base import Predictions
from agebatch.backends.registry import load_backend
from agebatch.backends.resolve import ResolvedModel
from agebatch.errors import AgebatchError
from agebatch.faces.cut import FaceColumns
from agebatch.faces.options import FaceOptions
from agebatch.faces.stage import FaceStage
from agebatch.io.decode import DecodeOptions
from agebatch.io.sources import Item
from agebatch.pipeline.job import InferJob, RayOptions
from agebatch.pipeline.stream import BatchResult, face_stage, predict_ok, runtime_options

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
    from agebatch.io.decode import decode_into, limit_opencv_threads

    limit_opencv_threads()
    paths = [os.fsdecode(p) for p in batch["path"]]  # bytes: file names need not be UTF-8
    images = np.empty((len(paths), *opts.size, 3), np.uint8)
    errors = decode_into([Item(p, p) for p in paths], images, opts)
    return {"index": batch["index"], "image": images, "error": np.array([e or "" for e in errors], dtype=object)}


@functools.lru_cache(maxsize=2)
def _finder(options: FaceOptions) -> Any:
    """One FaceFinder per Ray worker process (they are reused across tasks): the detectors load once."""
    from agebatch.faces.detect import FaceFinder

    return FaceFinder(options, threads=1)


def _given(item: Item) -> str:
    """A manifest's face box and keypoints as one text cell ('' for none), decoded by `_item` in the Ray task.

    JSON keeps them exactly as the manifest gave them (None inside keypoints, NaN), so the task
    validates them with the same `faces.cut.given_face` a local run uses and gives the same error rows.
    """
    return "" if item.box is None else json.dumps([item.box, item.keypoints])


def _item(path: bytes, given: str) -> Item:
    name = os.fsdecode(path)
    if not given:
        return Item(name, name)
    box, keypoints = json.loads(given)
    return Item(name, name, box=tuple(box), keypoints=None if keypoints is None else tuple(keypoints))


def _detect_batch(batch: dict[str, np.ndarray], stage: FaceStage) -> dict[str, np.ndarray]:
    """Ray task: decode whole photos, find and align every face (or the manifest's boxes); one output row per face
    (or per faceless input)."""
    from agebatch.io.batching import ImageBatch
    from agebatch.io.decode import decode_work_images, limit_opencv_threads

    limit_opencv_threads()
    index = np.asarray(batch["index"])
    items = [_item(p, str(g)) for p, g in zip(batch["path"], batch["given"], strict=True)]
    decoded = decode_work_images(items, stage.photo_options)
    images = ImageBatch(
        int(index[0]) if len(index) else 0, items, [d[0] for d in decoded], [d[1] for d in decoded], [d[2] for d in decoded]
    )
    rows = stage.cut(images, _finder(stage.faces))
    where = {id(item): i for item, i in zip(items, index, strict=True)}
    return {
        "index": np.array([where[id(item)] for item in rows.items], np.int64),
        "image": rows.crops,
        "error": np.array([e or "" for e in rows.errors], dtype=object),
        "face": rows.columns.face,
        "box": rows.columns.boxes,
        "score": rows.columns.scores,
        "keypoints": rows.columns.keypoints,
        "visible": rows.columns.visible,
    }


class _Predictor:
    """Ray actor: loads the model once, predicts every batch routed to it; other columns pass through."""

    def __init__(self, artifact: str, kind: str, options: dict[str, Any]) -> None:
        self.backend = load_backend(artifact, kind, **options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([e == "" for e in batch["error"]], bool)
        pred = predict_ok(self.backend, np.asarray(batch["image"]), ok)
        rest = {k: v for k, v in batch.items() if k != "image"}
        return {**rest, **{f.name: getattr(pred, f.name) for f in fields(pred)}}


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
        self.job = job
        self.notes: list[str] = []

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
                    "path": pa.array([os.fsencode(i.path) for i in listed[lo : lo + INPUT_BLOCK_ROWS]], pa.binary()),
                    "given": pa.array([_given(i) for i in listed[lo : lo + INPUT_BLOCK_ROWS]], pa.string()),
                }
            )
            for lo in range(0, len(listed), INPUT_BLOCK_ROWS)
        ]
        # Ray's stubs type batches as pandas | pyarrow | numpy dicts; ours are numpy.
        decode: Any = _decode_batch
        kwargs: dict[str, Any] = {"opts": self.decode}
        batch_size = self.batch_size
        if self.job.faces == "detect":
            decode = _detect_batch
            stage = face_stage(self.model, self.job)  # the local stream's stage, so both cut the same faces
            kwargs = {"stage": stage}
            batch_size = stage.photos_per_batch
        ds = (
            ray.data.from_arrow(blocks)
            .map_batches(decode, batch_size=batch_size, fn_kwargs=kwargs, batch_format="numpy")
            .map_batches(
                _Predictor,
                batch_size=self.batch_size,
                batch_format="numpy",
                fn_constructor_kwargs={
                    "artifact": self.model.artifact,
                    "kind": self.model.backend,
                    "options": runtime_options(self.model, self.job.device),
                },
                compute=ray.data.ActorPoolStrategy(size=self.options.actors),
                num_gpus=self.options.gpus_per_actor or None,
            )
        )
        batches: Iterator[dict[str, np.ndarray]] = ds.iter_batches(  # type: ignore[assignment]
            batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2
        )
        expected = 0
        for out in _whole_inputs(batches) if self.job.faces == "detect" else batches:
            index = out["index"]
            first = np.r_[True, index[1:] != index[:-1]]  # the first row of each input
            starts = index[first]
            if len(starts) and not np.array_equal(starts, np.arange(expected, expected + len(starts))):
                # A broken ordering promise is a bug (ours or Ray's), not a user error: keep the traceback.
                raise RuntimeError(f"Ray returned rows out of order (expected input {expected}, got {starts[0]})")
            rows = [listed[i] for i in index]
            errors = [e or None for e in out["error"]]
            faces = None
            if "face" in out:
                faces = FaceColumns(
                    out["face"].astype(np.int16),
                    out["box"].astype(np.float32),
                    out["score"].astype(np.float32),
                    out["keypoints"].astype(np.float32),
                    out["visible"].astype(np.float32),
                )
            pred = Predictions.from_outputs(out, len(rows))
            yield BatchResult(rows, errors, pred, faces, len(starts), [listed[i] for i in starts])
            expected += len(starts)
        if expected != len(listed):
            raise RuntimeError(f"Ray returned {expected} inputs of {len(listed)}")


def _whole_inputs(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Re-cut Ray's batches so that all rows of one input (its faces) are in the same batch.

    Crop mode needs none of this (one row per input), and keeps Ray's batches as they come.
    """
    held: dict[str, np.ndarray] | None = None
    for out in batches:
        if held is not None:
            out = {k: np.concatenate([held[k], out[k]]) for k in out}
        index = out["index"]
        if not len(index):
            held = out
            continue
        cut = int(np.searchsorted(index, index[-1]))  # rows of the last input may continue in the next batch
        held = {k: v[cut:] for k, v in out.items()}
        if cut:
            yield {k: v[:cut] for k, v in out.items()}
    if held is not None and len(held["index"]):
        yield held
