"""`TrainConfig`: every option of a training run, frozen and validated once.

Stored whole in the model card (``training.config``), so a card says how to rebuild its model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agebatch.errors import AgebatchError
from agebatch.faces.options import DEFAULT_FACES, FACE_MODES
from agebatch.io.sources import default_data, require_data
from agebatch.io.splits import SplitSpec
from agebatch.models.custom import TRUNKS
from agebatch.models.heads import AGE_HEADS, AgeHead


def _check_p(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise AgebatchError(f"augmentation probability {name} must lie in [0, 1] (got {p})")


def _check_range(name: str, lo: float, hi: float, low: float, high: float) -> None:
    if not low <= lo <= hi <= high:
        raise AgebatchError(f"augmentation range {name} must satisfy {low} <= min <= max <= {high} (got {lo}, {hi})")


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Per-face image-quality changes; each knob is a probability and a range. `p=0` everywhere turns it off.

    The sharpen and soften probabilities are exclusive per face (one draw decides), so a face
    is made sharper, softer or left as it is, never both.
    """

    sharpen_p: float = 0.4  # unsharp mask: a crop as sharp as a press photo
    # The sharpened crop's variance of the Laplacian, drawn log-uniform; the mask's amount is solved per crop
    # (quality.sharpen_to), because a fixed amount range leaves the softest crops far below press-photo
    # sharpness (~500): for sharpen_to(500), UTKFace crops need amounts of 0.5-5.2 (10th-90th percentile).
    sharpen_to: tuple[float, float] = (150.0, 1500.0)
    sharpen_sigma: tuple[float, float] = (0.7, 1.6)  # px, of the unsharp mask's blur
    resize_p: float = 0.2  # lower effective resolution: down to `resize_px`, back up
    resize_px: tuple[int, int] = (24, 96)  # side of the down-sized copy (of a 128-px crop)
    blur_p: float = 0.1  # Gaussian blur instead of a down/up resize
    blur_sigma: tuple[float, float] = (0.5, 1.8)  # px
    jpeg_p: float = 0.3  # JPEG re-encode
    jpeg_quality: tuple[int, int] = (20, 95)
    noise_p: float = 0.15  # Gaussian sensor noise
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # in 0-255 units
    gamma_p: float = 0.3  # x ** gamma on [0, 1]
    gamma: tuple[float, float] = (0.7, 1.4)
    temperature_p: float = 0.3  # colour temperature: red and blue gains in opposite directions
    temperature: float = 0.08  # gain in [1 - t, 1 + t]

    def __post_init__(self) -> None:
        for name in ("sharpen_p", "resize_p", "blur_p", "jpeg_p", "noise_p", "gamma_p", "temperature_p"):
            _check_p(name, getattr(self, name))
        if self.sharpen_p + self.resize_p + self.blur_p > 1.0:
            raise AgebatchError("sharpen_p + resize_p + blur_p must not exceed 1 (one sharpness change per face)")
        _check_range("sharpen_to", *self.sharpen_to, 1.0, 1e5)
        _check_range("sharpen_sigma", *self.sharpen_sigma, 0.1, 10.0)
        _check_range("resize_px", *self.resize_px, 4, 4096)
        _check_range("blur_sigma", *self.blur_sigma, 0.1, 10.0)
        _check_range("jpeg_quality", *self.jpeg_quality, 1, 100)
        _check_range("noise_sigma", *self.noise_sigma, 0.0, 64.0)
        _check_range("gamma", *self.gamma, 0.1, 10.0)
        _check_range("temperature", self.temperature, self.temperature, 0.0, 0.5)

    @classmethod
    def off(cls) -> QualityConfig:
        return cls(sharpen_p=0, resize_p=0, blur_p=0, jpeg_p=0, noise_p=0, gamma_p=0, temperature_p=0)

    @property
    def enabled(self) -> bool:
        return any(
            getattr(self, n) > 0 for n in ("sharpen_p", "resize_p", "blur_p", "jpeg_p", "noise_p", "gamma_p", "temperature_p")
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    flip: bool = True
    rotate_deg: float = 10.0
    shift: float = 0.06  # fraction of the side
    zoom: float = 0.10  # scale in [1 - zoom, 1 + zoom]
    brightness: float = 0.20  # additive, fraction of 255
    contrast: float = 0.20  # multiplicative around the mean
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if not (0 <= self.rotate_deg <= 90 and 0 <= self.shift < 0.5 and 0 <= self.zoom < 1):
            raise AgebatchError("augmentation: rotate_deg in [0, 90], shift in [0, 0.5), zoom in [0, 1)")
        if not (0 <= self.brightness <= 1 and 0 <= self.contrast < 1):
            raise AgebatchError("augmentation: brightness in [0, 1], contrast in [0, 1)")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    kind: Literal["custom", "pretrained"]
    data: str | None = field(default_factory=default_data)  # None: $AGEBATCH_DATA unset and no --data given
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
    faces: str = DEFAULT_FACES  # "detect": train on inference's detect + align crops; "crop": each file resized whole
    crop_cache: str | None = None  # folder of the aligned-crop cache (None: $AGEBATCH_CACHE or ~/.cache/agebatch; "": off)
    init: str | None = None  # start from this .keras model's weights (layers matched by name)
    teacher: str | None = None  # a trained .keras model whose soft outputs join the train targets (train/teacher.py)
    distill: float = 0.5  # with a teacher: its share of the age-distribution and gender targets (the label's: 1 - distill)
    # Mixup (Zhang et al. 2018): each training face blended with another of its batch, weight drawn from
    # Beta(mixup, mixup), and every target blended alike. 0: off. Added against Model B's over-fitting (train MAE
    # ~2.9 against ~4.5 on val), which head dropout and weight decay did not reach; it closes that gap but was not
    # better on val at 10-26 epochs (docs/models.md, "Mixup"), hence off by default.
    mixup: float = 0.0
    # Model A size (defaults: models/custom.TRUNKS["default"])
    stem: int = TRUNKS["default"][0]
    widths: tuple[int, ...] = TRUNKS["default"][1]
    depths: tuple[int, ...] = TRUNKS["default"][2]
    # Model B (Lite0): blocks below this one stay frozen
    train_from_block: int = 5
    feature_cache: bool = False  # train the upper blocks on cached lower-block features
    aug_copies: int = 4  # augmented copies per face in the feature cache
    mirror_tta: bool = True  # ship the model averaged over each face and its mirror (models/serving.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # train split only; its quality stage: train/augment.py

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
        if self.teacher is not None:
            if not os.path.isfile(self.teacher):
                raise AgebatchError(f"--teacher model not found: {self.teacher}")
            if self.age_head == "regression":
                raise AgebatchError("--teacher passes on an age distribution: use --age-head bins or coral")
        if not 0.0 <= self.mixup <= 10.0:
            raise AgebatchError(f"--mixup is a Beta distribution's alpha in [0, 10], 0 for off (got {self.mixup})")
        if self.mixup > 0 and self.feature_cache:
            raise AgebatchError("--mixup blends training images; --feature-cache trains on cached features: pass one")
        if not 0.0 <= self.distill <= 1.0:
            raise AgebatchError(f"--distill must lie in [0, 1] (got {self.distill})")
        if self.resume and self.overwrite:
            raise AgebatchError("--resume continues a run and --overwrite starts it over: pass one of them")
        if not (0 < self.lr < 1 and 0 <= self.weight_decay < 1 and self.age_weight >= 0 and self.gender_weight >= 0):
            raise AgebatchError("--lr must lie in (0, 1), --weight-decay in [0, 1), loss weights must be 0 or more")
        SplitSpec(self.val, self.test, self.split_seed)  # validates the fractions

    @property
    def data_path(self) -> str:
        """`data`, or exit 2 saying how to give it (a config may be built without data: benches, tests)."""
        return require_data(self.data)

    @property
    def split(self) -> SplitSpec:
        return SplitSpec(self.val, self.test, self.split_seed)

    def dropout_kwargs(self) -> dict[str, Any]:
        """The builders' `dropout` argument when set (None keeps each builder's own default)."""
        return {} if self.dropout is None else {"dropout": self.dropout}

    @property
    def run_name(self) -> str:
        return self.name or ("modelA" if self.kind == "custom" else "modelB")
