"""One table or one month, end to end: snapshot rows, converted in batches, COPYed into staging."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path

import polars as pl
from psycopg import conninfo

from emrsim_assets import anomalies, batch, content, convert, source, target, times
from emrsim_assets.convert import Converted
from emrsim_assets.errors import ConversionError
from emrsim_assets.memory import release_free_memory
from emrsim_assets.plan import Plan, Table
from emrsim_assets.progress import Progress, Report, log_progress
from emrsim_assets.schemas import Conn
from emrsim_assets.snapshot import Manifest
from emrsim_assets.target import LoadStats

log = logging.getLogger(__name__)


def _converted(
    snapshot: Path,
    plan: Plan,
    table: Table,
    batch_rows: int,
    proof: _Proof,
    rowid_range: tuple[int, int] | None = None,
    month: date | None = None,
) -> Iterator[Converted]:
    batches = source.read_batches(
        snapshot, table, batch_rows, rowid_range=rowid_range, classes=True
    )
    for frame in batches:
        frame = times.with_parsed_times(frame, table, plan)
        if month is not None:
            # The rowid span of a month may hold rows of neighbouring months: keep this one's.
            column = table.column(str(table.partition_by_month))
            stamps = times.parsed_timestamps(frame, column, plan)
            frame = frame.filter(times.month_start(stamps) == month)
            if frame.is_empty():
                continue
        # The proofs' source side, from the rows just read (content.Digest, anomalies.Profile
        # of every row read, quarantined or not): no second read.
        if proof.profile is not None:
            proof.profile.add(frame, table, plan)
        hashed = content.source_hashes(frame, table, plan, proof.printer)
        converted = convert.convert_frame(frame, table, plan)
        del frame  # the source rows are not needed while the converted ones are written
        if converted.quarantined.height:
            hashed = hashed.filter(~pl.col(batch.ROWID).is_in(converted.quarantined["row_id"]))
        proof.digest.add(hashed)
        del hashed
        yield converted
        del converted


class _Proof:
    """What a load sums for content_matches_source and values_look_alike, and its JSON printer
    (a connection of its own beside the load's, which is busy with COPY)."""

    def __init__(
        self,
        conn: Conn,
        table: Table,
        plan: Plan,
        snapshot_sha: str,
        printer: content.JsonPrinter | None = None,
    ) -> None:
        self.digest = content.Digest()
        self.profile = anomalies.Profile() if anomalies.time_columns(table) else None
        self.table, self.plan, self.snapshot_sha = table, plan, snapshot_sha
        # A printer lent by the caller (one per worker, for every month it loads) stays open.
        self._own = printer is None
        self.printer = printer or content.JsonPrinter(_printer_url(conn, table))

    def save(self, conn: Conn, partition_key: str) -> None:
        self.digest.save(conn, self.table, partition_key, self.snapshot_sha, self.plan)
        if self.profile is not None:
            self.profile.save(conn, self.table, partition_key, self.snapshot_sha, self.plan)

    def __enter__(self) -> _Proof:
        return self

    def __exit__(self, *_: object) -> None:
        if self._own:
            self.printer.close()


def _printer_url(conn: Conn, table: Table) -> str | None:
    """Where the table's JSON is printed: the load's server, or nowhere without JSON columns."""
    if not any(c.convert == "json" for c in table.columns):
        return None
    return conninfo.make_conninfo(conn.info.dsn, password=conn.info.password)


def load_table(
    conn: Conn,
    plan: Plan,
    table: Table,
    manifest: Manifest,
    batch_rows: int,
    progress: Report = log_progress,
) -> LoadStats:
    snapshot = Path(manifest.snapshot_path)
    with _Proof(conn, table, plan, manifest.sha256) as proof:
        batches = _converted(snapshot, plan, table, batch_rows, proof)
        try:
            return target.load_table(
                conn,
                table,
                batches,
                manifest.sha256,
                progress,
                manifest.row_counts.get(table.name),
                on_loaded=proof.save,
            )
        except target.KeyCollision as exc:
            raise named_collisions(snapshot, plan, table, exc) from None


def load_month(
    conn: Conn,
    plan: Plan,
    table: Table,
    month: date,
    manifest: Manifest,
    batch_rows: int,
    progress: Report = log_progress,
) -> LoadStats:
    """Load one month; a month with no source rows becomes an empty partition."""
    target.prepare_partitioned(conn, table)
    return _load_month(conn, plan, table, month, manifest, batch_rows, progress, None)


def _load_month(
    conn: Conn,
    plan: Plan,
    table: Table,
    month: date,
    manifest: Manifest,
    batch_rows: int,
    progress: Report,
    printer: content.JsonPrinter | None,
) -> LoadStats:
    key = month.isoformat()
    span = manifest.month_rowids.get(key)
    # In a pure month's span every row is the month's own: no need to parse timestamps twice.
    only = None if key in manifest.pure_months else month
    with _Proof(conn, table, plan, manifest.sha256, printer) as proof:
        batches: Iterator[Converted] = (
            _converted(Path(manifest.snapshot_path), plan, table, batch_rows, proof, span, only)
            if span
            else iter(())
        )
        try:
            return target.load_month(
                conn,
                table,
                month,
                batches,
                manifest.sha256,
                progress,
                manifest.month_counts.get(key),
                on_loaded=proof.save,
            )
        except target.KeyCollision as exc:
            raise named_collisions(Path(manifest.snapshot_path), plan, table, exc) from None


def named_collisions(
    snapshot: Path, plan: Plan, table: Table, collision: target.KeyCollision, shown: int = 3
) -> ConversionError:
    """Which source rows meet in the key PostgreSQL refused, with their values and storage
    classes, and the conversion that made them one (read again from the snapshot: the error
    path only). SQLite keeps 6, '6' and x'36' apart; text or bytes of any class do not."""
    columns = [table.column(name) for name in collision.columns]
    position = {c.name: i for i, c in enumerate(table.columns)}
    found: list[pl.DataFrame] = []
    for frame in source.read_batches(
        snapshot, table, columns=[c.name for c in columns], classes=True
    ):
        found.append(
            frame.select(
                pl.col(batch.ROWID),
                *[pl.col(c.name).alias(f"s{i}") for i, c in enumerate(columns)],
                *[
                    batch.class_digit(position[c.name]).alias(f"k{i}")
                    for i, c in enumerate(columns)
                ],
            ).with_columns(
                convert.column_values(frame, c, table, plan).alias(f"v{i}")
                for i, c in enumerate(columns)
            )
        )
    rows = pl.concat(found) if found else pl.DataFrame()
    keys = [f"v{i}" for i in range(len(columns))]
    groups = (
        rows.filter(pl.len().over(keys) > 1).sort(batch.ROWID).group_by(keys, maintain_order=True)
        if not rows.is_empty()
        else None
    )
    if groups is None:
        return collision
    said = []
    for _, group in list(groups)[:shown]:
        values = []
        for row in group.iter_rows(named=True):
            shown_values = ", ".join(
                f"{row[f's{i}']!r} {batch.STORAGE_CLASSES[row[f'k{i}']].upper()}"
                for i in range(len(columns))
            )
            values.append(f"row id {row[batch.ROWID]}: {shown_values}")
        said.append("; ".join(values))
    names = ", ".join(c.name for c in columns)
    how = ", ".join(
        f"{c.name} convert: {c.convert}{' with any_class: true' if c.any_class else ''}"
        for c in columns
    )
    classes = [c for c in columns if c.any_class]
    remedy = (
        f" To keep them apart, keep each value's storage class beside it: add a column "
        f"{{name: {classes[0].name}_class, source: {classes[0].source!r}, convert: storage_class}} "
        f"and put it in the key ({names})."
        if classes
        else " Fix the source rows, or convert the column so that distinct values stay distinct."
    )
    return ConversionError(
        f"{table.name}: rows distinct in SQLite become one key ({names}) in PostgreSQL through "
        f"the plan's conversion ({how}): {' | '.join(said)}.{remedy}"
    )


PROGRESS_EVERY_SECONDS = 2.0


def load_months(
    connect: Callable[[], AbstractContextManager[Conn]],
    plan: Plan,
    table: Table,
    months: Sequence[date],
    manifest: Manifest,
    batch_rows: int,
    workers: int,
    progress: Report = log_progress,
) -> list[LoadStats]:
    """Load `months`, `workers` at a time, each over its own connection and in its own transaction.

    A month alternates between client work (read, convert, encode) and server-only work (primary
    key, indexes, ANALYZE): on 2 cores, 3 workers keep both busy (9.4 s instead of 10.4 s for 2 M
    messages, 42 s instead of 44 s for 10 M, for 40 MB more memory).
    The first failure stops new months from starting and is raised once running ones finish;
    months already committed stay loaded (a rerun of the failed month completes the table)."""
    with connect() as conn:
        target.prepare_partitioned(conn, table)
    expected = sum(manifest.month_counts.get(m.isoformat(), 0) for m in months)
    lock = threading.Lock()
    done: list[LoadStats] = []
    started = time.perf_counter()
    last_line = [0.0]  # when the last month line was written: one every 2 s, and the last

    def say(event: Progress) -> None:
        with lock:
            progress(event)

    # One JSON printer per worker for all its months: a connection costs the client about
    # 80 ms of CPU (ADBC reads the server's types), and the server a backend.
    printers: list[content.JsonPrinter] = []
    mine = threading.local()

    def one(month: date) -> LoadStats:
        with connect() as conn:
            if not hasattr(mine, "printer"):
                mine.printer = content.JsonPrinter(_printer_url(conn, table))
                with lock:
                    printers.append(mine.printer)
            stats = _load_month(conn, plan, table, month, manifest, batch_rows, say, mine.printer)
        release_free_memory()
        with lock:
            done.append(stats)
            rows = sum(s.source_rows for s in done)
            seconds = time.perf_counter() - started
            if len(done) < len(months) and seconds - last_line[0] < PROGRESS_EVERY_SECONDS:
                return stats
            last_line[0] = seconds
            progress(
                Progress(
                    table.name,
                    rows,
                    expected,
                    seconds,
                    len(done),
                    len(months),
                    f"{month.isoformat()[:7]}: {stats.loaded_rows:,} rows in {stats.seconds:.1f} s",
                )
            )
        return stats

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="month")
    # Largest months first: the run ends on a small month, not with one worker finishing a big
    # one alone while the other has nothing left to do.
    by_size = sorted(months, key=lambda m: -manifest.month_counts.get(m.isoformat(), 0))
    futures = {month: pool.submit(one, month) for month in by_size}
    try:
        results = [futures[month].result() for month in months]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for printer in printers:
            printer.close()
    return results
