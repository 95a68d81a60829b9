"""Rows of the output: `BatchResult` -> Parquet record batch, run counts and the summary table.

The columns themselves are defined once, in `agebatch.schemas`; this module only fills
them, so the sink knows the output contract and nothing about models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from agebatch.metrics import ScopeMetrics, SummaryAccumulator
from agebatch.pipeline.stream import BatchResult
from agebatch.schemas import META_SCHEMA, META_STATS, SUMMARY
from agebatch.writer import ParquetWriter


def to_record_batch(result: BatchResult, schema: pa.Schema) -> pa.RecordBatch:
    """One row per input; predictions are null where the row has an error."""
    bad = ~result.ok
    prob = result.gender_prob
    cols: dict[str, Any] = {
        "path": pa.array([i.key for i in result.items], pa.string()),
        "age": pa.array(result.age, pa.float32(), mask=bad),
        "gender_prob": pa.array(prob, pa.float32(), mask=bad),
        "gender": pa.array((prob >= 0.5).astype(np.int8), pa.int8(), mask=bad),
        "error": pa.array(result.errors, pa.string()),
    }
    if "age_true" in schema.names:
        cols["age_true"] = pa.array([i.age for i in result.items], pa.int16())
        cols["gender_true"] = pa.array([i.gender for i in result.items], pa.int8())
    return pa.RecordBatch.from_pydict(cols, schema=schema)


@dataclass(slots=True)
class RunTally:
    """Counts and accuracy sums over the finished output, fed one table at a time (flat memory)."""

    rows: int = 0
    errors: int = 0
    metrics: SummaryAccumulator = field(default_factory=SummaryAccumulator)

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.errors += table.num_rows - table.column("error").null_count
        if "age_true" in table.column_names:
            self.metrics.update(*(_floats(table, c) for c in ("age", "gender_prob", "age_true", "gender_true")))

    def stats(self, resumed_rows: int) -> dict[str, int]:
        return {"inputs": self.rows, "predicted": self.rows - self.errors, "errors": self.errors, "resumed_rows": resumed_rows}


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


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
