"""Age heads (bins, regression, CORAL), the seeds' backbones, and training on inference's own crops."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow)")

from agebatch.train.config import TrainConfig


def _one_step(cfg: TrainConfig) -> tuple[object, list[float]]:
    """Build the model `cfg` describes and take one optimiser step on four real faces."""
    from agebatch.train.trainer import _build, _compile, _targets, _training_model

    size = (cfg.image_size, cfg.image_size)
    model, _, _ = _build(cfg, size)
    train_model = _training_model(model, cfg.age_head)
    _compile(train_model, cfg)
    x = np.random.default_rng(0).integers(0, 256, (4, *size, 3), dtype=np.uint8)
    ages, genders = np.array([2, 25, 47, 80], np.float32), np.array([0, 1, 0, 1], np.float32)
    before = [w.copy() for w in train_model.get_weights()]
    losses = train_model.train_on_batch(x, _targets(ages, genders, cfg.age_head))
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, train_model.get_weights(), strict=True))
    assert changed > 0, "one step moved the weights"
    return model, [float(v) for v in np.atleast_1d(losses)]


def test_coral_levels_make_a_distribution_whose_mean_is_their_sum() -> None:
    import keras

    from agebatch.models.layers import CoralLevels, LevelsToBins

    score = keras.Input((1,))
    levels = CoralLevels(100)(score)
    model = keras.Model(score, {"levels": levels, "bins": LevelsToBins()(levels)})
    out = model.predict(np.array([[-3.0], [0.0], [4.0]], np.float32), verbose=0)
    bins, lv = np.asarray(out["bins"]), np.asarray(out["levels"])
    assert bins.shape == (3, 101) and np.allclose(bins.sum(axis=1), 1, atol=1e-5) and (bins >= 0).all()
    assert (np.diff(lv, axis=1) <= 1e-7).all(), "CORAL's ordered biases keep P(age > k) falling with k"
    assert np.allclose(bins @ np.arange(101), lv.sum(axis=1), atol=1e-3)
    assert (bins @ np.arange(101))[0] < (bins @ np.arange(101))[2], "a higher score is an older face"


@pytest.mark.parametrize("head", ["coral", "regression"])
def test_heads_train_and_serve(head: str) -> None:
    from agebatch.models.serving import has_distribution, serving_model

    cfg = TrainConfig(kind="custom", age_head=head, image_size=32, stem=8, widths=(16,), depths=(1,))  # pyright: ignore[reportArgumentType]
    model, _ = _one_step(cfg)
    served = serving_model(model, mirror=True, temperature=1.0)
    out = served.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert has_distribution(model) == (head == "coral")
    assert ("age_p90" in out) == (head == "coral") and set(out) >= {"age", "gender_prob"}


@pytest.mark.parametrize(("backbone", "size"), [("resnet50", 32), ("xception", 71), ("vgg16", 32)])
def test_seed_backbones_build_and_take_a_step(backbone: str, size: int) -> None:
    """The coursework reports' backbones, untrained (--weights none): their ImageNet files cannot be fetched here."""
    cfg = TrainConfig(kind="pretrained", backbone=backbone, weights="none", image_size=size)
    model, losses = _one_step(cfg)
    assert all(np.isfinite(losses))
    assert model.get_layer("preprocess") is not None


def test_backbone_weights_from_a_file(tmp_path: Path) -> None:
    """--weights PATH: a Keras no-top weights file is loaded into the backbone."""
    import keras

    from agebatch.models.pretrained import build_pretrained

    donor = keras.applications.VGG16(input_shape=(32, 32, 3), include_top=False, weights=None)
    path = str(tmp_path / "vgg16_notop.weights.h5")
    donor.save_weights(path)
    model = build_pretrained(backbone="vgg16", weights=path, input_size=(32, 32))
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert np.array_equal(base.get_layer("block1_conv1").get_weights()[0], donor.get_layer("block1_conv1").get_weights()[0])


