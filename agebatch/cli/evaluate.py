"""`agebatch evaluate` and `agebatch compare`: score models on one content-hash split."""

from __future__ import annotations

import os

import click

from agebatch.cli.options import (
    CONTEXT_SETTINGS,
    backend_option,
    faces_option,
    overwrite_option,
    split_choice_option,
    split_options,
    stack,
    tta_option,
)

scoring_options = stack(split_choice_option, split_options, backend_option, faces_option, tta_option, overwrite_option)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option(
    "--out", "-o", default=None, help="Predictions Parquet (default: <model stem>.<split>.parquet); the summary goes beside it."
)
@scoring_options
@click.option(
    "--quality/--no-quality",
    default=True,
    show_default=True,
    help="Also measure how much ages move when each face is 2x down/up-sized or sharpened to press-photo sharpness, "
    "and MAE / bias per sharpness quintile (summary rows quality:* and sharpness:*).",
)
def evaluate(
    model: str, data: str, out: str | None, split: str, split_seed: int, val: float, test_frac: float, backend: str,
    faces: str, tta: bool, overwrite: bool, quality: bool,
) -> None:  # fmt: skip
    """Score MODEL on one split of labelled DATA, overall, per age band and per gender.

    Age MAE and gender accuracy; for a model with an age distribution also the share of
    true ages inside [age_p10, age_p90] (target 80%) and Adience age-group accuracy,
    exact and one-off (within one group).
    """
    from rich.console import Console

    from agebatch.cli.report import quality_table, summary_table
    from agebatch.commands.evaluate import EvalOptions, default_output
    from agebatch.commands.evaluate import evaluate as run_eval
    from agebatch.io.splits import SplitSpec

    out = out or default_output(model, split)
    spec = SplitSpec(val, test_frac, split_seed)
    options = EvalOptions(split, spec, backend, overwrite, faces=faces, tta=tta, quality=quality)
    ev = run_eval(model, data, out, options)
    title = f"{model} on the {split} split of {data} ({ev.result.backend}, --faces {faces}, {'--tta' if tta else '--no-tta'})"
    console = Console()
    console.print(summary_table(ev.rows, title=title))
    if ev.quality is not None:
        console.print(quality_table(ev.quality, title=f"ages under image-quality changes, {split} split"))
    click.echo(f"predictions: {out}; summary: {ev.result.summary_path}")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model_a", type=click.Path(path_type=str))
@click.argument("model_b", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option("--out-dir", default="compare", show_default=True, help="Folder for predictions, summaries and compare.png.")
@scoring_options
def compare(
    model_a: str, model_b: str, data: str, out_dir: str, split: str, split_seed: int, val: float, test_frac: float,
    backend: str, faces: str, tta: bool, overwrite: bool,
) -> None:  # fmt: skip
    """Score two models on the same split of DATA and show them side by side (table + compare.png)."""
    from rich.console import Console

    from agebatch.cli.report import compare_table
    from agebatch.commands.evaluate import EvalOptions, compare_plot, default_output, evaluate_many
    from agebatch.io.splits import SplitSpec

    os.makedirs(out_dir, exist_ok=True)
    spec = SplitSpec(val, test_frac, split_seed)
    # One manifest (every file hashed once) for both models; compare is about accuracy, `evaluate` measures quality.
    options = EvalOptions(split, spec, backend, overwrite, faces=faces, tta=tta, quality=False)
    evals = evaluate_many([(m, default_output(m, split, out_dir)) for m in (model_a, model_b)], data, options)
    names = [os.path.basename(m) for m in (model_a, model_b)]
    Console().print(compare_table(names, [ev.rows for ev in evals], title=f"{split} split of {data}"))
    png = os.path.join(out_dir, "compare.png")
    compare_plot(evals, png)
    click.echo(f"written: {png} and predictions/summaries in {out_dir}/")
