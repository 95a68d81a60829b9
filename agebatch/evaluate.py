"""`agebatch evaluate` and `agebatch compare`: metrics of models on one split of labelled data.

Both reuse the manifest (content-hash split) and the inference pipeline (predictions and summary),
so a model is scored by exactly the code that serves it, and every number comes from
`agebatch.metrics`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agebatch.errors import AgebatchError
from agebatch.manifest import SplitSpec, build_manifest
from agebatch.metrics import ScopeMetrics
from agebatch.pipeline.job import DEFAULT_FACES, InferJob
from agebatch.pipeline.run import InferResult, run_infer


@dataclass(slots=True)
class Evaluation:
    model: str
    split: str
    result: InferResult

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


def evaluate(
    model: str,
    data: str,
    out: str,
    *,
    split: str = "test",
    spec: SplitSpec | None = None,
    backend: str = "auto",
    overwrite: bool = False,
    workers: int | None = None,
    faces: str = DEFAULT_FACES,
    tta: bool = True,
) -> Evaluation:
    """Predict `split` of `data` with `model`; write predictions to `out` and the summary beside it."""
    spec = spec or SplitSpec()
    with tempfile.TemporaryDirectory(prefix="agebatch-eval-") as tmp:
        manifest = split_manifest(data, tmp, split=split, spec=spec)
        job = InferJob(manifest, out, model=model, backend=backend, overwrite=overwrite, workers=workers, faces=faces, tta=tta)
        result = run_infer(job)
    return Evaluation(model, split, result)


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
