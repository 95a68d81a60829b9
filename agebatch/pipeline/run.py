"""`agebatch infer`: source -> prediction stream -> shard store -> output and summary.

One row per input, in input order, always: a file that cannot be decoded gets a row
with its `error`. Memory stays flat: a shard (8,192 rows by default) and the decode
queue's few batches are all that is held. Each stage lives in its own module; this one
only wires them and decides nothing about any of them.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

from agebatch.backends.resolve import ResolvedModel, resolve
from agebatch.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, AgebatchError, Terminated, check_terminated
from agebatch.faces.align import template_for
from agebatch.lock import OutputLock
from agebatch.metrics import ScopeMetrics
from agebatch.pipeline.guard import check_outputs, refuse_outputs_as_inputs
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.rows import RunTally, to_record_batch, write_summary
from agebatch.pipeline.shards import ShardStore, run_signature
from agebatch.pipeline.stream import LocalStream, PredictionStream
from agebatch.schemas import (
    META_BACKEND,
    META_FACES,
    META_MODEL_ID,
    META_MODEL_SHA256,
    META_PRECISION,
    META_SCHEMA,
    META_SCHEMA_VERSION,
    META_SOURCE,
    META_STATS,
    SCHEMA_VERSION,
    predictions_schema,
)
from agebatch.sources import Item, count_items, iter_items

#: Items looked at before the first batch to decide whether the output gets label columns.
LABEL_PEEK = 1000


class ProgressSink(Protocol):
    """What a run reports progress to (`agebatch.progress.Progress` is one)."""

    def set_total(self, total: int | None) -> None: ...

    def advance(self, n: int = 1, *, errors: int = 0) -> None: ...


@dataclass(slots=True)
class InferResult:
    out: str
    summary_path: str | None
    inputs: int
    rows: int  # = inputs in crop mode; one per face (or per faceless / unreadable input) in detect mode
    predicted: int  # rows with predictions
    errors: int  # rows with an error
    resumed_inputs: int
    seconds: float
    backend: str
    artifact: str
    faces: str
    summary: list[ScopeMetrics] = field(default_factory=list)
    nothing_to_do: bool = False  # --resume found the output already complete
    notes: list[str] = field(default_factory=list)  # one-line remarks for the user (a device fallback, ...)

    @property
    def images_per_s(self) -> float:
        return (self.inputs - self.resumed_inputs) / self.seconds if self.seconds > 0 else 0.0


def open_stream(model: ResolvedModel, job: InferJob) -> PredictionStream:
    """The stream that runs `job`: in this process, or on Ray (imported only then)."""
    if job.ray is None:
        return LocalStream(model, job)
    from agebatch.pipeline.ray_stream import RayStream

    return RayStream(model, job)


def _peek(items: Iterator[Item]) -> tuple[bool, bool, Iterator[Item]]:
    """(any input at all, any labelled input among the first LABEL_PEEK, the full stream again)."""
    head = list(itertools.islice(items, LABEL_PEEK))
    return bool(head), any(i.has_labels for i in head), itertools.chain(head, items)


def run_infer(job: InferJob, progress: ProgressSink | None = None) -> InferResult:
    """Predict age and gender for every input of `job.source`; write `job.out` (and a summary when labels exist).

    Holds an exclusive lock on `job.out` for the whole run: a second run on the same
    output fails at once instead of racing this one over the same shards.
    """
    files = {"--summary": job.summary_path} if job.folder_output else {"--out": job.out, "--summary": job.summary_path}
    check_outputs(job.source, files, image_folders={"--save-crops": job.save_crops} if job.save_crops else {})
    with OutputLock(job.out):
        return _run_locked(job, list(files.values()), progress)


def _stopped(what: str, store: ShardStore) -> str:
    if not store.saved:
        return f"{what} before any rows were saved; nothing was kept"
    return f"{what} after {store.saved:,} rows were saved in {store.folder}; run the same command with --resume to continue"


def _io_failed(e: AgebatchError, store: ShardStore) -> AgebatchError:
    """An I/O failure mid-run (disk full): say what is left and how to go on."""
    if not store.saved:
        return AgebatchError(f"{e.message}; no rows were saved", EXIT_FAILED)
    return AgebatchError(
        f"{e.message}; {store.saved:,} rows stay saved in {store.folder}: free space, then run the same command with --resume",
        EXIT_FAILED,
    )


def _already_done(job: InferJob, store: ShardStore) -> InferResult:
    """--resume on a finished output: report what it holds, change nothing (exit 0, so retry loops end)."""
    done = store.finished_stats()
    summary = job.summary_path if os.path.isfile(job.summary_path) else None
    inputs, rows, errors = int(done.get("inputs", 0)), int(done.get("rows", done.get("inputs", 0))), int(done.get("errors", 0))
    return InferResult(
        job.out, summary, inputs, rows, rows - errors, errors, inputs, 0.0, str(done.get(META_BACKEND, "")),
        str(done.get(META_MODEL_ID, "")), str(done.get(META_FACES, job.faces)), nothing_to_do=True,
    )  # fmt: skip


def _run_locked(job: InferJob, outputs: list[str], progress: ProgressSink | None) -> InferResult:
    store = ShardStore.prepare(
        job.out, folder_output=job.folder_output, shard_rows=job.shard_rows, resume=job.resume, overwrite=job.overwrite
    )
    if store.complete:
        return _already_done(job, store)
    model = resolve(job.model, job.backend, tta=job.tta, device=job.device)
    stream = open_stream(model, job)
    items = refuse_outputs_as_inputs(iter_items(job.source, glob=job.glob), outputs)
    any_input, has_labels, items = _peek(items)
    if not any_input:
        raise AgebatchError(f"no image files found in {job.source}")
    if job.limit is not None:
        items = itertools.islice(items, job.limit)
    detect = job.faces == "detect"
    schema = predictions_schema(has_labels, faces=detect)
    faces = {"mode": job.faces, "tta": model.tta, **(asdict(job.face_options) if detect else {})}
    if detect:
        faces["template"] = template_for(model.card.face_template).to_dict()["keypoints"]
    signature = run_signature(job.source, model.artifact, model.sha256, has_labels, asdict(model.card.decode_options()), faces)
    done = store.open(signature, items, resume=job.resume, source=job.source, schema=schema)

    if progress is not None:
        total = count_items(job.source, glob=job.glob)
        progress.set_total(total if job.limit is None else min(total, job.limit))
        if done:
            progress.advance(done)

    t0 = time.perf_counter()
    streamed = 0
    try:
        for result in stream.predict(items):
            store.append(to_record_batch(result, schema), result.inputs)
            streamed += result.inputs
            if progress is not None:
                progress.advance(result.inputs, errors=int((~result.ok).sum()))
            check_terminated()
        store.flush()
        check_terminated()  # nothing is made final after a SIGTERM, even one whose exception a finalizer swallowed
    except KeyboardInterrupt:
        raise AgebatchError(_stopped("interrupted", store), EXIT_INTERRUPTED) from None
    except Terminated:
        raise AgebatchError(_stopped("terminated (SIGTERM)", store), EXIT_TERMINATED) from None
    except AgebatchError as e:
        if e.exit_code != EXIT_FAILED:
            raise
        raise _io_failed(e, store) from e
    seconds = time.perf_counter() - t0

    meta = {
        META_SCHEMA: "predictions",
        META_SCHEMA_VERSION: SCHEMA_VERSION,
        META_SOURCE: job.source,
        META_MODEL_ID: model.card.name,
        META_MODEL_SHA256: model.sha256,
        META_BACKEND: stream.name,
        META_PRECISION: model.precision,
        META_FACES: job.faces,
    }
    tally = RunTally()
    try:
        store.assemble(meta, tally.add, lambda: {META_STATS: json.dumps(tally.stats(done))})
    except AgebatchError as e:
        if e.exit_code != EXIT_FAILED:
            raise
        raise _io_failed(e, store) from e
    if tally.inputs != done + streamed:
        # Inputs lost or doubled between stream and shards is a bug, not a user error: keep the traceback.
        raise RuntimeError(f"shards cover {tally.inputs} inputs, the run read {done + streamed}")
    stats = tally.stats(done)
    summary = tally.metrics.rows() if has_labels else []
    summary_path = None
    if has_labels:
        summary_path = job.summary_path
        write_summary(summary_path, summary, stats, meta)
    store.finish({**stats, **meta})
    return InferResult(
        job.out, summary_path, tally.inputs, tally.rows, tally.rows - tally.errors, tally.errors, done, seconds, stream.name,
        model.artifact, job.faces, summary, notes=stream.notes,
    )  # fmt: skip
