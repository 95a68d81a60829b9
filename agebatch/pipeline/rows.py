"""Rows of the output: `BatchResult` -> Parquet record batch, run counts and the summary table.

The columns themselves are defined once, in `agebatch.io.schemas`; this module only fills
them, so the sink knows the output contract and nothing about models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agebatch.ages import AGE_GROUPS
from agebatch.faces.cut import BAD_BOX, NO_FACE, ONLY_SMALL_FACES
from agebatch.io.decode import decode_status
from agebatch.io.schemas import META_SCHEMA, META_STATS, NOT_ERRORS, SUMMARY
from agebatch.io.sources import display_key, key_bytes
from agebatch.io.writer import ParquetWriter
from agebatch.metrics import ScopeMetrics, SummaryAccumulator
from agebatch.pipeline.stream import BatchResult

GROUP_LABELS = pa.array(AGE_GROUPS, pa.string())


def status_of(error: str | None) -> str:
    """A row's `status` (`agebatch.io.schemas.STATUSES`) from its `error`: the one place outcome is told from reason."""
    if error is None:
        return "ok"
    if error in (NO_FACE, ONLY_SMALL_FACES):
        return "no_face"
    return "bad_box" if error.startswith(BAD_BOX) else decode_status(error)


def to_record_batch(result: BatchResult, schema: pa.Schema) -> pa.RecordBatch:
    """One row per input (per face in detect mode); predictions are null where the row has an error.

    The manifest's passed-through columns are the schema's fields between `status` and
    `path_bytes`, filled from each item's `extra` in that order.
    """
    bad = ~result.ok
    p = result.pred
    prob = p.gender_prob
    cols: dict[str, Any] = {
        "path": pa.array([display_key(i.key) for i in result.items], pa.string()),
        "age": pa.array(p.age, pa.float32(), mask=bad),
        "gender_prob": pa.array(prob, pa.float32(), mask=bad),
        "gender": pa.array((prob >= 0.5).astype(np.int8), pa.int8(), mask=bad),
        "error": pa.array(result.errors, pa.string()),
    }
    none = bad | ~np.isfinite(p.age_p10)
    for name in ("age_std", "age_p10", "age_p90"):
        cols[name] = pa.array(getattr(p, name), pa.float32(), mask=none)
    group = np.where(none, 0, p.age_group).astype(np.int64)
    cols["age_group"] = pa.array(np.asarray(AGE_GROUPS, object)[group], pa.string(), mask=none)
    if "face" in schema.names:
        f = result.faces
        assert f is not None, "a detect-mode schema needs face columns"
        none = f.face < 0
        cols["face"] = pa.array(f.face, pa.int16(), mask=none)
        for k, name in enumerate(("face_x", "face_y", "face_w", "face_h")):
            cols[name] = pa.array(f.boxes[:, k], pa.float32(), mask=none)
        cols["face_score"] = pa.array(f.scores, pa.float32(), mask=none | np.isnan(f.scores))  # NaN: a given box
        flat = pa.array(f.keypoints.reshape(-1), pa.float32())
        cols["face_keypoints"] = pa.FixedSizeListArray.from_arrays(flat, 8, mask=pa.array(none))
        cols["face_visible"] = pa.array(f.visible, pa.float32(), mask=none)
    if "age_true" in schema.names:
        cols["age_true"] = pa.array([i.age for i in result.items], pa.int16())
        cols["gender_true"] = pa.array([i.gender for i in result.items], pa.int8())
    cols["input"] = pa.array([i.index for i in result.items], pa.int64())
    cols["status"] = pa.array([status_of(e) for e in result.errors], pa.string())
    names = schema.names
    for k, name in enumerate(names[names.index("status") + 1 : -1]):
        cols[name] = pa.array([i.extra[k] for i in result.items], schema.field(name).type)
    cols["path_bytes"] = pa.array([key_bytes(i.key) for i in result.items], pa.binary())
    return pa.RecordBatch.from_pydict(cols, schema=schema)


