"""One way to write a file the user keeps: temporary name, fsync, rename, fsync the folder.

Every writer of outputs, cards, sidecars, exports and engines goes through
`AtomicFile`, so the promise is kept in one place: a reader, a crash, Ctrl-C or
``kill -9`` sees either the previous file or the complete new one, never a torn
one, and a failure leaves no temporary file behind. The temporary name is hidden
(``.NAME.tmp-XXXXXXXX.EXT``), lives in the target's folder (so the rename is atomic
on POSIX) and keeps the extension, because some writers (Keras' ``model.save``)
insist on it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from types import TracebackType

#: Files agebatch hands to users are meant to be shared (mkstemp-style 0600 is not).
DEFAULT_MODE = 0o644


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse O_RDONLY on folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: str) -> str:
    """The hidden temporary name beside `path` (same folder, same extension)."""
    folder, name = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}{ext}")


class AtomicFile:
    """A path to write `tmp` at, moved to `path` by `commit()` or removed by `abort()`.

    As a context manager it commits when the block ends normally and aborts when it
    raises. Writers that own the file's lifetime (`agebatch.writer.ParquetWriter`)
    call `commit`/`abort` themselves.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: int = DEFAULT_MODE) -> None:
        self.path = os.fspath(path)
        self.tmp = temp_name(self.path)
        self.mode = mode
        self.done = False

    def commit(self) -> str:
        """fsync the temporary file, rename it over `path`, fsync the folder; return `path`."""
        if self.done:
            return self.path
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(self.tmp, self.mode)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.done = True
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        return self.path

    def abort(self) -> None:
        """Remove the temporary file, if any; `path` stays as it was."""
        self.done = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> str:
    """Write `data` to `path` atomically (engines, timing caches)."""
    with AtomicFile(path) as f, open(f.tmp, "wb") as out:
        out.write(data)
    return os.fspath(path)
