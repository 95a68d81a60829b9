from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "agebatch" / "samples" / "utkface"
SHARED = Path(os.environ.get("AGEBATCH_SHARED", ROOT.parent / "shared"))
POOL = SHARED / "data" / "utkface"


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
