"""`agebatch ensemble`: weights chosen on val, the served graph is the members' weighted mixture, every backend runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow, tf2onnx)")

from runs import run_cli

from agebatch.commands.ensemble import build_ensemble, choose_weights, weight_grid
from agebatch.errors import AgebatchError
from agebatch.io.splits import SplitSpec
from agebatch.train.config import TrainConfig


def test_weight_grid_covers_the_simplex() -> None:
    assert weight_grid(2, 0.5) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    three = weight_grid(3, 0.1)
    assert len(three) == 66 and all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in three)


def test_choose_weights_finds_the_best_mix() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 90, 500)
    e = rng.normal(0, 3, 250)
    noise = np.concatenate([e, -e])  # median exactly 0
    assert choose_weights([truth, truth + 10 + noise], truth) == (1.0, 0.0), "an exact member takes all the weight"
    # Opposite biases cancel only at equal weights.
    assert choose_weights([truth + 4 + noise, truth - 4 + noise], truth) == (0.5, 0.5)


SPLIT = SplitSpec(val=0.3, test=0.2)


def _member(samples_dir: Path, out: Path, name: str, seed: int, size: int = 64) -> str:
    from agebatch.train.trainer import train

    cfg = TrainConfig(
        kind="custom", data=str(samples_dir), out=str(out), name=name, val=SPLIT.val, test=SPLIT.test, epochs=2, batch_size=8,
        lr=3e-3, stem=8, widths=(16, 32), depths=(1, 1), image_size=size, seed=seed,
    )  # fmt: skip
    return os.path.join(train(cfg, log=lambda *_: None), f"{name}.keras")


@pytest.fixture(scope="module")
def members(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("members")
    return [_member(samples_dir, out, "m0", 0), _member(samples_dir, out, "m1", 1)]


def test_the_ensemble_is_its_members_weighted_mixture(members: list[str], samples_dir: Path, tmp_path: Path) -> None:
    from agebatch.ages import distribution_stats
    from agebatch.backends.keras import load_keras_model
    from agebatch.backends.registry import load_backend
    from agebatch.commands.engine import build_engine
    from agebatch.io.batching import iter_batches
    from agebatch.io.sources import iter_items
    from agebatch.models.calibration import distributions
    from agebatch.models.card import load_card

    out = str(tmp_path / "ens.keras")
    # The members' own split: weights and temperature are fitted on faces neither member trained on.
    r = build_ensemble(members, str(samples_dir), out=out, split=SPLIT, log=lambda *_: None)
    assert abs(sum(r.weights) - 1) < 1e-9 and len(r.weights) == 2
    card = json.loads(Path(out.replace(".keras", ".card.json")).read_text())
    assert [m["name"] for m in card["training"]["ensemble"]["members"]] == ["m0", "m1"]
    assert card["calibration"]["temperature"] == r.calibration.temperature
    assert "interval_coverage" in card["metrics"]["test"]["all"]

    b = next(iter_batches(iter_items(samples_dir), batch_size=64, options=load_card(out).decode_options()))
    got = load_backend(out).predict(b.images)
    parts = [load_backend(m).predict(b.images) for m in members]
    w = r.weights
    np.testing.assert_allclose(got.age, w[0] * parts[0].age + w[1] * parts[1].age, atol=1e-3)
    np.testing.assert_allclose(got.gender_prob, w[0] * parts[0].gender_prob + w[1] * parts[1].gender_prob, atol=1e-4)
    mix = sum(wi * distributions(load_keras_model(m), b.images, mirror=True) for wi, m in zip(w, members, strict=True))
    want = distribution_stats(np.asarray(mix), r.calibration.temperature)
    np.testing.assert_allclose(got.age_p10, want["age_p10"], atol=0.01)
    np.testing.assert_allclose(got.age_p90, want["age_p90"], atol=0.01)
    assert np.array_equal(got.age_group, want["age_group"])

    # Exported like any model: ONNX Runtime runs the same graph.
    build_engine(out, target="onnx", precision="fp32", out_dir=str(tmp_path))
    ort = load_backend(str(tmp_path / "ens.fp32.onnx")).predict(b.images)
    np.testing.assert_allclose(ort.age, got.age, atol=0.01)
    np.testing.assert_allclose(ort.age_p90, got.age_p90, atol=0.02)


def test_bad_ensembles_are_one_clear_error(members: list[str], samples_dir: Path, tmp_path: Path) -> None:
    other = _member(samples_dir, tmp_path, "big", 2, size=72)
    with pytest.raises(AgebatchError, match="input_size"):
        build_ensemble([members[0], other], str(samples_dir), out=str(tmp_path / "x.keras"), split=SPLIT)
    with pytest.raises(AgebatchError, match="at least two"):
        build_ensemble(members[:1], str(samples_dir), out=str(tmp_path / "x.keras"))
    with pytest.raises(AgebatchError, match="sum to 1"):
        build_ensemble(members, str(samples_dir), out=str(tmp_path / "x.keras"), weights=[0.5, 0.6])
    with pytest.raises(AgebatchError, match="one of the members"):
        build_ensemble(members, str(samples_dir), out=members[0], overwrite=True)
    r = run_cli("ensemble", *members, "--out", str(tmp_path / "ens.onnx"), "--data", str(samples_dir))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--out must be a .keras path" in r.stderr
