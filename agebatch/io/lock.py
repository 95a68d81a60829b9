"""One writer per output: an exclusive `flock` on a ``.NAME.lock`` file beside it.

The kernel drops a `flock` when its process dies, ``kill -9`` included, so a crashed
run never leaves a stale lock behind; the lock file itself is removed on a clean
release. A second run on the same output fails at once with the holder's pid instead
of racing the first one over the same shards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from types import TracebackType

from agebatch.errors import AgebatchError
from agebatch.io.atomic import refuse_symlink


def lock_path(target: str) -> str:
    folder, name = os.path.split(os.path.abspath(target.rstrip("/" + os.sep) or target))
    return os.path.join(folder, f".{name}.lock")


class OutputLock:
    """``with OutputLock(out): ...`` holds `out` for this process; a second holder gets an AgebatchError."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.path = lock_path(target)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise AgebatchError(f"output folder does not exist: {folder}")
        while True:
            try:
                # O_NOFOLLOW: a symlink planted at the lock's name would otherwise have us truncate its target.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise refuse_symlink(self.path) from None
                raise AgebatchError(f"cannot write in {folder}: {e.strerror or e}") from e
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise AgebatchError(f"{self.path} is not a regular file; remove it first")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise AgebatchError(f"cannot lock {self.path}: {e.strerror or e}") from e
                who = f"pid {holder}" if holder else "another process"
                raise AgebatchError(
                    f"another agebatch run ({who}) is writing {self.target}; wait for it or stop it first"
                ) from None
            # A releasing holder unlinks the file before unlocking: if ours is no longer the
            # file at that path, we locked an orphan and must try again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it: see acquire
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None
