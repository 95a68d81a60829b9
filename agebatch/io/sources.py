"""Where inputs come from: a folder, a Parquet manifest, or a single image file.

Every source yields `Item`s lazily and in a deterministic order, so an archive of
millions of files is never listed into memory by the readers, a resumed run can
skip a prefix, and two runs over the same inputs produce rows in the same order.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from agebatch.errors import AgebatchError
from agebatch.io.labels import parse_utkface_name

#: File extensions (lower case) that a folder scan picks up by default.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

LabelMode = Literal["auto", "filename", "none"]

#: Manifest columns that agebatch reads; others are ignored.
MANIFEST_LABEL_COLUMNS = ("age", "gender", "race")
#: Manifest columns of a face box the caller already has (one box per row; a null box: detect as usual), and
#: optionally its 4 keypoints as 8 numbers. The output's face columns of the same names echo them.
BOX_COLUMNS = ("face_x", "face_y", "face_w", "face_h")
KEYPOINTS_COLUMN = "face_keypoints"


#: Where labelled training data is read when a command is given no `--data`: this variable, never a built-in path.
DATA_ENV = "AGEBATCH_DATA"


def default_data() -> str | None:
    """``$AGEBATCH_DATA``, or None (commands then ask for ``--data``)."""
    return os.environ.get(DATA_ENV) or None


def require_data(data: str | None) -> str:
    """`data`, or the one exit-2 message naming both ways to give it (train, calibrate, ensemble)."""
    if not data:
        raise AgebatchError(f"no training data: pass --data DIR (a UTKFace-style folder or a manifest) or set {DATA_ENV}")
    return data


def samples_dir() -> str:
    """The bundled UTKFace sample faces (see agebatch/samples/README.md)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "utkface")


@dataclass(frozen=True, slots=True)
class Item:
    """One input.

    `path` is where the bytes are read from; `key` is what outputs report in their
    `path` column (the manifest's own string, so results join back to it; None when a
    manifest row has no path). `index` is the input's 0-based position in its source
    (a manifest's row, a folder's sorted listing), the output's `input` column: it ties
    every row to its input even when paths are null or repeated. `extra` holds the
    manifest columns passed through to the output (`passthrough_fields`), in that order.
    """

    path: str
    key: str | None
    age: int | None = None
    gender: int | None = None
    race: int | None = None
    sha256: str | None = None
    split: str | None = None
    index: int = -1
    extra: tuple[object, ...] = ()
    #: A face box the manifest gives (x, y, w, h, source pixels; `BOX_COLUMNS`): detect mode aligns and predicts
    #: that face instead of detecting; with `keypoints` (x, y of right eye, left eye, nose tip, mouth) it aligns on them.
    box: tuple[float, float, float, float] | None = None
    keypoints: tuple[float, ...] | None = None

    @property
    def has_labels(self) -> bool:
        return self.age is not None or self.gender is not None


def _is_utf8(key: str) -> bool:
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogate escapes (PEP 383) of bytes that are not UTF-8
        return False


def display_key(key: str | None) -> str | None:
    """`key` as valid UTF-8 text for the `path` column: bytes of a non-UTF-8 file name become U+FFFD.

    Such a name reaches Python with surrogate escapes (PEP 383); Arrow strings must be UTF-8.
    The exact bytes go to the `path_bytes` column (`key_bytes`), so nothing is lost.
    """
    if key is None or _is_utf8(key):
        return key
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def key_bytes(key: str | None) -> bytes | None:
    """The file name's own bytes when `key` is not valid UTF-8 (else None: `path` already is exact)."""
    return None if key is None or _is_utf8(key) else key.encode("utf-8", "surrogateescape")


def _matches(rel: str, extensions: tuple[str, ...], glob: str | None) -> bool:
    if not rel.lower().endswith(extensions):
        return False
    if glob is None:
        return True
    # A pattern without "/" matches the file name anywhere; one with "/" matches the
    # path relative to the folder, as users expect from shell globs.
    target = rel if "/" in glob else rel.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, glob)


def iter_folder(
    root: str | os.PathLike[str],
    *,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    glob: str | None = None,
) -> Iterator[str]:
    """Yield image paths under `root`, recursively, sorted by name at every level.

    Symlinked folders are followed once: a folder already visited (same device and
    inode) is skipped, which breaks symlink loops. Entries that are not folders are
    yielded when their extension matches, even broken links or FIFOs, so that the
    decoder reports them as error rows instead of them vanishing silently.
    """
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise AgebatchError(f"not a folder: {root}")
    seen: set[tuple[int, int]] = set()

    def walk(folder: str, rel_prefix: str) -> Iterator[str]:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            # Skipping an unreadable folder would silently drop its files.
            raise AgebatchError(f"cannot list folder {folder}: {e.strerror}") from e
        for entry in entries:
            rel = rel_prefix + entry.name
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(entry.path, rel + "/")
            elif _matches(rel, exts, glob):
                yield entry.path

    yield from walk(root, "")


