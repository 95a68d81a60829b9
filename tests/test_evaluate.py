"""evaluate/compare on real faces: same split rule as training, metrics from the shared code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from agebatch.cli import main
from agebatch.commands.evaluate import evaluate
from agebatch.errors import AgebatchError


@pytest.fixture(scope="module")
def models(built, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The tiny .keras model and, in another folder, its FP32 ONNX export (with sidecar)."""
    out, _ = built
    folder = tmp_path_factory.mktemp("onnx")
    for suffix in ("", ".json"):
        shutil.copy(str(out / "tiny.fp32.onnx") + suffix, str(folder / "tiny.fp32.onnx") + suffix)
    return str(tiny_model), str(folder / "tiny.fp32.onnx")


def test_evaluate_all_labelled_samples(tmp_path: Path, samples_dir: Path, models) -> None:
    _, onnx = models
    ev = evaluate(onnx, str(samples_dir), str(tmp_path / "e.parquet"), split="all")
    rows = {r.scope: r for r in ev.rows}
    assert rows["all"].n == 37, "39 samples minus the label-conflicting duplicate pair"
    assert rows["gender:male"].n + rows["gender:female"].n == 37
    assert sum(rows[f"age:{b}"].n for b in ("0-12", "13-19", "20-39", "40-59", "60+")) == 37
    summary = {r["scope"]: r for r in pq.read_table(tmp_path / "e.summary.parquet").to_pylist()}
    assert summary["all"]["age_mae"] == pytest.approx(rows["all"].age_mae)


def test_empty_split_is_a_clear_error(tmp_path: Path, samples_dir: Path, models) -> None:
    _, onnx = models
    with pytest.raises(AgebatchError, match="fall in the 'val' split"):
        evaluate(onnx, str(samples_dir), str(tmp_path / "e.parquet"), split="val")  # the 39 samples have no val member


def test_compare_keras_and_its_onnx_export(tmp_path: Path, samples_dir: Path, models) -> None:
    keras_model, onnx = models
    r = CliRunner().invoke(main, ["compare", keras_model, onnx, str(samples_dir), "--split", "all", "--out-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    a = pq.read_table(tmp_path / "tiny.all.summary.parquet").to_pylist()
    b = pq.read_table(tmp_path / "tiny.fp32.all.summary.parquet").to_pylist()
    for ra, rb in zip(a, b, strict=True):
        assert ra["n"] == rb["n"]
        if ra["age_mae"] is not None:
            assert ra["age_mae"] == pytest.approx(rb["age_mae"], abs=1e-3), "an FP32 export scores like its model"
