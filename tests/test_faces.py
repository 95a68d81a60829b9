"""Face detection and alignment on real faces: BlazeFace decoding, composed photos with known faces, detect-mode runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from photos import DATA, compose, save_jpeg
from runs import start, wait_for_shards

from agebatch.faces.align import already_aligned, default_template, similarity
from agebatch.faces.blazeface import DETECTORS, decode, ssd_anchors, weighted_nms
from agebatch.faces.cut import ONLY_SMALL_FACES
from agebatch.faces.detect import FaceFinder
from agebatch.faces.options import FaceOptions
from agebatch.io.decode import DecodeOptions, load_work_image
from agebatch.pipeline.job import InferJob
from agebatch.pipeline.run import run_infer
from agebatch.pipeline.shards import parts_dir

# Four faces of decreasing size on a 2700x1800 photo: (centre x, centre y, crop side, degrees).
PLACES = [(500, 700, 700, 0), (1500, 500, 500, 8), (2300, 900, 360, -10), (1400, 1300, 260, 5)]
CANVAS = (1800, 2700)


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.fixture(scope="module")
def group_photo(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    faces = sorted(samples_dir.glob("*.jpg"))
    image, placed = compose("rocket.jpg", [faces[3], faces[10], faces[20], faces[30]], PLACES, CANVAS)
    path = save_jpeg(image, tmp_path_factory.mktemp("photos") / "group.jpg")
    return path, placed


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _expected_box(points: np.ndarray) -> np.ndarray:
    """A square around eyes, nose and mouth: BlazeFace's boxes are ~2.3 eye distances wide, centred on them."""
    centre = points[:4].mean(axis=0)
    side = 2.3 * np.linalg.norm(points[0] - points[1])
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side])


def test_anchor_layout_follows_mediapipe() -> None:
    short, full = ssd_anchors(DETECTORS["short"]), ssd_anchors(DETECTORS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Short range: 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6 (three stride-16 layers share a map).
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])
    assert np.allclose(short[511], [15.5 / 16, 15.5 / 16]) and np.allclose(short[512], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[512:518], short[512]) and np.allclose(full[1], [1.5 / 48, 0.5 / 48])


def test_decode_and_weighted_nms_on_constructed_outputs() -> None:
    spec = DETECTORS["short"]
    anchors = ssd_anchors(spec)
    reg = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -10.0, np.float32)
    # A 32-px face centred 4 px right of anchor 100, and two overlapping weaker copies of it one pixel apart.
    for k, (dx, score) in enumerate([(4.0, 3.0), (5.0, 1.0), (3.0, 1.0)]):
        reg[100 + k, :4] = (dx, 0, 32, 32)
        reg[100 + k, 4:] = np.tile([dx - 6, -6], 6)
        logits[100 + k] = score
    # A separate face far away.
    reg[700, :4] = (0, 0, 20, 20)
    logits[700] = 2.0
    points, scores = decode(reg, logits, anchors, spec.input_size)
    assert np.allclose(points[100, 0], anchors[100] + (4 / 128 - 16 / 128, -16 / 128), atol=1e-6)
    assert np.allclose(points[100, 2], anchors[100] + ((4 - 6) / 128, -6 / 128), atol=1e-6)
    assert scores[100] == pytest.approx(1 / (1 + np.exp(-3.0)))
    kept, kept_scores = weighted_nms(points, scores, min_score=0.5)
    assert len(kept) == 2 and kept_scores[0] == pytest.approx(scores[100]), "three overlapping detections are one face"
    w = scores[100:103]
    assert np.allclose(kept[0], (points[100:103] * w[:, None, None]).sum(0) / w.sum(), atol=1e-6), "score-weighted mean"


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (4, 2))
    angle, scale, shift = np.deg2rad(12), 0.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)


def test_faces_in_a_composed_photo_are_found_where_they_were_put(group_photo, finder: FaceFinder) -> None:
    path, placed = group_photo
    image, scale = load_work_image(str(path), DecodeOptions(size=(1024, 1024)))
    found = finder.find([image], [scale])[0]
    assert len(found) == 4, "every pasted face, and nothing in the rocket photo"
    boxes, keypoints = found.boxes * scale, found.keypoints * scale
    assert list(np.argsort(-boxes[:, 2])) == [0, 1, 2, 3], "largest face first"
    for p, box, kp in zip(placed, boxes, keypoints, strict=True):  # the places were listed largest first too
        assert _iou(box, _expected_box(p.keypoints)) > 0.6, p
        error = np.linalg.norm(kp[:4] - p.keypoints[:4], axis=1).mean()
        assert error < 0.25 * p.eye_distance, f"eyes, nose, mouth within a quarter eye distance ({error:.1f} px)"


