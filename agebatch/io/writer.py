"""Incremental Parquet writing that never leaves a file looking complete when it is not.

Rows go to a hidden temporary file beside the target (`agebatch.io.atomic`); only
`close()` after a successful run fsyncs it and renames it to the requested name. A
crash, Ctrl-C or `kill -9` leaves at most a ``.NAME.tmp-XXXX`` file, never a
truncated ``NAME``; any failure the process survives removes the temporary file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from agebatch.errors import AgebatchError, already_exists
from agebatch.io.atomic import AtomicFile, io_error
from agebatch.io.schemas import META_CREATED, META_ROWS, META_VERSION
from agebatch.version import __version__


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Fail early, before any work, if `path` cannot be written as a new output."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise AgebatchError(f"output {path} is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise already_exists(f"output {path}")
    if not os.path.isdir(folder):
        raise AgebatchError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AgebatchError(f"output folder is not writable: {folder}")
    return path


class ParquetWriter:
    """Write record batches to `path` under a fixed schema, atomically.

    Use as a context manager: leaving the block normally completes the file, leaving
    it with an exception deletes the temporary file and keeps any previous output.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        *,
        metadata: Mapping[str, str] | None = None,
        overwrite: bool = False,
        compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd",
    ) -> None:
        self.path = check_output_path(path, overwrite=overwrite)
        self._file = AtomicFile(self.path)
        self.tmp_path = self._file.tmp
        meta = {
            META_VERSION: __version__,
            META_CREATED: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(metadata or {}),
        }
        self.schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}})
        self.rows = 0
        self._closed = False
        try:
            self._writer = pq.ParquetWriter(self.tmp_path, self.schema, compression=compression)
        except OSError as e:
            self._file.abort()  # the open may have created the file before failing
            raise io_error(self.path, e) from e

    def write(self, data: pa.RecordBatch | pa.Table | Mapping[str, Any]) -> None:
        """Append rows as one row group. A mapping is read as columns under the schema."""
        if isinstance(data, Mapping):
            data = pa.Table.from_pydict(dict(data), schema=self.schema)
        elif isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not data.schema.equals(self.schema, check_metadata=False):
            data = data.cast(self.schema)
        try:
            self._writer.write_table(data)
        except OSError as e:
            self.abort()
            raise io_error(self.path, e) from e
        self.rows += data.num_rows

    def close(self, metadata: Mapping[str, str] | None = None) -> str:
        """Finish the file, add final `metadata` (counts, stats), and move it into place."""
        if self._closed:
            return self.path
        try:
            self._writer.add_key_value_metadata({META_ROWS: str(self.rows), **(metadata or {})})
            self._writer.close()
            self._file.commit()
        except OSError as e:
            self.abort()
            raise io_error(self.path, e) from e
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written; the target path is left as it was."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
        self._file.abort()

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The agebatch key/value metadata of a Parquet file, as strings."""
    # The footer's key/value map: it holds the keys given up front and those added at close.
    md = pq.ParquetFile(os.fspath(path)).metadata.metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if not k.startswith(b"ARROW:")}
