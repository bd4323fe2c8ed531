"""How far a load is, as a structured event: rows done of how many, how fast, and when it will
be done. The core says it (target.py, pipeline.py); the Dagster shell logs its line; at a
terminal, rich draws it as a bar (no text is parsed back)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    what: str  # the table being loaded
    done: int  # source rows read so far
    expected: int | None  # of how many (the snapshot's count), if known
    seconds: float  # since the load started
    parts_done: int | None = None  # months done, for the partitioned table
    parts: int | None = None  # of how many months
    detail: str = ""  # what just finished ("2024-03: 799 rows in 0.4 s")

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before there is a rate or a total)."""
        if not self.expected or not self.rate:
            return None
        return max(self.expected - self.done, 0) / self.rate

    def line(self) -> str:
        """The event in words, as a log line: the one place its numbers are formatted."""
        head = f"{self.what} {self.detail}; " if self.detail else f"{self.what}: "
        if self.parts is not None:
            head += f"{self.parts_done}/{self.parts} months, "
        said = f"{head}{self.done:,}"
        said += f" of {self.expected:,} rows" if self.expected else " rows"
        said += f", {self.rate:,.0f} rows/s"
        eta = self.eta
        if eta is not None:
            said += f", ETA {eta:.0f} s"
        return said


Report = Callable[[Progress], None]


def log_progress(event: Progress) -> None:
    """The default report: a line in the module's log."""
    logging.getLogger("emrsim_assets").info(event.line())


# In-process listeners (the CLI's terminal view), and the lines they draw, so that the log's
# terminal handler does not print them a second time.
_listeners: list[Report] = []
_drawn: deque[str] = deque(maxlen=256)
_lock = threading.Lock()


def publish(event: Progress) -> None:
    with _lock:
        listeners = list(_listeners)
        if listeners:
            _drawn.append(event.line())
    for listener in listeners:
        listener(event)


def drawn(line: str) -> bool:
    """Whether a listener draws this line already (a bar at the terminal)."""
    with _lock:
        return line in _drawn


@contextmanager
def watching(listener: Report) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


@contextmanager
def terminal_bars() -> Iterator[None]:
    """Bars at the terminal while the block runs: one per table being loaded (rich)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bars

    bars = Bars(
        TextColumn("  {task.description:<16}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("rows {task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def draw(event: Progress) -> None:
        if event.what not in tasks:
            tasks[event.what] = bars.add_task(event.what, total=event.expected, rate="")
        bars.update(
            tasks[event.what],
            completed=event.done,
            total=event.expected,
            rate=f"{event.rate:,.0f}/s",
        )

    with bars, watching(draw):
        yield


# The run's report lines, as a person reads them: numbers with separators, no Python values.
RATE_SHOWN_FROM = 10_000  # rows: below, a rate says more about the clock than the load


def snapshot_line(sha256: str, row_counts: dict[str, int], seconds: float) -> str:
    total = sum(row_counts.values())
    return (
        f"Snapshot {sha256[:12]}: {len(row_counts)} tables, {total:,} rows, "
        f"taken and checked in {seconds:.1f} s"
    )


def loaded_line(table: str, rows: int, seconds: float) -> str:
    said = f"{table}: {rows:,} rows loaded in {seconds:.1f} s"
    if rows >= RATE_SHOWN_FROM and seconds > 0:
        said += f" ({rows / seconds:,.0f} rows/s)"
    return said


def cutover_line(row_counts: dict[str, int], schema: str, backup: str | None, skips: int) -> str:
    said = (
        f"Cutover done: {len(row_counts)} tables, {sum(row_counts.values()):,} rows are live in "
        f"schema {schema}; "
    )
    said += (
        f"the previous live schema is kept as {backup}"
        if backup
        else "nothing was live before (first cutover)"
    )
    if skips:
        said += f"; {skips} source objects are left behind as the plan's skip says"
    return said + "."
