"""Progress that suits where output goes: a rich bar on a terminal, sparse log lines otherwise.

Batch jobs often run under nohup, cron or CI, where a redrawn bar turns into megabytes
of escape codes; there we print one plain line every `log_every` seconds instead
(``$AGEBATCH_PROGRESS_SECONDS``, default 10), with the elapsed time and an ETA.

The rate and ETA count only the work this run does: inputs a resumed run skips are
`skip`ped (done, not timed), so a resume does not claim thousands of images per second.
rich's own ETA column waits for several updates before it shows anything (at batch 256
the first 13 s read "-:--:--"), so the ETA here is ours: remaining / rate, from the first batch.
"""

from __future__ import annotations

import os
import time
from types import TracebackType

from rich.console import Console

#: Seconds between log lines when stderr is not a terminal.
LOG_ENV = "AGEBATCH_PROGRESS_SECONDS"


def _log_every() -> float:
    try:
        value = float(os.environ.get(LOG_ENV, ""))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def clock(seconds: float | None) -> str:
    """h:mm:ss, or "-" when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Count work done: ``with Progress(total, "hashing") as p: p.advance(n, errors=k)``."""

    def __init__(
        self,
        total: int | None,
        description: str,
        *,
        console: Console | None = None,
        log_every: float | None = None,
        unit: str = "img",
    ) -> None:
        self.console = console or Console(stderr=True)
        self.total = total
        self.description = description
        self.unit = unit
        self.done = 0
        self.skipped = 0  # done by an earlier run: not in the rate
        self.errors = 0
        self.no_face = 0
        self.log_every = _log_every() if log_every is None else log_every
        self._start = time.perf_counter()
        self._last_log = self._start
        self._bar = None
        self._task = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("[red]{task.fields[errors]}"),
                TimeElapsedColumn(),
                TextColumn("eta {task.fields[eta]}"),
                console=self.console,
            )
            self._task = self._bar.add_task(description, total=total, rate="", errors="", eta="-")

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)  # type: ignore[arg-type]

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def rate(self) -> float:
        """Units per second this run did itself (skipped ones excluded)."""
        elapsed = self.elapsed
        return (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None before any work or without a total."""
        rate = self.rate
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def skip(self, n: int) -> None:
        """`n` units were done before this run started (--resume): counted as done, never as speed."""
        self.done += n
        self.skipped += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)  # type: ignore[arg-type]

    def advance(self, n: int = 1, *, errors: int = 0, no_face: int = 0) -> None:
        self.done += n
        self.errors += errors
        self.no_face += no_face
        if self._bar is not None:
            self._bar.update(
                self._task,  # type: ignore[arg-type]
                advance=n,
                rate=f"{self.rate:,.0f} {self.unit}/s",
                errors=self._tally(),
                eta=clock(self.eta),
            )
            return
        now = time.perf_counter()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            self.log_line()

    def _tally(self) -> str:
        parts = [f"{self.errors:,} errors" if self.errors else "", f"{self.no_face:,} without a face" if self.no_face else ""]
        return ", ".join(p for p in parts if p)

    def log_line(self) -> None:
        of = f"/{self.total:,}" if self.total is not None else ""
        tally = self._tally() or "0 errors"
        self.console.print(
            f"{self.description}: {self.done:,}{of} {self.unit}, {self.rate:,.0f} {self.unit}/s, {tally}, "
            f"elapsed {clock(self.elapsed)}, eta {clock(self.eta)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif exc_type is None:
            self.log_line()
