"""`agebatch infer`."""

from __future__ import annotations

import os

import click

from agebatch.cli.options import (
    CONTEXT_SETTINGS,
    backend_option,
    batch_size_option,
    device_option,
    face_filter_options,
    faces_option,
    glob_option,
    limit_option,
    model_option,
    overwrite_option,
    resume_option,
    source_argument,
    tta_option,
    workers_option,
)
from agebatch.pipeline.job import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_ROWS, DEFAULT_SHARD_SECONDS, MAX_BATCH_SIZE


def _columns(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(c.strip() for c in value.split(",") if c.strip())


@click.command(context_settings=CONTEXT_SETTINGS)
@source_argument
@click.option("--out", "-o", required=True, help="Predictions Parquet file to write (a folder of shards with --ray).")
@model_option(
    "A .keras model (its verified ONNX export or engine is used when present), an .onnx export or an .engine; "
    "default: the shipped model."
)
@backend_option
@batch_size_option(DEFAULT_BATCH_SIZE, maximum=MAX_BATCH_SIZE)
@workers_option
@resume_option
@overwrite_option
@click.option("--summary", default=None, help="Summary Parquet when labels are known (default: <out stem>.summary.parquet).")
@limit_option
@glob_option
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
@tta_option
@device_option
@faces_option
@face_filter_options
@click.option("--save-crops", default=None, help="detect: also write each aligned face as a JPEG into this folder.")
@click.option(
    "--keep-columns",
    default=None,
    callback=_columns,
    metavar="A,B,...",
    help="Manifest columns to copy into each output row (default: every manifest column the output does not already "
    "have, binary ones excepted; '' for none).",
)
@click.option("--shard-rows", default=DEFAULT_SHARD_ROWS, hidden=True, type=click.IntRange(1), help="Rows per resumable shard.")
@click.option(
    "--shard-seconds",
    default=DEFAULT_SHARD_SECONDS,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Save finished rows at least this often: a crash loses at most this much work (Ctrl-C and SIGTERM save "
    "what is predicted first).",
)
def infer(
    source: str, out: str, model: str | None, backend: str, batch_size: int, workers: int | None, resume: bool, overwrite: bool,
    summary: str | None, limit: int | None, glob: str | None, ray_address: str | None, actors: int, gpus_per_actor: float,
    tta: bool, device: str, faces: str, min_score: float, min_face: float, max_faces: int | None, tiles: bool, edges: bool,
    save_crops: str | None,
    keep_columns: tuple[str, ...] | None, shard_rows: int, shard_seconds: float,
) -> None:  # fmt: skip
    """Predict age and gender for every face in SOURCE (folder, Parquet manifest or image).

    Writes one row per face (--faces detect, the default) or per input (--faces crop),
    in input order: path, age, gender_prob, gender, error, the 80% interval
    age_p10/age_p90, age_group, the face box and score, input (the input's position
    in SOURCE), status (ok, no_face, unreadable, too_large, decode_error) and the
    manifest's own columns; an input without a face or that cannot be read gets one
    row saying why. With labels, also age_true/gender_true and a summary table.
    Exit 0 when the run completed, even with error rows.
    """
    from rich.console import Console
    from rich.markup import escape

    from agebatch.faces.options import FaceOptions
    from agebatch.pipeline.job import InferJob, RayOptions
    from agebatch.pipeline.run import run_infer
    from agebatch.progress import Progress

    ray = None
    if ray_address is not None:
        ray = RayOptions(address=None if ray_address == "local" else ray_address, actors=actors, gpus_per_actor=gpus_per_actor)
    job = InferJob(
        source, out, model=model, backend=backend, batch_size=batch_size, workers=workers, resume=resume, overwrite=overwrite,
        summary=summary, limit=limit, glob=glob, shard_rows=shard_rows, ray=ray, faces=faces,
        face_options=FaceOptions(min_score=min_score, min_face=min_face, max_faces=max_faces, tiles=tiles, edges=edges),
        save_crops=save_crops, tta=tta, device=device, keep_columns=keep_columns, shard_seconds=shard_seconds,
    )  # fmt: skip
    with Progress(None, "infer") as progress:
        result = run_infer(job, progress)
    console = Console()
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if result.nothing_to_do:
        click.echo(f"nothing to do: {result.out} is already complete ({result.inputs:,} inputs, {result.rows:,} rows)")
        return
    click.echo(  # plain text, one line: rich would fold it at 80 columns in a pipe and read brackets as markup
        f"{result.inputs:,} inputs -> {result.out}: "
        + (f"{result.rows:,} rows (one per face), " if result.faces == "detect" else "")
        + f"{result.predicted:,} predicted, {result.errors:,} errors"
        + (f", {result.no_face:,} without a face" if result.no_face else "")
        + (f", {result.resumed_inputs:,} inputs from the earlier run" if result.resumed_inputs else "")
        + f"; {result.images_per_s:,.0f} img/s with {result.backend} ({os.path.basename(result.artifact)})"
    )
    if result.summary:
        from agebatch.cli.report import summary_table

        console.print(summary_table(result.summary, title="summary"))
        click.echo(f"summary: {result.summary_path}")
