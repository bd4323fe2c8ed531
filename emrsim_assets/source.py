"""The SQLite side: open read-only, snapshot consistently, assess, and stream rows into Polars."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc
import polars as pl
import pyarrow as pa

from emrsim_assets import convert
from emrsim_assets.errors import SourceError
from emrsim_assets.plan import Plan, Table
from emrsim_assets.plan.model import sqlite_fold
from emrsim_assets.private import private_dir, private_file, write_private

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
ROWID = "__rowid"
DEFAULT_BATCH_ROWS = 50_000
# What bounds a batch: about this many bytes of source values (a batch costs some 7 times that
# while it is converted, hashed and encoded), and never more than the batch_rows a caller asks.
# A table of narrow rows reads 50,000 rows a batch; the sample's messages about 47,000; a table
# of megabyte BLOBs a few rows at a time, where a count of rows alone would hold gigabytes.
# Smaller costs time, as every batch has a fixed cost of about 20 ms of client CPU (some 60
# Polars plans built and run; the JSON printer's round trips are 2 ms of it): at 10 M messages,
# 4 MiB held 70 MB less and took 8 s more (12 % of the load); 8 MiB ran as fast as 50,000 rows
# (116.6 s and 117.2), peaking at 446 MB instead of 464.
BATCH_BYTES = 8 << 20
# A read starts with one row, before a row's size is known, and grows its pages at most this
# many times: a first small row cannot size the next page for a thousand megabyte ones.
PAGE_GROWTH = 8


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open `path` so that nothing, not even a journal, can be written to it."""
    if not path.exists():
        raise SourceError(
            f"SQLite file {path} does not exist: name the app's database (its full path)."
        )
    if not path.is_file():
        raise SourceError(f"SQLite source {path} is not a file.")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise SourceError(f"Cannot read SQLite file {path}: {exc.strerror}.") from None
    if header != SQLITE_MAGIC:
        raise SourceError(f"{path} is not a SQLite database (its header is not 'SQLite format 3').")
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        for name in app_collations(conn):
            conn.create_collation(name, _stand_in)
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot open SQLite file {path}: {exc}.") from None
    return conn


# SQLite's own collations; any other name in a schema is the app's, registered by the app on
# each of its connections (Anki's unicase). Without it SQLite cannot read what uses it.
BUILTIN_COLLATIONS = frozenset({"binary", "nocase", "rtrim"})
_COLLATE = re.compile(
    r"""\bCOLLATE\s+("(?:[^"]|"")+"|'(?:[^']|'')+'|`[^`]+`|\[[^\]]+\]|\w+)""", re.I
)


def app_collations(conn: sqlite3.Connection) -> list[str]:
    """The collations the schema names that SQLite does not have, as the schema spells them
    (read from its SQL text as names only)."""
    names: set[str] = set()
    for (ddl,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql LIKE '%collate%'"):
        for token in _COLLATE.findall(str(ddl)):
            name = token[1:-1] if token[0] in "\"'`[" else token
            quote = token[0] if token[0] in "\"'" else ""
            name = name.replace(quote * 2, quote) if quote else name
            if sqlite_fold(name) not in BUILTIN_COLLATIONS:
                names.add(name)
    return sorted(names)


def _stand_in(left: str, right: str) -> int:
    """What an app's own collation is read with here: Unicode case-insensitive, as the custom
    collations apps declare mostly are (Anki's unicase). Only our reads use it: a table is
    scanned in its stored order, and the plan says what PostgreSQL compares with."""
    a, b = left.casefold(), right.casefold()
    return (a > b) - (a < b)


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
        stamps = convert.timestamps(frame[column.name], column, plan)
        found = convert.month_start(stamps).drop_nulls().unique()
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
        with _arrow_connection(path) as conn, conn.cursor() as cur:
            cur.execute("PRAGMA quick_check(20)")
            verdict = [str(row[0]) for row in cur.fetchall()]
    except adbc.Error as exc:
        verdict = [str(exc)]
    if verdict != ["ok"] and _NO_COLLATION in verdict[0]:
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


_INTERNAL = "sqlite_%"  # SQLite's own tables (sqlite_sequence, sqlite_stat1): not app data


def source_objects(conn: sqlite3.Connection) -> list[tuple[str, str, list[str]]]:
    """Every table, view and trigger of the app: name, kind and columns (a trigger has none),
    in the source's spelling. A trigger is the app's behaviour, not data, but PostgreSQL does
    not run it: the plan must say so, as for a view. (A trigger may share a table's name.)"""
    objects = []
    for name, kind in conn.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') "
        "AND name NOT LIKE ? ESCAPE '\\' ORDER BY name",
        (_INTERNAL.replace("_", "\\_"),),
    ):
        columns = []
        if kind != "trigger":
            listed = conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,))
            columns = [str(row[1]) for row in listed]
        objects.append((str(name), str(kind), columns))
    return objects


