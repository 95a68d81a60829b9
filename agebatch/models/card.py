"""The model card: the one place that says how a model is fed and what it returns.

Every model agebatch builds takes raw RGB uint8 NHWC pixels and does its own
preprocessing as the first layers of its graph, so the exported ONNX graph and any
TensorRT engine built from it carry it too and no backend has to repeat it. The card
records that preprocessing for people, and the input size and resize rule that the
decoder must use. It travels beside every artifact: ``model.keras`` ->
``model.card.json``; ``x.onnx`` / ``x.engine`` -> ``x.onnx.json`` / ``x.engine.json``
(the sidecar, which embeds the card).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agebatch.errors import AgebatchError
from agebatch.io.jsonio import read_json, write_json_atomic

if TYPE_CHECKING:
    from agebatch.io.decode import DecodeOptions

CARD_FORMAT = "agebatch.model_card"
CARD_VERSION = 1
#: Output tensor names every agebatch model and export uses.
OUTPUT_AGE = "age"
OUTPUT_GENDER = "gender_prob"
#: Every output an agebatch graph may have, in `Predictions` order: the first two always, the
#: rest when the model has an age distribution (`agebatch.models.serving`).
OUTPUT_NAMES = (OUTPUT_AGE, OUTPUT_GENDER, "age_std", "age_p10", "age_p90", "age_group")
INPUT_NAME = "image"


def model_outputs(distribution: bool) -> dict[str, str]:
    """The card's ``outputs``: what each graph output means."""
    out = {OUTPUT_AGE: "age in years, float32 (N, 1)", OUTPUT_GENDER: "P(female), float32 (N, 1)"}
    if distribution:
        out.update(
            age_std="spread (std) of the calibrated age distribution, years, float32 (N, 1)",
            age_p10="10th percentile of the calibrated age distribution, years, float32 (N, 1)",
            age_p90="90th percentile of the calibrated age distribution, years, float32 (N, 1)",
            age_group="most probable Adience age group, index into agebatch.ages.AGE_GROUPS, float32 (N, 1)",
        )
    return out


@dataclass(slots=True)
class ModelCard:
    name: str
    architecture: str
    input_size: tuple[int, int]  # (height, width)
    preprocessing: str  # human-readable; it runs inside the graph
    interpolation: str = "linear"
    fit: str = "stretch"
    outputs: dict[str, str] = field(default_factory=lambda: model_outputs(False))
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: Where BlazeFace's keypoints sit in this model's training crops (`agebatch.faces.align.FaceTemplate`
    #: as a dict); None: the UTKFace template shipped with agebatch.
    face_template: dict[str, Any] | None = None
    #: How the age interval was calibrated (`agebatch.models.calibration.Calibration` as a dict);
    #: None without an age distribution.
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return {"format": CARD_FORMAT, "version": CARD_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Any, where: str = "model card") -> ModelCard:
        if not isinstance(d, dict) or d.get("format") != CARD_FORMAT:
            raise AgebatchError(f"{where} is not an agebatch model card")
        if d.get("version") != CARD_VERSION:
            raise AgebatchError(f"{where} has card version {d.get('version')}; this agebatch reads version {CARD_VERSION}")
        try:
            size = tuple(int(v) for v in d["input_size"])
            if len(size) != 2 or min(size) < 1:
                raise ValueError("input_size must be [height, width]")
            return cls(
                name=str(d["name"]),
                architecture=str(d["architecture"]),
                input_size=(size[0], size[1]),
                preprocessing=str(d["preprocessing"]),
                interpolation=str(d.get("interpolation", "linear")),
                fit=str(d.get("fit", "stretch")),
                outputs=dict(d.get("outputs", {})),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                versions=dict(d.get("versions", {})),
                face_template=dict(d["face_template"]) if d.get("face_template") else None,
                calibration=dict(d["calibration"]) if d.get("calibration") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise AgebatchError(f"{where} is malformed: {e}") from e

    def decode_options(self) -> DecodeOptions:
        """The decode settings this model was trained with."""
        from agebatch.io.decode import DecodeOptions  # lazy: OpenCV is not needed to read a card

        return DecodeOptions(size=self.input_size, interpolation=self.interpolation, fit=self.fit)  # type: ignore[arg-type]  # validated there

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(path, self.to_dict())


def card_path(model_path: str | os.PathLike[str]) -> str:
    """``models/modelA.keras`` -> ``models/modelA.card.json``."""
    root, _ = os.path.splitext(os.fspath(model_path))
    return root + ".card.json"


def load_card(model_path: str | os.PathLike[str]) -> ModelCard:
    path = card_path(model_path)
    data = read_json(path, missing=f"model card not found: {path} (every model needs its card beside it)")
    return ModelCard.from_dict(data, where=path)