def test_missing_or_wrong_weights_are_one_clear_error(tmp_path: Path) -> None:
    from agebatch.errors import AgebatchError
    from agebatch.models.pretrained import build_pretrained

    with pytest.raises(AgebatchError, match="never downloads them"):
        build_pretrained(backbone="resnet50", weights="imagenet", weights_dir=str(tmp_path), input_size=(32, 32))
    with pytest.raises(AgebatchError, match="at least 71 pixels"):
        build_pretrained(backbone="xception", weights="none", input_size=(64, 64))


def test_training_crops_are_inference_crops_and_are_cached(samples_dir: Path, tmp_path: Path) -> None:
    from agebatch.faces.align import default_template
    from agebatch.faces.cut import detect_rows
    from agebatch.faces.detect import FaceFinder
    from agebatch.faces.options import FaceOptions
    from agebatch.io.batching import iter_images
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items
    from agebatch.io.splits import SplitSpec
    from agebatch.train.data import load_training_data

    size = DecodeOptions(size=(64, 64))
    notes: list[str] = []

    def load(log):
        return load_training_data(samples_dir, split=SplitSpec(0.25, 0.25, 0), options=size, cache_dir=str(tmp_path), log=log)

    first = load_training_data(
        samples_dir, split=SplitSpec(0.25, 0.25, 0), options=size, cache_dir=str(tmp_path), log=notes.append
    )
    assert any("detected and aligned" in n for n in notes)
    notes.clear()
    again = load_training_data(
        samples_dir, split=SplitSpec(0.25, 0.25, 0), options=size, cache_dir=str(tmp_path), log=notes.append
    )
    assert not any("detected and aligned" in n for n in notes), "the second load reads every crop from the cache"
    for name in ("train", "val", "test"):
        assert np.array_equal(first.splits[name].images, again.splits[name].images)
    assert first.fingerprint == again.fingerprint

    # Exactly the crop `infer --faces detect` feeds the model for that file (face 0).
    tr = first.splits["train"]
    item = next(i for i in iter_items(samples_dir) if i.path == tr.paths[0])
    batch = next(iter_images([item], options=DecodeOptions(size=(1024, 1024))))
    rows = detect_rows(batch, FaceFinder(FaceOptions()), default_template(), size)
    assert np.array_equal(rows.crops[0], tr.images[0])

    # A cache whose two files disagree is rebuilt, not trusted.
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith("crops-"))
    np.save(folder / "crops.npy", np.zeros((1, 64, 64, 3), np.uint8))
    notes.clear()
    rebuilt = load_training_data(
        samples_dir, split=SplitSpec(0.25, 0.25, 0), options=size, cache_dir=str(tmp_path), log=notes.append
    )
    assert any("detected and aligned" in n for n in notes)
    assert np.array_equal(rebuilt.splits["train"].images, tr.images)


def test_a_trained_model_is_calibrated_and_says_so(samples_dir: Path, tmp_path: Path) -> None:
    """`train` fits the interval temperature on its val split, builds it into the graph and records it in the card."""
    from agebatch.backends.registry import load_backend
    from agebatch.train.trainer import train

    cfg = TrainConfig(
        kind="custom", data=str(samples_dir), out=str(tmp_path), val=0.3, test=0.2, epochs=2, batch_size=8, lr=3e-3,
        stem=8, widths=(16, 32), depths=(1, 1), image_size=64, age_head="coral",
    )  # fmt: skip
    run = train(cfg, log=lambda *_: None)
    card = json.loads(Path(run, "modelA.card.json").read_text())
    cal = card["calibration"]
    assert cal["split"] == "val" and cal["interval"] == [0.1, 0.9] and cal["temperature"] > 0
    assert abs(cal["val_coverage"] - 0.8) <= 1 / cal["n"] + 0.2, "bisection lands on the target up to the faces' granularity"
    assert set(card["outputs"]) >= {"age_p10", "age_p90", "age_std", "age_group"}
    assert "interval_coverage" in card["metrics"]["test"]["all"]
    p = load_backend(os.path.join(run, "modelA.keras")).predict(np.zeros((1, 64, 64, 3), np.uint8))
    assert p.has_distribution
