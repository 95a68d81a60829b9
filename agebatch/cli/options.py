"""Options shared by several commands: one name, one help text and one check each.

A command stacks the decorators it needs; the library objects they feed (`InferJob`,
`SplitSpec`, `TrainConfig`) validate again, so Python callers get the same checks.
Nothing heavy is imported here (the backend registry imports no runtime).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

from agebatch.backends.base import DEVICES
from agebatch.backends.registry import BACKEND_CHOICES
from agebatch.faces.options import DEFAULT_FACES, FACE_MODES, FaceOptions
from agebatch.io.sources import DATA_ENV, default_data

#: Every command's: -h works as --help, and help text wraps at 100 columns.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def stack(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Apply `decorators` so that `--help` lists them in the order written."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


class IntList(click.ParamType):
    """A comma-separated list of positive integers ("1,2,4")."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            values = [int(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"must be comma-separated integers, got {value!r}", param, ctx)
        if any(v < 1 for v in values):
            self.fail(f"every value must be at least 1, got {value!r}", param, ctx)
        return values


source_argument = click.argument("source", type=click.Path(path_type=str))
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
resume_option = click.option("--resume", is_flag=True, help="Continue an interrupted run: skip the work already saved.")
glob_option = click.option(
    "--glob", default=None, help="Only files matching this pattern (name, or path relative to SOURCE if it has '/')."
)
limit_option = click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N inputs.")
workers_option = click.option(
    "--workers", default=None, type=click.IntRange(0), help="Decode threads (default: CPU count; 0: decode inline)."
)
backend_option = click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="auto",
    show_default=True,
    help="Runtime; auto: a .keras model's fastest verified export usable here.",
)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `name` of `cls`: CLI defaults are read from the library's own dataclasses."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def batch_size_option(default: int, help: str = "Images per batch.", maximum: int | None = None) -> Decorator[Any]:
    return click.option("--batch-size", default=default, show_default=True, type=click.IntRange(1, maximum), help=help)


def image_size_option(default: int, help: str = "Square input size in pixels.") -> Decorator[Any]:
    """A model's input side (train, bench train); `default` comes from `TrainConfig`."""
    return click.option("--image-size", default=default, show_default=True, type=click.IntRange(32, 1024), help=help)


def model_option(help: str) -> Decorator[Any]:
    return click.option("--model", default=None, help=help)


#: The content-hash split (same meaning in manifest, train, evaluate and compare).
split_options = stack(
    click.option(
        "--val",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0, 1, max_open=True),
        help="Fraction of distinct images for validation.",
    ),
    click.option(
        "--test",
        "test_frac",
        default=0.1,
        show_default=True,
        type=click.FloatRange(0, 1, max_open=True),
        help="Fraction of distinct images for test.",
    ),
    click.option(
        "--split-seed",
        default=0,
        show_default=True,
        type=int,
        help="Split seed; a file's split is a function of (content hash, seed).",
    ),
)

_face_defaults = FaceOptions()


def faces_choice_option(default: str, help: str) -> Decorator[Any]:
    """``--faces detect|crop`` with a command's own default and help (the modes are `FACE_MODES`)."""
    return click.option("--faces", type=click.Choice(FACE_MODES), default=default, show_default=True, help=help)


faces_option = faces_choice_option(
    DEFAULT_FACES, "detect: find, align and predict every face (one row per face); crop: each input is one face crop."
)

tta_option = click.option(
    "--tta/--no-tta",
    default=True,
    show_default=True,
    help="Average each face with its mirror (models trained with it; lower MAE) or one pass per face (about 2x faster).",
)

device_option = click.option(
    "--device",
    type=click.Choice(list(DEVICES)),
    default="auto",
    show_default=True,
    help="ONNX Runtime: cuda runs on the GPU or fails (needs onnxruntime-gpu); auto uses the GPU when there is one.",
)

#: Which detected faces are kept (infer).
face_filter_options = stack(
    click.option(
        "--min-score",
        default=_face_defaults.min_score,
        show_default=True,
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        help="detect: the detector's confidence a face needs.",
    ),
    click.option(
        "--min-face",
        default=_face_defaults.min_face,
        show_default=True,
        type=click.FloatRange(0),
        help="detect: smallest face kept, box width in source pixels.",
    ),
    click.option(
        "--max-faces", default=None, type=click.IntRange(1), help="detect: keep at most N faces per image, largest first."
    ),
    click.option(
        "--tiles/--no-tiles",
        default=_face_defaults.tiles,
        show_default=True,
        help="detect: also search photos of 640+ px in overlapping tiles, for faces under ~8% of the long side "
        "(about 3x the detector's time; measured: 3% -> 81% of such faces found).",
    ),
    click.option(
        "--edge-faces/--no-edge-faces",
        "edges",
        default=_face_defaults.edges,
        show_default=True,
        help="detect: also search photos, and each of their corners, mirrored out past their edges, for faces the "
        "frame cuts (measured: 45% inside, 4 -> 24 of 24 found).",
    ),
)

#: Which split to score (evaluate, compare).
split_choice_option = click.option(
    "--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True, help="Split to score."
)


#: `train` and `calibrate`: where training's detect + align crops are cached (`agebatch.train.crops`).
crop_cache_option = click.option(
    "--crop-cache",
    default=None,
    help="Folder of the aligned-crop cache (default: $AGEBATCH_CACHE or ~/.cache/agebatch; '' turns it off).",
)


#: ``--data`` of the commands that read labelled faces (train, calibrate, ensemble): no built-in path.
data_option = click.option(
    "--data",
    default=default_data,
    show_default=f"${DATA_ENV}",
    help=f"Labelled UTKFace-style folder or Parquet manifest (default: ${DATA_ENV}).",
)
