from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from agebatch import __version__
from agebatch.cli import main

HEAVY = ("tensorflow", "keras", "torch", "jax", "onnxruntime", "cv2")


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from agebatch.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('MODULES=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES="))
    return set(filter(None, line.removeprefix("MODULES=").split(",")))


@pytest.mark.parametrize(
    "argv", [["--help"], ["infer", "--help"], ["train", "--help"], ["build-engine", "--help"], ["bench", "decode", "--help"]]
)
def test_help_imports_no_framework(argv: list[str]) -> None:
    assert _modules_after(argv) == set()


def test_version() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_manifest_command(tmp_path: Path, samples_dir: Path) -> None:
    out = tmp_path / "m.parquet"
    r = CliRunner().invoke(main, ["manifest", str(samples_dir), "--out", str(out), "--split-seed", "3", "--drop-conflicts"])
    assert r.exit_code == 0, r.output
    assert "groups with conflicting labels" in r.output
    assert pq.read_table(out).num_rows == len(list(samples_dir.glob("*.jpg"))) - 2
    again = CliRunner().invoke(main, ["manifest", str(samples_dir), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["manifest", "/no/such/folder", "--out", "{tmp}/m.parquet"], "no such file or folder"),
        (["manifest", "{samples}", "--out", "/no/such/dir/m.parquet"], "output folder does not exist"),
        (["manifest", "{samples}", "--out", "{tmp}/m.parquet", "--val", "0.6", "--test", "0.5"], "split fractions"),
        (["infer", "{samples}", "--out", "{tmp}/p.parquet", "--model", "{tmp}/model.bin"], "model file not found"),
        (["train", "custom", "--data", "{tmp}/nowhere", "--out", "{tmp}/runs"], "no such file or folder"),
        (["bench", "infer", "{samples}", "--model", "{tmp}/none.keras"], "model file not found"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, samples_dir: Path, argv: list[str], message: str) -> None:
    argv = [a.format(tmp=tmp_path, samples=samples_dir) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "agebatch", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bench_decode_runs_on_samples(samples_dir: Path) -> None:
    r = CliRunner().invoke(main, ["bench", "decode", str(samples_dir), "--workers", "1,2"])
    assert r.exit_code == 0, r.output
    assert "images/s" in r.output and "peak RSS" in r.output
    bad = CliRunner().invoke(main, ["bench", "decode", str(samples_dir), "--workers", "one"])
    assert bad.exit_code == 2


def test_models_lists_shipped_models_and_this_machine(tmp_path: Path) -> None:
    import shutil

    from agebatch.models.card import load_card
    from agebatch.models.shipped import models_dir

    wide = CliRunner(env={"COLUMNS": "200"})  # rich wraps at 80 columns off a terminal
    r = wide.invoke(main, ["models"])
    assert r.exit_code == 0, r.output
    mae = load_card(Path(models_dir()) / "modelB.keras").metrics["test"]["all"]["age_mae"]
    assert "modelB.fp32.onnx" in r.output and "modelA.keras" in r.output and f"{mae:.2f}" in r.output
    default_row = next(line for line in r.output.splitlines() if " * " in line)
    assert "modelB.fp32.onnx" in default_row and "onnxruntime" in default_row, "the artifact infer runs by default"
    assert "CPUExecutionProvider" in r.output and "TensorRT" in r.output
    # A folder of the user's own: an export whose sidecar was damaged is listed as unreadable, not skipped.
    shutil.copy(Path(models_dir()) / "modelA.fp32.onnx", tmp_path / "mine.onnx")
    (tmp_path / "mine.onnx.json").write_text("{not json")
    mine = wide.invoke(main, ["models", str(tmp_path)])
    assert mine.exit_code == 0 and "mine.onnx" in mine.output and "unreadable" in mine.output
    missing = CliRunner().invoke(main, ["models", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a folder" in missing.output


def test_train_cli_defaults_are_train_config_defaults() -> None:
    """Every `agebatch train` option that names a TrainConfig field defaults to that field's default (no drift)."""
    import dataclasses

    import click

    from agebatch.cli.options import field_default
    from agebatch.cli.train import train
    from agebatch.train.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for param in train.params:
        name = {"test_frac": "test"}.get(param.name or "", param.name)
        if name in fields and name not in ("kind",):
            want = field_default(TrainConfig, name)
            got = param.get_default(click.Context(train))  # --data: read from the env var; flags: their off value
            assert got == (list(want) if isinstance(want, tuple) else want), name
            checked += 1
    assert checked >= 20, checked
