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
import errno
import os
import uuid
from types import TracebackType

from agebatch.errors import EXIT_FAILED, AgebatchError

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


def io_error(path: str, e: OSError) -> AgebatchError:
    """One wording for a failed write of `path`: disk full and size limits say so (exit 1)."""
    if e.errno == errno.ENOSPC:
        return AgebatchError(f"disk full while writing {path}; nothing was kept", EXIT_FAILED)
    if e.errno in (errno.EDQUOT, errno.EFBIG):
        return AgebatchError(f"size limit reached while writing {path}; nothing was kept", EXIT_FAILED)
    return AgebatchError(f"cannot write {path}: {e.strerror or e}", EXIT_FAILED)


def refuse_symlink(path: str) -> AgebatchError:
    """The one wording for a symbolic link found where agebatch creates a file or folder of its own."""
    return AgebatchError(
        f"refusing to write through the symbolic link {path}; remove it (agebatch never follows links it did not make)"
    )


def check_not_symlink(path: str) -> None:
    """Raise `refuse_symlink` when `path` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise refuse_symlink(path)


def create_exclusive(path: str, mode: int = 0o600) -> None:
    """Create `path` as a new empty file, never through a link and never over an existing name."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode))
    except FileExistsError:
        raise (
            refuse_symlink(path) if os.path.islink(path) else AgebatchError(f"{path} appeared while agebatch created it")
        ) from None


def probe_writable(folder: str, what: str) -> None:
    """Fail now, not after the work, when no file can be created in `folder` (read-only mount, permissions, root too)."""
    probe = os.path.join(folder or ".", f".agebatch-probe-{uuid.uuid4().hex[:8]}")
    try:
        create_exclusive(probe)
        os.unlink(probe)
    except OSError as e:
        reason = "read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise AgebatchError(f"{what} folder is not writable: {folder} ({reason})") from e


class AtomicFile:
    """A path to write `tmp` at, moved to `path` by `commit()` or removed by `abort()`.

    As a context manager it commits when the block ends normally and aborts when it
    raises. Writers that own the file's lifetime (`agebatch.io.writer.ParquetWriter`)
    call `commit`/`abort` themselves.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: int = DEFAULT_MODE) -> None:
        self.path = os.fspath(path)
        self.tmp = temp_name(self.path)
        self.mode = mode
        self.done = False
        # The temporary name is ours before any writer opens it (O_EXCL | O_NOFOLLOW): a writer that opens
        # it by name truncates our own empty file, never a file a planted link points to.
        try:
            create_exclusive(self.tmp)
        except OSError as e:
            raise io_error(self.path, e) from e

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
