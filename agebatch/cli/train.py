"""`agebatch train custom|pretrained`."""

from __future__ import annotations

from typing import Any, Literal

import click

from agebatch.cli.options import (
    CONTEXT_SETTINGS,
    DEFAULT_FACES,
    batch_size_option,
    crop_cache_option,
    faces_choice_option,
    overwrite_option,
    resume_option,
    split_options,
)
from agebatch.models.heads import AGE_HEADS
from agebatch.models.pretrained import BACKBONES


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", type=click.Choice(["custom", "pretrained"]))
@click.option("--data", default="../shared/data/utkface", show_default=True, help="UTKFace-style folder or Parquet manifest.")
@click.option("--out", default="runs", show_default=True, help="Parent folder of the run folder.")
@click.option("--name", default=None, help="Run folder and model name (default: modelA / modelB).")
@click.option(
    "--backbone",
    type=click.Choice(list(BACKBONES)),
    default="efficientnet-lite0",
    show_default=True,
    help="pretrained: backbone. resnet50, xception and vgg16 are the coursework reports' (keras.applications); "
    "their ImageNet weights are not shipped: pass --weights PATH or --weights none.",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="pretrained: 'imagenet' (the offline file in --weights-dir), a Keras no-top weights file, or 'none'.",
)
@click.option(
    "--weights-dir",
    default=None,
    help="Folder of the offline ImageNet weights (default: $AGEBATCH_WEIGHTS or ../shared/weights).",
)
@click.option("--image-size", default=128, show_default=True, type=click.IntRange(32, 1024), help="Square input size in pixels.")
@click.option(
    "--age-head",
    type=click.Choice(list(AGE_HEADS)),
    default="bins",
    show_default=True,
    help="Age output: expected value over 1-year bins (softmax), linear regression, or CORAL's ordinal thresholds. "
    "bins and coral give an age distribution, hence the age_std / age_p10 / age_p90 / age_group columns.",
)
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@batch_size_option(64)
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
@split_options
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
@faces_choice_option(
    DEFAULT_FACES,
    "detect: train on the crops `infer --faces detect` cuts (cached by content hash); crop: each file resized whole.",
)
@crop_cache_option
@click.option(
    "--init",
    default=None,
    type=click.Path(dir_okay=False),
    help="Start from this .keras model's weights (layers matched by name), e.g. to fine-tune a shipped model further.",
)
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N labelled faces (quick trials).")
@resume_option
@overwrite_option
def train(kind: Literal["custom", "pretrained"], width: str, test_frac: float, **options: Any) -> None:
    """Train Model A (custom CNN) or Model B (ImageNet backbone, fine-tuned).

    Writes runs/NAME/: NAME.keras (best epoch), NAME.card.json, history.csv/.parquet,
    curves.png, metrics.json (val and test, per age band and gender), checkpoints/.
    """
    from agebatch.train.trainer import TrainConfig
    from agebatch.train.trainer import train as run_training

    small = width == "small"
    sizes: dict[str, Any] = {"stem": 16, "widths": (32, 64, 128), "depths": (1, 1, 1)} if small else {}
    run = run_training(TrainConfig(kind=kind, test=test_frac, **sizes, **options), log=click.echo)
    click.echo(f"run folder: {run}")
