"""`agebatch ensemble`: serve several trained models as one, weighed and calibrated on the validation split."""

from __future__ import annotations

import click

from agebatch.cli.options import CONTEXT_SETTINGS, crop_cache_option, data_option, overwrite_option, split_options
from agebatch.io.sources import require_data


def _weights(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, e.g. 0.3,0.7 (got {value!r})") from None


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--out", required=True, help="The ensemble's .keras path (its card is written beside it).")
@data_option
@click.option(
    "--weights",
    default=None,
    callback=_weights,
    help="One weight per model, comma-separated, summing to 1 (default: the 0.05 grid point with the lowest val age MAE).",
)
@crop_cache_option
@split_options
@overwrite_option
def ensemble(
    models: tuple[str, ...], out: str, data: str | None, weights: list[float] | None, crop_cache: str | None,
    split_seed: int, val: float, test_frac: float, overwrite: bool,
) -> None:  # fmt: skip
    """Serve MODELS (two or more .keras models fed alike) as one model at OUT.

    The members' age distributions, ages and P(female) are averaged with weights chosen on
    the validation split of DATA, the 80% interval is calibrated on the mixture, and the
    result is one graph: every backend runs it, at the sum of the members' cost. Export it
    like any model: agebatch build-engine OUT.
    """
    from agebatch.commands.ensemble import build_ensemble
    from agebatch.io.splits import SplitSpec

    r = build_ensemble(
        models, require_data(data), out=out, split=SplitSpec(val, test_frac, split_seed), weights=weights, cache_dir=crop_cache,
        overwrite=overwrite, log=click.echo,
    )  # fmt: skip
    for m, w, e in zip(models, r.weights, r.members_val_age_mae, strict=True):
        click.echo(f"  {m}: weight {w:g}, val age MAE alone {e:.3f}")
    click.echo(f"{out}: val age MAE {r.val_age_mae:.3f}, gender {r.val_gender_accuracy:.4f}; {r.calibration.summary()}")
    click.echo(f"Export it: agebatch build-engine {out}")
