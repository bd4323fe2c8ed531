"""The snapshot: one consistent copy of the app's file (SQLite's backup API), proven sound,
described by its Manifest, and the partitioned table's months profiled. Every table reads it."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc
import polars as pl

from emrsim_assets import times
from emrsim_assets.batch import ROWID, class_columns, decode_classes
from emrsim_assets.errors import SourceError
from emrsim_assets.plan import Plan, Table
from emrsim_assets.private import private_dir, private_file, write_private
from emrsim_assets.source import (
    DEFAULT_BATCH_ROWS,
    NO_COLLATION,
    arrow_connection,
    check_plan_matches_source,
    count_storage_classes,
    open_readonly,
    quote_name,
    read_batches,
    row_locator,
)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    # file_digest reads into one reused buffer: a new 1 MiB bytes per read went to mmap (see
    # memory.py) and cost 100,000 page faults for 413 MB; 0.48 CPU-s became 0.29.
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What the snapshot holds: the numbers every check compares against."""

    snapshot_path: str
    source_path: str
    sha256: str
    size_bytes: int
    taken_at: str
    seconds: float
    row_counts: dict[str, int]
    # Partitioned table only: rows per month ("2024-03-01"), and the rowid span of each month.
    month_counts: dict[str, int] = field(default_factory=dict)
    month_rowids: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Months whose rowid span holds only their own rows: loaded with no per-row month filter.
    pure_months: list[str] = field(default_factory=list)
    # Rows whose partition timestamp is NULL, unparseable or outside the partition range.
    unplaceable_count: int = 0
    unplaceable_sample: list[dict[str, Any]] = field(default_factory=list)
    # Assessment: per table and column, how many values of each SQLite storage class.
    column_types: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SourceError(
                f"No source snapshot at {path.parent}: materialize source_snapshot first."
            ) from None
        raw["month_rowids"] = {k: tuple(v) for k, v in raw["month_rowids"].items()}
        return cls(**raw)


SNAPSHOT_FILE = "snapshot.sqlite"
MANIFEST_FILE = "manifest.json"