def _int_column(table: object, name: str, low: int, high: int, manifest: str, first_row: int = 0) -> list[int | None]:
    """Read an integer label column, accepting floats only when they are whole numbers; name the first bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name)  # type: ignore[attr-defined]
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
        raise AgebatchError(f"{manifest}: column '{name}' must be numeric, not {col.type}")
    if pa.types.is_floating(col.type):
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        whole = pc.equal(col, pc.floor(col)).to_pylist()
        for i, ok in enumerate(whole):
            if ok is False:
                raise AgebatchError(
                    f"{manifest}: row {first_row + i:,}, column '{name}' must hold whole numbers "
                    f"(got {col[i].as_py()}); fix the manifest and rerun"
                )
    values = pc.cast(col, pa.int64()).to_pylist()
    for i, v in enumerate(values):
        if v is not None and not low <= v <= high:
            raise AgebatchError(
                f"{manifest}: row {first_row + i:,}, column '{name}' has value {v}, outside {low}..{high}; "
                "fix the manifest and rerun"
            )
    return values


def _open_manifest(manifest: str) -> pq.ParquetFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(manifest)
    except FileNotFoundError as e:
        raise AgebatchError(f"manifest not found: {manifest}") from e
    except (pa.ArrowException, OSError) as e:
        raise AgebatchError(f"not a readable Parquet manifest: {manifest} ({e})") from e


def passthrough_fields(source: str, keep: tuple[str, ...] | None, taken: Iterable[str]) -> list[pa.Field]:
    """The manifest columns copied into every output row of their input (`--keep-columns`), as output fields.

    `keep` None: every column of a manifest whose name the output does not already use
    (`taken`: predictions, labels, ...), binary ones excepted (image bytes would be copied
    once per face); a folder or single file has none. Named columns must exist and must
    not clash with an output column: both exit 2 before any work, naming the columns.
    Dictionary columns come out as their plain values.
    """
    import pyarrow as pa

    taken = set(taken) | {"path", "path_bytes"}
    if not is_manifest(source):
        if keep:
            raise AgebatchError(f"--keep-columns copies manifest columns; {source} is not a Parquet manifest")
        return []
    schema = _open_manifest(source).schema_arrow
    if keep is None:
        chosen = [
            f for f in schema if f.name not in taken and not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
        ]
    else:
        missing = [c for c in keep if c not in schema.names]
        if missing:
            raise AgebatchError(f"--keep-columns: {', '.join(missing)} not in {source} (its columns: {', '.join(schema.names)})")
        clash = [c for c in keep if c in taken]
        if clash:
            raise AgebatchError(
                f"--keep-columns: {', '.join(clash)} would replace output columns of the same name; rename them in the manifest"
            )
        chosen = [schema.field(c) for c in dict.fromkeys(keep)]
    return [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else pa.field(f.name, f.type) for f in chosen]


def iter_manifest(manifest: str | os.PathLike[str], *, labels: LabelMode = "auto", extra: tuple[str, ...] = ()) -> Iterator[Item]:
    """Yield the rows of a Parquet manifest as `Item`s, in file order.

    The manifest needs a string `path` column; relative paths resolve against the
    manifest's folder. Optional `age`, `gender`, `race`, `sha256`, `split` columns
    are carried along, and the `extra` columns' values in `Item.extra`. The file is
    read one record batch at a time.
    """
    import pyarrow as pa

    manifest = os.fspath(manifest)
    pf = _open_manifest(manifest)
    names = set(pf.schema_arrow.names)
    if "path" not in names:
        raise AgebatchError(f"{manifest}: no 'path' column (columns: {', '.join(sorted(names)) or 'none'})")
    if not (
        pa.types.is_string(pf.schema_arrow.field("path").type) or pa.types.is_large_string(pf.schema_arrow.field("path").type)
    ):
        raise AgebatchError(f"{manifest}: column 'path' must be strings")
    label_cols = [c for c in MANIFEST_LABEL_COLUMNS if c in names]
    from_columns = labels == "auto" and bool(label_cols)
    from_names = labels == "filename" or (labels == "auto" and not label_cols)
    carried = [c for c in ("sha256", "split") if c in names]
    raw = ["path_bytes"] if "path_bytes" in names else []  # a non-UTF-8 file name's exact bytes (schema 4)
    base = os.path.dirname(os.path.abspath(manifest))
    bounds = {"age": (0, 150), "gender": (0, 1), "race": (0, 4)}
    if from_columns:
        # One pass over the label columns before the first item: a bad label at row 9,000 is
        # reported before any work, naming the row, instead of aborting a run after it.
        row = 0
        for batch in pf.iter_batches(batch_size=65536, columns=label_cols):
            table = pa.Table.from_batches([batch])
            for c in label_cols:
                _int_column(table, c, *bounds[c], manifest, row)
            row += batch.num_rows

    boxes = _box_columns(pf.schema_arrow, manifest)
    read = list(dict.fromkeys(["path", *(label_cols if from_columns else []), *carried, *raw, *extra, *boxes]))
    index = 0
    for batch in pf.iter_batches(batch_size=8192, columns=read):
        table = pa.Table.from_batches([batch])
        keys = table.column("path").to_pylist()
        exact = table.column("path_bytes").to_pylist() if raw else [None] * len(keys)
        cols: dict[str, list] = {}
        if from_columns:
            for c in label_cols:
                cols[c] = _int_column(table, c, *bounds[c], manifest)
        for c in carried:
            cols[c] = table.column(c).to_pylist()
        passed = list(zip(*(table.column(c).to_pylist() for c in extra), strict=True)) if extra else [()] * len(keys)
        given = _boxes(table, boxes) if boxes else [(None, None)] * len(keys)
        for i, key in enumerate(keys):
            path = key or ""  # a null or empty path reads as "" and becomes an error row, never a dropped one
            raw_name = exact[i]
            if raw_name is not None:
                path = key = os.fsdecode(raw_name)  # the real name: reads the file, and `path_bytes` is written again
            path = path if (not path or os.path.isabs(path)) else os.path.join(base, path)
            box, points = given[i]
            item = Item(
                path=path, key=key, index=index, extra=passed[i], box=box, keypoints=points, **{c: v[i] for c, v in cols.items()}
            )
            index += 1
            yield _with_name_labels(item) if from_names else item


def _box_columns(schema: pa.Schema, manifest: str) -> list[str]:
    """The box (and keypoint) columns a manifest has: all four box columns or none, numeric; else exit 2."""
    import pyarrow as pa

    have = [c for c in BOX_COLUMNS if c in schema.names]
    if not have:
        return []
    if len(have) != len(BOX_COLUMNS):
        missing = ", ".join(c for c in BOX_COLUMNS if c not in have)
        raise AgebatchError(f"{manifest}: face boxes need all of {', '.join(BOX_COLUMNS)}; missing {missing}")
    for c in have:
        t = schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
            raise AgebatchError(f"{manifest}: column '{c}' must be numeric (source pixels), not {t}")
    if KEYPOINTS_COLUMN in schema.names:
        t = schema.field(KEYPOINTS_COLUMN).type
        if not (pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)):
            raise AgebatchError(f"{manifest}: column '{KEYPOINTS_COLUMN}' must be a list of 8 numbers, not {t}")
        have.append(KEYPOINTS_COLUMN)
    return have


def _boxes(
    table: pa.Table, columns: list[str]
) -> list[tuple[tuple[float, float, float, float] | None, tuple[float, ...] | None]]:
    """Per row: the given box (None when any of it is null: detect that row) and its keypoints (None when absent).

    Values are passed on unchecked: a box outside its image is that row's error, known only once it is decoded.
    """
    values = [table.column(c).to_pylist() for c in BOX_COLUMNS]
    points = table.column(KEYPOINTS_COLUMN).to_pylist() if KEYPOINTS_COLUMN in columns else [None] * table.num_rows
    out: list[tuple[tuple[float, float, float, float] | None, tuple[float, ...] | None]] = []
    for r in range(table.num_rows):
        x, y, w, h = (v[r] for v in values)
        if x is None or y is None or w is None or h is None:
            out.append((None, None))
            continue
        kp = points[r]
        out.append(((float(x), float(y), float(w), float(h)), None if kp is None else tuple(kp)))
    return out


def _with_name_labels(item: Item) -> Item:
    parsed = parse_utkface_name(item.path)
    if parsed is None:
        return item
    return replace(item, age=parsed.age, gender=parsed.gender, race=parsed.race)


def is_manifest(source: str | os.PathLike[str]) -> bool:
    """A source is a manifest when it is a file ending in .parquet or starting with Parquet's magic."""
    source = os.fspath(source)
    if not os.path.isfile(source):
        return False
    if source.lower().endswith((".parquet", ".pq")):
        return True
    try:
        with open(source, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def iter_items(
    source: str | os.PathLike[str],
    *,
    labels: LabelMode = "auto",
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    glob: str | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[Item]:
    """Yield the items of any source: a folder, a Parquet manifest or one image file.

    `labels`: "auto" reads manifest label columns when a manifest has them, else
    UTKFace file-name labels; "filename" always reads file names; "none" reads none.
    `extra`: manifest columns to carry in `Item.extra` (see `passthrough_fields`).
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise AgebatchError(f"no such file or folder: {source}")
    if os.path.isdir(source):
        for index, path in enumerate(iter_folder(source, extensions=extensions, glob=glob)):
            item = Item(path=path, key=path, index=index)
            yield _with_name_labels(item) if labels != "none" else item
    elif is_manifest(source):
        yield from iter_manifest(source, labels=labels, extra=extra)
    else:
        item = Item(path=source, key=source, index=0)
        yield _with_name_labels(item) if labels != "none" else item


def count_items(source: str | os.PathLike[str], **kwargs: object) -> int:
    """Number of items a source yields (cheap for manifests: read from the footer)."""
    source = os.fspath(source)
    if is_manifest(source):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(source).metadata.num_rows
        except Exception as e:
            raise AgebatchError(f"not a readable Parquet manifest: {source} ({e})") from e
    return sum(1 for _ in iter_items(source, labels="none", **kwargs))  # type: ignore[arg-type]
