from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "agebatch" / "samples" / "utkface"
SHARED = Path(os.environ.get("AGEBATCH_SHARED", ROOT.parent / "shared"))
POOL = SHARED / "data" / "utkface"
# Training's aligned-crop cache goes to a fresh folder per test session, never the user's ~/.cache.
os.environ["AGEBATCH_CACHE"] = tempfile.mkdtemp(prefix="agebatch-test-cache-")
# A suite started in the background of a non-interactive shell (`nohup make test &`) inherits SIGINT as ignored, and
# an ignored signal stays ignored across exec: the processes the Ctrl-C tests start would never see their SIGINT. A
# handler does not survive exec, so with one here every child starts with the default and Python's KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def pool_dir() -> Path:
    if not POOL.is_dir():
        pytest.skip(f"UTKFace pool not found at {POOL} (set AGEBATCH_SHARED)")
    return POOL


@pytest.fixture(scope="session")
def fault_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    from faults import make_fault_folder

    folder = tmp_path_factory.mktemp("faults")
    return folder, make_fault_folder(folder, SAMPLES)


# A tiny Model A trained for a few seconds on the bundled faces, and its ONNX exports.
# Parity on an untrained BatchNorm net proves nothing (it can give one output for every
# input), so the model is trained and tests check its predictions really vary.
SIZE = (64, 64)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> Path:
    pytest.importorskip("tensorflow", reason="needs the [train] extra (TensorFlow, tf2onnx) to build and export models")
    import keras

    from agebatch.io.batching import iter_batches
    from agebatch.io.decode import DecodeOptions
    from agebatch.io.sources import iter_items
    from agebatch.models.card import ModelCard, card_path, model_outputs
    from agebatch.models.custom import ARCHITECTURE, PREPROCESSING, build_custom
    from agebatch.models.serving import serving_model

    keras.utils.set_random_seed(0)
    model = build_custom(input_size=SIZE, stem=8, widths=(16, 32), depths=(1, 1), hidden=16)
    b = next(iter_batches(iter_items(samples_dir), batch_size=64, options=DecodeOptions(size=SIZE)))
    ages = np.array([i.age for i in b.items], np.float32)
    genders = np.array([i.gender for i in b.items], np.float32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"age": "mae", "gender_prob": "binary_crossentropy"})
    hist = model.fit(b.images, {"age": ages, "gender_prob": genders}, epochs=30, batch_size=13, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    # Served as agebatch ships models: one pass per face here, age read-outs at a made-up temperature.
    serving_model(model, mirror=False, temperature=1.3).save(path)
    card = ModelCard(
        name="tiny", architecture=ARCHITECTURE, input_size=SIZE, preprocessing=PREPROCESSING, outputs=model_outputs(True)
    )
    card.save(card_path(path))
    return path


@pytest.fixture(scope="session")
def built(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    from agebatch.commands.engine import build_engine

    out = tmp_path_factory.mktemp("engines")
    return out, build_engine(str(tiny_model), target="onnx", precision="fp16", out_dir=str(out))


@pytest.fixture(scope="session")
def onnx_model(built) -> str:
    """The tiny model's FP32 ONNX export (what most pipeline tests run: fast, real ONNX Runtime)."""
    out, _ = built
    return str(out / "tiny.fp32.onnx")
