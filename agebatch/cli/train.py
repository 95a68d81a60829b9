"""`agebatch train custom|pretrained`."""

from __future__ import annotations

from typing import Any, Literal

import click

from agebatch.cli.options import (
    CONTEXT_SETTINGS,
    batch_size_option,
    crop_cache_option,
    data_option,
    faces_choice_option,
    field_default,
    image_size_option,
    overwrite_option,
    resume_option,
    split_options,
)
from agebatch.models.custom import TRUNKS
from agebatch.models.heads import AGE_HEADS
from agebatch.models.pretrained import BACKBONES
from agebatch.train.config import AugmentConfig, QualityConfig, TrainConfig


def _D(name: str) -> Any:
    """The default of `TrainConfig.<name>`: one place for every training default (tests/test_cli.py checks the mapping)."""
    return field_default(TrainConfig, name)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("kind", type=click.Choice(["custom", "pretrained"]))
@data_option
@click.option("--out", default=_D("out"), show_default=True, help="Parent folder of the run folder.")
@click.option("--name", default=None, help="Run folder and model name (default: modelA / modelB).")
@click.option(
    "--backbone",
    type=click.Choice(list(BACKBONES)),
    default=_D("backbone"),
    show_default=True,
    help="pretrained: backbone. resnet50, xception and vgg16 are the coursework reports' (keras.applications); "
    "their ImageNet weights are not shipped: pass --weights PATH or --weights none.",
)
@click.option(
    "--weights",
    default=_D("weights"),
    show_default=True,
    help="pretrained: 'imagenet' (the offline file in --weights-dir), a Keras no-top weights file, or 'none'.",
)
@click.option(
    "--weights-dir",
    default=None,
    help="Folder of the offline ImageNet weights (default: $AGEBATCH_WEIGHTS or ../shared/weights).",
)
@image_size_option(_D("image_size"))
@click.option(
    "--age-head",
    type=click.Choice(list(AGE_HEADS)),
    default=_D("age_head"),
    show_default=True,
    help="Age output: expected value over 1-year bins (softmax), linear regression, or CORAL's ordinal thresholds. "
    "bins and coral give an age distribution, hence the age_std / age_p10 / age_p90 / age_group columns.",
)
@click.option("--epochs", default=_D("epochs"), show_default=True, type=click.IntRange(1))
@batch_size_option(_D("batch_size"))
@click.option("--lr", default=_D("lr"), show_default=True, help="Peak learning rate (Adam; 1 warm-up epoch, then cosine decay).")
@click.option("--age-weight", default=_D("age_weight"), show_default=True, help="Loss weight of the age head.")
@click.option("--gender-weight", default=_D("gender_weight"), show_default=True, help="Loss weight of the gender head.")
@click.option(
    "--patience",
    default=_D("patience"),
    show_default=True,
    help="Stop after this many epochs without a better val age MAE; best weights are kept.",
)
@click.option("--dropout", default=None, type=float, help="Head dropout (default: 0.2 for custom, 0.3 for pretrained).")
@click.option(
    "--weight-decay", default=_D("weight_decay"), show_default=True, help="> 0: AdamW with this decoupled weight decay."
)
@click.option("--seed", default=_D("seed"), show_default=True, help="Seed for initialisation, shuffling and augmentation.")
@split_options
@click.option(
    "--train-from-block",
    default=_D("train_from_block"),
    show_default=True,
    type=click.IntRange(0, 16),
    help="pretrained Lite0: blocks below this one keep their ImageNet weights (0: end to end).",
)
@click.option(
    "--feature-cache/--no-feature-cache",
    default=_D("feature_cache"),
    show_default=True,
    help="pretrained Lite0: compute the frozen blocks once per face and augmented copy, train the rest on that cache.",
)
@click.option(
    "--aug-copies",
    default=_D("aug_copies"),
    show_default=True,
    help="pretrained Lite0: augmented copies per face in the feature cache.",
)
@click.option(
    "--mirror-tta/--no-mirror-tta",
    default=_D("mirror_tta"),
    show_default=True,
    help="Ship the model averaged over each face and its left-right mirror (2x inference cost, lower age MAE).",
)
@click.option(
    "--width",
    type=click.Choice(list(TRUNKS)),
    default="default",
    show_default=True,
    help="custom: trunk size (models/custom.TRUNKS: small for tests, deep = more blocks at low resolution).",
)
@faces_choice_option(
    _D("faces"),
    "detect: train on the crops `infer --faces detect` cuts (cached by content hash); crop: each file resized whole.",
)
@crop_cache_option
@click.option(
    "--init",
    default=None,
    type=click.Path(dir_okay=False),
    help="Start from this .keras model's weights (layers matched by name), e.g. to fine-tune a shipped model further.",
)
@click.option(
    "--teacher",
    default=None,
    type=click.Path(dir_okay=False),
    help="Distil from this trained .keras model (e.g. models/modelB.keras): its age distribution and P(female) on each "
    "clean training face join the targets (train/teacher.py).",
)
@click.option(
    "--distill",
    default=_D("distill"),
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="With --teacher: the teacher's share of the age-distribution and gender targets (the label keeps the rest).",
)
@click.option(
    "--mixup",
    default=_D("mixup"),
    show_default=True,
    type=click.FloatRange(0.0, 10.0),
    help="Mixup's Beta(alpha, alpha): each training face blended with another of its batch, targets alike (0: off). "
    "0.2-0.4 is the usual range.",
)
@click.option(
    "--quality-augment/--no-quality-augment",
    default=True,
    show_default=True,
    help="Image-quality augmentation (train/augment.QualityConfig): each face made sharper or softer, JPEG, noise, gamma, "
    "colour temperature, so that the model's ages do not follow sharpness.",
)
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N labelled faces (quick trials).")
@resume_option
@overwrite_option
def train(kind: Literal["custom", "pretrained"], width: str, test_frac: float, quality_augment: bool, **options: Any) -> None:
    """Train Model A (custom CNN) or Model B (ImageNet backbone, fine-tuned).

    Writes runs/NAME/: NAME.keras (best epoch), NAME.card.json, history.csv/.parquet,
    curves.png, metrics.json (val and test, per age band and gender), checkpoints/.
    """
    from agebatch.train.trainer import train as run_training

    stem, widths, depths = TRUNKS[width]
    sizes: dict[str, Any] = {"stem": stem, "widths": widths, "depths": depths} if kind == "custom" else {}
    augment = AugmentConfig() if quality_augment else AugmentConfig(quality=QualityConfig.off())
    run = run_training(TrainConfig(kind=kind, test=test_frac, augment=augment, **sizes, **options), log=click.echo)
    click.echo(f"run folder: {run}")
