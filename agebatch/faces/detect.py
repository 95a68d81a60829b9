"""Find every face in a batch of photos: both BlazeFace ranges, merged, sorted by size, filtered.

Which detector sees what, and why (measured on 2,000 UTKFace crops, README "Faces"):
- the **short-range** model (128 px input; faces within ~2 m) runs on every image, seeing
  it at 75% of its input with a black margin: faces that fill the frame (crops, tight
  portraits) then score like the selfies it was trained on (found in 98.95% -> 100% of
  crops at score 0.5);
- the **full-range** model (192 px; faces within ~5 m, people in a scene) runs on images
  whose long side exceeds `full_range_above` pixels: on a 200-px crop it finds nothing
  the short-range one misses (11% of crops at 0.5) and costs 2.6x as much.
Their detections are merged by the same weighted NMS that each uses internally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agebatch.faces.blazeface import NUM_KEYPOINTS, BlazeFace, Detections, letterbox, weighted_nms
from agebatch.faces.options import FaceOptions

#: The short-range detector sees the image at this fraction of its input (the rest is margin).
SHORT_RANGE_FILL = 0.75


class FaceFinder:
    """Batched face detection over decoded photos (RGB uint8 of any size)."""

    def __init__(self, options: FaceOptions | None = None, *, threads: int | None = None) -> None:
        self.options = options or FaceOptions()
        self.short = BlazeFace("short", threads=threads)
        self.full = BlazeFace("full", threads=threads)

    def find(self, images: Sequence[np.ndarray], scales: Sequence[float] | None = None) -> list[Detections]:
        """`Detections` per image, in each image's pixels, largest face first.

        `scales` (source pixels per image pixel) only serve `min_face`, which is in source pixels.
        """
        opts = self.options
        short = self._run(self.short, images, SHORT_RANGE_FILL)
        big = [i for i, im in enumerate(images) if max(im.shape[:2]) > opts.full_range_above]
        full = dict(zip(big, self._run(self.full, [images[i] for i in big], 1.0), strict=True))
        found = []
        for i in range(len(images)):
            points, scores = short[i]
            if i in full:
                points = np.concatenate([points, full[i][0]])
                scores = np.concatenate([scores, full[i][1]])
                points, scores = weighted_nms(points, scores, min_score=opts.min_score, iou=opts.iou)
            found.append(self._select(points, scores, 1.0 if scales is None else scales[i]))
        return found

    def _run(self, detector: BlazeFace, images: Sequence[np.ndarray], fill: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Letterbox each image into `fill` of the detector's input, detect, and map points back to image pixels."""
        if not images:
            return []
        size = detector.input_size
        inner = round(size * fill)
        offset = (size - inner) / 2
        batch = np.zeros((len(images), size, size, 3), np.uint8)
        placement = []
        view = batch[:, int(offset) : int(offset) + inner, int(offset) : int(offset) + inner]
        for k, image in enumerate(images):
            scale, pad_x, pad_y = letterbox(image, inner, view[k])
            placement.append((scale, pad_x + int(offset), pad_y + int(offset)))
        out = []
        for (points, scores), (scale, px, py) in zip(
            detector.run(batch, min_score=self.options.min_score), placement, strict=True
        ):
            mapped = (points * size - (px, py)) / scale  # detector [0, 1] -> input px -> image px
            out.append((mapped.astype(np.float32), scores))
        return out

    def _select(self, points: np.ndarray, scores: np.ndarray, scale: float) -> Detections:
        """Corner points -> x, y, w, h boxes; drop small faces; largest first; at most max_faces."""
        opts = self.options
        boxes = np.concatenate([points[:, 0], points[:, 1] - points[:, 0]], axis=1) if len(points) else np.empty((0, 4))
        keep = boxes[:, 2] * scale >= opts.min_face
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")[: opts.max_faces]
        return Detections(
            boxes[order].astype(np.float32),
            points[order, 2:].reshape(-1, NUM_KEYPOINTS, 2).astype(np.float32),
            scores[order].astype(np.float32),
            too_small=int((~keep).sum()),
        )