def take_snapshot(
    source: Path,
    snapshot_dir: Path,
    plan: Plan,
    months: list[str],
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Manifest:
    """Copy `source` with SQLite's online backup API, verify the copy and describe it.

    `months` are the partition keys ("YYYY-MM-01") the partitioned table may use; rows outside them
    are counted as unplaceable so that the coverage check can refuse them.
    """
    started = time.perf_counter()
    src = open_readonly(source)
    private_dir(snapshot_dir)
    final = snapshot_dir / SNAPSHOT_FILE
    partial = snapshot_dir / (SNAPSHOT_FILE + ".partial")
    try:
        dst = sqlite3.connect(private_file(partial))
        try:
            # The copy is new and unpublished until renamed, so it needs no rollback journal and
            # no sync per write: one fsync (below, beside the scans) makes it durable. This
            # halves the copy: 3.9 s instead of 7.6 s for a 2 GB file.
            dst.execute("PRAGMA journal_mode=OFF")
            dst.execute("PRAGMA synchronous=OFF")
            # One step: a consistent copy even while the app writes in WAL mode (a reader never
            # blocks a WAL writer), and about 1 s per GB where 4096-page steps took four times that.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot copy SQLite file {source}: {exc}.") from None
    finally:
        src.close()

    conn = open_readonly(partial)
    try:
        check_plan_matches_source(conn, plan, source)
    finally:
        conn.close()
    # Independent scans of the copy, in threads (SQLite and hashlib release the GIL, and
    # PostgreSQL is idle during the snapshot): corruption check, assessment, month profile and
    # digest, the longest first; the fsync is I/O wait and overlaps them all.
    with ThreadPoolExecutor(max_workers=5) as pool:
        synced = pool.submit(_fsync, partial)
        partitioned = plan.partitioned_table
        profiled = (
            pool.submit(_profile_months, partial, plan, partitioned, set(months), batch_rows)
            if partitioned is not None
            else None
        )
        checked = pool.submit(_quick_check, partial, source)
        digest = pool.submit(sha256_file, partial)
        assessed_future = pool.submit(_assess_all, partial, plan)
        checked.result()
        assessed = assessed_future.result()
        profile = profiled.result() if profiled else None
        sha256 = digest.result()
        synced.result()
    if profile is not None and partitioned is not None:
        assessed[partitioned.name] = (profile.rows, profile.column_types)
    row_counts = {t.name: assessed[t.name][0] for t in plan.tables}
    column_types = {t.name: assessed[t.name][1] for t in plan.tables}
    partial.replace(final)
    manifest = Manifest(
        snapshot_path=str(final),
        source_path=str(source),
        sha256=sha256,
        size_bytes=final.stat().st_size,
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
        row_counts=row_counts,
        month_counts=profile.month_counts if profile else {},
        month_rowids=profile.month_rowids if profile else {},
        pure_months=profile.pure_months if profile else [],
        unplaceable_count=profile.unplaceable_count if profile else 0,
        unplaceable_sample=profile.unplaceable_sample if profile else [],
        column_types=column_types,
    )
    manifest.save(snapshot_dir / MANIFEST_FILE)
    return manifest


def data_months(path: Path, plan: Plan, cache_dir: Path) -> list[str]:
    """The months ("YYYY-MM-01", UTC) in which the partitioned table has rows, read from the
    source once per file version (kept under `cache_dir`: every Dagster process loads the
    definitions, the webserver, the daemon and each run)."""
    table = plan.partitioned_table
    if table is None or not path.is_file():
        return []
    column = table.column(str(table.partition_by_month))
    stat = path.stat()
    wal = path.with_name(path.name + "-wal")
    key = hashlib.sha256(
        repr(
            (
                str(path.resolve()),
                stat.st_size,
                stat.st_mtime_ns,
                wal.stat().st_mtime_ns if wal.exists() else 0,
                table.source,
                column,
                plan.source_timezone.key,
            )
        ).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"months-{key}.json"
    if cache.exists():
        return list(json.loads(cache.read_text(encoding="utf-8")))
    months: set[str] = set()
    for frame in read_batches(path, table, DEFAULT_BATCH_ROWS, columns=[column.name], live=True):
        stamps = times.timestamps(frame[column.name], column, plan)
        found = times.month_start(stamps).drop_nulls().unique()
        # Beyond year 9999 is no month: such rows are refused by the coverage check.
        months.update(d.isoformat() for d in found.filter(found.dt.year() <= 9999).to_list())
    result = sorted(months)
    private_dir(cache_dir)
    partial = cache.with_suffix(".partial")
    write_private(partial, json.dumps(result))
    partial.replace(cache)
    return result


def load_manifest(snapshot_dir: Path) -> Manifest:
    return Manifest.load(snapshot_dir / MANIFEST_FILE)


def _quick_check(path: Path, source: Path) -> None:
    """PRAGMA quick_check: every page, b-tree and record of the copy is sound.

    integrity_check also cross-checks SQLite's own indexes against their tables, at four to seven
    times the cost; the migration reads table b-trees by rowid and never those indexes, and
    PostgreSQL re-proves uniqueness when it builds each primary key."""
    # Through the Arrow driver's SQLite (3.53): Python's 3.40 reports NULLs that are not there
    # in WITHOUT ROWID tables whose key lists columns out of their declared order. A schema
    # with collations of the app's own needs their stand-ins, which only Python's sqlite3 takes.
    try:
        with arrow_connection(path) as conn, conn.cursor() as cur:
            cur.execute("PRAGMA quick_check(20)")
            verdict = [str(row[0]) for row in cur.fetchall()]
    except adbc.Error as exc:
        verdict = [str(exc)]
    if verdict != ["ok"] and NO_COLLATION in verdict[0]:
        stand_ins = open_readonly(path)
        try:
            verdict = [str(r[0]) for r in stand_ins.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as exc:
            verdict = [str(exc)]
        finally:
            stand_ins.close()
    if verdict != ["ok"]:
        raise SourceError(
            f"SQLite file {source} failed PRAGMA quick_check: {'; '.join(verdict[:5])}. "
            "Restore it from a backup before migrating."
        )


def _assess_all(path: Path, plan: Plan) -> dict[str, tuple[int, dict[str, dict[str, int]]]]:
    conn = open_readonly(path)
    try:
        return {t.name: _assess(conn, t) for t in plan.tables if not t.partition_by_month}
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot read SQLite file {path}: {exc}.") from None
    finally:
        conn.close()


def _assess(conn: sqlite3.Connection, table: Table) -> tuple[int, dict[str, dict[str, int]]]:
    rows, per_column = count_storage_classes(conn, table.source, [c.source for c in table.columns])
    return rows, {c.name: kinds for c, kinds in zip(table.columns, per_column, strict=True)}


@dataclass
class _Scan:
    counts: dict[str, int] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    unplaceable: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    combos: dict[tuple[int, ...], int] = field(default_factory=dict)
    stray: list[pl.Series] = field(default_factory=list)

    def add(self, counts: dict[str, int], spans: dict[str, tuple[int, int]]) -> None:
        for key, rows in counts.items():
            self.counts[key] = self.counts.get(key, 0) + rows
            lo, hi = spans[key]
            old = self.spans.get(key)
            self.spans[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))


def _scan_months(
    path: Path, plan: Plan, table: Table, known: pl.Series, batch_rows: int, rowids: tuple[int, int]
) -> _Scan:
    column = table.column(str(table.partition_by_month))
    scan = _Scan()
    for frame in read_batches(path, table, batch_rows, rowids, [column.name], classes=True):
        scan.rows += frame.height
        codes = class_columns(len(table.columns))
        for *combo, seen in frame.group_by(codes).len().iter_rows():
            key = tuple(int(c) for c in combo)
            scan.combos[key] = scan.combos.get(key, 0) + seen
        month = times.month_start(times.timestamps(frame[column.name], column, plan))
        placed = frame.select(pl.col(ROWID), pl.col(column.name)).with_columns(month=month)
        inside = placed.get_column("month").is_in(known.implode()).fill_null(False)
        outside = placed.filter(~inside)
        scan.unplaceable += outside.height
        if outside.height:
            scan.stray.append(outside.get_column(ROWID))
        for row in outside.head(max(10 - len(scan.sample), 0)).iter_rows(named=True):
            scan.sample.append({"row_id": row[ROWID], "value": row[column.name]})
        grouped = (
            placed.filter(inside)
            .group_by("month")
            .agg(
                pl.len().alias("rows"),
                pl.col(ROWID).min().alias("lo"),
                pl.col(ROWID).max().alias("hi"),
            )
        )
        scan.add(
            {first.isoformat(): rows for first, rows, _, _ in grouped.iter_rows()},
            {first.isoformat(): (lo, hi) for first, _, lo, hi in grouped.iter_rows()},
        )
    return scan


def _profile_months(
    path: Path, plan: Plan, table: Table, months: set[str], batch_rows: int, parts: int = 2
) -> MonthProfile:
    """Rows per month and each month's rowid span; rows that fit no month are counted apart.

    The rowid range is scanned in `parts` slices at once (PostgreSQL is idle during the
    snapshot, so both cores read)."""
    known = pl.Series(sorted(date.fromisoformat(m) for m in months), dtype=pl.Date)
    conn = open_readonly(path)
    try:
        locator = row_locator(conn, table.source)
        if locator is None:
            raise SourceError(
                f"{table.source} has no rowid (WITHOUT ROWID), and a table partitioned by month "
                "is read by rowid ranges: do not partition it in the plan."
            )
        first, last = conn.execute(
            f"SELECT min({locator}), max({locator}) FROM {quote_name(table.source)}"  # noqa: S608
        ).fetchone()
    finally:
        conn.close()
    total = _Scan()
    if first is not None:
        step = (last - first) // parts + 1
        slices = [(first + i * step, min(first + (i + 1) * step - 1, last)) for i in range(parts)]
        with ThreadPoolExecutor(max_workers=parts) as pool:
            scans = list(
                pool.map(lambda s: _scan_months(path, plan, table, known, batch_rows, s), slices)
            )
        for scan in scans:
            total.add(scan.counts, scan.spans)
            total.unplaceable += scan.unplaceable
            total.sample.extend(scan.sample)
            total.rows += scan.rows
            total.stray.extend(scan.stray)
            for combo, seen in scan.combos.items():
                total.combos[combo] = total.combos.get(combo, 0) + seen
    types: dict[str, dict[str, int]] = {c.name: {} for c in table.columns}
    for combo, seen in total.combos.items():  # a handful of distinct combinations, not rows
        for col, kind in zip(table.columns, decode_classes(combo, len(table.columns)), strict=True):
            types[col.name][kind] = types[col.name].get(kind, 0) + seen
    stray = pl.concat(total.stray) if total.stray else pl.Series(ROWID, [], pl.Int64)
    return MonthProfile(
        dict(sorted(total.counts.items())),
        dict(sorted(total.spans.items())),
        _pure_months(total.spans, stray),
        total.unplaceable,
        sorted(total.sample, key=lambda row: int(row["row_id"]))[:10],
        total.rows,
        {name: dict(sorted(kinds.items())) for name, kinds in types.items()},
    )


def _pure_months(spans: dict[str, tuple[int, int]], stray: pl.Series) -> list[str]:
    """Months whose rowid span overlaps no other month's and holds no unplaceable row: the
    usual case for an app that inserts as time goes by.

    In order of their first rowid, a span meets an earlier one exactly when the furthest any
    earlier span reaches is at or past its start (not only its neighbour's: a row re-dated into
    January from inside March stretches January's span over February's and into March's), and
    meets a later one exactly when the next span starts at or before its end."""
    ordered = sorted(spans.items(), key=lambda item: item[1])
    pure = []
    reach: int | None = None  # the greatest end of every span before this one
    for i, (key, (lo, hi)) in enumerate(ordered):
        after = ordered[i + 1][1][0] if i + 1 < len(ordered) else None
        overlaps = (reach is not None and reach >= lo) or (after is not None and after <= hi)
        if not overlaps and not ((stray >= lo) & (stray <= hi)).any():
            pure.append(key)
        reach = hi if reach is None else max(reach, hi)
    return sorted(pure)


@dataclass(frozen=True)
class MonthProfile:
    """One scan of the partitioned table: months, rowid spans, and the assessment's numbers."""

    month_counts: dict[str, int]
    month_rowids: dict[str, tuple[int, int]]
    pure_months: list[str]
    unplaceable_count: int
    unplaceable_sample: list[dict[str, Any]]
    rows: int
    column_types: dict[str, dict[str, int]]
