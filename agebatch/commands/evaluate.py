"""`agebatch evaluate` and `agebatch compare`: metrics of models on one split of labelled data.

Both reuse the manifest (content-hash split) and the inference pipeline (predictions and summary),
so a model is scored by exactly the code that serves it, and every number comes from
`agebatch.metrics`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agebatch.errors import AgebatchError
from agebatch.faces.options import DEFAULT_FACES
from agebatch.io.manifest import build_manifest
from agebatch.io.splits import SplitSpec
from agebatch.metrics import ScopeMetrics
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import InferResult, run_infer
from agebatch.quality import QualityReport, consistency

#: Summary columns a `QualityRow` fills.
QUALITY_COLUMNS = ("scope", "n", "age_shift", "age_change", "age_mae", "age_bias", "sharpness")


@dataclass(slots=True)
class Evaluation:
    model: str
    split: str
    result: InferResult
    quality: QualityReport | None = None  # agebatch.quality: age change under 2x down/up and sharpening, per sharpness quintile

    @property
    def rows(self) -> list[ScopeMetrics]:
        return self.result.summary


def default_output(model: str, split: str, folder: str = "") -> str:
    """``models/modelB.keras`` on the test split -> ``FOLDER/modelB.test.parquet``."""
    return os.path.join(folder, f"{os.path.splitext(os.path.basename(model))[0]}.{split}.parquet")


def split_manifest(data: str, folder: str, *, split: str, spec: SplitSpec) -> str:
    """A manifest of the labelled faces of `data` in `split` ("all" for every split), conflicts dropped."""
    full = os.path.join(folder, "all.parquet")
    build_manifest(data, full, split=spec, drop_conflicts=True, absolute_paths=True, overwrite=True)
    table = pq.read_table(full)
    table = table.filter(pc.and_(pc.is_valid(table.column("age")), pc.is_valid(table.column("gender"))))
    if split != "all":
        table = table.filter(pc.equal(table.column("split").cast(pa.string()), pa.scalar(split)))
    if table.num_rows == 0:
        raise AgebatchError(f"no labelled faces of {data} fall in the '{split}' split")
    out = os.path.join(folder, f"{split}.parquet")
    pq.write_table(table, out)
    return out


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """How `evaluate` / `compare` score: which split, how the run goes, whether quality is measured."""

    split: str = "test"
    spec: SplitSpec = field(default_factory=SplitSpec)
    backend: str = "auto"
    overwrite: bool = False
    workers: int | None = None
    faces: str = DEFAULT_FACES
    tta: bool = True
    quality: bool = True  # also agebatch.quality's consistency rows (evaluate; compare turns it off)


def evaluate(model: str, data: str, out: str, options: EvalOptions | None = None, **changes: Any) -> Evaluation:
    """Predict the split of `data` with `model`; write predictions to `out` and the summary beside it.

    `changes` override `options` field by field (``evaluate(m, d, o, split="all")``). With
    `quality`, also measure how much the model's ages move with image quality on the same
    faces (`agebatch.quality`) and add those rows to the summary Parquet.
    """
    return evaluate_many([(model, out)], data, replace(options or EvalOptions(), **changes))[0]


def evaluate_many(runs: list[tuple[str, str]], data: str, options: EvalOptions | None = None) -> list[Evaluation]:
    """`evaluate` for several (model, output) pairs on one split, whose manifest (every file hashed) is built once."""
    o = options or EvalOptions()
    evals = []
    with tempfile.TemporaryDirectory(prefix="agebatch-eval-") as tmp:
        manifest = split_manifest(data, tmp, split=o.split, spec=o.spec)
        for model, out in runs:
            job = InferJob(
                manifest, out, model=model, backend=o.backend, overwrite=o.overwrite, workers=o.workers, faces=o.faces, tta=o.tta
            )
            result = run_infer(job)
            report = quality_of(job) if o.quality else None
            if report is not None and result.summary_path is not None:
                add_quality_rows(result.summary_path, report)
            evals.append(Evaluation(model, o.split, result, report))
    return evals


def quality_of(job: InferJob) -> QualityReport:
    """`agebatch.quality.consistency` of the job's model on its labelled faces, cut by the run's own face stage.

    Each image's face 0 (its largest, the one its label describes) or, in crop mode, each
    decodable file; the model runs through the same backend and export as the run.
    """
    from agebatch.backends.registry import load_backend
    from agebatch.backends.resolve import resolve
    from agebatch.io.sources import iter_items
    from agebatch.pipeline.stream import face_stage, runtime_options

    model = resolve(job.model, job.backend, tta=job.tta, device=job.device)
    backend = load_backend(model.artifact, model.backend, **runtime_options(model, job.device))

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows in face_stage(model, job).rows(iter_items(job.source)):
            ages = np.array([np.nan if i.age is None else i.age for i in rows.items], np.float64)
            pick = np.array([e is None for e in rows.errors]) & np.isfinite(ages)
            if rows.columns is not None:
                pick &= rows.columns.face == 0
            yield rows.crops[pick], ages[pick]

    return consistency(chunks(), lambda x: backend.predict(x).age)


def add_quality_rows(summary_path: str, report: QualityReport) -> None:
    """Rewrite a run's summary Parquet (ours: written moments ago) with the quality rows appended."""
    from agebatch.io.schemas import SUMMARY
    from agebatch.io.writer import ParquetWriter, read_metadata

    table = pq.read_table(summary_path)
    extra = pa.Table.from_pylist([asdict(r) for r in report.rows], schema=pa.schema([SUMMARY.field(n) for n in QUALITY_COLUMNS]))
    combined = pa.concat_tables([table, extra], promote_options="default").select(SUMMARY.names).cast(SUMMARY)
    meta = read_metadata(summary_path)
    with ParquetWriter(summary_path, SUMMARY, metadata=meta, overwrite=True) as w:
        w.write(combined)


def compare_plot(evals: list[Evaluation], png: str) -> None:
    """Age MAE and gender accuracy per scope, one bar per model, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scopes = [r.scope for r in evals[0].rows]
    x = np.arange(len(scopes))
    width = 0.8 / len(evals)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    for k, ev in enumerate(evals):
        label = os.path.basename(ev.model)
        maes = [r.age_mae if r.age_mae is not None else np.nan for r in ev.rows]
        accs = [r.gender_accuracy if r.gender_accuracy is not None else np.nan for r in ev.rows]
        axes[0].bar(x + k * width, maes, width, label=label)
        axes[1].bar(x + k * width, accs, width, label=label)
    for ax, title in zip(
        axes, (f"age MAE (years), {evals[0].split} split", f"gender accuracy, {evals[0].split} split"), strict=True
    ):
        ax.set_xticks(x + width * (len(evals) - 1) / 2, scopes, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    lowest = min((r.gender_accuracy for ev in evals for r in ev.rows if r.gender_accuracy is not None), default=0.5)
    axes[1].set_ylim(max(0.0, min(0.5, lowest - 0.05)), 1.0)  # zoomed on the useful range, never hiding a bar
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
