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

import cv2
import numpy as np

from agebatch.faces.blazeface import NUM_KEYPOINTS, BlazeFace, Detections, corner_intersection, letterbox, weighted_nms
from agebatch.faces.options import FaceOptions

#: The short-range detector sees the image at this fraction of its input (the rest is margin).
SHORT_RANGE_FILL = 0.75

#: Tiled pass (`FaceOptions.tiles`): photos whose long side (work pixels) is at least TILE_ABOVE are also searched
#: in tiles of TILE_SIDE px overlapping by TILE_OVERLAP, at most TILES_PER_SIDE a side (a 1,024 x 768 photo: 10 x 7).
#: The overlap is at least TILE_LARGEST, so every face a tile is responsible for lies whole inside some tile.
#: Measured (README "Faces"; `agebatch bench infer --faces detect` composes such photos): on 12 composed 12 MP photos
#: with 79 faces whose crops are 3-8% of the long side, 2 found without tiles; with 256-px tiles at 25% overlap 35,
#: 192 px at 25% 55, 192 px at 50% 64 (the default); crowds of 36 and 64 faces: 21 and 4 found without tiles,
#: 36 and 64 with. Cost: ~65 -> ~213 ms per photo (one thread, decode included), which `--no-tiles` saves on
#: archives of portraits.
TILE_ABOVE = 640
TILE_SIDE = 192
TILE_OVERLAP = 0.5
TILES_PER_SIDE = 10
#: A tile's detection needs this score (or --min-score, if higher): at 0.5 a 4000x3000 copy of the rocket photo gave
#: one false face, at 0.6 none, and no pasted face was lost.
TILE_MIN_SCORE = 0.6
#: A tile's detection within this share of the tile side from an inner edge is cut by the tile: dropped.
TILE_EDGE = 0.02
#: A tile's detection wider than this share of the tile is left to the whole-image passes.
TILE_LARGEST = 0.5


#: Edge pass (`FaceOptions.edges`): photos over `full_range_above` px are reflected out by this share of their long
#: side on every edge; a detection there counts when it crosses the border with at least EDGE_INSIDE of its box
#: inside the photo. Measured (24 sample faces pasted across each edge of a 1800 x 1200 photo, 6 per edge): found
#: with 30% / 45% / 60% of the crop inside, 0 / 4 / 11 of 24 without the pass, 0 / 22 / 23 with it (2 extra rows in
#: those 72 photos; none on the people-free photos; 142 -> 138-153 ms per photo); at score 0.6 instead of --min-score
#: 0 / 20 / 21. Padding by replicated edges instead of a reflection found 0 / 4 / 14 in a probe, black 1 / 9 / 18.
EDGE_PAD = 0.25
EDGE_INSIDE = 0.3
#: The edge pass also searches each corner of the photo, this share of its width and height, at 1 / EDGE_WINDOW the
#: zoom (short-range model only). Measured (a probe kept outside the repository; tests/test_groups.py pins the
#: corner case: one face of 180-220 px cut by one edge or by the
#: bottom-right corner of a 600 x 604 photo beside three whole faces, 8 photos per case; found with 50 / 60 / 70% of
#: the crop inside, per axis): bottom-right corner 0 / 0 / 3 -> 0 / 1 / 8, left edge 8 / 8 / 7 -> 8 / 8 / 8, right
#: edge 8 / 7 / 7 -> 8 / 7 / 8, bottom edge 3 / 5 / 7 either way; no extra rows. On the 1800 x 1200 probe above
#: (45% / 60% inside) 22 / 23 -> 24 / 23 of 24. Windows of half the side found as many but gave 34 extra rows;
#: 0.7 found more bottom-cut faces (5 / 7 / 7) and fewer in the corner (0 / 0 / 7). A fifth window of the same size
#: is centred on the bottom edge, where a face cut at the nose or chin straddles the two bottom corners (both cut it):
#: 180-215 px faces cut by the bottom edge of such a photo, 8 per case, centred or left of centre, 40 / 50 / 60 / 70%
#: of the crop inside: centred 5 / 7 / 7 / 8 -> 7 / 7 / 8 / 8, left 7 / 8 / 8 / 8 either way; no extra rows, the same
#: rows on people-free photos and close-up portraits, 59.9 -> 61.5 ms per photo (a probe beside a training run).
#: The two bottom corners are searched a second time reflected below only: near a side, a face cut by the bottom
#: mirrors in both axes into a four-eyed shape the detectors box badly (boxes 1.5x the face, centred on the corner).
#: 170-245 px faces by a bottom corner, 16 per case and side (right / left), share inside across x down: 80 x 50%
#: 5 -> 12 / 4 -> 9, 90 x 50% 10 -> 14 / 9 -> 11, 90 x 60% 14 -> 14 / 12 -> 15, 70 x 70% unchanged, 60 x 60% 6 -> 7 /
#: 3 -> 3 (and 2 new boxes off a cut face); no other extra rows once edge faces are also checked against each other
#: (`_add_new`); same rows on people-free photos and portraits; composed group selfies (docs/faces.md) with all seven
#: faces 9 -> 11 of 16; `FaceFinder.find` 1.09-1.13x.
EDGE_WINDOW = 0.6
#: An edge-pass detection overlapping a face of the other passes by more than this share of the smaller box is dropped.
EDGE_TOUCH = 0.1


