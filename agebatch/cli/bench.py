"""`agebatch bench decode|engine|infer`: speed and memory, each printing ratios measured in one run."""

from __future__ import annotations

import os

import click

from agebatch.cli.options import (
    CONTEXT_SETTINGS,
    IntList,
    batch_size_option,
    faces_choice_option,
    field_default,
    image_size_option,
    model_option,
    workers_option,
)
from agebatch.errors import AgebatchError
from agebatch.train.config import TrainConfig


@click.group(context_settings=CONTEXT_SETTINGS)
def bench() -> None:
    """Measure speed and memory; each bench prints ratios measured in one run."""


@bench.command("decode", context_settings=CONTEXT_SETTINGS)
@click.argument("source", required=False, type=click.Path(exists=True, path_type=str))
@click.option(
    "--workers", "workers_list", default=None, type=IntList(), help="Comma-separated worker counts (default: 1,2,CPU count)."
)
@click.option("--size", default=128, show_default=True, type=click.IntRange(1), help="Target square size.")
@batch_size_option(256)
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N inputs.")
@click.option("--interpolation", type=click.Choice(["linear", "area", "cubic", "nearest"]), default="linear", show_default=True)
def bench_decode(
    source: str | None, workers_list: list[int] | None, size: int, batch_size: int, limit: int | None, interpolation: str
) -> None:
    """Decode+resize images/s and peak RSS for 1, 2 and N workers over SOURCE.

    SOURCE defaults to the bundled sample faces (too few for stable numbers: pass a
    real folder such as ../shared/data/utkface). Each configuration runs in its own
    process after one pass that warms the page cache.
    """
    from rich.console import Console

    from agebatch.bench.decode import default_worker_counts, measure_in_child, report, warm_cache
    from agebatch.io.sources import samples_dir

    source = source or samples_dir()
    counts = workers_list or default_worker_counts()
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
@click.option("--batch-sizes", default="1,64,256", show_default=True, type=IntList(), help="Comma-separated batch sizes.")
@click.option("--seconds", default=3.0, show_default=True, type=click.FloatRange(0.1), help="Timed seconds per batch size.")
@click.option("--compare-keras", "keras_model", default=None, help="A .keras model to time with `model.predict` in the same run.")
def bench_engine(artifact: str, batch_sizes: list[int], seconds: float, keras_model: str | None) -> None:
    """Backend images/s at several batch sizes on real faces, excluding decode.

    With --compare-keras MODEL.keras, also times Keras `model.predict` on the same
    faces and prints the ratio measured in this run.
    """
    from rich.console import Console

    from agebatch.bench.engine import report, run_engine_bench

    report(run_engine_bench(artifact, batch_sizes, seconds=seconds, keras_model=keras_model), Console())


@bench.command("infer", context_settings=CONTEXT_SETTINGS)
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=str))
@model_option("A .keras model (default: the shipped model); infer uses its ONNX export when present.")
@click.option("--limit", default=2000, show_default=True, type=click.IntRange(1), help="Faces for the head-to-head run.")
@click.option("--no-full", is_flag=True, help="Skip the run over all of SOURCE (memory flatness).")
@faces_choice_option(
    "crop", "crop: infer (crop mode) vs the seeds' loop; detect: detect vs crop mode, then detect on 12 MP photos."
)
@click.option(
    "--photos", default=100, show_default=True, type=click.IntRange(1), help="With --faces detect: 12 MP photos to make."
)
@workers_option
def bench_infer(source: str, model: str | None, limit: int, no_full: bool, faces: str, photos: int, workers: int | None) -> None:
    """End to end, whole processes: wall time, images/s and peak RSS, with ratios measured in this run.

    --faces crop: the seeds' loop (imread, resize, /255, stack all as float64, one
    predict) and `agebatch infer --faces crop` on the first LIMIT faces of SOURCE, then
    infer on all of SOURCE. --faces detect: `infer --faces detect` vs `--faces crop` on
    LIMIT faces, then detect mode on PHOTOS 12 MP photos composed from SOURCE's faces,
    then recall and photos/s of small faces (up to 30 photos) with the tiled pass off
    and on, and the time per photo of each stage.
    """
    from rich.console import Console

    from agebatch.bench.infer import report, report_faces, run_faces_bench, run_infer_bench
    from agebatch.models.card import load_card
    from agebatch.models.shipped import default_model

    model = model or default_model()
    if not os.path.isfile(model):
        raise AgebatchError(f"model file not found: {model}")
    load_card(model)  # the seeds' loop needs the .keras model and its card
    if faces == "detect":
        from agebatch.bench.faces import report_tiles, run_tiles_bench

        console = Console()
        runs, placed = run_faces_bench(source, model, limit=limit, photos=photos, workers=workers)
        report_faces(runs, placed, console)
        tiles, stages = run_tiles_bench(source, model, photos=min(photos, 30), workers=workers)
        report_tiles(tiles, stages, console)
        return
    report(run_infer_bench(source, model, limit=limit, full=not no_full, workers=workers), Console())


@bench.command("train", context_settings=CONTEXT_SETTINGS)
@click.argument("source", required=False, type=click.Path(exists=True, path_type=str))
@click.option(
    "--models",
    type=click.Choice(["both", "custom", "pretrained"]),
    default="both",
    show_default=True,
    help="custom: Model A; pretrained: Model B (Lite0 from --train-from-block).",
)
@batch_size_option(64)
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed training steps per model.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps first (graph tracing).")
@click.option(
    "--train-from-block",
    default=field_default(TrainConfig, "train_from_block"),
    show_default=True,
    type=click.IntRange(0, 16),
    help="Model B: first trained block.",
)
@image_size_option(field_default(TrainConfig, "image_size"), help="Square input size in pixels (what a larger input costs).")
def bench_train(
    source: str | None, models: str, batch_size: int, steps: int, warmup: int, train_from_block: int, image_size: int
) -> None:
    """Training img/s of Model A and Model B on real faces, with the CPU, core count and load (needs [train]).

    Prints the load average before and after each timed run: training speed halves when
    anything else shares the cores, and this tells a contended run from a slow machine.
    SOURCE defaults to the bundled sample faces.
    """
    from rich.console import Console

    from agebatch.bench.train import faces_for_bench, report, time_training
    from agebatch.io.sources import samples_dir
    from agebatch.machine import machine_facts

    console = Console()
    facts = machine_facts()
    console.print(f"train bench: {facts['cpu']}, {facts['cores']} cores, load {facts['load_average']}")
    faces = faces_for_bench(source or samples_dir(), max(256, batch_size), image_size)
    kinds = ["custom", "pretrained"] if models == "both" else [models]
    runs = [
        time_training(
            kind,
            faces,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            train_from_block=train_from_block,
            image_size=image_size,
        )
        for kind in kinds
    ]
    report(runs, console)
