"""`agebatch infer`: source -> prediction stream -> shard store -> output and summary.

One row per input (per face in detect mode), in input order, always: a file that cannot
be decoded gets a row with its `status` and `error`. Memory stays flat: a shard (8,192
rows or 30 s by default) and the decode queue's few batches are all that is held. Each stage lives in its own module; this one
only wires them and decides nothing about any of them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

from agebatch.backends.resolve import ResolvedModel, resolve
from agebatch.errors import EXIT_FAILED, AgebatchError, Terminated, already_exists, check_stopped, remember_ctrl_c, run_stopped
from agebatch.faces.align import template_for
from agebatch.io.atomic import check_not_symlink, probe_writable
from agebatch.io.lock import OutputLock
from agebatch.io.schemas import (
    META_BACKEND,
    META_FACES,
    META_MODEL_ID,
    META_MODEL_SHA256,
    META_PRECISION,
    META_RUN,
    META_SCHEMA,
    META_SCHEMA_VERSION,
    META_SOURCE,
    META_STATS,
    SCHEMA_VERSION,
    output_names,
    predictions_schema,
)
from agebatch.io.sources import Item, count_items, iter_items, passthrough_fields
from agebatch.io.writer import read_metadata
from agebatch.metrics import ScopeMetrics
from agebatch.pipeline.guard import check_outputs, refuse_outputs_as_inputs
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.rows import RunTally, status_counts, to_record_batch, write_summary
from agebatch.pipeline.shards import ShardStore, run_signature, same_run
from agebatch.pipeline.stream import LocalStream, PredictionStream

#: Items looked at before the first batch to decide whether the output gets label columns.
LABEL_PEEK = 1000


class ProgressSink(Protocol):
    """What a run reports progress to (`agebatch.progress.Progress` is one)."""

    def set_total(self, total: int | None) -> None: ...

    def skip(self, n: int) -> None:
        """`n` inputs were done by an earlier run (--resume): counted as done, not in the rate."""
        ...

    def advance(self, n: int = 1, *, errors: int = 0, no_face: int = 0) -> None: ...


@dataclass(slots=True)
class InferResult:
    out: str
    summary_path: str | None
    inputs: int
    rows: int  # = inputs in crop mode; one per face (or per faceless / unreadable input) in detect mode
    predicted: int  # rows with predictions
    errors: int  # rows whose input failed (unreadable, too large, not decodable)
    no_face: int  # rows of inputs without a face (detect mode): an outcome, not an error
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
    output fails at once instead of racing this one over the same shards. Every file
    it will write is checked before any work (`ShardStore.prepare`, then `check_targets`).
    """
    files = {"--summary": job.summary_path} if job.folder_output else {"--out": job.out, "--summary": job.summary_path}
    check_outputs(job.source, files, image_folders={"--save-crops": job.save_crops} if job.save_crops else {})
    with OutputLock(job.out):
        return _run_locked(job, list(files.values()), progress)


