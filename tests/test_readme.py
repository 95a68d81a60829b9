"""The README's first screen runs as written: its shell commands and Python blocks, in a fresh folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: First-screen lines that cannot run here, and why: installs, the checkout's make targets, a GPU and a user's folder.
NOT_HERE = ("pip install", "make ", "/photos")
AGEBATCH = str(Path(sys.executable).parent / "agebatch")


def quick_start() -> list[tuple[str, str]]:
    """(language, code) of every fenced block between "## Quick start" and the next section."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quick start")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "agebatch").mkdir()
    (tmp_path / "agebatch" / "samples").symlink_to(ROOT / "agebatch" / "samples")  # the checkout's relative paths
    ran = []
    for lang, code in quick_start():
        if lang == "bash":
            for line in code.splitlines():
                command = line.split("  #")[0].strip()
                if not command or any(skip in command for skip in NOT_HERE):
                    continue
                assert command.startswith("agebatch "), command
                # The installed command, as a user types it (`python -m` would import the folder's `agebatch/` instead).
                r = subprocess.run([AGEBATCH, *shlex.split(command)[1:]], cwd=tmp_path, capture_output=True, text=True)
                assert r.returncode == 0, (command, r.stderr[-2000:])
                ran.append(command)
        elif lang == "python":
            r = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True)  # -P: not cwd
            assert r.returncode == 0, (code, r.stderr[-2000:])
            ran.append(code.splitlines()[0])
    assert any(c.startswith("agebatch infer") for c in ran) and any(c.startswith("agebatch models") for c in ran)
    assert sum(c.startswith("import") for c in ran) == 2, ran
    assert (tmp_path / "preds.parquet").is_file()
