"""Outputs never overwrite inputs.

Checked before any work: every output path is a new name ending in ``.parquet`` (a
Ray output is a folder), is not the source (a manifest or an image file), and does not
sit inside a folder source under an image extension, where the next listing would read
it as an input. A manifest can list any file, so while streaming, every input is also
compared with the outputs (`refuse_outputs_as_inputs`), at the cost of a string compare
per input and a `stat` only when the file names match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from agebatch.errors import AgebatchError
from agebatch.io.sources import IMAGE_EXTENSIONS, Item


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def check_outputs(source: str, outputs: dict[str, str], *, image_folders: dict[str, str] | None = None) -> None:
    """`outputs` maps each option (``--out``, ``--summary``) to a Parquet file; `image_folders` (``--save-crops``)
    to folders that will hold JPEGs, which must not lie in a folder source."""
    src = _real(source)
    src_is_folder = os.path.isdir(src)
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if not path.lower().endswith(".parquet"):
            raise AgebatchError(f"{option} {path} must be a .parquet file name")
        real = _real(path)
        if real in seen:
            raise AgebatchError(f"{option} and {seen[real]} name the same file {path}")
        seen[real] = option
    folders = image_folders or {}
    for option, path in [*outputs.items(), *folders.items()]:
        real = _real(path)
        if real == src:
            raise AgebatchError(f"{option} {path} is the source itself; choose another name")
        inside = src_is_folder and os.path.commonpath([src, real]) == src
        if inside and (option in folders or real.lower().endswith(IMAGE_EXTENSIONS)):
            raise AgebatchError(f"{option} {path} would be read as an input of {source}; choose another name")


def refuse_outputs_as_inputs(items: Iterator[Item], outputs: Iterable[str]) -> Iterator[Item]:
    """Pass `items` through, failing if one of them is an output file (a manifest can list anything)."""
    targets = {os.path.basename(p): _real(p) for p in outputs}
    for item in items:
        name = os.path.basename(item.path)
        if name in targets and _real(item.path) == targets[name]:
            raise AgebatchError(f"input {item.key} is also an output of this run; choose another output name")
        yield item