def check_targets(job: InferJob) -> None:
    """Refuse, before any work, what would fail or replace a user's file after it (exit 2).

    The summary follows `--out`'s rules (an existing one needs --overwrite; on --resume it
    must be this run's own, checked once the run signature is known); its folder and the
    crops folder must accept a new file (a probe file, so a read-only mount is found as
    root too); `--glob` only narrows a folder source.
    """
    if job.glob is not None and not os.path.isdir(job.source):
        raise AgebatchError(f"--glob filters the files of a folder; {job.source} is not a folder (a manifest or one file)")
    summary = job.summary_path
    if os.path.lexists(summary) and not (job.overwrite or job.resume):
        raise already_exists(f"summary {summary}")
    if os.path.isdir(summary):
        raise AgebatchError(f"--summary {summary} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(summary))
    if not os.path.isdir(folder):
        raise AgebatchError(f"summary folder does not exist: {folder}")
    probe_writable(folder, "summary")
    if job.save_crops is not None:
        crops = job.save_crops
        check_not_symlink(crops)
        if os.path.lexists(crops) and not os.path.isdir(crops):
            raise AgebatchError(f"--save-crops {crops} is not a folder")
        if os.path.isdir(crops) and os.listdir(crops) and not (job.overwrite or job.resume):
            raise already_exists(f"--save-crops folder {crops} (it is not empty)")
        try:
            os.makedirs(crops, exist_ok=True)
        except OSError as e:
            raise AgebatchError(f"cannot create --save-crops folder {crops}: {e.strerror or e}") from e
        probe_writable(crops, "--save-crops")


def _check_summary_is_ours(path: str, signature: dict[str, object]) -> None:
    """On --resume, an existing summary may be replaced only when this very run wrote it."""
    if not os.path.lexists(path):
        return
    try:
        recorded = read_metadata(path).get(META_RUN)
    except Exception:  # not Parquet at all
        recorded = None
    if recorded is None or not same_run(json.loads(recorded), signature):
        raise already_exists(f"summary {path} (written by another run)")


def _count_in_background(job: InferJob, progress: ProgressSink) -> None:
    """Give the progress bar its total without delaying the first batch: a folder is walked on a side thread.

    (Counting first walked a large folder twice before any work; a manifest's count is its footer, cheap
    either way.) A listing error is left to the stream, which reports it with the run's own wording.
    """

    def count() -> None:
        try:
            total = count_items(job.source, glob=job.glob)
        except Exception:
            return
        progress.set_total(total if job.limit is None else min(total, job.limit))

    threading.Thread(target=count, name="agebatch-count", daemon=True).start()


def _stopped(what: str, store: ShardStore) -> str:
    """Save what was predicted before the stop (the batch in flight is all that is lost), then say what is kept."""
    with contextlib.suppress(Exception):  # a full disk: earlier shards stay kept, and the message says how many
        store.flush()
    if not store.saved:
        return f"{what} before any rows were saved; nothing was kept"
    return f"{what} after {store.saved:,} inputs were saved in {store.folder}; run the same command with --resume to continue"


def _io_failed(e: AgebatchError, store: ShardStore) -> AgebatchError:
    """An I/O failure mid-run (disk full): say what is left and how to go on."""
    if not store.saved:
        return AgebatchError(f"{e.message}; no rows were saved", EXIT_FAILED)
    return AgebatchError(
        f"{e.message}; {store.saved:,} inputs stay saved in {store.folder}: free space, then run the same command with --resume",
        EXIT_FAILED,
    )


def _already_done(job: InferJob, store: ShardStore) -> InferResult:
    """--resume on this run's finished output: report what it holds, change nothing (exit 0, so retry loops end)."""
    done = store.finished_stats()
    summary = job.summary_path if os.path.isfile(job.summary_path) else None
    inputs, rows, errors = int(done.get("inputs", 0)), int(done.get("rows", done.get("inputs", 0))), int(done.get("errors", 0))
    no_face = int(done.get("no_face", 0))
    return InferResult(
        job.out, summary, inputs, rows, rows - errors - no_face, errors, no_face, inputs, 0.0, str(done.get(META_BACKEND, "")),
        str(done.get(META_MODEL_ID, "")), str(done.get(META_FACES, job.faces)), nothing_to_do=True,
    )  # fmt: skip


def _run_locked(job: InferJob, outputs: list[str], progress: ProgressSink | None) -> InferResult:
    store = ShardStore.prepare(
        job.out, folder_output=job.folder_output, shard_rows=job.shard_rows, resume=job.resume, overwrite=job.overwrite,
        shard_seconds=job.shard_seconds,
    )  # fmt: skip
    check_targets(job)  # after the output's own checks (their wording first), before any work
    passthrough = passthrough_fields(job.source, job.keep_columns, output_names())
    model = resolve(job.model, job.backend, tta=job.tta, device=job.device)
    listed = iter_items(job.source, glob=job.glob, extra=tuple(f.name for f in passthrough))
    items = refuse_outputs_as_inputs(listed, outputs)
    any_input, has_labels, items = _peek(items)
    if not any_input:
        where = f"{job.source} (none matches --glob {job.glob!r})" if job.glob else job.source
        raise AgebatchError(f"no image files found in {where}")
    detect = job.faces == "detect"
    faces = {"mode": job.faces, "tta": model.tta, **(asdict(job.face_options) if detect else {})}
    if detect:
        faces["template"] = template_for(model.card.face_template).to_dict()["keypoints"]
    schema = predictions_schema(has_labels, faces=detect, passthrough=passthrough)
    decode = asdict(model.card.decode_options())
    signature = run_signature(job.source, model.artifact, model.sha256, has_labels, decode, faces, schema.names)
    if store.finished_candidate:
        store.check_finished(signature)  # another run's or a foreign file: exit 2; this run's: nothing to do
        return _already_done(job, store)
    if job.resume and not job.overwrite:
        _check_summary_is_ours(job.summary_path, signature)
    stream = open_stream(model, job)
    if job.limit is not None:
        items = itertools.islice(items, job.limit)
    done = store.open(signature, items, resume=job.resume, source=job.source, schema=schema)

    if progress is not None:
        _count_in_background(job, progress)
        if done:
            progress.skip(done)

    t0 = time.perf_counter()
    streamed = 0
    try:
        with remember_ctrl_c():
            for result in stream.predict(items):
                rows = to_record_batch(result, schema)
                store.append(rows, result.input_keys)
                streamed += result.inputs
                if progress is not None:
                    errors, no_face = status_counts(rows.column("status"))
                    progress.advance(result.inputs, errors=errors, no_face=no_face)
                check_stopped()
            store.flush()
            check_stopped()  # nothing is made final after a stop signal, even one whose exception a finalizer swallowed
    except KeyboardInterrupt as e:
        raise run_stopped(e, _stopped("interrupted", store)) from None
    except Terminated as e:
        raise run_stopped(e, _stopped("terminated (SIGTERM)", store)) from None
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
        store.assemble(meta, tally.add, lambda: {META_STATS: json.dumps(tally.stats(done))}, expected_inputs=done + streamed)
    except AgebatchError as e:
        if e.exit_code != EXIT_FAILED:
            raise
        raise _io_failed(e, store) from e
    stats = tally.stats(done)
    summary = tally.metrics.rows() if has_labels else []
    summary_path = None
    if has_labels:
        summary_path = job.summary_path
        write_summary(summary_path, summary, stats, {**meta, META_RUN: json.dumps(signature, sort_keys=True)})
    store.finish({**stats, **meta})
    return InferResult(
        job.out, summary_path, tally.inputs, tally.rows, stats["predicted"], tally.errors, tally.no_face, done, seconds,
        stream.name, model.artifact, job.faces, summary, notes=stream.notes,
    )  # fmt: skip
