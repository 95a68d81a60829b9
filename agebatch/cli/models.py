"""`agebatch models`."""

from __future__ import annotations

import click

from agebatch.cli.options import CONTEXT_SETTINGS


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("folders", nargs=-1, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (models, machine) for scripts instead of tables.")
def models(folders: tuple[str, ...], as_json: bool) -> None:
    """List the models agebatch can use and what this machine can run them with.

    FOLDERS default to the shipped models (and ./engines when it exists). Each model
    file shows its card's test metrics, input size, precision and whether its runtime
    is usable here; then the runtimes: ONNX Runtime and its providers, a CUDA GPU,
    TensorRT, Keras.
    """
    from rich.console import Console
    from rich.markup import escape

    from agebatch.cli.report import environment_table, models_table
    from agebatch.commands.inventory import environment, find_models
    from agebatch.models.shipped import models_dir

    entries, env = find_models(list(folders) or None), environment()
    if as_json:
        import dataclasses
        import json

        click.echo(json.dumps({"models": [dataclasses.asdict(e) for e in entries], "machine": dataclasses.asdict(env)}, indent=2))
        return
    console = Console()
    where = ", ".join(folders) if folders else f"{models_dir()} (shipped)"
    console.print(models_table(entries, title=escape(f"models in {where}")))
    console.print(environment_table(env))
