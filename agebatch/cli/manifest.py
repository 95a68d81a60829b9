"""`agebatch manifest`."""

from __future__ import annotations

import os

import click

from agebatch.cli.options import CONTEXT_SETTINGS, glob_option, overwrite_option, source_argument, split_options


@click.command(context_settings=CONTEXT_SETTINGS)
@source_argument
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=str), help="Manifest Parquet file to write."
)
@split_options
@click.option("--drop-conflicts", is_flag=True, help="Leave out byte-identical groups whose copies carry different labels.")
@click.option("--absolute-paths", is_flag=True, help="Store absolute paths instead of paths relative to the manifest.")
@glob_option
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 256), help="Hashing threads (I/O bound).")
@overwrite_option
def manifest(
    source: str, out: str, val: float, test_frac: float, split_seed: int, drop_conflicts: bool, absolute_paths: bool,
    glob: str | None, workers: int, overwrite: bool,
) -> None:  # fmt: skip
    """Write a manifest of SOURCE (folder, manifest or image): one row per file.

    Columns: path, age, gender, race (from UTKFace-style names, null if unknown),
    sha256, bytes, split (train/val/test by content hash, so byte-identical files
    always share a split). Prints duplicate groups and label conflicts.
    """
    from rich.console import Console

    from agebatch.cli.report import counts_table
    from agebatch.io.manifest import build_manifest
    from agebatch.io.sources import count_items
    from agebatch.io.splits import SplitSpec
    from agebatch.progress import Progress

    total = count_items(source, glob=glob) if os.path.isdir(source) else None
    with Progress(total, "hashing", unit="files") as progress:
        rep = build_manifest(
            source, out, split=SplitSpec(val=val, test=test_frac, seed=split_seed), drop_conflicts=drop_conflicts,
            absolute_paths=absolute_paths, overwrite=overwrite, workers=workers, glob=glob, progress=progress.advance,
        )  # fmt: skip
    pairs = [
        ("files", rep.files),
        ("unreadable (row kept, no hash)", rep.unreadable),
        ("with labels", rep.labelled),
        ("distinct contents", rep.distinct),
        ("duplicate groups (files)", f"{rep.duplicate_groups} ({rep.duplicate_files})"),
        ("groups with conflicting labels", rep.conflict_groups),
        ("  of which age differs", rep.conflict_age_groups),
        ("  of which gender differs", rep.conflict_gender_groups),
        ("dropped (--drop-conflicts)", rep.dropped_files),
        ("rows written", rep.rows),
        *((f"split {k}", v) for k, v in rep.splits.items()),
    ]
    Console().print(counts_table(pairs, title=f"manifest {out}"))
