"""JSON files that agebatch owns (model cards, sidecars): read with clear errors, write atomically."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from agebatch.errors import AgebatchError


def read_json(path: str, *, missing: str) -> Any:
    """Parse `path`; `missing` is the whole message when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AgebatchError(missing) from None
    except (OSError, json.JSONDecodeError) as e:
        raise AgebatchError(f"cannot read {path}: {e}") from e


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cards and sidecars are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
