"""Progress that suits where output goes: a rich bar on a terminal, sparse log lines otherwise.

Batch jobs often run under nohup, cron or CI, where a redrawn bar turns into megabytes
of escape codes; there we print one plain line every `log_every` seconds instead.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console


class Progress:
    """Count work done: ``with Progress(total, "hashing") as p: p.advance(n, errors=k)``."""

    def __init__(
        self, total: int | None, description: str, *, console: Console | None = None, log_every: float = 10.0, unit: str = "img"
    ) -> None:
        self.console = console or Console(stderr=True)
        self.total = total
        self.description = description
        self.unit = unit
        self.done = 0
        self.errors = 0
        self.log_every = log_every
        self._start = time.perf_counter()
        self._last_log = self._start
        self._bar = None
        self._task = None
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("[red]{task.fields[errors]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(description, total=total, rate="", errors="")

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)  # type: ignore[arg-type]

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int = 1, *, errors: int = 0) -> None:
        self.done += n
        self.errors += errors
        if self._bar is not None:
            self._bar.update(
                self._task,  # type: ignore[arg-type]
                advance=n,
                rate=f"{self.rate:,.0f} {self.unit}/s",
                errors=f"{self.errors} errors" if self.errors else "",
            )
            return
        now = time.perf_counter()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            self.log_line()

    def log_line(self) -> None:
        of = f"/{self.total:,}" if self.total is not None else ""
        self.console.print(
            f"{self.description}: {self.done:,}{of} {self.unit}, {self.rate:,.0f} {self.unit}/s, {self.errors} errors",
            highlight=False,
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
