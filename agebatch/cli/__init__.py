"""The `agebatch` command line: thin Click commands over the library, loaded lazily.

Import cost matters here: `agebatch --help` and CPU inference must never import
TensorFlow, so this package imports only Click and the standard library at the top.
Each command lives in its own module (`manifest`, `train`, `engine`, `infer`,
`evaluate`, `bench`), imported only when that command runs or its help is shown; its
options come from `options` (one name, help text and check per option); tables come
from `agebatch.cli.report`. A command parses, builds the library's options object, calls
the library, and prints.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from agebatch.cli.options import CONTEXT_SETTINGS
from agebatch.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, AgebatchError, RunStopped, Terminated, raise_on_sigterm
from agebatch.version import __version__

#: Command name -> "module:attribute" of its Click command, in the order `--help` lists them.
COMMANDS = {
    "infer": "agebatch.cli.infer:infer",
    "models": "agebatch.cli.models:models",
    "evaluate": "agebatch.cli.evaluate:evaluate",
    "compare": "agebatch.cli.evaluate:compare",
    "manifest": "agebatch.cli.manifest:manifest",
    "train": "agebatch.cli.train:train",
    "calibrate": "agebatch.cli.calibrate:calibrate",
    "ensemble": "agebatch.cli.ensemble:ensemble",
    "build-engine": "agebatch.cli.engine:build_engine",
    "bench": "agebatch.cli.bench:bench",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (Click docs, "Lazily Loading Subcommands").

    It also turns user-fixable errors into one line on stderr and a documented exit code;
    any other exception is a bug and keeps its traceback.
    """

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, attr = self.lazy[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} is not a Click command")
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """Click's, plus a "did you mean" for a misspelt command (`agebatch infr`)."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        raise_on_sigterm()  # a scheduler's SIGTERM stops a run like Ctrl-C: saved work kept, one line, exit 143
        try:
            return super().invoke(ctx)
        except AgebatchError as e:
            click.secho(f"Error: {e.message}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except RunStopped as e:  # before KeyboardInterrupt / Terminated: it is one of them, with its own message
            click.secho(f"Error: {e.message}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.secho("Interrupted; no partial output was kept under the final name.", fg="yellow", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Terminated:
            click.secho("Terminated (SIGTERM); no partial output was kept under the final name.", fg="yellow", err=True)
            ctx.exit(EXIT_TERMINATED)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="agebatch")
def main() -> None:
    """Estimate age (years) and gender (0 = male, 1 = female) for every face in large photo archives.

    \b
    Start here:
      agebatch infer /photos --out preds.parquet    # one row per face: age, 80% interval, gender, box, status
      agebatch models                               # the shipped models and what this machine runs them on
      agebatch evaluate /labelled/faces             # MAE and accuracy of the default model on labelled data
    \b
    Own models:
      agebatch train custom|pretrained --data DIR   # Model A (own CNN) / Model B (ImageNet backbone)
      agebatch build-engine runs/NAME/NAME.keras    # Keras -> ONNX -> TensorRT

    Exit codes: 0 done, 1 the run failed (I/O, disk full), 2 bad input or options,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
