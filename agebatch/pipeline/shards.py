"""The shard store: where a run's rows wait until the run is complete, and how a run resumes.

Rows go to shards of about `shard_rows` rows, ``part-<first input, 12 digits>.parquet``,
each written atomically (`agebatch.io.writer`) and ending at an input boundary (with one
row per face, an image's faces never straddle two shards; each shard's footer says how
many inputs it covers), in a folder with ``run.json`` (the run's signature: source,
model hash, labels, decode and face settings). A local run's folder is hidden
beside its output (``.NAME.parts/``) and is concatenated into the output at the end,
then removed; a Ray run's output *is* the folder, marked complete by ``_SUCCESS.json``.

A shard is written once `shard_rows` rows or `shard_seconds` seconds have gathered, and
on Ctrl-C or SIGTERM the rows already predicted are written before the run stops. So a
stop loses at most the batch in flight, ``kill -9`` at most `shard_seconds` of work, and a resumed
run (same signature) skips every input already in a complete shard: inputs come in a
deterministic order, and each shard's footer records which inputs it covers (its first
input, their count and a sha256 of their keys), checked against the source on resume,
so a file added, removed or renamed before the last saved row, or a shard replaced by
another's bytes, is caught and named. The finished output carries the run signature in
its metadata, so ``--resume`` on it says "nothing to do" only for the same run. Nothing
here follows a symbolic link it did not make. This module owns every rule about that
folder: naming, checks, resume, assembly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agebatch.errors import AgebatchError, already_complete, already_exists, unfinished
from agebatch.io.atomic import check_not_symlink
from agebatch.io.jsonio import read_json, write_json_atomic
from agebatch.io.schemas import META_INPUTS, META_RUN, META_SHARD, META_STATS
from agebatch.io.sources import Item, display_key
from agebatch.io.writer import ParquetWriter, check_output_path, read_metadata

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


def keys_digest(keys: Iterable[str | None], h: Any = None) -> Any:
    """Feed input keys to a sha256 (null and non-UTF-8 keys included, unambiguously); return the hash object."""
    h = h or hashlib.sha256()
    for key in keys:
        h.update(b"\x00" if key is None else b"\x01" + key.encode("utf-8", "surrogateescape") + b"\x00")
    return h


def run_signature(
    source: str,
    artifact: str,
    artifact_sha: str,
    labels: bool,
    decode: dict[str, Any],
    faces: dict[str, Any],
    columns: list[str],
) -> dict[str, Any]:
    """What must not change between a run and its resumption, as JSON stores it (tuples become lists).

    `columns` are the output's column names (schema version and passed-through columns
    included: shards of another layout cannot be joined). `artifact` (the path) is
    informative only: the same model moved elsewhere still resumes.
    """
    sig = {
        "source": os.path.abspath(source),
        "artifact_sha256": artifact_sha,
        "labels": labels,
        "decode": decode,
        "faces": faces,
        "columns": columns,
        "artifact": artifact,
    }
    return json.loads(json.dumps(sig))


class ShardStore:
    """The shard folder of one output; `prepare` checks the output, `open` starts or resumes a run."""

    def __init__(self, out: str, *, folder_output: bool, shard_rows: int, shard_seconds: float = 30.0) -> None:
        self.out = out
        self.folder_output = folder_output
        self.folder = out if folder_output else parts_dir(out)
        self.shard_rows = shard_rows
        self.shard_seconds = shard_seconds
        self.saved = 0  # inputs covered by complete shards
        self.complete = False  # set by prepare(resume=True) on finished work: nothing to do
        self._pending = _Pending()
        self._last_flush = time.monotonic()
        self._schema: pa.Schema | None = None
        self.finished_candidate = False  # prepare(resume=True) found a finished output: compare its signature
        self.signature: dict[str, Any] = {}  # this run's (set by open); the finished output records it

    # ---------------------------------------------------------------- before the run

    @classmethod
    def prepare(
        cls, out: str, *, folder_output: bool, shard_rows: int, resume: bool, overwrite: bool, shard_seconds: float = 30.0
    ) -> ShardStore:
        """Check `out` against --resume/--overwrite before any work; clear what --overwrite replaces."""
        store = cls(out, folder_output=folder_output, shard_rows=shard_rows, shard_seconds=shard_seconds)
        if folder_output:
            store._prepare_folder(resume=resume, overwrite=overwrite)
        else:
            store._prepare_file(resume=resume, overwrite=overwrite)
        return store

    def _prepare_folder(self, *, resume: bool, overwrite: bool) -> None:
        out = self.out
        check_not_symlink(out)
        if os.path.isfile(out):
            raise AgebatchError(f"{out} is a file; a Ray run writes a folder of shards")
        if os.path.lexists(os.path.join(out, SUCCESS)) and not overwrite:
            if not resume:
                raise already_complete(out)
            self.finished_candidate = True  # a retry loop that says --resume must be able to stop
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
        check_not_symlink(self.folder)  # never rmtree, list or write through a planted link
        if os.path.lexists(out) and not overwrite:
            if resume and not os.path.isdir(self.folder):
                self.finished_candidate = True  # a retry loop that says --resume must be able to stop
                return
            if not resume:
                raise already_exists(f"output {out}")
        check_output_path(out, overwrite=True)
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise AgebatchError(f"{self.folder} is in the way of this run's shard folder and is not a folder; remove it")
        if os.path.isdir(self.folder) and not resume:
            if not overwrite:
                raise unfinished(f"an unfinished run of {out} ({self.folder})")
            shutil.rmtree(self.folder)

    def check_finished(self, signature: dict[str, Any]) -> None:
        """A finished output met `--resume`: it must be this run's, else say whose it is (exit 2)."""
        try:
            stats = self.finished_stats()
        except AgebatchError:
            raise
        except Exception as e:  # a junk file under the output's name: pyarrow's errors vary by damage
            raise AgebatchError(
                f"{self.out} exists but is not a readable agebatch output ({type(e).__name__}); "
                "pass --overwrite to replace it, or choose another --out"
            ) from None
        recorded = stats.get(META_RUN)
        if recorded is None:
            raise AgebatchError(
                f"{self.out} exists but was not written by an agebatch run that records its signature; "
                "pass --overwrite to replace it, or choose another --out"
            )
        before = json.loads(recorded) if isinstance(recorded, str) else recorded
        if not same_run(before, signature):
            raise AgebatchError(
                f"{self.out} is complete but was made from another source, model, decode or face settings; "
                "pass --overwrite to replace it, or choose another --out"
            )
        self.complete = True

    def open(self, signature: dict[str, Any], items: Iterator[Item], *, resume: bool, source: str, schema: pa.Schema) -> int:
        """Create the folder, or check it against this run when resuming; return inputs already saved.

        When resuming, the saved inputs are consumed from `items` (one at a time: a resume
        after millions of rows holds none of them), shard by shard, and each shard's
        recorded count and key digest must match what the source lists there now.
        """
        self._schema = schema
        self.signature = signature
        self._last_flush = time.monotonic()
        try:
            if not os.path.isdir(self.folder):
                os.mkdir(self.folder)
        except OSError as e:
            raise AgebatchError(f"cannot write in {os.path.dirname(self.folder)}: {e.strerror or e}") from e
        check_not_symlink(self.folder)
        run_json = os.path.join(self.folder, RUN_FILE)
        check_not_symlink(run_json)
        if not (resume and os.path.isfile(run_json)):
            if self.shards():
                # Shards without their run.json cannot be tied to any run: resuming "from 0" beside them would double rows.
                raise AgebatchError(f"{self.folder} holds shards but no {RUN_FILE}; pass --overwrite to restart")
            write_json_atomic(run_json, signature)
            return 0
        before = read_json(run_json, missing="")
        if not same_run(before, signature):
            raise AgebatchError(
                f"the unfinished run in {self.folder} used another source, model, decode or face settings; "
                "pass --overwrite to restart"
            )
        self.saved = self._verify_saved(items, source)
        return self.saved

    def shards(self) -> list[tuple[int, str]]:
        """(first input, path) of every complete shard, in input order."""
        found = [(start, name) for name in os.listdir(self.folder) if (start := shard_start(name)) is not None]
        return [(start, os.path.join(self.folder, name)) for start, name in sorted(found)]

    @staticmethod
    def shard_inputs(shard: pq.ParquetFile) -> int:
        """Inputs a shard covers (its footer says; a shard written before faces existed has one row per input)."""
        value = (shard.metadata.metadata or {}).get(META_INPUTS.encode())
        return int(value) if value is not None else shard.metadata.num_rows

    def _open_shard(self, path: str) -> pq.ParquetFile:
        check_not_symlink(path)
        try:
            return pq.ParquetFile(path)
        except Exception as e:  # truncated, empty or not Parquet at all
            raise AgebatchError(
                f"shard {os.path.basename(path)} in {self.folder} is unreadable ({type(e).__name__}); pass --overwrite to restart"
            ) from None

    def _verify_saved(self, items: Iterator[Item], source: str) -> int:
        """Consume the saved inputs from `items`, checking each shard's coverage; return their count."""
        done = 0
        changed = f"{source} no longer lists the same inputs as the unfinished run"
        for start, path in self.shards():
            name = os.path.basename(path)
            if start != done:
                raise AgebatchError(f"{self.folder} has a gap before {name}; rerun with --overwrite")
            pf = self._open_shard(path)
            n = self.shard_inputs(pf)
            record = (pf.metadata.metadata or {}).get(META_SHARD.encode())
            listed = list(itertools.islice(items, n))
            if record is not None:
                info = json.loads(record)
                if info.get("first") != start or info.get("inputs") != n:
                    raise AgebatchError(
                        f"shard {name} in {self.folder} covers other inputs than its name says; pass --overwrite to restart"
                    )
                if len(listed) < n or keys_digest(i.key for i in listed).hexdigest() != info.get("keys_sha256"):
                    raise AgebatchError(
                        f"{changed} in shard {name} (inputs {start:,}..{start + n - 1:,}); pass --overwrite to restart"
                    )
            else:  # a shard from before key digests: its last path must still match
                last = pf.read_row_group(pf.num_row_groups - 1, columns=["path"]).column("path")[-1].as_py()
                if len(listed) < n or display_key(listed[-1].key) != last:
                    raise AgebatchError(f"{changed}; pass --overwrite to restart")
            done += n
        return done

    # ---------------------------------------------------------------- during the run

    def append(self, batch: pa.RecordBatch, keys: list[str | None]) -> None:
        """Buffer the rows of whole inputs (their `keys`, in order); write a shard once `shard_rows` rows
        or `shard_seconds` seconds have gathered, whichever comes first (slow detect runs lose little on a crash)."""
        self._pending = self._pending.plus(batch, keys)  # one assignment: a signal never leaves it half updated
        if self._pending.rows >= self.shard_rows or time.monotonic() - self._last_flush >= self.shard_seconds:
            self.flush()

    @property
    def pending_inputs(self) -> int:
        """Inputs predicted but not yet in a shard (what a `flush` would save)."""
        return self._pending.inputs

    def flush(self) -> None:
        """Write the buffered rows as one shard (the last one of a run, or one flushed on a stop, may be short)."""
        pending = self._pending
        self._last_flush = time.monotonic()
        if not pending.inputs:
            return
        assert self._schema is not None, "open() comes first"
        writer = ParquetWriter(os.path.join(self.folder, shard_name(self.saved)), self._schema, overwrite=True)
        try:
            writer.write(pa.Table.from_batches(pending.batches, schema=self._schema))
            coverage = {"first": self.saved, "inputs": pending.inputs, "keys_sha256": pending.keys.hexdigest()}
            writer.close({META_INPUTS: str(pending.inputs), META_SHARD: json.dumps(coverage)})
        except BaseException:
            writer.abort()
            raise
        self._pending = _Pending()  # before `saved` moves: a stop between the two never writes these rows twice
        self.saved += pending.inputs

    # ---------------------------------------------------------------- after the run

    def assemble(
        self,
        meta: dict[str, str],
        visit: Callable[[pa.Table, int], None],
        footer: Callable[[], dict[str, str]],
        *,
        expected_inputs: int,
    ) -> int:
        """Read the shards in order, showing each to `visit`; a file output gets them concatenated, atomically.

        `visit` gets each shard's table and the inputs it covers. Returns the rows read.
        `footer()` is asked after the last visit, so what `visit` counted lands in the
        file's closing metadata. The shards must cover exactly `expected_inputs` inputs,
        checked *before* the output is renamed into place: a wrong file never appears
        under the final name. The run signature goes into the output's metadata.
        """
        assert self._schema is not None, "open() comes first"
        meta = {**meta, META_RUN: json.dumps(self.signature, sort_keys=True)}
        writer = None if self.folder_output else ParquetWriter(self.out, self._schema, metadata=meta, overwrite=True)
        rows = inputs = 0
        try:
            for _, path in self.shards():
                pf = self._open_shard(path)
                n = self.shard_inputs(pf)
                table = pq.read_table(path, schema=self._schema)
                if writer is not None:
                    writer.write(table)
                rows += table.num_rows
                inputs += n
                visit(table, n)
            if inputs != expected_inputs:
                # Inputs lost or doubled between stream and shards is a bug, not a user error: keep the traceback.
                raise RuntimeError(f"shards in {self.folder} cover {inputs} inputs, the run read {expected_inputs}")
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
        check_not_symlink(self.out)
        meta = read_metadata(self.out)
        return {**json.loads(meta.get(META_STATS, "{}")), **meta}

    def finish(self, record: dict[str, Any]) -> None:
        """The run is complete: drop the shards of a file output, or mark a folder output done."""
        if self.folder_output:
            write_json_atomic(os.path.join(self.folder, SUCCESS), {**record, META_RUN: self.signature})
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Pending:
    """Rows waiting for their shard, replaced whole on each append (so an interrupt sees all of it or none)."""

    batches: tuple[pa.RecordBatch, ...] = ()
    rows: int = 0
    inputs: int = 0
    keys: Any = field(default_factory=hashlib.sha256)  # sha256 of the covered inputs' keys, in order

    def plus(self, batch: pa.RecordBatch, keys: list[str | None]) -> _Pending:
        digest = self.keys.copy()
        keys_digest(keys, digest)
        return _Pending((*self.batches, batch), self.rows + batch.num_rows, self.inputs + len(keys), digest)


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two run signatures name the same run: everything but the model's path, which may move."""
    return _fixed(a) == _fixed(b)


def _fixed(signature: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in signature.items() if k != "artifact"}
