"""Rich tables for metrics (infer summary, evaluate, compare)."""

from __future__ import annotations

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