def check_plan_matches_source(conn: sqlite3.Connection, plan: Plan, source: Path) -> None:
    """Both ways: everything the plan reads exists, and everything the source holds is either
    migrated or skipped with a reason. Nothing is left behind without a word."""
    # SQLite matches names without regard to case ("Album" is "album"): so does the plan.
    found = source_objects(conn)
    triggers = [name for name, kind, _ in found if kind == "trigger"]
    objects = {
        sqlite_fold(name): (name, kind, cols) for name, kind, cols in found if kind != "trigger"
    }
    for table in plan.tables:
        _, kind, present = objects.get(sqlite_fold(table.source), ("", "", []))
        if kind != "table":
            raise SourceError(
                f"The plan migrates table {table.source!r}, but {source} has no such table "
                f"(it has: {', '.join(sorted(n for n, _, _ in objects.values()))})."
            )
        lowered = {sqlite_fold(c) for c in present}
        for column in table.columns:
            if sqlite_fold(column.source) not in lowered:
                raise SourceError(
                    f"The plan reads column {table.source}.{column.source}, but {source} has no "
                    f"such column (it has: {', '.join(present)})."
                )
    planned = {
        sqlite_fold(t.source): {sqlite_fold(c.source) for c in t.columns} for t in plan.tables
    }
    left: list[str] = []
    for key, (name, kind, columns) in objects.items():
        if plan.skipped(name) is not None:
            continue
        if key not in planned:
            left.append(f"{kind} {name!r}")
            continue
        left.extend(
            f"column {name}.{column}"
            for column in columns
            if sqlite_fold(column) not in planned[key] and plan.skipped(name, column) is None
        )
    left.extend(
        f"trigger {name!r}" for name in triggers if plan.skipped(name, kind="trigger") is None
    )
    left.extend(
        f"collation {name!r} (the app's own)"
        for name in app_collations(conn)
        if plan.skipped(name, kind="collation") is None
    )
    if left:
        raise SourceError(
            f"{source} holds data the plan neither migrates nor skips: {', '.join(left[:12])}"
            f"{' and more' if len(left) > 12 else ''}. Add them to the plan, or list them under "
            "skip with a reason (emrsim-migrate plan --sqlite FILE drafts a complete plan)."
        )


def schema_digest(conn: sqlite3.Connection) -> str:
    """A digest of the source's declared schema: a drafted plan is kept until it changes."""
    digest = hashlib.sha256()
    for row in conn.execute(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY 1, 2"
    ):
        digest.update("\x1f".join(map(str, row)).encode() + b"\x1e")
    return digest.hexdigest()


def row_locator(conn: sqlite3.Connection, source: str) -> str | None:
    """The name that reaches this table's rowid, or None for a WITHOUT ROWID table (or one whose
    columns shadow rowid, _rowid_ and oid alike): such tables are read in primary-key order."""
    columns = {
        str(row[1]).lower()
        for row in conn.execute("SELECT * FROM pragma_table_xinfo(?)", (source,))
    }
    for alias in ("rowid", "_rowid_", "oid"):
        if alias in columns:
            continue
        try:
            conn.execute(f"SELECT {alias} FROM {_quote(source)} LIMIT 0")  # noqa: S608
        except sqlite3.OperationalError:
            return None  # WITHOUT ROWID: no alias reaches a rowid
        return alias
    return None


def _quote(name: str) -> str:
    """The one way a SQLite name enters SQL: double-quoted, inner quotes doubled (any name)."""
    return '"' + name.replace('"', '""') + '"'


