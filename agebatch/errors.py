"""Errors a user can act on.

Library code raises `AgebatchError` for anything caused by the user's input or
environment (a wrong path, an existing output, a missing optional dependency).
The CLI prints its message and exits with `exit_code`; it never shows a
traceback for these. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Exit codes shared by every command (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the run started but could not finish (I/O error, disk full)
EXIT_USAGE = 2  # bad input, bad options, missing capability: fix and rerun
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM, what schedulers and containers send before killing


class AgebatchError(Exception):
    """A problem the user can fix; its message is shown as is."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so `except Exception` never swallows it.

    Only the CLI turns SIGTERM into this exception (`raise_on_sigterm`); library users
    keep whatever handler their program installs.
    """


class RunStopped(BaseException):
    """Ctrl-C or SIGTERM stopped a run; the message says what was kept and how to continue.

    A BaseException, never an `Exception`: a library caller's ``except Exception:`` retry
    loop must not swallow a Ctrl-C. The subclasses below are also `KeyboardInterrupt` /
    `Terminated`, so code that catches those keeps working; the CLI alone maps them to 130 / 143.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunInterrupted(RunStopped, KeyboardInterrupt):
    exit_code = EXIT_INTERRUPTED


class RunTerminated(RunStopped, Terminated):
    exit_code = EXIT_TERMINATED


def run_stopped(cause: BaseException, message: str) -> RunStopped:
    """The RunStopped for `cause` (KeyboardInterrupt or Terminated), carrying `message`."""
    return RunTerminated(message) if isinstance(cause, Terminated) else RunInterrupted(message)


#: Set once SIGTERM has arrived under `raise_on_sigterm`, so `check_stopped` can raise it again.
_terminated = False
#: Set when Ctrl-C arrives inside `remember_ctrl_c`, for the same reason.
_interrupted = False


def raise_on_sigterm() -> None:
    """From now on, SIGTERM in the main thread raises `Terminated` (a no-op elsewhere)."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        global _terminated
        _terminated = True
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@contextmanager
def remember_ctrl_c() -> Iterator[None]:
    """Around a long run: a Ctrl-C still raises KeyboardInterrupt at once, and is also remembered for `check_stopped`.

    Only where Python's own SIGINT handler is in place (in the main thread): a program that
    installed its own keeps it. Restored on the way out, and the memory cleared, so a caller
    that catches the interrupt can start another run.
    """
    import signal
    import threading

    global _interrupted
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt

    _interrupted = False
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _interrupted = False


def check_stopped() -> None:
    """Raise `Terminated` / `KeyboardInterrupt` if SIGTERM / Ctrl-C arrived but its exception was lost.

    A signal handler's exception is swallowed when it fires inside a finalizer (``__del__``,
    e.g. pyarrow's ParquetWriter closing a shard) or a callback: Python prints "Exception
    ignored" and carries on, and the run would finish with exit 0 as if never stopped.
    Long loops call this at each safe point (a batch boundary, before the output is made final).
    CI hit it for SIGTERM first and later for Ctrl-C sent just as a shard closed.
    """
    if _terminated:
        raise Terminated()
    if _interrupted:
        raise KeyboardInterrupt


# One wording for "something is already there" across infer, manifest, train and build-engine.
def already_exists(what: str) -> AgebatchError:
    """An output that would be replaced: only --overwrite does that."""
    return AgebatchError(f"{what} already exists; pass --overwrite to replace it")


def unfinished(what: str) -> AgebatchError:
    """An interrupted run's saved work: --resume continues it, --overwrite starts over."""
    return AgebatchError(f"{what} exists; pass --resume to continue it or --overwrite to start over")


def already_complete(what: str) -> AgebatchError:
    """--resume on finished work."""
    return AgebatchError(f"{what} is already complete; pass --overwrite to compute it again")
