"""Rich tables for what commands print: metrics, manifest reports, parity, comparisons.

The CLI only prints these; keeping them here keeps the commands thin and lets Python
users render the same tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table

from agebatch.metrics import ScopeMetrics


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.2%}" if pct else f"{v:.2f}"


def summary_table(rows: list[ScopeMetrics], title: str = "summary") -> Table:
    table = Table(title=title)
    for col in ("scope", "n", "age MAE (years)", "gender accuracy"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for r in rows:
        table.add_row(r.scope, f"{r.n:,}", _fmt(r.age_mae), _fmt(r.gender_accuracy, pct=True))
    return table


def counts_table(pairs: Iterable[tuple[str, Any]], title: str) -> Table:
    """Two columns, label and count (manifest reports)."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in pairs:
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def parity_table(parity: Mapping[str, Mapping[str, float]], title: str) -> Table:
    table = Table(title=title)
    for col in ("artifact", "faces", "max |age diff| (y)", "mean |age diff| (y)", "gender agreement"):
        table.add_column(col, justify="right" if col != "artifact" else "left")
    for artifact, p in parity.items():
        table.add_row(
            os.path.basename(artifact),
            str(int(p["n"])),
            f"{p['max_age_diff']:.4f}",
            f"{p['mean_age_diff']:.4f}",
            f"{p['gender_agreement']:.2%}",
        )
    return table


def compare_table(names: Sequence[str], rows: Sequence[Sequence[ScopeMetrics]], title: str) -> Table:
    """Scopes down, one MAE and one accuracy column per model."""
    table = Table(title=title)
    table.add_column("scope")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(f"{name} MAE", justify="right")
    for name in names:
        table.add_column(f"{name} acc", justify="right")
    for scoped in zip(*rows, strict=True):
        cells = [_fmt(r.age_mae) for r in scoped] + [_fmt(r.gender_accuracy, pct=True) for r in scoped]
        table.add_row(scoped[0].scope, f"{scoped[0].n:,}", *cells)
    return table
