"""Photos with faces at known places: bundled UTKFace crops pasted onto real public-domain photos.

`compose` scales, rotates and pastes each face crop (200x200, face centred as UTKFace aligns it)
and returns where its eyes, nose and mouth landed, taken from the face template (where the
detector finds those points in UTKFace's crops on average), so tests can check boxes and
keypoints against geometry they set themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agebatch.faces.align import default_template

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Placed:
    face: Path
    centre: tuple[float, float]  # where the crop's centre lands, canvas pixels
    size: float  # the crop's side on the canvas, pixels
    angle: float  # degrees, counter-clockwise
    keypoints: np.ndarray  # (6, 2) expected keypoints on the canvas

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[0] - self.keypoints[1]))


def compose(
    background: str, faces: list[Path], places: list[tuple[float, float, float, float]], canvas: tuple[int, int]
) -> tuple[np.ndarray, list[Placed]]:
    """RGB canvas (h, w) of `background` stretched, with faces[i] at places[i] = (cx, cy, size, angle)."""
    h, w = canvas
    bg = cv2.cvtColor(cv2.imread(str(DATA / background)), cv2.COLOR_BGR2RGB)
    out = cv2.resize(bg, (w, h), interpolation=cv2.INTER_CUBIC)
    template = np.asarray(default_template().keypoints)
    placed = []
    for face, (cx, cy, size, angle) in zip(faces, places, strict=True):
        crop = cv2.cvtColor(cv2.imread(str(face)), cv2.COLOR_BGR2RGB)
        side = crop.shape[0]
        m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, size / side)
        m[:, 2] += (cx - side / 2, cy - side / 2)
        warped = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
        out[mask] = warped[mask]
        points = np.c_[template * side, np.ones(6)] @ m.T
        placed.append(Placed(face, (cx, cy), size, angle, points))
    return out, placed


def save_jpeg(image: np.ndarray, path: Path, quality: int = 90) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path
