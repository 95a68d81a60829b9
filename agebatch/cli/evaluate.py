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


def _is_model(arg: str) -> bool:
    """Whether a positional argument names a model (a model file, or a shipped model's name) rather than data."""
    from agebatch.backends.registry import REGISTRY
    from agebatch.models.shipped import shipped_model

    if os.path.isdir(arg):  # a folder of faces, even one named like a shipped model
        return False
    suffixes = tuple(s for spec in REGISTRY.values() for s in spec.suffixes)
    return arg.lower().endswith(suffixes) or shipped_model(arg) is not None


def models_and_data(args: tuple[str, ...], defaults: tuple[str, ...]) -> tuple[list[str], str]:
    """Split `[MODEL...] [DATA]` into models (the shipped `defaults` when none is named) and data.

    DATA may be left out when ``$AGEBATCH_DATA`` names it; a wheel user scores the shipped
    models with ``agebatch evaluate /my/labelled/faces`` and no path into site-packages.
    """
    from agebatch.io.sources import default_data, require_data

    if len(args) > len(defaults) + 1:
        raise click.UsageError(f"expected at most {len(defaults)} model(s) and DATA, got {len(args)} arguments")
    if args and not _is_model(args[-1]):
        models, data = list(args[:-1]), args[-1]
    else:
        models, data = list(args), require_data(default_data())
    if models and len(models) != len(defaults):
        raise click.UsageError(f"name {len(defaults)} model(s) or none (default: {' and '.join(defaults)})")
    return models or list(defaults), data


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("args", nargs=-1, metavar="[MODEL] [DATA]", type=click.Path(path_type=str))
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (metrics per scope, quality rows) for scripts.")
def evaluate(
    args: tuple[str, ...], out: str | None, split: str, split_seed: int, val: float, test_frac: float, backend: str,
    faces: str, tta: bool, overwrite: bool, quality: bool, as_json: bool,
) -> None:  # fmt: skip
    """Score MODEL on one split of labelled DATA, overall, per age band and per gender.

    MODEL: a model file or a shipped model's name (default: the shipped default model).
    DATA: a labelled folder or manifest (default: $AGEBATCH_DATA). Age MAE and gender
    accuracy; for a model with an age distribution also the share of true ages inside
    [age_p10, age_p90] (target 80%) and Adience age-group accuracy, exact and one-off
    (within one group); with --quality, how ages move with image quality.
    """
    from rich.console import Console
    from rich.markup import escape

    from agebatch.cli.report import quality_table, summary_table
    from agebatch.commands.evaluate import EvalOptions, default_output
    from agebatch.commands.evaluate import evaluate as run_eval
    from agebatch.io.splits import SplitSpec
    from agebatch.models.shipped import DEFAULT_MODEL

    (model,), data = models_and_data(args, (DEFAULT_MODEL,))
    out = out or default_output(model, split)
    spec = SplitSpec(val, test_frac, split_seed)
    options = EvalOptions(split, spec, backend, overwrite, faces=faces, tta=tta, quality=quality)
    ev = run_eval(model, data, out, options)
    if as_json:
        import dataclasses
        import json

        report = {
            "model": model, "data": data, "split": split, "backend": ev.result.backend, "faces": faces, "tta": tta,
            "predictions": out, "summary": ev.result.summary_path, "scopes": [dataclasses.asdict(r) for r in ev.rows],
            "quality": None if ev.quality is None else [dataclasses.asdict(r) for r in ev.quality.rows],
            "quality_targets_met": None if ev.quality is None else ev.quality.meets_targets(),
        }  # fmt: skip
        click.echo(json.dumps(report, indent=2))
        return
    title = escape(
        f"{model} on the {split} split of {data} ({ev.result.backend}, --faces {faces}, {'--tta' if tta else '--no-tta'})"
    )
    console = Console()
    console.print(summary_table(ev.rows, title=title))
    if ev.quality is not None:
        console.print(quality_table(ev.quality, title=f"ages under image-quality changes, {split} split"))
    click.echo(f"predictions: {out}; summary: {ev.result.summary_path}")


#: What `compare` scores when no model is named: the two shipped models.
COMPARED = ("modelA", "modelB")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("args", nargs=-1, metavar="[MODEL_A MODEL_B] [DATA]", type=click.Path(path_type=str))
@click.option("--out-dir", default="compare", show_default=True, help="Folder for predictions, summaries and compare.png.")
@scoring_options
def compare(
    args: tuple[str, ...], out_dir: str, split: str, split_seed: int, val: float, test_frac: float,
    backend: str, faces: str, tta: bool, overwrite: bool,
) -> None:  # fmt: skip
    """Score two models on the same split of DATA and show them side by side (table + compare.png).

    Models default to the shipped modelA and modelB, DATA to $AGEBATCH_DATA. The plot
    needs matplotlib (pip install 'agebatch[train]'); without it the table is printed
    and the plot skipped with a note.
    """
    from rich.console import Console
    from rich.markup import escape

    from agebatch.backends.probe import module_installed
    from agebatch.cli.report import compare_table
    from agebatch.commands.evaluate import EvalOptions, compare_plot, default_output, evaluate_many
    from agebatch.io.splits import SplitSpec

    (model_a, model_b), data = models_and_data(args, COMPARED)
    os.makedirs(out_dir, exist_ok=True)
    spec = SplitSpec(val, test_frac, split_seed)
    # One manifest (every file hashed once) for both models; compare is about accuracy, `evaluate` measures quality.
    options = EvalOptions(split, spec, backend, overwrite, faces=faces, tta=tta, quality=False)
    evals = evaluate_many([(m, default_output(m, split, out_dir)) for m in (model_a, model_b)], data, options)
    names = [os.path.basename(m) for m in (model_a, model_b)]
    Console().print(compare_table(names, [ev.rows for ev in evals], title=escape(f"{split} split of {data}")))
    if not module_installed("matplotlib"):
        click.echo(f"note: compare.png skipped (matplotlib is not installed: pip install 'agebatch[train]'); "
                   f"predictions/summaries in {out_dir}/")  # fmt: skip
        return
    png = os.path.join(out_dir, "compare.png")
    compare_plot(evals, png)
    click.echo(f"written: {png} and predictions/summaries in {out_dir}/")
