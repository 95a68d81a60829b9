"""Alignment: warp a detected face onto the crop geometry the model was trained on.

Our models learned from UTKFace's own aligned 200x200 crops. The `FaceTemplate` is
where BlazeFace's keypoints fall in those crops (estimated over the training split:
`agebatch.faces.template`), normalised to [0, 1]. A face found in a photo is mapped by
the least-squares similarity transform (rotation, uniform scale, translation; Umeyama
1991) that takes its eyes, nose tip and mouth onto the template at the model's input
size, so it reaches the model looking like a training crop. The ear tragions are left
out: they are guesses whenever the head turns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from agebatch.errors import AgebatchError

#: Keypoints used for the fit: both eyes, nose tip, mouth (BlazeFace order).
ALIGN_POINTS = (0, 1, 2, 3)
#: A face whose keypoints already lie this close to the template (mean distance, as a fraction of the crop's
#: width: 8 px at 128 px) is already aligned, and is resized whole instead of warped. BlazeFace's keypoints
#: scatter around the template by a median 3.7 px (at 128 px) on UTKFace's validation crops; warping them
#: "into place" adds that noise: val age MAE 4.51 (crop mode) -> 4.89 warped, 4.54 with this rule (README).
ALREADY_ALIGNED = 8 / 128
DEFAULT_TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "utkface_template.json")


@dataclass(frozen=True, slots=True)
class FaceTemplate:
    """BlazeFace's 6 keypoints in a training crop, as fractions of its width and height."""

    keypoints: tuple[tuple[float, float], ...]
    source: str = ""  # how it was estimated, for people

    def __post_init__(self) -> None:
        if len(self.keypoints) != 6 or any(len(p) != 2 for p in self.keypoints):
            raise AgebatchError("a face template has 6 (x, y) keypoints")

    def points(self, size: tuple[int, int]) -> np.ndarray:
        """The template in pixels of a (height, width) crop, (6, 2) float64."""
        h, w = size
        return np.asarray(self.keypoints, np.float64) * (w, h)

    def to_dict(self) -> dict[str, Any]:
        return {"keypoints": [list(p) for p in self.keypoints], "source": self.source}

    @classmethod
    def from_dict(cls, d: Any, where: str = "face template") -> FaceTemplate:
        try:
            return cls(tuple((float(x), float(y)) for x, y in d["keypoints"]), str(d.get("source", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise AgebatchError(f"{where} is malformed: {e}") from e


def default_template() -> FaceTemplate:
    """The template estimated from UTKFace's training split (shipped with the package)."""
    with open(DEFAULT_TEMPLATE_FILE, encoding="utf-8") as f:
        return FaceTemplate.from_dict(json.load(f), where=DEFAULT_TEMPLATE_FILE)


def template_for(card_template: dict[str, Any] | None) -> FaceTemplate:
    """A model card's `face_template`, or the shipped UTKFace one when the card has none."""
    return (
        default_template() if card_template is None else FaceTemplate.from_dict(card_template, where="model card face_template")
    )


def already_aligned(shape: tuple[int, ...], keypoints: np.ndarray, template: FaceTemplate) -> bool:
    """True when the face in an image of `shape` (H, W, ...) already sits where the template puts it."""
    h, w = shape[:2]
    idx = list(ALIGN_POINTS)
    rel = keypoints[idx] / (w, h)
    return float(np.linalg.norm(rel - np.asarray(template.keypoints)[idx], axis=1).mean()) < ALREADY_ALIGNED


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (no reflection) that maps points `src` onto `dst` with least squared error."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("keypoints coincide")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


#: How `align` fills crop pixels that fall outside the photo (a face cut by the frame): "constant" paints them
#: black, as UTKFace's own crops of faces near an edge are; "replicate" repeats the photo's edge pixels.
#: (`FaceOptions.border` chooses; README "Faces" has the measurement behind its default.)
BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


def align(
    image: np.ndarray,
    keypoints: np.ndarray,
    template: FaceTemplate,
    size: tuple[int, int],
    out: np.ndarray,
    border: str,
) -> float:
    """Warp the face with `keypoints` (6, 2, image pixels) from RGB `image` into `out` (H, W, 3) at `size`.

    Returns the share of the crop that lies inside the photo (the `face_visible` column):
    1.0 for a face well inside, less for one cut by the frame, whose missing part is
    filled as `border` says.
    """
    idx = list(ALIGN_POINTS)
    m = similarity(keypoints[idx], template.points(size)[idx])
    h, w = size
    visible = visible_share(m, size, image.shape)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < SHRINK_LIMIT:
        image, m = _prefilter(image, m, scale, size)
    cv2.warpAffine(image, m, (w, h), dst=out, flags=cv2.INTER_LINEAR, borderMode=BORDERS[border], borderValue=(0, 0, 0))
    return visible


def visible_share(m: np.ndarray, size: tuple[int, int], shape: tuple[int, ...]) -> float:
    """Share of the (H, W) crop's pixel centres that the warp `m` (photo -> crop) reads from inside the photo."""
    h, w = size
    inv = cv2.invertAffineTransform(m)
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(h * w)])
    x, y = inv @ pts
    return float(((x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])).mean())


#: A warp that shrinks by more than this first area-averages the face's region: bilinear sampling
#: alone would alias (skip pixels) on large faces.
SHRINK_LIMIT = 0.6
#: ...down to about the shrink of a 200-px UTKFace crop to 128 px, so fine detail looks as in training.
TRAINING_SHRINK = 0.64


def _prefilter(image: np.ndarray, m: np.ndarray, scale: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Area-resize the region the warp reads, and return it with the warp adjusted to it."""
    h, w = size
    inv = cv2.invertAffineTransform(m)
    corners = inv @ np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
    x0, y0 = (max(0, int(np.floor(v))) for v in corners.min(axis=1))
    x1 = min(image.shape[1], int(np.ceil(corners[0].max())) + 1)
    y1 = min(image.shape[0], int(np.ceil(corners[1].max())) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, m  # the face lies (almost) outside the photo: nothing to filter
    f = scale / TRAINING_SHRINK
    small = cv2.resize(
        image[y0:y1, x0:x1], (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))), interpolation=cv2.INTER_AREA
    )
    # A point p of `small` is p / f + (x0, y0) in `image`.
    to_image = np.array([[1 / f, 0, x0], [0, 1 / f, y0], [0, 0, 1]], np.float64)
    return small, m @ to_image
