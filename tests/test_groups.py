"""Every face of a group photo: keypoints and visibility columns, boxes the user already has, false-face suppression,
small faces found by the tiled pass, crowds. Composed photos (`tests/photos.py`) give the geometry to check against."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from photos import DATA, compose, save_jpeg

from agebatch.faces.cut import TEMPLATE_BOX
from agebatch.faces.detect import FaceFinder, spans_others
from agebatch.faces.options import FaceOptions
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer

# Four faces on a 2700x1800 photo: (centre x, centre y, crop side, degrees), largest first.
PLACES = [(500, 700, 700, 0), (1500, 500, 500, 8), (2300, 900, 360, -10), (1400, 1300, 260, 5)]
CANVAS = (1800, 2700)


@pytest.fixture(scope="module")
def group(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    faces = sorted(samples_dir.glob("*.jpg"))
    image, placed = compose("rocket.jpg", [faces[3], faces[10], faces[20], faces[30]], PLACES, CANVAS)
    return save_jpeg(image, tmp_path_factory.mktemp("group") / "group.jpg"), placed


def _given_box(place: tuple[float, float, float, float]) -> list[float]:
    """The box BlazeFace would draw for a pasted crop (`TEMPLATE_BOX` of the crop's square)."""
    cx, cy, side, _ = place
    tx, ty, tw, th = TEMPLATE_BOX
    return [cx - side / 2 + tx * side, cy - side / 2 + ty * side, tw * side, th * side]


def test_keypoint_and_visibility_columns_follow_the_faces(tmp_path: Path, group, onnx_model: str) -> None:
    path, placed = group
    out = tmp_path / "p.parquet"
    run_infer(InferJob(str(path), str(out), model=onnx_model))
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["face"] for r in rows) == [0, 1, 2, 3]
    for p in placed:  # each pasted face's row: the one whose box centre is nearest where it was put
        r = min(
            rows, key=lambda r: np.hypot(r["face_x"] + r["face_w"] / 2 - p.centre[0], r["face_y"] + r["face_h"] / 2 - p.centre[1])
        )
        kp = np.asarray(r["face_keypoints"]).reshape(4, 2)
        error = np.linalg.norm(kp - p.keypoints[:4], axis=1).mean()
        assert error < 0.25 * p.eye_distance, f"keypoints in source pixels ({error:.1f} px off)"
        assert r["face_visible"] == 1.0, "faces well inside the photo"


def test_boxes_from_the_manifest_are_predicted_without_detecting(tmp_path: Path, group, onnx_model: str) -> None:
    path, placed = group
    detected = tmp_path / "detected.parquet"
    run_infer(InferJob(str(path), str(detected), model=onnx_model))
    ages = [r["age"] for r in pq.read_table(detected).to_pylist()]
    boxes = [_given_box(p) for p in PLACES]
    keypoints = placed[1].keypoints[:4].reshape(-1).tolist()
    rows = [(str(path), *b, None) for b in boxes]  # one row per box, the same photo four times
    rows += [(str(path), *boxes[1], keypoints)]  # a box with its keypoints
    rows += [(str(path), 10.0, 10.0, 0.0, 50.0, None), (str(path), 5000.0, 100.0, 80.0, 80.0, None)]  # bad boxes
    rows += [(str(path), None, None, None, None, None)]  # no box: detected as usual
    cols = list(zip(*rows, strict=True))
    manifest = tmp_path / "boxes.parquet"
    pq.write_table(
        pa.table(
            {
                "path": pa.array(cols[0], pa.string()),
                "face_x": pa.array(cols[1], pa.float64()),
                "face_y": pa.array(cols[2], pa.float64()),
                "face_w": pa.array(cols[3], pa.float64()),
                "face_h": pa.array(cols[4], pa.float64()),
                "face_keypoints": pa.array(cols[5], pa.list_(pa.float64())),
                "id": pa.array(range(len(rows))),
            }
        ),
        manifest,
    )
    out = tmp_path / "given.parquet"
    result = run_infer(InferJob(str(manifest), str(out), model=onnx_model))
    got = pq.read_table(out).to_pylist()
    assert [r["input"] for r in got] == [0, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7], "one row per given box; the last row detects 4"
    assert [r["id"] for r in got] == [r["input"] for r in got], "manifest columns pass through"
    assert [r["status"] for r in got] == ["ok"] * 5 + ["bad_box"] * 2 + ["ok"] * 4 and result.errors == 2
    assert "positive width" in got[5]["error"] and re.search(r"outside the 2700x180[01] image", got[6]["error"])
    for r, box, age in zip(got[:4], boxes, ages, strict=True):
        assert r["face_score"] is None and r["face"] == 0, "no detector ran"
        assert np.allclose([r["face_x"], r["face_y"], r["face_w"], r["face_h"]], box, atol=0.01), "the given box, echoed"
        assert abs(r["age"] - age) < 3.0, "a BlazeFace-like box gives about the crop a detection gives"
    kp = np.asarray(got[4]["face_keypoints"]).reshape(4, 2)
    assert np.allclose(kp, placed[1].keypoints[:4], atol=0.01) and abs(got[4]["age"] - ages[1]) < 3.0
    assert [r["face"] for r in got[7:]] == [0, 1, 2, 3] and all(r["face_score"] is not None for r in got[7:])