def _areas(points: np.ndarray) -> np.ndarray:
    """Box areas of (n, 8, 2) detector points (rows 0 and 1 are the corners)."""
    return np.prod(points[:, 1] - points[:, 0], axis=1)


def _cut_by_view(points: np.ndarray, view: tuple[int, int, int, int], size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """Which (n, 8, 2) detector points (image pixels) reach within `margin` of an edge of `view` (x0, y0, x1, y1)
    that is not the image's own edge (`size` = (w, h)): faces the view cuts, which another view holds whole."""
    (x0, y0, x1, y1), (w, h) = view, size
    lo, hi = points[:, 0], points[:, 1]
    cut = ((lo[:, 0] < x0 + margin) & (x0 > 0)) | ((lo[:, 1] < y0 + margin) & (y0 > 0))
    return cut | ((hi[:, 0] > x1 - margin) & (x1 < w)) | ((hi[:, 1] > y1 - margin) & (y1 < h))


def _starts(length: int) -> list[int]:
    """Tile origins along one side: evenly spread, overlapping by at least TILE_OVERLAP, covering it all."""
    if length <= TILE_SIDE:
        return [0]
    n = min(TILES_PER_SIDE, int(np.ceil((length - TILE_SIDE) / (TILE_SIDE * (1 - TILE_OVERLAP)))) + 1)
    return [round(k * (length - TILE_SIDE) / (n - 1)) for k in range(n)]


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
        tiled = self._tiles(images) if opts.tiles else {}
        edges = self._edges(images) if opts.edges else {}
        found = []
        for i in range(len(images)):
            points, scores = short[i]
            if i in full or i in tiled:
                extra = [full[i]] if i in full else []
                extra += [tiled[i]] if i in tiled else []
                points = np.concatenate([points, *(p for p, _ in extra)])
                scores = np.concatenate([scores, *(s for _, s in extra)])
                points, scores = weighted_nms(points, scores, min_score=opts.min_score, iou=opts.iou)
            if i in edges:
                points, scores = self._add_new(points, scores, *edges[i])
            found.append(self._select(points, scores, 1.0 if scales is None else scales[i]))
        return found

    def _add_new(
        self, points: np.ndarray, scores: np.ndarray, more: np.ndarray, more_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`points` plus those of `more` that touch none of them: the edge pass adds faces, never moves one.

        "Touch" is an overlap of more than EDGE_TOUCH of the smaller box: a face next to the
        frame mirrored onto itself gives a box that half covers it, a false face (seen on a
        composed group photo, where it became face 0) that IoU alone would let through. The
        edge faces are added best first and each is checked against those added before it,
        since views that mirror a cut face differently can box it beside itself, apart by more
        than weighted NMS merges (seen with the bottom corners' second views).
        """
        more, more_scores = weighted_nms(more, more_scores, min_score=self.options.min_score, iou=self.options.iou)
        for k in range(len(more)):  # best first
            box = more[k : k + 1]
            touch = corner_intersection(box[0, :2], points[:, :2]) > EDGE_TOUCH * np.minimum(_areas(box), _areas(points))
            if touch.any():
                continue
            points, scores = np.concatenate([points, box]), np.concatenate([scores, more_scores[k : k + 1]])
        return points, scores

    def _edges(self, images: Sequence[np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The edge pass: faces cut by the frame, found in the photo mirrored out past its edges, in image pixels.

        BlazeFace was trained on whole faces and misses most faces the frame cuts (11 of
        24 with 60% of the face inside, 4 of 24 at 45%). Reflecting the photo out by
        `EDGE_PAD` of its long side completes such a face with its own mirror image, and
        the detectors find it (23 and 22 of 24). The photo's four corners, `EDGE_WINDOW`
        of each side, are searched the same way at 1 / EDGE_WINDOW the zoom: a face cut by
        the bottom edge or by two edges (a selfie's taker) mirrors into a less face-like
        shape, and the detectors need it larger to find it; so is the middle of the bottom
        edge, where a face cut at the nose straddles the two bottom corners; and the bottom
        corners once more mirrored below only, since a face cut by the bottom next to a side
        mirrors in both axes into a shape the detectors box badly. Only detections
        that cross the photo's border with at least `EDGE_INSIDE` of their box inside are kept, and in a
        corner only those the corner does not cut itself (the whole-photo view or another
        corner holds that face whole); `_add_new` keeps none that overlaps a face the
        other passes found.
        """
        views: list[tuple[int, int, int, int, int]] = []  # (image, x0, y0, x1, y1)
        pads: list[tuple[int, int, int, int]] = []  # reflected pixels (top, bottom, left, right) of each view
        whole: list[int] = []  # the views that are a whole photo
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            if max(h, w) <= self.options.full_range_above:
                continue
            whole.append(len(views))
            views.append((i, 0, 0, w, h))
            pads.append((round(EDGE_PAD * max(w, h)),) * 4)
            ww, wh = round(EDGE_WINDOW * w), round(EDGE_WINDOW * h)
            p = round(EDGE_PAD * max(ww, wh))
            origins = [(x0, y0) for y0 in (0, h - wh) for x0 in (0, w - ww)] + [((w - ww) // 2, h - wh)]  # + bottom middle
            views += [(i, x0, y0, x0 + ww, y0 + wh) for x0, y0 in origins]
            pads += [(p, p, p, p)] * len(origins)
            views += [(i, 0, h - wh, ww, h), (i, w - ww, h - wh, w, h)]  # the bottom corners, not mirrored at the side
            pads += [(p, p, 0, p), (p, p, p, 0)]
        if not views:
            return {}
        padded = [
            cv2.copyMakeBorder(images[i][y0:y1, x0:x1], *pad, cv2.BORDER_REFLECT)
            for (i, x0, y0, x1, y1), pad in zip(views, pads, strict=True)
        ]
        short = self._run(self.short, padded, SHORT_RANGE_FILL)
        # The full-range model on the whole-photo views only: in a corner a cut face is large, the short-range
        # model's domain (running it there too found 1 more of 24 cut faces in the EDGE_WINDOW probes, at 2.6x the cost).
        full = dict(zip(whole, self._run(self.full, [padded[k] for k in whole], 1.0), strict=True))
        none = (np.empty((0, 2 + NUM_KEYPOINTS, 2), np.float32), np.empty(0, np.float32))
        out: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for k, ((i, x0, y0, x1, y1), (top, _, left, _), (sp, ss)) in enumerate(zip(views, pads, short, strict=True)):
            h, w = images[i].shape[:2]
            fp, fs = full.get(k, none)
            points = np.concatenate([sp, fp]) + np.array([x0 - left, y0 - top], np.float32)
            scores = np.concatenate([ss, fs])
            lo, hi = points[:, 0], points[:, 1]
            crosses = (lo[:, 0] < 0) | (lo[:, 1] < 0) | (hi[:, 0] > w) | (hi[:, 1] > h)
            cut = _cut_by_view(points, (x0, y0, x1, y1), (w, h))
            inner = corner_intersection(np.array([[0, 0], [w, h]], np.float32), points[:, :2])
            keep = crosses & ~cut & (inner >= EDGE_INSIDE * _areas(points))  # an inverted box fails weighted_nms's check later
            pts, sc = out.setdefault(i, ([], []))
            pts.append(points[keep])
            sc.append(scores[keep])
        return {i: (np.concatenate(p), np.concatenate(s)) for i, (p, s) in out.items()}

    def _tiles(self, images: Sequence[np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The tiled pass: small faces of large photos, found in overlapping tiles, in image pixels.

        Whole-image passes miss faces under ~8% of the long side (measured: 0/20 at 3%,
        16/20 at 8%), at any resolution, because the detector sees the photo shrunk to its
        input. Tiles of `TILE_SIDE` px (at most `TILES_PER_SIDE` a side) show such a face
        at 5x the size. A tile's detection that touches an inner tile edge (a face cut by
        the tile) or fills much of the tile (the whole-image pass's job) is dropped, so
        weighted NMS never averages a true box with a partial one.
        """
        jobs: list[tuple[int, int, int, int, int]] = []  # (image, x0, y0, x1, y1)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            if max(h, w) < TILE_ABOVE:
                continue
            for y0 in _starts(h):
                for x0 in _starts(w):
                    jobs.append((i, x0, y0, min(x0 + TILE_SIDE, w), min(y0 + TILE_SIDE, h)))
        if not jobs:
            return {}
        found = self._run(self.short, [images[i][y0:y1, x0:x1] for i, x0, y0, x1, y1 in jobs], SHORT_RANGE_FILL)
        out: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for (i, x0, y0, x1, y1), (points, scores) in zip(jobs, found, strict=True):
            h, w = images[i].shape[:2]
            points = points + np.array([x0, y0], np.float32)  # tile -> image pixels
            cut = _cut_by_view(points, (x0, y0, x1, y1), (w, h), margin=TILE_EDGE * TILE_SIDE)
            large = (points[:, 1, 0] - points[:, 0, 0]) > TILE_LARGEST * TILE_SIDE
            keep = ~(cut | large) & (scores >= max(self.options.min_score, TILE_MIN_SCORE))
            pts, sc = out.setdefault(i, ([], []))
            pts.append(points[keep])
            sc.append(scores[keep])
        return {i: (np.concatenate(p), np.concatenate(s)) for i, (p, s) in out.items()}

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
        """Corner points -> x, y, w, h boxes; drop small faces and boxes spanning others; face 0 first; at most max_faces.

        Faces are ranked by area x score, so a large but doubtful box does not become
        face 0, the face an image's labels are scored against.
        """
        opts = self.options
        boxes = np.concatenate([points[:, 0], points[:, 1] - points[:, 0]], axis=1) if len(points) else np.empty((0, 4))
        keep = boxes[:, 2] * scale >= opts.min_face
        too_small = int((~keep).sum())
        keep &= ~spans_others(boxes)
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = np.argsort(-(boxes[:, 2] * boxes[:, 3] * scores), kind="stable")[: opts.max_faces]
        return Detections(
            boxes[order].astype(np.float32),
            points[order, 2:].reshape(-1, NUM_KEYPOINTS, 2).astype(np.float32),
            scores[order].astype(np.float32),
            too_small=too_small,
        )


def spans_others(boxes: np.ndarray) -> np.ndarray:
    """Per (x, y, w, h) box: whether it holds the centres of two or more smaller detections.

    Measured on a composed photo: a box spanning two real faces (its crop half of each)
    was the largest detection and became face 0. Real faces do not hold two other faces.
    """
    n = len(boxes)
    if n < 3:
        return np.zeros(n, bool)
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    area = boxes[:, 2] * boxes[:, 3]
    x0, y0 = boxes[:, 0, None], boxes[:, 1, None]
    inside = (cx >= x0) & (cx <= x0 + boxes[:, 2, None]) & (cy >= y0) & (cy <= y0 + boxes[:, 3, None])
    smaller = area[None, :] < 0.5 * area[:, None]
    return (inside & smaller).sum(axis=1) >= 2
