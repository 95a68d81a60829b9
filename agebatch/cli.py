"""The `agebatch` command line: thin Click commands over library functions.

Import cost matters here: `agebatch --help` and CPU inference must never import
TensorFlow, so this module imports only Click and the standard library at the top;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from agebatch import __version__
from agebatch.errors import EXIT_INTERRUPTED, AgebatchError
from agebatch.sources import samples_dir

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turn user-fixable errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AgebatchError as e:
            click.secho(f"Error: {e.message}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.secho("Interrupted; no partial output was kept under the final name.", fg="yellow", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="agebatch")
def main() -> None:
    """Estimate age (years) and gender (0 = male, 1 = female) for large archives of face images.

    \b
    Typical flow:
      agebatch manifest /photos --out manifest.parquet   # hash, label, split
      agebatch train custom                               # or: train pretrained
      agebatch build-engine models/modelB.keras           # Keras -> ONNX -> TensorRT
      agebatch infer /photos --out preds.parquet          # streaming batch inference

    Exit codes: 0 done, 1 the run failed (I/O, disk full), 2 bad input or options,
    130 interrupted.
    """


# --------------------------------------------------------------------------- manifest


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=str), help="Manifest Parquet file to write."
)
@click.option(
    "--val",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of distinct images for validation.",
)
@click.option(
    "--test",
    "test_frac",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of distinct images for test.",
)
@click.option("--seed", default=0, show_default=True, help="Split seed; the split is a function of (content hash, seed).")
@click.option("--drop-conflicts", is_flag=True, help="Leave out byte-identical groups whose copies carry different labels.")
@click.option("--absolute-paths", is_flag=True, help="Store absolute paths instead of paths relative to the manifest.")
@click.option("--glob", default=None, help="Only files matching this pattern (name, or path relative to SOURCE if it has '/').")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256), help="Hashing threads (I/O bound).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def manifest(
    source: str,
    out: str,
    val: float,
    test_frac: float,
    seed: int,
    drop_conflicts: bool,
    absolute_paths: bool,
    glob: str | None,
    workers: int,
    overwrite: bool,
) -> None:
    """Write a manifest of SOURCE (folder, manifest or image): one row per file.

    Columns: path, age, gender, race (from UTKFace-style names, null if unknown),
    sha256, bytes, split (train/val/test by content hash, so byte-identical files
    always share a split). Prints duplicate groups and label conflicts.
    """
    from rich.console import Console
    from rich.table import Table

    from agebatch.manifest import SplitSpec, build_manifest
    from agebatch.progress import Progress
    from agebatch.sources import count_items

    total = count_items(source, glob=glob) if os.path.isdir(source) else None
    with Progress(total, "hashing", unit="files") as progress:
        rep = build_manifest(
            source,
            out,
            split=SplitSpec(val=val, test=test_frac, seed=seed),
            drop_conflicts=drop_conflicts,
            absolute_paths=absolute_paths,
            overwrite=overwrite,
            workers=workers,
            glob=glob,
            progress=progress.advance,
        )
    table = Table(title=f"manifest {out}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in [
        ("files", rep.files),
        ("unreadable (row kept, no hash)", rep.unreadable),
        ("with labels", rep.labelled),
        ("distinct contents", rep.distinct),
        ("duplicate groups (files)", f"{rep.duplicate_groups} ({rep.duplicate_files})"),
        ("groups with conflicting labels", rep.conflict_groups),
        ("  of which age differs", rep.conflict_age_groups),
        ("  of which gender differs", rep.conflict_gender_groups),
        ("dropped (--drop-conflicts)", rep.dropped_files),
        ("rows written", rep.rows),
        *((f"split {k}", v) for k, v in rep.splits.items()),
    ]:
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


# --------------------------------------------------------------------------- planned commands


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", type=click.Choice(["custom", "pretrained"]))
@click.option("--data", default="../shared/data/utkface", show_default=True, help="UTKFace-style folder or Parquet manifest.")
@click.option("--out", default="runs", show_default=True, help="Parent folder of the run folder.")
@click.option("--name", default=None, help="Run folder and model name (default: modelA / modelB).")
@click.option(
    "--backbone",
    type=click.Choice(["efficientnet-lite0", "mobilenetv2-0.35"]),
    default="efficientnet-lite0",
    show_default=True,
    help="pretrained: backbone.",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="pretrained: 'imagenet' (offline file), a weights file path, or 'none'.",
)
@click.option(
    "--weights-dir",
    default=None,
    help="Folder of the offline ImageNet weights (default: $AGEBATCH_WEIGHTS or ../shared/weights).",
)
@click.option("--image-size", default=128, show_default=True, help="Square input size in pixels.")
@click.option(
    "--age-head",
    type=click.Choice(["bins", "regression"]),
    default="bins",
    show_default=True,
    help="Age output: expected value over 1-year bins, or linear.",
)
@click.option("--epochs", default=30, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (Adam; 1 warm-up epoch, then cosine decay).")
@click.option("--age-weight", default=1.0, show_default=True, help="Loss weight of the age head.")
@click.option("--gender-weight", default=1.0, show_default=True, help="Loss weight of the gender head.")
@click.option(
    "--patience",
    default=6,
    show_default=True,
    help="Stop after this many epochs without a better val age MAE; best weights are kept.",
)
@click.option("--dropout", default=None, type=float, help="Head dropout (default: 0.2 for custom, 0.3 for pretrained).")
@click.option("--weight-decay", default=0.0, show_default=True, help="> 0: AdamW with this decoupled weight decay.")
@click.option("--seed", default=0, show_default=True, help="Seed for initialisation, shuffling and augmentation.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the content-hash split (same as `manifest --seed`).")
@click.option("--val", default=0.1, show_default=True, help="Validation fraction of distinct images.")
@click.option("--test", "test_frac", default=0.1, show_default=True, help="Test fraction of distinct images.")
@click.option(
    "--train-from-block",
    default=5,
    show_default=True,
    type=click.IntRange(0, 16),
    help="pretrained Lite0: blocks below this one keep their ImageNet weights (0: end to end).",
)
@click.option(
    "--feature-cache/--no-feature-cache",
    default=False,
    show_default=True,
    help="pretrained Lite0: compute the frozen blocks once per face and augmented copy, train the rest on that cache.",
)
@click.option(
    "--aug-copies", default=4, show_default=True, help="pretrained Lite0: augmented copies per face in the feature cache."
)
@click.option(
    "--mirror-tta/--no-mirror-tta",
    default=True,
    show_default=True,
    help="Ship the model averaged over each face and its left-right mirror (2x inference cost, lower age MAE).",
)
@click.option(
    "--width", type=click.Choice(["small", "default"]), default="default", show_default=True, help="custom: trunk size."
)
@click.option("--limit", default=None, type=int, help="Only the first N labelled faces (quick trials).")
@click.option("--resume", is_flag=True, help="Continue the run folder from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run folder and start over.")
def train(kind: str, width: str, test_frac: float, **options: Any) -> None:
    """Train Model A (custom CNN) or Model B (ImageNet backbone, fine-tuned).

    Writes runs/NAME/: NAME.keras (best epoch), NAME.card.json, history.csv/.parquet,
    curves.png, metrics.json (val and test, per age band and gender), checkpoints/.
    """
    from agebatch.train.trainer import TrainConfig
    from agebatch.train.trainer import train as run_training

    sizes = {"small": {"stem": 16, "widths": (32, 64, 128), "depths": (1, 1, 1)}, "default": {}}[width]
    run = run_training(TrainConfig(kind=kind, test=test_frac, **sizes, **options), log=click.echo)
    click.echo(f"run folder: {run}")


@main.command("build-engine", context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", type=click.Choice(["tensorrt", "onnx"]), default="tensorrt", show_default=True)
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--min-batch", default=1, show_default=True, type=click.IntRange(1))
@click.option("--opt-batch", default=256, show_default=True, type=click.IntRange(1))
@click.option("--max-batch", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--calib", default=None, help="Folder of faces for the parity report (up to 512; default: bundled samples).")
@click.option("--out", default="engines", show_default=True, help="Folder for the ONNX exports, engine and sidecars.")
def build_engine(
    model: str, target: str, precision: str, min_batch: int, opt_batch: int, max_batch: int, calib: str | None, out: str
) -> None:
    """Export MODEL (.keras) to ONNX, check it against Keras, and build a TensorRT engine.

    Always writes the FP32 ONNX export (dynamic batch, uint8 NHWC input named
    `image`, outputs `age` and `gender_prob`); with --precision fp16 also an FP16
    ONNX (FP32 I/O, age head kept FP32), which TensorRT builds strongly typed.
    Each artifact gets a JSON sidecar with the model card, batch profile and a
    parity report against Keras on real faces. Without TensorRT or a GPU,
    --target tensorrt exits 2; --target onnx gives a portable engine.
    """
    from rich.console import Console
    from rich.table import Table

    from agebatch.engine import build_engine as run_build

    result = run_build(
        model,
        target=target,
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        calib=calib,
        out_dir=out,
    )
    table = Table(title=f"parity against Keras ({calib or 'bundled samples'}), written to {out}/")
    for col in ("artifact", "faces", "max |age diff| (y)", "mean |age diff| (y)", "gender agreement"):
        table.add_column(col, justify="right" if col != "artifact" else "left")
    for art, p in result.parity.items():
        table.add_row(
            os.path.basename(art),
            str(p["n"]),
            f"{p['max_age_diff']:.4f}",
            f"{p['mean_age_diff']:.4f}",
            f"{p['gender_agreement']:.2%}",
        )
    Console().print(table)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("source", type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, help="Predictions Parquet file to write.")
@click.option(
    "--model",
    default=None,
    help="A .keras model (its verified ONNX export or engine is used when present), an .onnx export or an .engine; "
    "default: the shipped model.",
)
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "keras"]), default="auto", show_default=True)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=None, type=click.IntRange(0), help="Decode threads (default: CPU count).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip inputs already saved.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (or an unfinished run).")
@click.option("--summary", default=None, help="Summary Parquet when labels are known (default: <out stem>.summary.parquet).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N inputs.")
@click.option("--glob", default=None, help="Only files matching this pattern (name, or path relative to SOURCE if it has '/').")
@click.option(
    "--ray",
    "ray_address",
    default=None,
    is_flag=False,
    flag_value="local",
    help="Run on Ray: --ray (a local instance), --ray auto, or --ray ray://HOST:PORT. OUT is then a folder of shards.",
)
@click.option(
    "--actors", default=1, show_default=True, type=click.IntRange(1), help="With --ray: prediction actors (model copies)."
)
@click.option("--gpus-per-actor", default=0.0, show_default=True, type=click.FloatRange(0), help="With --ray: GPUs per actor.")
@click.option("--shard-rows", default=8192, hidden=True, type=click.IntRange(1), help="Rows per resumable shard.")
def infer(
    source: str, out: str, model: str | None, backend: str, batch_size: int, workers: int | None, resume: bool, overwrite: bool,
    summary: str | None, limit: int | None, glob: str | None, ray_address: str | None, actors: int, gpus_per_actor: float,
    shard_rows: int,
) -> None:  # fmt: skip
    """Predict age and gender for every image of SOURCE (folder, manifest or image).

    Writes one row per input, in input order: path, age, gender_prob, gender,
    error (and age_true, gender_true when labels are known), plus a summary table
    when labels are known. Exit 0 when the run completed, even with error rows.
    """
    from rich.console import Console

    from agebatch.infer import run_infer
    from agebatch.progress import Progress

    with Progress(None, "infer") as progress:
        result = run_infer(
            source, out, model=model, backend=backend, batch_size=batch_size, workers=workers, resume=resume,
            overwrite=overwrite, summary=summary, limit=limit, glob=glob, shard_rows=shard_rows, progress=progress,
            ray=_ray_options(ray_address, actors, gpus_per_actor),
        )  # fmt: skip
    console = Console()
    console.print(
        f"{result.inputs:,} inputs -> {result.out}: {result.predicted:,} predicted, {result.errors:,} errors"
        + (f", {result.resumed_rows:,} from the earlier run" if result.resumed_rows else "")
        + f"; {result.images_per_s:,.0f} img/s with {result.backend} ({os.path.basename(result.artifact)})"
    )
    if result.summary:
        from agebatch.report import summary_table

        console.print(summary_table(result.summary, title=f"summary ({result.summary_path})"))


def _split_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True),
            click.option("--split-seed", default=0, show_default=True, help="Content-hash split seed (as in train/manifest)."),
            click.option("--val", default=0.1, show_default=True, help="Validation fraction (as in train)."),
            click.option("--test", "test_frac", default=0.1, show_default=True, help="Test fraction (as in train)."),
            click.option(
                "--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "keras"]), default="auto", show_default=True
            ),
            click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        ]
    ):
        f = opt(f)
    return f


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option(
    "--out", "-o", default=None, help="Predictions Parquet (default: <model stem>.<split>.parquet); the summary goes beside it."
)
@_split_options
def evaluate(
    model: str,
    data: str,
    out: str | None,
    split: str,
    split_seed: int,
    val: float,
    test_frac: float,
    backend: str,
    overwrite: bool,
) -> None:
    """Score MODEL on one split of labelled DATA: age MAE and gender accuracy, overall, per age band and per gender."""
    from rich.console import Console

    from agebatch.evaluate import default_output
    from agebatch.evaluate import evaluate as run_eval
    from agebatch.manifest import SplitSpec
    from agebatch.report import summary_table

    out = out or default_output(model, split)
    ev = run_eval(model, data, out, split=split, spec=SplitSpec(val, test_frac, split_seed), backend=backend, overwrite=overwrite)
    Console().print(summary_table(ev.rows, title=f"{model} on the {split} split of {data} ({ev.result.backend})"))
    click.echo(f"predictions: {out}; summary: {ev.result.summary_path}")


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model_a", type=click.Path(path_type=str))
@click.argument("model_b", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option("--out-dir", default="compare", show_default=True, help="Folder for predictions, summaries and compare.png.")
@_split_options
def compare(
    model_a: str,
    model_b: str,
    data: str,
    out_dir: str,
    split: str,
    split_seed: int,
    val: float,
    test_frac: float,
    backend: str,
    overwrite: bool,
) -> None:
    """Score two models on the same split of DATA and show them side by side (table + compare.png)."""
    from rich.console import Console
    from rich.table import Table

    from agebatch.evaluate import compare_plot, default_output
    from agebatch.evaluate import evaluate as run_eval
    from agebatch.manifest import SplitSpec

    os.makedirs(out_dir, exist_ok=True)
    spec = SplitSpec(val, test_frac, split_seed)
    evals = []
    for m in (model_a, model_b):
        evals.append(
            run_eval(m, data, default_output(m, split, out_dir), split=split, spec=spec, backend=backend, overwrite=overwrite)
        )
    names = [os.path.basename(m) for m in (model_a, model_b)]
    table = Table(title=f"{split} split of {data}")
    table.add_column("scope")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(f"{name} MAE", justify="right")
    for name in names:
        table.add_column(f"{name} acc", justify="right")
    for ra, rb in zip(evals[0].rows, evals[1].rows, strict=True):
        cells = [f"{r.age_mae:.2f}" if r.age_mae is not None else "-" for r in (ra, rb)]
        cells += [f"{r.gender_accuracy:.2%}" if r.gender_accuracy is not None else "-" for r in (ra, rb)]
        table.add_row(ra.scope, f"{ra.n:,}", *cells)
    Console().print(table)
    png = os.path.join(out_dir, "compare.png")
    compare_plot(evals, png)
    click.echo(f"written: {png} and predictions/summaries in {out_dir}/")


def _ray_options(address: str | None, actors: int, gpus_per_actor: float) -> Any:
    if address is None:
        return None
    from agebatch.ray_infer import RayOptions

    return RayOptions(address=None if address == "local" else address, actors=actors, gpus_per_actor=gpus_per_actor)


# --------------------------------------------------------------------------- bench


def _int_list(value: str, option: str) -> list[int]:
    """Parse "1,2,4" for a bench option, or fail with one clear line."""
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise AgebatchError(f"{option} must be comma-separated integers, got {value!r}") from None


@main.group(context_settings=CONTEXT_SETTINGS)
def bench() -> None:
    """Measure speed and memory; each bench prints ratios measured in one run."""


@bench.command("decode", context_settings=CONTEXT_SETTINGS)
@click.argument("source", required=False, type=click.Path(exists=True, path_type=str))
@click.option("--workers", "workers_list", default=None, help="Comma-separated worker counts (default: 1,2,CPU count).")
@click.option("--size", default=128, show_default=True, help="Target square size.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--limit", default=None, type=int, help="Only the first N inputs.")
@click.option("--interpolation", type=click.Choice(["linear", "area", "cubic", "nearest"]), default="linear", show_default=True)
def bench_decode(
    source: str | None, workers_list: str | None, size: int, batch_size: int, limit: int | None, interpolation: str
) -> None:
    """Decode+resize images/s and peak RSS for 1, 2 and N workers over SOURCE.

    SOURCE defaults to the bundled sample faces (too few for stable numbers: pass a
    real folder such as ../shared/data/utkface). Each configuration runs in its own
    process after one pass that warms the page cache.
    """
    from rich.console import Console

    from agebatch.bench.decode import default_worker_counts, measure_in_child, report, warm_cache

    source = source or samples_dir()
    counts = _int_list(workers_list, "--workers") if workers_list else default_worker_counts()
    console = Console()
    n = warm_cache(source, limit)
    console.print(
        f"decode bench: {n:,} files from {source}, {size}x{size} {interpolation}, batch {batch_size}, {os.cpu_count()} CPUs"
    )
    runs = [
        measure_in_child(source, workers=w, size=size, batch_size=batch_size, limit=limit, interpolation=interpolation)
        for w in counts
    ]
    report(runs, console)


@bench.command("engine", context_settings=CONTEXT_SETTINGS)
@click.argument("artifact", type=click.Path(path_type=str))
@click.option("--batch-sizes", default="1,64,256", show_default=True, help="Comma-separated batch sizes.")
@click.option("--seconds", default=3.0, show_default=True, help="Timed seconds per batch size (after a warm-up call).")
@click.option("--compare-keras", "keras_model", default=None, help="A .keras model to time with `model.predict` in the same run.")
def bench_engine(artifact: str, batch_sizes: str, seconds: float, keras_model: str | None) -> None:
    """Backend images/s at several batch sizes on real faces, excluding decode.

    With --compare-keras MODEL.keras, also times Keras `model.predict` on the same
    faces and prints the ratio measured in this run.
    """
    from rich.console import Console

    from agebatch.bench.engine import report, run_engine_bench

    sizes = _int_list(batch_sizes, "--batch-sizes")
    report(run_engine_bench(artifact, sizes, seconds=seconds, keras_model=keras_model), Console())


@bench.command("infer", context_settings=CONTEXT_SETTINGS)
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option(
    "--model", default=None, help="A .keras model (default: the shipped model); infer uses its ONNX export when present."
)
@click.option("--limit", default=2000, show_default=True, help="Faces for the head-to-head run.")
@click.option("--no-full", is_flag=True, help="Skip the run over all of SOURCE (memory flatness).")
@click.option("--workers", default=None, type=int, help="Decode threads for infer.")
def bench_infer(source: str, model: str | None, limit: int, no_full: bool, workers: int | None) -> None:
    """End to end: `agebatch infer` vs the seeds' evaluation loop, wall time and peak RSS.

    Runs the seeds' loop (imread, resize, /255, stack all as float64, one predict) and
    `agebatch infer` on the first LIMIT faces of SOURCE, then infer on all of SOURCE,
    each as its own process, and prints the ratios measured in this run.
    """
    from rich.console import Console

    from agebatch.bench.infer import report, run_infer_bench
    from agebatch.models.card import load_card
    from agebatch.models.shipped import default_model

    model = model or default_model()
    if not os.path.isfile(model):
        raise AgebatchError(f"model file not found: {model}")
    load_card(model)  # the seeds' loop needs the .keras model and its card
    report(run_infer_bench(source, model, limit=limit, full=not no_full, workers=workers), Console())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
