"""The shard store: where a run's rows wait until the run is complete, and how a run resumes.

Rows go to shards of about `shard_rows` rows, ``part-<first input, 12 digits>.parquet``,
each written atomically (`agebatch.writer`) and ending at an input boundary (with one
row per face, an image's faces never straddle two shards; each shard's footer says how
many inputs it covers), in a folder with ``run.json`` (the run's signature: source,
model hash, labels, decode and face settings). A local run's folder is hidden
beside its output (``.NAME.parts/``) and is concatenated into the output at the end,
then removed; a Ray run's output *is* the folder, marked complete by ``_SUCCESS.json``.

So a crash, Ctrl-C or ``kill -9`` loses at most the shard in progress, and a resumed
run (same signature) skips every input already in a complete shard: inputs come in a
deterministic order, and the last saved path must match the source's listing there.
This module owns every rule about that folder: naming, checks, resume, assembly.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agebatch.errors import AgebatchError, already_complete, already_exists, unfinished
from agebatch.jsonio import read_json, write_json_atomic
from agebatch.schemas import META_INPUTS, META_STATS
from agebatch.sources import Item
from agebatch.writer import ParquetWriter, check_output_path, read_metadata

#: Marker a completed folder output (Ray) carries.
SUCCESS = "_SUCCESS.json"
RUN_FILE = "run.json"
_SHARD = re.compile(r"^part-(\d{12})\.parquet$")


def shard_name(start: int) -> str:
    return f"part-{start:012d}.parquet"


def shard_start(name: str) -> int | None:
    """The first row of shard file `name`, or None when `name` is not a shard."""
    m = _SHARD.match(name)
    return int(m.group(1)) if m else None


def parts_dir(out: str) -> str:
    """The hidden shard folder of a file output."""
    folder, name = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{name}.parts")


def run_signature(
    source: str, artifact: str, artifact_sha: str, labels: bool, decode: dict[str, Any], faces: dict[str, Any]
) -> dict[str, Any]:
    """What must not change between a run and its resumption, as JSON stores it (tuples become lists).

    `artifact` (the path) is informative only: the same model moved elsewhere still resumes.
    """
    sig = {
        "source": os.path.abspath(source),
        "artifact_sha256": artifact_sha,
        "labels": labels,
        "decode": decode,
        "faces": faces,
        "artifact": artifact,
    }
    return json.loads(json.dumps(sig))


class ShardStore:
    """The shard folder of one output; `prepare` checks the output, `open` starts or resumes a run."""

    def __init__(self, out: str, *, folder_output: bool, shard_rows: int) -> None:
        self.out = out
        self.folder_output = folder_output
        self.folder = out if folder_output else parts_dir(out)
        self.shard_rows = shard_rows
        self.saved = 0  # inputs covered by complete shards
        self.complete = False  # set by prepare(resume=True) on finished work: nothing to do
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_inputs = 0
        self._schema: pa.Schema | None = None

    # ---------------------------------------------------------------- before the run

    @classmethod
    def prepare(cls, out: str, *, folder_output: bool, shard_rows: int, resume: bool, overwrite: bool) -> ShardStore:
        """Check `out` against --resume/--overwrite before any work; clear what --overwrite replaces."""
        store = cls(out, folder_output=folder_output, shard_rows=shard_rows)
        if folder_output:
            store._prepare_folder(resume=resume, overwrite=overwrite)
        else:
            store._prepare_file(resume=resume, overwrite=overwrite)
        return store

    def _prepare_folder(self, *, resume: bool, overwrite: bool) -> None:
        out = self.out
        if os.path.isfile(out):
            raise AgebatchError(f"{out} is a file; a Ray run writes a folder of shards")
        if os.path.exists(os.path.join(out, SUCCESS)) and not overwrite:
            if not resume:
                raise already_complete(out)
            self.complete = True  # a retry loop that says --resume must be able to stop
            return
        if os.path.isdir(out) and os.listdir(out) and not (resume or overwrite):
            raise unfinished(f"an unfinished run in {out}")
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise AgebatchError(f"output folder does not exist: {parent}")
        if os.path.isdir(out) and overwrite:
            shutil.rmtree(out)

    def _prepare_file(self, *, resume: bool, overwrite: bool) -> None:
        out = self.out
        if os.path.exists(out) and not overwrite:
            if resume and not os.path.isdir(self.folder):
                self.complete = True  # a retry loop that says --resume must be able to stop
                return
            if not resume:
                raise already_exists(f"output {out}")
        check_output_path(out, overwrite=True)
        if os.path.isdir(self.folder) and not resume:
            if not overwrite:
                raise unfinished(f"an unfinished run of {out} ({self.folder})")
            shutil.rmtree(self.folder)

    def open(self, signature: dict[str, Any], items: Iterator[Item], *, resume: bool, source: str, schema: pa.Schema) -> int:
        """Create the folder, or check it against this run when resuming; return rows already saved.

        When resuming, the saved rows' inputs are consumed from `items` (one at a time: a
        resume after millions of rows holds none of them) and the last one must be the
        last path saved, so a source that changed underneath is caught.
        """
        self._schema = schema
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise AgebatchError(f"cannot write in {os.path.dirname(self.folder)}: {e.strerror or e}") from e
        run_json = os.path.join(self.folder, RUN_FILE)
        if not (resume and os.path.isfile(run_json)):
            write_json_atomic(run_json, signature)
            return 0
        before = read_json(run_json, missing="")
        fixed = [k for k in signature if k != "artifact"]
        if {k: before.get(k) for k in fixed} != {k: signature[k] for k in fixed}:
            raise AgebatchError(
                f"the unfinished run in {self.folder} used another source, model, decode or face settings; "
                "pass --overwrite to restart"
            )
        done, last_key = self._saved_inputs()
        seen, last = 0, None
        for last in itertools.islice(items, done):  # noqa: B007 - only the count and the last item matter
            seen += 1
        if done and (seen < done or last is None or last.key != last_key):
            raise AgebatchError(f"{source} no longer lists the same inputs as the unfinished run; pass --overwrite to restart")
        self.saved = done
        return done

    def shards(self) -> list[tuple[int, str]]:
        """(first row, path) of every complete shard, in row order."""
        found = [(start, name) for name in os.listdir(self.folder) if (start := shard_start(name)) is not None]
        return [(start, os.path.join(self.folder, name)) for start, name in sorted(found)]

    @staticmethod
    def shard_inputs(shard: pq.ParquetFile) -> int:
        """Inputs a shard covers (its footer says; a shard written before faces existed has one row per input)."""
        value = (shard.metadata.metadata or {}).get(META_INPUTS.encode())
        return int(value) if value is not None else shard.metadata.num_rows

    def _saved_inputs(self) -> tuple[int, str | None]:
        """Inputs covered by complete shards and the last path written; checks that shards are contiguous."""
        done, last = 0, None
        for start, path in self.shards():
            if start != done:
                raise AgebatchError(f"{self.folder} has a gap before {os.path.basename(path)}; rerun with --overwrite")
            pf = pq.ParquetFile(path)
            done += self.shard_inputs(pf)
            last = pf.read_row_group(pf.num_row_groups - 1, columns=["path"]).column("path")[-1].as_py()
        return done, last

    # ---------------------------------------------------------------- during the run

    def append(self, batch: pa.RecordBatch, inputs: int) -> None:
        """Buffer the rows of `inputs` whole inputs; a full shard is written (atomically) once complete."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_inputs += inputs
        if self._pending_rows >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one shard (the last one of a run may be short)."""
        if not self._pending_inputs:
            return
        assert self._schema is not None, "open() comes first"
        writer = ParquetWriter(os.path.join(self.folder, shard_name(self.saved)), self._schema, overwrite=True)
        try:
            writer.write(pa.Table.from_batches(self._pending, schema=self._schema))
            writer.close({META_INPUTS: str(self._pending_inputs)})
        except BaseException:
            writer.abort()
            raise
        self.saved += self._pending_inputs
        self._pending, self._pending_rows, self._pending_inputs = [], 0, 0

    # ---------------------------------------------------------------- after the run

    def assemble(self, meta: dict[str, str], visit: Callable[[pa.Table, int], None], footer: Callable[[], dict[str, str]]) -> int:
        """Read the shards in order, showing each to `visit`; a file output gets them concatenated, atomically.

        `visit` gets each shard's table and the inputs it covers. Returns the rows read.
        `footer()` is asked after the last visit, so what `visit` counted lands in the
        file's closing metadata.
        """
        assert self._schema is not None, "open() comes first"
        writer = None if self.folder_output else ParquetWriter(self.out, self._schema, metadata=meta, overwrite=True)
        rows = 0
        try:
            for _, path in self.shards():
                table = pq.read_table(path, schema=self._schema)
                if writer is not None:
                    writer.write(table)
                rows += table.num_rows
                visit(table, self.shard_inputs(pq.ParquetFile(path)))
            if writer is not None:
                writer.close(footer())
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return rows

    def finished_stats(self) -> dict[str, Any]:
        """What the completed output recorded about its run (its footer, or a folder's ``_SUCCESS.json``)."""
        if self.folder_output:
            return read_json(os.path.join(self.folder, SUCCESS), missing=f"{self.folder} has no {SUCCESS}")
        meta = read_metadata(self.out)
        return {**json.loads(meta.get(META_STATS, "{}")), **meta}

    def finish(self, record: dict[str, Any]) -> None:
        """The run is complete: drop the shards of a file output, or mark a folder output done."""
        if self.folder_output:
            write_json_atomic(os.path.join(self.folder, SUCCESS), record)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
