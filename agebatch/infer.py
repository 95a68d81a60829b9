"""`agebatch infer`: stream every input through decode -> batch -> backend -> Parquet.

One row per input, in input order, always: a file that cannot be decoded gets a row
with its `error`. Work is written in shards to a hidden folder beside the output
(``.NAME.parts/``), each shard renamed into place only when complete; the final
file is assembled from the shards at the end and appears atomically. So a crash,
Ctrl-C or ``kill -9`` loses at most the shard in progress, and ``--resume`` skips
every input already in a complete shard (inputs come in a deterministic order).
Memory stays flat: a shard (8,192 rows by default) and the decode queue's few
batches are all that is held.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agebatch.errors import EXIT_INTERRUPTED, AgebatchError
from agebatch.jsonio import read_json, write_json_atomic
from agebatch.metrics import ScopeMetrics, SummaryAccumulator
from agebatch.schemas import (
    META_BACKEND,
    META_MODEL_ID,
    META_MODEL_SHA256,
    META_PRECISION,
    META_SCHEMA,
    META_SCHEMA_VERSION,
    META_SOURCE,
    META_STATS,
    PREDICTION_LABELS,
    PREDICTIONS,
    SCHEMA_VERSION,
    SUMMARY,
)
from agebatch.sources import Item, iter_items
from agebatch.writer import ParquetWriter, check_output_path

if TYPE_CHECKING:
    from agebatch.ray_infer import RayOptions

#: Items looked at before the first batch to decide whether the output gets label columns.
LABEL_PEEK = 1000
#: Marker a completed Ray run leaves in its output folder.
SUCCESS = "_SUCCESS.json"


class ProgressSink(Protocol):
    """What infer reports progress to (`agebatch.progress.Progress` is one)."""

    def set_total(self, total: int | None) -> None: ...

    def advance(self, n: int = 1, *, errors: int = 0) -> None: ...


@dataclass(slots=True)
class InferResult:
    out: str
    summary_path: str | None
    inputs: int
    predicted: int
    errors: int
    resumed_rows: int
    seconds: float
    backend: str
    artifact: str
    summary: list[ScopeMetrics] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.inputs - self.resumed_rows) / self.seconds if self.seconds > 0 else 0.0


def parts_dir(out: str) -> str:
    folder, name = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{name}.parts")


def summary_path_for(out: str) -> str:
    root = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return root + ".summary.parquet"


def _peek(items: Iterator[Item]) -> tuple[bool, bool, Iterator[Item]]:
    """(any input at all, any labelled input among the first LABEL_PEEK, the full stream again)."""
    head = list(itertools.islice(items, LABEL_PEEK))
    return bool(head), any(i.has_labels for i in head), itertools.chain(head, items)


def _part_rows(folder: str) -> tuple[int, str | None]:
    """Rows already written by complete shards, and the last path written; checks shards are contiguous."""
    done, last = 0, None
    for name in sorted(n for n in os.listdir(folder) if n.startswith("part-") and n.endswith(".parquet")):
        start = int(name[5:-8])
        if start != done:
            raise AgebatchError(f"{folder} has a gap before {name}; rerun with --overwrite")
        pf = pq.ParquetFile(os.path.join(folder, name))
        done += pf.metadata.num_rows
        last = pf.read_row_group(pf.num_row_groups - 1, columns=["path"]).column("path")[-1].as_py()
    return done, last


def _run_signature(source: str, artifact: str, artifact_sha: str, labels: bool, decode: dict[str, Any]) -> dict[str, Any]:
    """What must not change between a run and its resumption, as JSON stores it (tuples become lists)."""
    sig = {
        "source": os.path.abspath(source),
        "artifact_sha256": artifact_sha,
        "labels": labels,
        "decode": decode,
        "artifact": artifact,
    }
    return json.loads(json.dumps(sig))


def run_infer(
    source: str,
    out: str,
    *,
    model: str | None = None,
    backend: str = "auto",
    batch_size: int = 256,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    summary: str | None = None,
    limit: int | None = None,
    glob: str | None = None,
    shard_rows: int = 8192,
    progress: ProgressSink | None = None,
    ray: RayOptions | None = None,
) -> InferResult:
    """Predict age and gender for every input of `source`; write `out` (and a summary when labels exist).

    With `ray`, decoding and prediction run on a Ray cluster and `out` is a folder of
    shards (the same shard files a local run assembles), written as results arrive.
    """
    from agebatch.artifacts import sha256_file
    from agebatch.backends.base import load_backend
    from agebatch.models.shipped import resolve
    from agebatch.sources import count_items

    if batch_size < 1 or shard_rows < 1:
        raise AgebatchError("batch size and shard rows must be positive")
    parts = _prepare_output(out, resume=resume, overwrite=overwrite, folder=ray is not None)
    artifact, kind = resolve(model, backend)
    engine = load_backend(artifact, kind) if ray is None else None
    card, precision = (engine.card, engine.precision) if engine is not None else artifact_card(artifact, kind)
    opts = card.decode_options()
    items = iter_items(source, glob=glob)
    any_input, has_labels, items = _peek(items)
    if not any_input:
        raise AgebatchError(f"no image files found in {source}")
    if limit is not None:
        items = itertools.islice(items, limit)
    schema = pa.schema(list(PREDICTIONS) + (PREDICTION_LABELS if has_labels else []))
    artifact_sha = sha256_file(artifact)
    signature = _run_signature(source, artifact, artifact_sha, has_labels, asdict(opts))

    done = _open_parts(parts, signature, items, resume=resume, source=source)

    bar = progress
    if bar is not None:
        total = count_items(source, glob=glob)
        bar.set_total(total if limit is None else min(total, limit))
        if done:
            bar.advance(done)

    t0 = time.perf_counter()
    shard: list[pa.RecordBatch] = []
    shard_start, shard_len = done, 0
    predicted = errors = 0

    def flush() -> None:
        nonlocal shard, shard_start, shard_len
        if not shard_len:
            return
        path = os.path.join(parts, f"part-{shard_start:012d}.parquet")
        with ParquetWriter(path, schema, overwrite=True) as w:
            w.write(pa.Table.from_batches(shard, schema=schema))
        shard, shard_start, shard_len = [], shard_start + shard_len, 0

    if engine is not None:
        stream = local_predictions(items, engine, opts, batch_size=batch_size, workers=workers)
    else:
        from agebatch.ray_infer import ray_predictions

        stream = ray_predictions(items, artifact, kind, opts, batch_size=batch_size, options=ray)  # type: ignore[arg-type]
    try:
        for batch_items, batch_errors, age, prob in stream:
            ok = np.array([e is None for e in batch_errors], bool)
            shard.append(_record_batch(batch_items, batch_errors, age, prob, ok, schema, has_labels))
            shard_len += len(batch_items)
            n_err = int((~ok).sum())
            predicted += len(batch_items) - n_err
            errors += n_err
            if bar is not None:
                bar.advance(len(batch_items), errors=n_err)
            if shard_len >= shard_rows:
                flush()
        flush()
    except KeyboardInterrupt:
        raise AgebatchError(
            f"interrupted after {shard_start:,} rows were saved; run the same command with --resume to continue", EXIT_INTERRUPTED
        ) from None
    seconds = time.perf_counter() - t0

    meta = {
        META_SCHEMA: "predictions",
        META_SCHEMA_VERSION: SCHEMA_VERSION,
        META_SOURCE: source,
        META_MODEL_ID: card.name,
        META_MODEL_SHA256: artifact_sha,
        META_BACKEND: kind if ray is None else f"{kind} on ray",
        META_PRECISION: precision,
    }
    stats, acc = _assemble(parts, None if ray is not None else out, schema, meta, done)
    inputs, n_errors = stats["inputs"], stats["errors"]
    if inputs != done + predicted + errors:
        raise AgebatchError(f"internal error: {inputs} rows written for {done + predicted + errors} inputs", 1)
    rows = acc.rows() if has_labels else []
    spath = None
    if has_labels:
        spath = summary or summary_path_for(out.rstrip("/"))
        write_summary(spath, rows, stats, meta)
    if ray is None:
        shutil.rmtree(parts, ignore_errors=True)
    else:
        write_json_atomic(os.path.join(parts, SUCCESS), {**stats, **meta})
    return InferResult(out, spath, inputs, inputs - n_errors, n_errors, done, seconds, meta[META_BACKEND], artifact, rows)


def _open_parts(parts: str, signature: dict[str, Any], items: Iterator[Item], *, resume: bool, source: str) -> int:
    """Create the shard folder, or check it against this run when resuming; return rows already saved.

    When resuming, the saved rows' inputs are consumed from `items` (one at a time: a
    resume after millions of rows holds none of them) and the last one must be the
    last path saved, so a source that changed underneath is caught.
    """
    try:
        os.makedirs(parts, exist_ok=True)
    except OSError as e:
        raise AgebatchError(f"cannot write in {os.path.dirname(parts)}: {e.strerror or e}") from e
    run_json = os.path.join(parts, "run.json")
    if not (resume and os.path.isfile(run_json)):
        write_json_atomic(run_json, signature)
        return 0
    before = read_json(run_json, missing="")
    if {k: before.get(k) for k in signature if k != "artifact"} != {k: v for k, v in signature.items() if k != "artifact"}:
        raise AgebatchError(
            f"the unfinished run in {parts} used another source, model or decode settings; pass --overwrite to restart"
        )
    done, last_key = _part_rows(parts)
    seen, last = 0, None
    for last in itertools.islice(items, done):  # noqa: B007 - only the count and the last item matter
        seen += 1
    if done and (seen < done or last is None or last.key != last_key):
        raise AgebatchError(f"{source} no longer lists the same inputs as the unfinished run; pass --overwrite to restart")
    return done


def _assemble(
    parts: str, out: str | None, schema: pa.Schema, meta: dict[str, str], resumed: int
) -> tuple[dict[str, int], SummaryAccumulator]:
    """Read the shards in order, accumulate the summary and, given `out`, concatenate them into it atomically.

    Returns the run counts (also stored in `out`'s metadata) and the summary. With `out` None (Ray runs) the
    shards are the output.
    """
    acc = SummaryAccumulator()
    labels = "age_true" in schema.names
    rows = errors = 0
    writer = ParquetWriter(out, schema, metadata=meta, overwrite=True) if out is not None else None
    try:
        for name in sorted(n for n in os.listdir(parts) if n.startswith("part-")):
            table = pq.read_table(os.path.join(parts, name), schema=schema)
            if writer is not None:
                writer.write(table)
            rows += table.num_rows
            errors += table.num_rows - table.column("error").null_count
            if labels:
                acc.update(*(_np(table, c) for c in ("age", "gender_prob", "age_true", "gender_true")))
        stats = {"inputs": rows, "predicted": rows - errors, "errors": errors, "resumed_rows": resumed}
        if writer is not None:
            writer.close({META_STATS: json.dumps(stats)})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return stats, acc


def _prepare_output(out: str, *, resume: bool, overwrite: bool, folder: bool) -> str:
    """Check `out` against --resume/--overwrite; return the shard folder (beside a file, or `out` itself for Ray)."""
    if folder:
        done_marker = os.path.join(out, SUCCESS)
        if os.path.isfile(out):
            raise AgebatchError(f"{out} is a file; a Ray run writes a folder of shards")
        if os.path.exists(done_marker) and not overwrite:
            raise AgebatchError(f"{out} is already complete; pass --overwrite to compute it again")
        if os.path.isdir(out) and os.listdir(out) and not (resume or overwrite):
            raise AgebatchError(f"{out} exists; pass --resume to continue it or --overwrite to restart")
        if os.path.isdir(out) and overwrite:
            shutil.rmtree(out)
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise AgebatchError(f"output folder does not exist: {parent}")
        return out
    parts = parts_dir(out)
    if os.path.exists(out) and not overwrite:
        if resume and not os.path.isdir(parts):
            raise AgebatchError(f"{out} is already complete; pass --overwrite to compute it again")
        if not resume:
            raise AgebatchError(f"output {out} already exists; pass --overwrite to replace it")
    check_output_path(out, overwrite=True)
    if os.path.isdir(parts) and not resume:
        if not overwrite:
            raise AgebatchError(
                f"an unfinished run of {out} exists ({parts}); pass --resume to continue it or --overwrite to restart"
            )
        shutil.rmtree(parts)
    return parts


def local_predictions(
    items: Iterator[Item], engine: Any, opts: Any, *, batch_size: int, workers: int | None
) -> Iterator[tuple[list[Item], list[str | None], np.ndarray, np.ndarray]]:
    """(items, errors, age, P(female)) per batch, in input order; NaN where decoding failed."""
    from agebatch.batching import iter_batches

    for batch in iter_batches(items, batch_size=batch_size, options=opts, workers=workers):
        yield batch.items, batch.errors, *predict_ok(engine, batch.images, batch.ok)


def predict_ok(engine: Any, images: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predict the decodable rows of a batch; failed rows get NaN."""
    age = np.full(len(images), np.nan, np.float32)
    prob = np.full(len(images), np.nan, np.float32)
    if ok.any():
        age[ok], prob[ok] = engine.predict(images[ok])
    return age, prob


def artifact_card(artifact: str, kind: str) -> tuple[Any, str]:
    """(model card, precision) of an artifact without loading its runtime (Ray drivers need no model)."""
    from agebatch.artifacts import read_sidecar
    from agebatch.models.card import load_card

    if kind == "keras":
        return load_card(artifact), "fp32"
    meta = read_sidecar(artifact, kind="onnx" if kind == "onnxruntime" else "tensorrt")
    return meta["card"], str(meta["precision"])


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


def _record_batch(
    items: list[Item],
    errors: list[str | None],
    age: np.ndarray,
    prob: np.ndarray,
    ok: np.ndarray,
    schema: pa.Schema,
    labels: bool,
) -> pa.RecordBatch:
    cols: dict[str, Any] = {
        "path": pa.array([i.key for i in items], pa.string()),
        "age": pa.array(age, pa.float32(), mask=~ok),
        "gender_prob": pa.array(prob, pa.float32(), mask=~ok),
        "gender": pa.array((prob >= 0.5).astype(np.int8), pa.int8(), mask=~ok),
        "error": pa.array(errors, pa.string()),
    }
    if labels:
        cols["age_true"] = pa.array([i.age for i in items], pa.int16())
        cols["gender_true"] = pa.array([i.gender for i in items], pa.int8())
    return pa.RecordBatch.from_pydict(cols, schema=schema)


def write_summary(path: str, rows: list[ScopeMetrics], stats: dict[str, int], meta: dict[str, str]) -> None:
    """Summary Parquet: one row per scope, then run counts as `run:*` rows (n only)."""
    table = {
        "scope": [r.scope for r in rows] + [f"run:{k}" for k in ("inputs", "predicted", "errors")],
        "n": [r.n for r in rows] + [stats["inputs"], stats["predicted"], stats["errors"]],
        "age_mae": [r.age_mae for r in rows] + [None] * 3,
        "gender_accuracy": [r.gender_accuracy for r in rows] + [None] * 3,
    }
    with ParquetWriter(
        path, SUMMARY, metadata={**meta, META_SCHEMA: "summary", META_STATS: json.dumps(stats)}, overwrite=True
    ) as w:
        w.write(table)