def count_storage_classes(
    conn: sqlite3.Connection, source: str, columns: Sequence[str]
) -> tuple[int, list[dict[str, int]]]:
    """One scan: the row count and, per column, how many values of each SQLite storage class
    (the classes present only)."""
    parts = ["count(*)"] + [
        f"sum(typeof({_quote(c)}) = '{kind}')" for c in columns for kind in STORAGE_CLASSES
    ]
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {_quote(source)}").fetchone()  # noqa: S608
    values = iter(row)
    rows = int(next(values))
    per_column = []
    for _ in columns:
        counts = {kind: int(next(values) or 0) for kind in STORAGE_CLASSES}
        per_column.append({k: v for k, v in counts.items() if v})
    return rows, per_column


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
        month = convert.month_start(convert.timestamps(frame[column.name], column, plan))
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
) -> Profile:
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
            f"SELECT min({locator}), max({locator}) FROM {_quote(table.source)}"  # noqa: S608
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
        for col, kind in zip(
            table.columns, _decode_classes(combo, len(table.columns)), strict=True
        ):
            types[col.name][kind] = types[col.name].get(kind, 0) + seen
    stray = pl.concat(total.stray) if total.stray else pl.Series(ROWID, [], pl.Int64)
    return Profile(
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
class Profile:
    """One scan of the partitioned table: months, rowid spans, and the assessment's numbers."""

    month_counts: dict[str, int]
    month_rowids: dict[str, tuple[int, int]]
    pure_months: list[str]
    unplaceable_count: int
    unplaceable_sample: list[dict[str, Any]]
    rows: int
    column_types: dict[str, dict[str, int]]


CLASSES = "__classes"  # per row: the SQLite storage class of every column, as base-5 digits
# In the order of the base-5 digits below (_class_digit_sql), and of every count of storage classes.
STORAGE_CLASSES = ("integer", "real", "text", "blob", "null")
# Base-5 digits per 64-bit integer (5**27 - 1 < 2**63): a wider table's classes take several,
# __classes, __classes_1, ...
CLASS_DIGITS = 27


def class_columns(count: int) -> list[str]:
    """The names of the integers holding the classes of `count` columns."""
    return [class_column(i) for i in range(0, max(count, 1), CLASS_DIGITS)]


def class_column(position: int) -> str:
    chunk = position // CLASS_DIGITS
    return CLASSES if chunk == 0 else f"{CLASSES}_{chunk}"


def class_digit(position: int) -> pl.Expr:
    """The storage class (0 to 4, as STORAGE_CLASSES) of the column at `position`."""
    digit: pl.Expr = (pl.col(class_column(position)) // (5 ** (position % CLASS_DIGITS))) % 5
    return digit


def _decode_classes(codes: tuple[int, ...], count: int) -> list[str]:
    names = []
    for position in range(count):
        code = codes[position // CLASS_DIGITS] // 5 ** (position % CLASS_DIGITS)
        names.append(STORAGE_CLASSES[code % 5])
    return names


def _select_list(
    table: Table, columns: list[str] | None, locator: str | None, classes: bool = False
) -> list[str]:
    wanted = [c for c in table.columns if columns is None or c.name in columns]
    parts = [f"{locator} AS {ROWID}"] if locator else []
    if classes:
        # One integer per row (per 27 columns), a base-5 digit per column: far cheaper than
        # strings to build. A CASE over typeof() costs a quarter of instr/substr on it (2 M
        # rows of 6 columns: 1.0 s against 4.3 s of SQLite's time).
        for start, name in zip(
            range(0, len(table.columns), CLASS_DIGITS),
            class_columns(len(table.columns)),
            strict=False,
        ):
            digits = " + ".join(
                f"{5**i} * {_class_digit_sql(c.source) if c.convert != 'storage_class' else 2}"
                for i, c in enumerate(table.columns[start : start + CLASS_DIGITS])
            )
            parts.append(f"{digits} AS {name}")
    for column in wanted:
        if column.convert == "storage_class":  # typeof() is TEXT, never NULL
            parts.append(f"typeof({_quote(column.source)}) AS {_quote(column.name)}")
            continue
        if column.convert == "blob":
            # Bytes as hex text: lossless whatever they hold (CAST AS TEXT would read them as UTF-8).
            # hex(NULL) is '': NULL stays NULL, an empty blob becomes ''.
            quoted = _quote(column.source)
            parts.append(f"iif({quoted} IS NULL, NULL, hex({quoted})) AS {_quote(column.name)}")
            continue
        # Everything else arrives as text: SQLite is dynamically typed, and one INTEGER column
        # may hold text in some rows (SQLite 3.53's text of a REAL round-trips: 17 digits).
        # Conversion parses and validates each value, naming the row if it fails.
        parts.append(f"CAST({_quote(column.source)} AS TEXT) AS {_quote(column.name)}")
        if column.convert == "json" and column.on_invalid == "quarantine":
            # Only where an invalid value must be sorted out before COPY: elsewhere PostgreSQL's
            # jsonb input is the judge, and its refusal names the row (25% of the read's cost).
            parts.append(
                f"json_valid({_quote(column.source)}) AS {_quote(convert.json_ok(column.name))}"
            )
    return parts


def _class_digit_sql(column: str) -> str:
    """The storage class of `column` as its position in STORAGE_CLASSES."""
    cases = " ".join(f"WHEN '{kind}' THEN {i}" for i, kind in enumerate(STORAGE_CLASSES[:-1]))
    return f"(CASE typeof({_quote(column)}) {cases} ELSE {len(STORAGE_CLASSES) - 1} END)"


def _arrow_connection(path: Path, live: bool = False) -> adbc.Connection:
    """Read-only. immutable=1 for our own snapshot only: nobody writes it, so SQLite skips all
    locking. The app's live file is read with locks and its WAL (immutable there would read
    pages a writer is changing: "database disk image is malformed", and miss the WAL's rows)."""
    options = "mode=ro" if live else "mode=ro&immutable=1"
    return adbc.connect(f"{path.resolve().as_uri()}?{options}")


# What SQLite says when a statement needs a collation its connection lacks (an app's own).
_NO_COLLATION = "no such collation sequence"
_NO_PLAN = "no query solution"  # the same, for a table whose key index uses one


def _fetch_with_stand_ins(
    conn: sqlite3.Connection, query: str, params: tuple[int, ...], counters: set[str]
) -> pa.Table:
    """A page through Python's sqlite3, whose connection has stand-ins for the app's own
    collations (open_readonly): for tables the Arrow driver cannot read. Rows become the same
    Arrow columns the driver gives (counters as integers, every value as text)."""
    cursor = conn.execute(query, params)
    names = [d[0] for d in cursor.description]
    columns = list(zip(*cursor.fetchall(), strict=True)) or [() for _ in names]
    return pa.table(
        {
            name: pa.array(values, pa.int64() if name in counters else pa.string())
            for name, values in zip(names, columns, strict=True)
        }
    )


def _fetch(conn: adbc.Connection, query: str, params: tuple[int, ...], batch_rows: int) -> pa.Table:
    # A cursor per batch: the driver keeps a statement's result until the cursor closes.
    with conn.cursor() as cur:
        # The driver infers each column's type from its first batch: one batch per query, so a
        # column that is NULL throughout one batch and text in the next cannot trip it.
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        cur.execute(query, params)
        arrow = cur.fetch_arrow_table()
    arrow.validate(full=True)  # the driver passes invalid UTF-8 through unchecked
    return arrow


def locate_rows(path: Path, table: Table) -> str | None:
    conn = open_readonly(path)
    try:
        return row_locator(conn, table.source)
    finally:
        conn.close()


def read_batches(
    path: Path,
    table: Table,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    rowid_range: tuple[int, int] | None = None,
    columns: list[str] | None = None,
    classes: bool = False,
    live: bool = False,
) -> Iterator[pl.DataFrame]:
    """Yield the table in batches of about BATCH_BYTES and at most `batch_rows` rows, in rowid
    order (keyset pagination: memory is bounded). A WITHOUT ROWID table is read in primary-key
    order, its row id being the row's position in that order (counted from 1).

    Rows arrive as Arrow record batches (ADBC's SQLite driver), several times faster than Python's
    sqlite3 rows, and straight into Polars without a Python object per value."""
    locator = locate_rows(path, table)
    if locator is None and rowid_range is not None:
        raise SourceError(
            f"{table.source} has no rowid (WITHOUT ROWID), so it cannot be read by month ranges."
        )
    parts = _select_list(table, columns, locator, classes)
    select = ", ".join(parts)
    names = [part.rsplit(" AS ", 1)[1].strip('"') for part in parts]
    counters = {ROWID, *class_columns(len(table.columns))} | {
        n for n in names if n.startswith("__json_ok")
    }
    source = _quote(table.source)
    if locator is None:
        order = ", ".join(_quote(table.column(k).source) for k in table.primary_key)
        paged = (
            f"SELECT {select} FROM {source} {'ORDER BY ' + order if order else ''} LIMIT ? OFFSET ?"  # noqa: S608
        )
    else:
        first_page = f"SELECT {select} FROM {source} WHERE {locator} >= ? AND {locator} <= ? ORDER BY {locator} LIMIT ?"  # noqa: S608
        next_page = first_page.replace(f"{locator} >= ?", f"{locator} > ?", 1)
    lo, hi = rowid_range if rowid_range else (-(2**63), 2**63 - 1)
    limit, read_bytes = 1, 0
    # Pages read but not yet yielded: the first, small ones travel on together as one batch
    # (each batch costs its consumer about 20 ms, whatever its size).
    held: list[pl.DataFrame] = []
    held_rows = held_bytes = 0
    stand_ins: sqlite3.Connection | None = None  # once the Arrow driver cannot read it
    try:
        with _arrow_connection(path, live) as conn:
            after: int | None = None
            offset = 0
            while True:
                params: tuple[int, ...]
                if locator is None:
                    query, params = paged, (limit, offset)
                elif after is None:
                    query, params = first_page, (lo, hi, limit)
                else:
                    query, params = next_page, (after, hi, limit)
                try:
                    if stand_ins is None:
                        arrow = _fetch(conn, query, params, limit)
                    else:
                        arrow = _fetch_with_stand_ins(stand_ins, query, params, counters)
                except pa.ArrowInvalid:
                    raise _undecodable(path, table, locator, query, params) from None
                except adbc.Error as exc:
                    if stand_ins is None and (_NO_COLLATION in str(exc) or _NO_PLAN in str(exc)):
                        stand_ins = open_readonly(path)
                        continue
                    raise SourceError(
                        f"Reading {table.source} from SQLite failed: {exc}."
                    ) from None
                except sqlite3.OperationalError as exc:
                    if "decode" in str(exc):
                        raise _undecodable(path, table, locator, query, params) from None
                    raise SourceError(
                        f"Reading {table.source} from SQLite failed: {exc}."
                    ) from None
                rows = arrow.num_rows
                if rows == 0:
                    if held:
                        yield _joined(held)
                    return
                frame = pl.from_arrow(arrow)
                assert isinstance(frame, pl.DataFrame)
                if locator is None:
                    frame = frame.with_columns(
                        pl.int_range(offset + 1, offset + rows + 1, dtype=pl.Int64).alias(ROWID)
                    ).select(ROWID, *names)
                    names_all = [ROWID, *names]
                else:
                    names_all = names
                # All-NULL columns arrive as integers: everything but the counters is text.
                frame = frame.with_columns(
                    pl.col(n).cast(pl.Int64 if n in counters else pl.String) for n in names_all
                )
                after = int(frame[ROWID][-1])
                offset += rows
                full = rows == limit
                # The next page holds BATCH_BYTES of rows of the mean size so far.
                read_bytes += arrow.nbytes
                fit = BATCH_BYTES * offset // max(read_bytes, 1)
                limit = max(1, min(batch_rows, fit, PAGE_GROWTH * limit))
                held.append(frame)
                held_rows += rows
                held_bytes += arrow.nbytes
                # Hold nothing while the consumer works: one batch in memory per reader, not three.
                del arrow, frame
                if full and held_bytes < BATCH_BYTES // 2 and held_rows < batch_rows:
                    limit = min(limit, batch_rows - held_rows)
                    continue
                batch = _joined(held)
                held, held_rows, held_bytes = [], 0, 0
                yield batch
                del batch
                if not full:
                    return
    finally:
        if stand_ins is not None:
            stand_ins.close()


def _joined(pages: list[pl.DataFrame]) -> pl.DataFrame:
    """Pages as one batch in one chunk: a batch left in chunks cost the messages load 1 to 2 s."""
    return pages[0] if len(pages) == 1 else pl.concat(pages, rechunk=True)


def _undecodable(
    path: Path, table: Table, locator: str | None, query: str, params: tuple[int, ...]
) -> SourceError:
    """Find the row and column holding bytes that are not UTF-8 (the error path only): the
    failed batch again, through Python's sqlite3, as bytes."""
    conn = open_readonly(path)
    conn.text_factory = bytes
    try:
        cursor = conn.execute(query, params)
        names = [d[0] for d in cursor.description]
        for position, row in enumerate(cursor, start=1):
            values = dict(zip(names, row, strict=True))
            for column in table.columns:
                value = values.get(column.name)
                if not isinstance(value, bytes):
                    continue
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    row_id = values[ROWID] if locator else params[1] + position
                    return SourceError(
                        f"{table.name}.{column.name}: row id {row_id}{key_label(table, values)}: "
                        f"value {value[:40]!r} is not valid UTF-8, and PostgreSQL text must be. "
                        "Fix the row in the app's database (or re-encode it) and run again, or "
                        "keep the column's bytes as they are: convert: blob, any_class: true."
                    )
    finally:
        conn.close()
    return SourceError(f"{table.name}: a value is not valid UTF-8 near {params}.")


def key_label(table: Table, values: dict[str, Any]) -> str:
    """' (key id='abc')' for a table keyed by columns of its own; '' for one keyed by rowid."""
    keys = [k for k in table.primary_key if table.column(k).convert not in ("legacy_id", "integer")]
    if not keys:
        return ""
    shown = ", ".join(f"{k}={_show(values.get(k))}" for k in keys)
    return f" (key {shown})"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return (
        "NULL"
        if value is None
        else repr(value if len(str(value)) <= 60 else str(value)[:60] + "...")
    )