def test_a_box_spanning_two_faces_is_not_a_face() -> None:
    boxes = np.array(
        [
            [100, 100, 400, 300],  # spans the next two
            [120, 150, 150, 150],
            [330, 150, 150, 150],
            [700, 100, 150, 150],
            [900, 100, 60, 60],  # a small face inside no other box
        ],
        np.float32,
    )
    assert spans_others(boxes).tolist() == [True, False, False, False, False]
    assert spans_others(boxes[1:]).tolist() == [False] * 4 and spans_others(boxes[:2]).tolist() == [False, False]


def _grid(n_side: int, canvas: tuple[int, int], fill: float = 0.8) -> list[tuple[float, float, float, float]]:
    h, w = canvas
    cell_w, cell_h = w / n_side, h / n_side
    side = fill * min(cell_w, cell_h)
    return [((c + 0.5) * cell_w, (r + 0.5) * cell_h, side, 0.0) for r in range(n_side) for c in range(n_side)]


def _box_rows(boxes: np.ndarray) -> list[dict]:
    """`FaceFinder` boxes as the output rows `_found` reads."""
    return [{"face": 0, "face_x": b[0], "face_y": b[1], "face_w": b[2], "face_h": b[3]} for b in boxes]


#: Three whole faces across the top of a 600 x 604 photo, beside the one cut face a test places.
BESIDE_CUT = [(110, 150, 150, 0), (300, 140, 150, 0), (490, 150, 150, 0)]


def _found(rows: list[dict], places: list[tuple[float, float, float, float]]) -> int:
    """Pasted faces with exactly one row whose box centre lies within a third of the crop's side of where it was put."""
    hits = 0
    for cx, cy, side, _ in places:
        near = [
            r
            for r in rows
            if r["face"] is not None
            and abs(r["face_x"] + r["face_w"] / 2 - cx) < side / 3
            and abs(r["face_y"] + r["face_h"] / 2 - cy) < side / 3
        ]
        hits += len(near) == 1
    return hits