def test_a_public_domain_portrait_and_photos_without_people(finder: FaceFinder) -> None:
    def rgb(name: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)

    astronaut, coffee, rocket = finder.find([rgb("astronaut.jpg"), rgb("coffee.jpg"), rgb("rocket.jpg")])
    assert len(astronaut) == 1 and len(coffee) == 0 and len(rocket) == 0
    x, y, w, _ = astronaut.boxes[0]
    assert 150 < x < 200 and 50 < y < 100 and 80 < w < 130, "Eileen Collins' face, upper middle of the 512x512 picture"


def test_a_face_crop_is_already_aligned_and_a_photo_face_is_not(group_photo, samples_dir: Path, finder: FaceFinder) -> None:
    template = default_template()
    crops = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in sorted(samples_dir.glob("*.jpg"))]
    found = finder.find(crops)
    aligned = [already_aligned(c.shape, f.keypoints[0], template) for c, f in zip(crops, found, strict=True) if len(f)]
    assert np.mean(aligned) > 0.85, "UTKFace crops sit where the template says"
    path, _ = group_photo
    image, scale = load_work_image(str(path), DecodeOptions(size=(1024, 1024)))
    photo = finder.find([image], [scale])[0]
    assert not any(already_aligned(image.shape, kp, template) for kp in photo.keypoints)


