"""Rich tables for what commands print: metrics, manifest reports, parity, comparisons.

The CLI only prints these; keeping them here keeps the commands thin and lets Python
users render the same tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from agebatch.metrics import ScopeMetrics
from agebatch.quality import CHANGE_TARGET, QUINTILE_BIAS_TARGET, SHIFT_TARGET, QualityReport

if TYPE_CHECKING:
    from agebatch.commands.inventory import Environment, ModelEntry


def _fmt(v: float | None, pct: bool = False, signed: bool = False, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}%}" if pct else (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}")


def summary_table(rows: list[ScopeMetrics], title: str = "summary") -> Table:
    """Accuracy per scope; the interval and age-group columns only when the model has an age distribution.

    Short headers, the meaning in the caption and an unwrapped scope: it fits 80 columns (a pipe, a CI log).
    """
    table = Table(title=title)
    distribution = any(r.interval_coverage is not None for r in rows)
    cols = ["scope", "n", "age MAE", "gender acc"]
    if distribution:
        cols += ["in p10-p90", "group exact", "group ±1"]
    for col in cols:
        table.add_column(col, justify="left" if col == "scope" else "right", no_wrap=col == "scope")
    for r in rows:
        cells = [r.scope, f"{r.n:,}", _fmt(r.age_mae), _fmt(r.gender_accuracy, pct=True)]
        if distribution:
            cells += [_fmt(r.interval_coverage, pct=True), _fmt(r.group_exact, pct=True), _fmt(r.group_one_off, pct=True)]
        table.add_row(*cells)
    table.caption = "n: faces scored; age MAE in years" + (
        "; in p10-p90: true age inside the 80% interval (target 80%); group: Adience age group, exact and within one"
        if distribution
        else ""
    )
    return table


def quality_table(report: QualityReport, title: str = "quality") -> Table:
    """How much ages move with image quality, and MAE / bias per sharpness quintile (README "Quality")."""
    table = Table(title=title)
    # Short headers and an unwrapped scope, so the table fits 80 columns (a pipe, a CI log).
    for col in ("scope", "n", "shift", "|change|", "MAE", "bias", "sharpness"):
        table.add_column(col, justify="left" if col == "scope" else "right", no_wrap=True)
    for r in report.rows:
        cells = [_fmt(r.age_shift, signed=True), _fmt(r.age_change), _fmt(r.age_mae), _fmt(r.age_bias, signed=True)]
        table.add_row(r.scope, f"{r.n:,}", *cells, "-" if r.sharpness is None else f"{r.sharpness:.0f}")
    ok = report.meets_targets()
    table.caption = (
        f"years; shift, |change|: copy - original (mean); bias: predicted - true; sharpness: median Laplacian "
        f"variance. Targets |shift| <= {SHIFT_TARGET}, "
        f"|change| <= {CHANGE_TARGET}, |bias| <= {QUINTILE_BIAS_TARGET} y: " + ("met" if ok else "NOT met")
    )
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
    dist = any("max_interval_diff" in p for p in parity.values())
    cols = ["artifact", "faces", "max |age diff| (y)", "mean |age diff| (y)", "gender agreement"]
    cols += ["max |p10, p90, std diff| (y)", "age group agreement"] if dist else []
    for col in cols:
        table.add_column(col, justify="right" if col != "artifact" else "left", no_wrap=col == "artifact")
    for artifact, p in parity.items():
        cells = [
            os.path.basename(artifact),
            str(int(p["n"])),
            f"{p['max_age_diff']:.4f}",
            f"{p['mean_age_diff']:.4f}",
            f"{p['gender_agreement']:.2%}",
        ]
        if dist:
            cells += [f"{p.get('max_interval_diff', float('nan')):.4f}", f"{p.get('age_group_agreement', float('nan')):.2%}"]
        table.add_row(*cells)
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


def models_table(entries: Sequence[ModelEntry], title: str = "models") -> Table:
    """One row per model file; fits 80 columns (the precision is in an export's file name, the meaning in the caption)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    numbers = ("MAE", "gender", "p10-p90")
    for col in ("file", "runs on", "input", *numbers, "here"):
        # "here" may wrap ("unreadable: ..."), never below "yes"; the file name folds only when nothing else gives.
        table.add_column(col, justify="right" if col in numbers else "left", no_wrap=col not in ("file", "here"),
                         overflow="fold", min_width=3 if col == "here" else None)  # fmt: skip
    for e in entries:
        name = os.path.basename(e.path) + (" *" if e.default else "")
        here = "yes" if e.runnable else ("unreadable: " + escape(e.problem) if e.problem else "no (runtime missing)")
        size = f"{e.input_size[0]}" if e.input_size[0] else "-"
        size += "" if e.tta is None else (" tta" if e.tta else "")
        mae, acc = _fmt(e.test_age_mae), _fmt(e.test_gender_accuracy, pct=True, digits=1)
        cover = _fmt(e.test_interval_coverage, pct=True, digits=1)
        table.add_row(escape(name), e.backend, size, mae, acc, cover, here)
    table.caption = (
        "* what `infer` runs without --model. input: pixels a side, tta: each face averaged with its mirror. "
        + escape("MAE (years), gender accuracy and share of true ages in [age_p10, age_p90] on the test split")
    )
    return table


def environment_table(env: Environment) -> Table:
    table = Table(title="this machine", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("backends usable here (fastest first)", ", ".join(env.backends) or "none")
    table.add_row(
        "ONNX Runtime",
        f"{env.onnxruntime}; providers: {', '.join(env.onnxruntime_providers)}" if env.onnxruntime else "not installed",
    )
    table.add_row("CUDA GPU (via CuPy)", "yes" if env.gpu else "no")
    table.add_row("TensorRT", env.tensorrt or escape("not installed (pip install 'agebatch[gpu]')"))
    table.add_row("Keras", env.keras or escape("not installed (pip install 'agebatch[train]')"))
    return table