def test_small_faces_of_a_crowd_are_found_by_the_tiled_pass(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    """64 faces whose crops are 7.5% of a 4000x3000 photo's long side (measured: 4 found without tiles, 64 with)."""
    faces = sorted(samples_dir.glob("*.jpg"))
    places = _grid(8, (3000, 4000))
    image, _ = compose("rocket.jpg", [faces[k % len(faces)] for k in range(len(places))], places, (3000, 4000))
    path = save_jpeg(image, tmp_path / "crowd.jpg")
    counts = {}
    for tiles in (False, True):
        out = tmp_path / f"tiles-{tiles}.parquet"
        run_infer(InferJob(str(path), str(out), model=onnx_model, face_options=FaceOptions(tiles=tiles)))
        rows = pq.read_table(out).to_pylist()
        counts[tiles] = _found(rows, places)
        assert len(rows) == counts[tiles] or counts[tiles] == 0, "every row is a pasted face, once"
    assert counts[True] >= 60 and counts[False] <= 20, counts
    assert sorted(r["face"] for r in rows) == list(range(len(rows))), "one row per face, numbered once"


def test_the_tiled_pass_finds_no_face_in_large_photos_without_people() -> None:
    finder = FaceFinder(FaceOptions(tiles=True))
    for name in ("coffee.jpg", "rocket.jpg"):
        big = cv2.resize(cv2.imread(str(DATA / name)), (4000, 3000), interpolation=cv2.INTER_CUBIC)
        small = cv2.cvtColor(cv2.resize(big, (1024, 768), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        assert len(finder.find([small], [4000 / 1024])[0]) == 0, name


def test_faces_cut_by_the_frame_are_found_and_say_how_much_shows(tmp_path: Path, samples_dir: Path, onnx_model: str) -> None:
    """Eight faces, each 45-60% inside one edge of one photo (measured one face per photo over 24 faces: 4 / 11 found
    without the edge pass, 22 / 23 with; eight faces in one photo are smaller in the mirrored canvas and harder)."""
    faces = sorted(samples_dir.glob("*.jpg"))
    side = 420.0
    places = []
    for k, inside in enumerate((0.45, 0.6)):
        off = side * (0.5 - inside)  # how far the crop's centre lies beyond the edge
        places += [(-off, 300 + 600 * k, side, 0), (1800 + off, 300 + 600 * k, side, 0)]
        places += [(450 + 900 * k, -off, side, 0), (450 + 900 * k, 1200 + off, side, 0)]
    image, _ = compose("coffee.jpg", [faces[k] for k in (1, 6, 11, 16, 21, 26, 31, 36)], places, (1200, 1800))
    path = save_jpeg(image, tmp_path / "edges.jpg")
    found = {}
    for edges in (False, True):
        out = tmp_path / f"edges-{edges}.parquet"
        run_infer(InferJob(str(path), str(out), model=onnx_model, face_options=FaceOptions(edges=edges)))
        rows = [r for r in pq.read_table(out).to_pylist() if r["face"] is not None]
        found[edges] = _found(rows, places)
        assert len(rows) == found[edges], "no row but the pasted faces"
    assert found[True] >= 4 and found[True] > found[False], found
    for r in rows:
        x, y, w, h = r["face_x"], r["face_y"], r["face_w"], r["face_h"]
        assert x < 0 or y < 0 or x + w > 1800 or y + h > 1200, "the box keeps the face's extent past the frame"
        assert r["face_visible"] < 0.95 and r["age"] is not None


def test_a_face_cut_by_two_edges_is_found_in_the_corner_view(samples_dir: Path) -> None:
    """A selfie's taker: a face cut by the bottom and right edges (70% of the crop inside on each axis) of a 600 x 604
    photo beside three whole faces. Measured on 8 such photos: 1 found without the edge pass, 3 with the whole-photo
    view only, 8 with the corner views (`EDGE_WINDOW`)."""
    faces = sorted(samples_dir.glob("*.jpg"))
    h, w, side = 604, 600, 200.0
    found = {False: 0, True: 0}
    for k in range(4):
        corner = (w - 0.7 * side + side / 2, h - 0.7 * side + side / 2, side, 0)
        places = [(150, 150, 110, 0), (300, 160, 110, 0), (450, 150, 110, 0), corner]
        image, _ = compose(["rocket.jpg", "coffee.jpg"][k % 2], [faces[4 * k + j] for j in range(4)], places, (h, w))
        for edges in (False, True):
            d = FaceFinder(FaceOptions(edges=edges)).find([image])[0]
            rows = _box_rows(d.boxes)
            assert _found(rows, places[:3]) == 3 and len(rows) <= 4, "the whole faces, once each, and nothing else"
            found[edges] += _found(rows, [corner])
    assert found[True] == 4 and found[False] <= 1, found


@pytest.mark.parametrize("k", [0, 3])
def test_a_face_cut_by_the_bottom_edge_below_the_eyes_is_found(samples_dir: Path, k: int) -> None:
    """A face 40% inside the bottom edge, in its middle, beside three whole faces (a 600 x 604 photo). In the two
    bottom corner views it is cut by the view itself; the bottom-middle view holds it. Measured on 8 such photos
    (180-215 px faces): 5 found before that view, 7 with it; these are two of the gained ones."""
    faces = sorted(samples_dir.glob("*.jpg"))
    h, w, side = 604, 600, 180.0 + 5 * k
    cut = (300.0 + 10 * k, h - 0.4 * side + side / 2, side, 0)
    places = [cut, *BESIDE_CUT]
    image, _ = compose(
        "rocket.jpg", [faces[(k * 7) % len(faces)], *(faces[(k * 3 + j) % len(faces)] for j in (1, 2, 3))], places, (h, w)
    )
    d = FaceFinder().find([image])[0]
    rows = _box_rows(d.boxes)
    assert len(rows) == 4 and _found(rows, places) == 4, "the three whole faces and the cut one, once each"


@pytest.mark.parametrize("k", [6, 12])
def test_a_face_cut_by_the_bottom_next_to_the_right_edge_is_found(samples_dir: Path, k: int) -> None:
    """A selfie's taker at the bottom right: 80% of the crop inside horizontally, 50% vertically (a 600 x 604 photo,
    three whole faces beside it). Mirrored in both axes at the corner it becomes a four-eyed shape the detectors box
    badly; the bottom corner's second view, mirrored below only, finds it. Measured on 16 such photos (170-245 px
    faces): 5 found before that view, 12 with it; these are two of the gained ones."""
    faces = sorted(samples_dir.glob("*.jpg"))
    h, w, side = 604, 600, 170.0 + 5 * k
    cut = (w - 0.8 * side + side / 2, h - 0.5 * side + side / 2, side, 0)
    places = [cut, *BESIDE_CUT]
    image, _ = compose(
        ["rocket.jpg", "coffee.jpg", "astronaut.jpg"][k % 3],
        [faces[(k * 5 + 3) % len(faces)], *(faces[(k * 3 + j + 11) % len(faces)] for j in range(3))],
        places,
        (h, w),
    )
    rows = _box_rows(FaceFinder().find([image])[0].boxes)
    assert len(rows) == 4 and _found(rows, places) == 4, "the three whole faces and the cut one, once each"


@pytest.mark.parametrize("k", [2, 3])
def test_a_group_selfie_gives_all_seven_faces_three_of_them_cut_by_the_frame(samples_dir: Path, k: int) -> None:
    """The class of photo the group-photo issue was filed on (600 x 604): four whole faces, one cut by the right
    edge (~50% inside), the taker's large face by the bottom-right corner, one by the bottom left. Measured on 16 such
    photos: all seven found in 9 before the bottom corners' second views, 11 with them; these are two of the gained."""
    faces = sorted(samples_dir.glob("*.jpg"))
    h, w, a = 604, 600, k / 15
    s_r, s_t, s_l = 150 + 20 * a, 230 + 40 * a, 170 + 20 * ((k * 7) % 16) / 16
    right = (w - (0.5 + 0.1 * a) * s_r + s_r / 2, 300, s_r, 0)
    taker = (w - (0.75 + 0.15 * ((k * 5) % 16) / 16) * s_t + s_t / 2, h - (0.5 + 0.2 * a) * s_t + s_t / 2, s_t, 0)
    left = ((0.8 + 0.1 * a) * s_l - s_l / 2, h - (0.6 + 0.1 * ((k * 3) % 16) / 16) * s_l + s_l / 2, s_l, 0)
    places = [(120, 110, 110, 0), (250, 100, 110, 0), (380, 110, 110, 0), (250, 260, 120, 0), right, taker, left]
    image, _ = compose(
        "astronaut.jpg" if k == 2 else "rocket.jpg", [faces[(k * 7 + j) % len(faces)] for j in range(7)], places, (h, w)
    )
    rows = _box_rows(FaceFinder().find([image])[0].boxes)
    assert len(rows) == 7 and _found(rows, places) == 7, "every face once, the cut ones included"