def status_counts(status: pa.Array | pa.ChunkedArray) -> tuple[int, int]:
    """(error rows, rows without a face) of a `status` column: what progress and the tally count, no-face apart."""
    fine = pc.is_in(status, value_set=pa.array(NOT_ERRORS))
    no_face = pc.is_in(status, value_set=pa.array(["no_face"]))
    return len(status) - int(pc.count(pc.filter(status, fine)).as_py()), int(pc.count(pc.filter(status, no_face)).as_py())


@dataclass(slots=True)
class RunTally:
    """Counts and accuracy sums over the finished output, fed one shard at a time (flat memory).

    Labels describe an image's person, so with one row per face only face 0 (the
    largest) is scored; rows of other faces would score the label against a bystander.
    """

    inputs: int = 0
    rows: int = 0
    errors: int = 0  # rows whose status is a failure (not "ok" nor "no_face")
    no_face: int = 0
    metrics: SummaryAccumulator = field(default_factory=SummaryAccumulator)

    def add(self, table: pa.Table, inputs: int) -> None:
        self.inputs += inputs
        self.rows += table.num_rows
        errors, no_face = status_counts(table.column("status"))
        self.errors += errors
        self.no_face += no_face
        if "age_true" in table.column_names:
            if "face" in table.column_names:
                face = table.column("face").to_numpy(zero_copy_only=False)
                table = table.filter(pa.array(np.nan_to_num(face.astype(np.float64), nan=0.0) == 0))
            # Group label -> index (null -> NaN), vectorised: this runs over every row of the output.
            groups = pc.index_in(table.column("age_group"), value_set=GROUP_LABELS)
            self.metrics.update(
                _floats(table, "age"),
                _floats(table, "gender_prob"),
                _floats(table, "age_true"),
                _floats(table, "gender_true"),
                _floats(table, "age_p10"),
                _floats(table, "age_p90"),
                groups.to_numpy(zero_copy_only=False).astype(np.float64),
            )

    def stats(self, resumed_inputs: int) -> dict[str, int]:
        return {
            "inputs": self.inputs,
            "rows": self.rows,
            "predicted": self.rows - self.errors - self.no_face,
            "errors": self.errors,
            "no_face": self.no_face,
            "resumed_inputs": resumed_inputs,
        }


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


#: Run counts the summary carries as `run:*` rows (n only): inputs read, rows written, rows predicted, error rows,
#: rows of inputs without a face (detect mode; not errors).
RUN_COUNTS = ("inputs", "rows", "predicted", "errors", "no_face")


def write_summary(path: str, rows: list[ScopeMetrics], stats: dict[str, int], meta: dict[str, str]) -> None:
    """Summary Parquet: one row per scope, then run counts as `run:*` rows (n only)."""
    table = {
        "scope": [r.scope for r in rows] + [f"run:{k}" for k in RUN_COUNTS],
        "n": [r.n for r in rows] + [stats[k] for k in RUN_COUNTS],
        "age_mae": [r.age_mae for r in rows] + [None] * len(RUN_COUNTS),
        "gender_accuracy": [r.gender_accuracy for r in rows] + [None] * len(RUN_COUNTS),
        "age_interval_coverage": [r.interval_coverage for r in rows] + [None] * len(RUN_COUNTS),
        "age_group_exact": [r.group_exact for r in rows] + [None] * len(RUN_COUNTS),
        "age_group_one_off": [r.group_one_off for r in rows] + [None] * len(RUN_COUNTS),
    }
    for name in ("age_shift", "age_change", "age_bias", "sharpness"):  # evaluate's quality rows fill these
        table[name] = [None] * len(table["scope"])
    with ParquetWriter(
        path, SUMMARY, metadata={**meta, META_SCHEMA: "summary", META_STATS: json.dumps(stats)}, overwrite=True
    ) as w:
        w.write(table)
