"""Training on tiny configurations over real faces: files, loss, resume, reload, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow)")

from agebatch.errors import AgebatchError
from agebatch.train.config import TrainConfig
from agebatch.train.trainer import train

WEIGHTS = Path(__file__).resolve().parent.parent.parent / "shared" / "weights"


def _tiny(samples_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        kind="custom", data=str(samples_dir), out=str(out), val=0.25, test=0.25, epochs=3, batch_size=8, lr=3e-3,
        stem=8, widths=(16, 32), depths=(1, 1), image_size=64, patience=10,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _history(run: str) -> dict[str, list]:
    return pacsv.read_csv(os.path.join(run, "history.csv")).to_pydict()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> str:
    return train(_tiny(samples_dir, tmp_path_factory.mktemp("runs"), epochs=4), log=lambda *_: None)


def test_run_folder_is_complete(tiny_run: str) -> None:
    from agebatch.models.card import load_card

    names = set(os.listdir(tiny_run))
    assert {
        "modelA.keras",
        "modelA.card.json",
        "history.csv",
        "history.parquet",
        "curves.png",
        "metrics.json",
        "checkpoints",
    } <= names
    assert Path(tiny_run, "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = load_card(os.path.join(tiny_run, "modelA.keras"))
    assert card.input_size == (64, 64) and card.training["epochs_run"] == 4
    assert len(card.training["data_fingerprint"]) == 64 and card.training["counts"]["dropped_conflicts"] == 2
    assert card.training["train_images_per_s"] > 0
    assert card.training["test_time_augmentation"].startswith("mirror")
    assert set(card.metrics["test"]) >= {"all", "age:20-39", "gender:female"}


def test_loss_goes_down(tiny_run: str) -> None:
    loss = _history(tiny_run)["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0]


def test_saved_model_reloads_to_the_recorded_metrics(tiny_run: str, samples_dir: Path) -> None:
    from agebatch.backends.registry import load_backend
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.splits import SplitSpec
    from agebatch.metrics import summarize
    from agebatch.train.data import load_training_data

    data = load_training_data(samples_dir, split=SplitSpec(0.25, 0.25, 0), options=DecodeOptions(size=(64, 64)))
    test = data.splits["test"]
    p = load_backend(os.path.join(tiny_run, "modelA.keras")).predict(test.images)
    recorded = json.loads(Path(tiny_run, "metrics.json").read_text())["test"]["all"]
    assert summarize(p.age, p.gender_prob, test.age, test.gender)[0].age_mae == pytest.approx(recorded["age_mae"], abs=1e-4)


def test_resume_continues_from_the_checkpoint(tmp_path: Path, samples_dir: Path) -> None:
    run = train(_tiny(samples_dir, tmp_path, epochs=2), log=lambda *_: None)
    with pytest.raises(AgebatchError, match="exists; pass --resume"):
        train(_tiny(samples_dir, tmp_path, epochs=2), log=lambda *_: None)
    logs: list[str] = []
    train(_tiny(samples_dir, tmp_path, epochs=4, resume=True), log=logs.append)
    assert any("resuming after epoch 1" in m for m in logs)
    hist = _history(run)
    assert hist["epoch"] == [0, 1, 2, 3], "epochs 0-1 from the first run, 2-3 from the resumed one"
    assert hist["loss"][2] < hist["loss"][0], "the resumed epoch starts from trained weights, not from scratch"
    state = json.loads(Path(run, "checkpoints", "state.json").read_text())
    assert state["epoch"] == 3 and len(state["epoch_seconds"]) == 4


def test_incompatible_checkpoint_is_a_clear_error(tmp_path: Path, samples_dir: Path) -> None:
    train(_tiny(samples_dir, tmp_path, epochs=1), log=lambda *_: None)
    with pytest.raises(AgebatchError, match="does not fit this configuration"):
        train(_tiny(samples_dir, tmp_path, epochs=2, widths=(8, 8), resume=True), log=lambda *_: None)


def test_bad_inputs(tmp_path: Path, samples_dir: Path) -> None:
    (tmp_path / "unlabelled").mkdir()
    (tmp_path / "unlabelled" / "holiday.jpg").write_bytes(next(samples_dir.glob("*.jpg")).read_bytes())
    with pytest.raises(AgebatchError, match="no labelled faces"):
        train(_tiny(tmp_path / "unlabelled", tmp_path / "r1"), log=lambda *_: None)
    with pytest.raises(AgebatchError, match="no such file or folder"):
        train(_tiny(tmp_path / "missing", tmp_path / "r2"), log=lambda *_: None)
    with pytest.raises(AgebatchError, match="weights file not found"):
        train(_tiny(samples_dir, tmp_path / "r3", kind="pretrained", weights=str(tmp_path / "none.h5")), log=lambda *_: None)
    with pytest.raises(AgebatchError, match="nothing to resume"):
        train(_tiny(samples_dir, tmp_path / "r4", resume=True), log=lambda *_: None)


def test_cli_error_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agebatch", "train", "custom", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(
    not (WEIGHTS / "efficientnet_lite0_imagenet_notop.h5").is_file(), reason="offline ImageNet weights not in ../shared/weights"
)
@pytest.mark.parametrize("feature_cache", [False, True], ids=["live", "feature-cache"])
def test_pretrained_keeps_lower_blocks_and_trains_upper(tmp_path: Path, samples_dir: Path, feature_cache: bool) -> None:
    import h5py

    cfg = _tiny(
        samples_dir, tmp_path, kind="pretrained", image_size=128, epochs=2, aug_copies=1, weights_dir=str(WEIGHTS),
        lr=1e-3, train_from_block=11, feature_cache=feature_cache,
    )  # fmt: skip
    run = train(cfg, log=lambda *_: None)
    from agebatch.backends.keras import load_keras_model
    from agebatch.models.serving import is_mirrored, trained_part

    shipped = load_keras_model(os.path.join(run, "modelB.keras"))
    assert is_mirrored(shipped), "shipped with mirror TTA by default"
    model = trained_part(shipped)

    def imagenet(layer: str, array: str) -> np.ndarray:
        with h5py.File(WEIGHTS / "efficientnet_lite0_imagenet_notop.h5") as f:
            return f[layer][f"{layer}/{array}"][()]

    frozen = ("stem_conv", "kernel"), ("block10_project_bn", "moving_mean"), ("block10_project_bn", "gamma")
    for layer, array in frozen:
        got = {w.path.split("/")[-1]: w.numpy() for w in model.get_layer(layer).weights}[array]
        assert np.array_equal(got, imagenet(layer, array)), f"{layer}/{array} is below block 11 and stays ImageNet"
    assert not np.array_equal(model.get_layer("top_conv").get_weights()[0], imagenet("top_conv", "kernel"))
    assert not np.array_equal(model.get_layer("block11_expand_conv").get_weights()[0], imagenet("block11_expand_conv", "kernel"))
    card = json.loads(Path(run, "modelB.card.json").read_text())
    n_train = card["training"]["counts"]["train"]
    assert card["training"]["train_samples_per_epoch"] == n_train * (2 if feature_cache else 1)
    assert _history(run)["loss"][-1] < _history(run)["loss"][0]


@pytest.mark.skipif(
    not (WEIGHTS / "efficientnet_lite0_imagenet_notop.h5").is_file(), reason="offline ImageNet weights not in ../shared/weights"
)
def test_lite0_builder_loads_every_offline_array() -> None:
    import h5py

    from agebatch.models.pretrained import build_pretrained, load_lite0_weights

    path = WEIGHTS / "efficientnet_lite0_imagenet_notop.h5"
    with h5py.File(path) as f:
        in_file = sum(len(f[n].attrs["weight_names"]) for n in f.attrs["layer_names"])
    model = build_pretrained(weights="none")
    assert load_lite0_weights(model, str(path)) == in_file == 245
    with pytest.raises(AgebatchError, match="holds no EfficientNet-Lite0 layer weights"):
        load_lite0_weights(model, str(WEIGHTS / "mobilenet_v2_0.35_224_no_top_imagenet_tfjs.h5"))


def test_resuming_a_finished_run_only_reassembles_the_best_epoch(tmp_path: Path, samples_dir: Path) -> None:
    from agebatch.models.card import load_card

    run = train(_tiny(samples_dir, tmp_path, epochs=2), log=lambda *_: None)
    before = _history(run)["epoch"]
    first_wall = load_card(os.path.join(run, "modelA.keras")).training["wall_seconds"]
    os.remove(os.path.join(run, "modelA.keras"))
    train(_tiny(samples_dir, tmp_path, epochs=2, resume=True, mirror_tta=False), log=lambda *_: None)
    assert _history(run)["epoch"] == before == [0, 1], "no epoch was trained again"
    card = load_card(os.path.join(run, "modelA.keras"))
    assert card.training["wall_seconds"] > first_wall, "the reassembly adds its time to the training's"
    assert card.training["test_time_augmentation"] is None and card.training["config"]["mirror_tta"] is False


def test_a_teacher_passes_on_its_outputs_averaged_over_each_face_and_its_mirror(tiny_run: str, samples_dir: Path) -> None:
    from agebatch.io.batching import iter_batches
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items
    from agebatch.train.teacher import teacher_targets
    from agebatch.train.trainer import _soft_bins, _targets

    b = next(iter_batches(iter_items(samples_dir), batch_size=16, options=DecodeOptions(size=(64, 64))))
    faces = b.images[b.ok]
    soft = teacher_targets(os.path.join(tiny_run, "modelA.keras"), faces, log=lambda *_: None)
    mirrored = teacher_targets(os.path.join(tiny_run, "modelA.keras"), faces[:, :, ::-1], log=lambda *_: None)
    assert soft.bins.shape == (len(faces), 101) and np.allclose(soft.bins.sum(axis=1), 1, atol=1e-4)
    assert np.all((soft.gender > 0) & (soft.gender < 1))
    assert np.allclose(soft.bins, mirrored.bins, atol=1e-5) and np.allclose(soft.gender, mirrored.gender, atol=1e-5)
    age, gender = np.full(len(faces), 30.0, np.float32), np.ones(len(faces), np.float32)
    half = _targets(age, gender, "bins", soft, 0.5)
    assert np.allclose(half["age_bins"], 0.5 * _soft_bins(age) + 0.5 * soft.bins)
    assert np.allclose(half["gender_prob"][:, 0], 0.5 + 0.5 * soft.gender)
    assert np.array_equal(half["age"][:, 0], age), "the expected age keeps the label as its target"
    levels = _targets(age, gender, "coral", soft, 1.0)["age_levels"]
    assert np.allclose(levels[:, 0], 1 - soft.bins[:, 0], atol=1e-5) and np.all(np.diff(levels, axis=1) <= 1e-6)


def test_a_run_with_a_teacher_records_it_and_still_counts_gender_right(tiny_run: str, tmp_path: Path, samples_dir: Path) -> None:
    from agebatch.models.card import load_card

    teacher = os.path.join(tiny_run, "modelA.keras")
    run = train(_tiny(samples_dir, tmp_path, epochs=2, teacher=teacher, distill=0.7), log=lambda *_: None)
    config = load_card(os.path.join(run, "modelA.keras")).training["config"]
    assert config["teacher"] == teacher and config["distill"] == 0.7
    # Keras' own binary accuracy compares the rounded prediction with the raw target: 0 on soft targets.
    acc = _history(run)["gender_prob_binary_accuracy"]
    assert all(a > 0.2 for a in acc), acc
    # A student at another input size learns from the teacher's outputs on its crops resized to the teacher's.
    lines: list[str] = []
    small = train(_tiny(samples_dir, tmp_path / "r", epochs=1, image_size=48, teacher=teacher), log=lines.append)
    assert any("reads 64x64 px faces" in line for line in lines), lines
    assert load_card(os.path.join(small, "modelA.keras")).input_size == (48, 48)
    with pytest.raises(AgebatchError, match="--age-head bins or coral"):
        TrainConfig(kind="custom", teacher=teacher, age_head="regression")


def test_mixup_blends_faces_and_every_target_with_one_weight(samples_dir: Path) -> None:
    from agebatch.io.batching import iter_batches
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items
    from agebatch.train.trainer import _mixup, _mixup_pairs, _targets

    items = list(iter_items(samples_dir))[:16]
    b = next(iter_batches(items, batch_size=16, options=DecodeOptions(size=(64, 64))))
    age = np.asarray([i.age for i in items], np.float32)
    gender = np.asarray([i.gender for i in items], np.float32)
    lam, partner = _mixup_pairs(len(items), 0.4, np.random.default_rng(0))
    assert np.all((lam >= 0.5) & (lam <= 1.0)) and sorted(partner) == list(range(len(items)))
    assert np.count_nonzero((lam < 0.99) & (partner != np.arange(len(items)))) >= 4, "faces are really blended"
    for head in ("bins", "coral"):
        targets = _targets(age, gender, head)
        mixed, out = _mixup(b.images, targets, lam, partner)
        assert mixed.dtype == np.uint8 and mixed.shape == b.images.shape
        want = lam[:, None, None, None] * b.images + (1 - lam[:, None, None, None]) * b.images[partner].astype(np.float32)
        assert np.abs(mixed - want).max() <= 0.5 + 1e-3
        assert set(out) == set(targets)
        for k, v in targets.items():
            assert np.allclose(out[k], lam[:, None] * v + (1 - lam[:, None]) * v[partner], atol=1e-6), k
        assert np.allclose(out["age"][:, 0], lam * age + (1 - lam) * age[partner], atol=1e-4)
        if head == "bins":
            assert np.allclose(out["age_bins"].sum(axis=1), 1, atol=1e-5), "a blend of distributions is a distribution"


def test_a_run_with_mixup_records_it_and_mixup_refuses_the_feature_cache(tmp_path: Path, samples_dir: Path) -> None:
    from agebatch.models.card import load_card

    run = train(_tiny(samples_dir, tmp_path, epochs=1, mixup=0.3), log=lambda *_: None)
    assert load_card(os.path.join(run, "modelA.keras")).training["config"]["mixup"] == 0.3
    with pytest.raises(AgebatchError, match="--feature-cache"):
        TrainConfig(kind="pretrained", mixup=0.2, feature_cache=True)
    with pytest.raises(AgebatchError, match="--mixup"):
        TrainConfig(kind="custom", mixup=-1)


def test_bench_train_times_real_training_steps_at_the_asked_input_size() -> None:
    from click.testing import CliRunner

    from agebatch.cli import main

    r = CliRunner().invoke(main, ["bench", "train", "--models", "custom", "--steps", "1", "--warmup", "1", "--image-size", "64"])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "A (custom)" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[1:4] == ["64", "64", "1"], cells  # px, batch, steps
    assert float(cells[5]) > 0, cells  # img/s
