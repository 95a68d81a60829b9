"""JSON files that agebatch owns (model cards, sidecars): read with clear errors, write atomically."""

from __future__ import annotations

import json
import os
from typing import Any

from agebatch.errors import AgebatchError
from agebatch.io.atomic import AtomicFile


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
    """Write `data` as indented JSON, atomically (`agebatch.io.atomic`)."""
    with AtomicFile(path) as a, open(a.tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
