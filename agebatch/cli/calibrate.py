"""`agebatch calibrate`: fit a model's 80% age interval on the validation split."""

from __future__ import annotations

import click

from agebatch.cli.options import CONTEXT_SETTINGS, crop_cache_option, data_option, split_options
from agebatch.io.sources import require_data


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=str))
@data_option
@crop_cache_option
@split_options
def calibrate(model: str, data: str | None, crop_cache: str | None, split_seed: int, val: float, test_frac: float) -> None:
    """Fit MODEL's age-interval temperature on the validation split of DATA; rewrite MODEL and its card.

    `train` already does this for every model with an age distribution; use it after a
    change of validation split, or on a model from an older agebatch. Rebuild the
    model's exports afterwards (`agebatch build-engine MODEL`).
    """
    from agebatch.commands.calibrate import calibrate_file
    from agebatch.io.splits import SplitSpec

    cal = calibrate_file(
        model, require_data(data), split=SplitSpec(val, test_frac, split_seed), cache_dir=crop_cache, log=click.echo
    )
    click.echo(f"{model}: {cal.summary()}. Rebuild its exports: agebatch build-engine {model}")
