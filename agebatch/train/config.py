"""`TrainConfig`: every option of a training run, frozen and validated once.

Stored whole in the model card (``training.config``), so a card says how to rebuild its model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from agebatch.errors import AgebatchError
from agebatch.faces.options import FACE_MODES
from agebatch.manifest import SplitSpec
from agebatch.models.heads import AGE_HEADS, AgeHead


@dataclass(frozen=True, slots=True)
class TrainConfig:
    kind: Literal["custom", "pretrained"]
    data: str = "../shared/data/utkface"
    out: str = "runs"
    name: str | None = None  # default: modelA (custom) / modelB (pretrained)
    backbone: str = "efficientnet-lite0"
    weights: str | None = "imagenet"
    weights_dir: str | None = None
    image_size: int = 128
    age_head: AgeHead = "bins"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    age_weight: float = 1.0
    gender_weight: float = 1.0
    patience: int = 6
    dropout: float | None = None  # head dropout; None: the builder's default (A 0.2, B 0.3)
    weight_decay: float = 0.0  # > 0: AdamW with this decoupled weight decay
    seed: int = 0
    val: float = 0.1
    test: float = 0.1
    split_seed: int = 0
    resume: bool = False
    overwrite: bool = False
    limit: int | None = None  # only the first N labelled faces (tests, quick trials)
    faces: str = "detect"  # "detect": train on inference's detect + align crops; "crop": each file resized whole
    crop_cache: str | None = None  # folder of the aligned-crop cache (None: $AGEBATCH_CACHE or ~/.cache/agebatch; "": off)
    init: str | None = None  # start from this .keras model's weights (layers matched by name)
    # Model A size
    stem: int = 32
    widths: tuple[int, ...] = (64, 128, 256, 384)
    depths: tuple[int, ...] = (2, 2, 3, 2)
    # Model B (Lite0): blocks below this one stay frozen
    train_from_block: int = 5
    feature_cache: bool = False  # train the upper blocks on cached lower-block features
    aug_copies: int = 4  # augmented copies per face in the feature cache
    mirror_tta: bool = True  # ship the model averaged over each face and its mirror (models/serving.py)

    def __post_init__(self) -> None:
        if self.kind not in ("custom", "pretrained"):
            raise AgebatchError(f"unknown model kind {self.kind!r}")
        if self.age_head not in AGE_HEADS:
            raise AgebatchError(f"unknown age head {self.age_head!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 8 or self.patience < 1:
            raise AgebatchError("epochs, batch size, patience and image size must be positive")
        if self.faces not in FACE_MODES:
            raise AgebatchError(f"--faces must be one of {', '.join(FACE_MODES)} (got {self.faces!r})")
        if self.init is not None and not os.path.isfile(self.init):
            raise AgebatchError(f"--init model not found: {self.init}")
        if self.resume and self.overwrite:
            raise AgebatchError("--resume continues a run folder and --overwrite deletes it: pass one of them")
        SplitSpec(self.val, self.test, self.split_seed)  # validates the fractions

    @property
    def split(self) -> SplitSpec:
        return SplitSpec(self.val, self.test, self.split_seed)

    def dropout_kwargs(self) -> dict[str, Any]:
        """The builders' `dropout` argument when set (None keeps each builder's own default)."""
        return {} if self.dropout is None else {"dropout": self.dropout}

    @property
    def run_name(self) -> str:
        return self.name or ("modelA" if self.kind == "custom" else "modelB")