def test_detect_rows_per_face_in_source_pixels_with_crops(
    tmp_path: Path, group_photo, samples_dir: Path, onnx_model: str
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    path, placed = group_photo
    os.link(path, src / "a_group.jpg")
    os.link(DATA / "astronaut.jpg", src / "b_astronaut.jpg")
    os.link(DATA / "coffee.jpg", src / "c_coffee.jpg")
    crop = sorted(samples_dir.glob("*.jpg"))[5]
    os.link(crop, src / crop.name)  # digits sort first; its UTKFace name carries labels
    out, crops = tmp_path / "p.parquet", tmp_path / "crops"
    result = run_infer(InferJob(str(src), str(out), model=onnx_model, faces="detect", save_crops=str(crops)))
    rows = pq.read_table(out).to_pylist()
    names = [Path(r["path"]).name for r in rows]
    assert names == [crop.name] + ["a_group.jpg"] * 4 + ["b_astronaut.jpg", "c_coffee.jpg"]
    assert result.inputs == 4 and result.rows == 7 and result.errors == 0 and result.no_face == 1
    group = rows[1:5]
    assert [r["face"] for r in group] == [0, 1, 2, 3]
    for r, p in zip(group, placed, strict=True):
        box = np.array([r["face_x"], r["face_y"], r["face_w"], r["face_h"]])
        assert _iou(box, _expected_box(p.keypoints)) > 0.6, "boxes in the 2700x1800 source's pixels"
        assert r["error"] is None and r["age"] is not None and 0.5 < r["face_score"] <= 1
    coffee = rows[6]
    assert coffee["error"] == "no face found" and coffee["face"] is None and coffee["age"] is None and coffee["face_x"] is None
    assert rows[0]["face"] == 0 and rows[0]["age_true"] == int(crop.name.split("_")[0]), "labels from the UTKFace name"
    assert rows[5]["face"] == 0 and rows[5]["age_true"] is None
    saved = sorted(p.name for p in crops.iterdir())
    assert saved[1:5] == [f"00000001-a_group.jpg.face{k}.jpg" for k in range(4)] and len(saved) == 6
    assert cv2.imread(str(crops / saved[0])).shape == (64, 64, 3), "crops at the model's input size"

    few = run_infer(
        InferJob(str(src), str(tmp_path / "few.parquet"), model=onnx_model, face_options=FaceOptions(max_faces=2, min_face=200))
    )
    kept = pq.read_table(tmp_path / "few.parquet").to_pylist()
    assert few.rows == 5 and [r["face"] for r in kept[1:3]] == [0, 1] and kept[3]["error"] == ONLY_SMALL_FACES, (
        "two largest group faces; the astronaut's 100-px face and the 200-px crop's face are below --min-face 200"
    )


def test_detect_mode_resumes_after_kill_9_without_duplicating_faces(tmp_path: Path, group_photo, onnx_model: str) -> None:
    path, _ = group_photo
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(60):
        os.link(path, src / f"g{i:03d}.jpg")
        os.link(DATA / "coffee.jpg", src / f"g{i:03d}_none.jpg")
    clean = tmp_path / "clean.parquet"
    run_infer(InferJob(str(src), str(clean), model=onnx_model, batch_size=8, shard_rows=10))
    out = tmp_path / "p.parquet"
    args = ["infer", str(src), "--out", str(out), "--model", onnx_model, "--batch-size", "8", "--shard-rows", "10"]
    proc = start([*args, "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(parts_dir(str(out)))
    wait_for_shards(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for shard in parts.glob("part-*.parquet"):
        faces = pq.read_table(shard, columns=["path", "face"]).to_pydict()
        last = [f for p, f in zip(faces["path"], faces["face"], strict=True) if p == faces["path"][-1]]
        assert last in ([0, 1, 2, 3], [None]), "a shard ends at an image boundary: all its faces or none"
    resumed = subprocess.run([sys.executable, "-m", "agebatch", *args, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = pq.read_table(clean).to_pydict(), pq.read_table(out).to_pydict()
    assert b["path"] == a["path"] and b["face"] == a["face"], "every face of every image exactly once"
    assert np.allclose(np.array(b["age"], float), np.array(a["age"], float), atol=1e-4, equal_nan=True)
    assert len(a["path"]) == 60 * 4 + 60


@pytest.mark.parametrize("model", ["modelB"])
def test_detect_mode_on_face_crops_predicts_what_crop_mode_does(tmp_path: Path, samples_dir: Path, model: str) -> None:
    from agebatch.models.shipped import models_dir

    onnx = os.path.join(models_dir(), f"{model}.fp32.onnx")
    run_infer(InferJob(str(samples_dir), str(tmp_path / "c.parquet"), model=onnx, faces="crop"))
    run_infer(InferJob(str(samples_dir), str(tmp_path / "d.parquet"), model=onnx, faces="detect"))
    crop = pq.read_table(tmp_path / "c.parquet").to_pydict()
    detect = {
        p: a
        for p, a, f in zip(
            *pq.read_table(tmp_path / "d.parquet", columns=["path", "age", "face"]).to_pydict().values(), strict=True
        )
        if f == 0
    }
    diff = np.array([abs(detect[p] - a) for p, a in zip(crop["path"], crop["age"], strict=True)])
    assert len(detect) == len(crop["path"]), "a face in every crop"
    assert np.mean(diff < 1e-3) > 0.85, "crops already aligned are fed exactly as crop mode feeds them"
    assert diff.mean() < 0.5


def test_shipped_detectors_take_any_batch_size() -> None:
    import onnxruntime as ort

    from agebatch.faces.blazeface import MODELS_DIR

    rng = np.random.default_rng(1)
    for spec in DETECTORS.values():
        session = ort.InferenceSession(os.path.join(MODELS_DIR, spec.onnx), providers=["CPUExecutionProvider"])
        x = rng.uniform(-1, 1, (3, spec.input_size, spec.input_size, 3)).astype(np.float32)
        together = session.run(None, {"image": x})
        alone = session.run(None, {"image": x[2:]})
        assert together[0].shape == (3, len(ssd_anchors(spec)), 16) and together[1].shape == (3, len(ssd_anchors(spec)), 1)
        assert np.allclose(np.asarray(together[0])[2], np.asarray(alone[0])[0], atol=1e-4)


def test_template_estimate_and_shipped_cards_agree(samples_dir: Path) -> None:
    """Re-estimating on the bundled crops lands near the shipped template; the shipped cards carry it."""
    from agebatch.faces.template import estimate
    from agebatch.models.card import load_card
    from agebatch.models.shipped import models_dir

    template, used = estimate(str(samples_dir), limit=100)
    shipped = default_template()
    assert used >= 20
    assert np.abs(np.asarray(template.keypoints)[:4] - np.asarray(shipped.keypoints)[:4]).max() < 0.04
    for name in ("modelA", "modelB", "modelAB"):
        assert load_card(os.path.join(models_dir(), f"{name}.keras")).face_template == shipped.to_dict()
