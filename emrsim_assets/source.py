"""The SQLite side: open read-only, snapshot consistently, assess, and stream rows into Polars."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from emrsim_assets import convert
from emrsim_assets.errors import SourceError
from emrsim_assets.plan import Plan, Table

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
ROWID = "__rowid"
DEFAULT_BATCH_ROWS = 100_000


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open `path` so that nothing, not even a journal, can be written to it."""
    if not path.exists():
        raise SourceError(
            f"SQLite file {path} does not exist. Set EMRSIM_SQLITE_PATH to the app's database."
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
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot open SQLite file {path}: {exc}.") from None
    return conn


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    # Rows whose partition timestamp is NULL, unparseable or outside the partition range.
    unplaceable_count: int = 0
    unplaceable_sample: list[dict[str, Any]] = field(default_factory=list)
    # Assessment: per table and column, how many values of each SQLite storage class.
    column_types: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True), encoding="utf-8")

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
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    final = snapshot_dir / SNAPSHOT_FILE
    partial = snapshot_dir / (SNAPSHOT_FILE + ".partial")
    partial.unlink(missing_ok=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            # One consistent copy even while the app writes in WAL mode.
            src.backup(dst, pages=4096)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot copy SQLite file {source}: {exc}.") from None
    finally:
        src.close()

    conn = open_readonly(partial)
    try:
        verdict = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
        if verdict != ["ok"]:
            raise SourceError(
                f"SQLite file {source} failed PRAGMA integrity_check: {'; '.join(verdict[:5])}. "
                "Restore it from a backup before migrating."
            )
        _check_plan_matches_source(conn, plan, source)
        assessed = {t.name: _assess(conn, t) for t in plan.tables}
        row_counts = {name: rows for name, (rows, _) in assessed.items()}
        column_types = {name: types for name, (_, types) in assessed.items()}
        month_counts: dict[str, int] = {}
        month_rowids: dict[str, tuple[int, int]] = {}
        unplaceable: list[dict[str, Any]] = []
        unplaceable_count = 0
        partitioned = plan.partitioned_table
        if partitioned is not None:
            month_counts, month_rowids, unplaceable_count, unplaceable = _profile_months(
                conn, plan, partitioned, set(months), batch_rows
            )
    finally:
        conn.close()
    partial.replace(final)
    manifest = Manifest(
        snapshot_path=str(final),
        source_path=str(source),
        sha256=sha256_file(final),
        size_bytes=final.stat().st_size,
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
        row_counts=row_counts,
        month_counts=month_counts,
        month_rowids=month_rowids,
        unplaceable_count=unplaceable_count,
        unplaceable_sample=unplaceable,
        column_types=column_types,
    )
    manifest.save(snapshot_dir / MANIFEST_FILE)
    return manifest


def load_manifest(snapshot_dir: Path) -> Manifest:
    return Manifest.load(snapshot_dir / MANIFEST_FILE)


def _check_plan_matches_source(conn: sqlite3.Connection, plan: Plan, source: Path) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in plan.tables:
        if table.source not in tables:
            raise SourceError(
                f"The plan migrates table {table.source!r}, but {source} has no such table "
                f"(it has: {', '.join(sorted(tables))})."
            )
        present = {
            row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table.source,))
        }
        for column in table.columns:
            if column.source not in present:
                raise SourceError(
                    f"The plan reads column {table.source}.{column.source}, but {source} has no "
                    f"such column (it has: {', '.join(sorted(present))})."
                )


def _quote(name: str) -> str:
    # SQLite identifiers: names come from the validated plan ([a-z_][a-z0-9_]*), quoted anyway.
    return '"' + name.replace('"', '""') + '"'


def _assess(conn: sqlite3.Connection, table: Table) -> tuple[int, dict[str, dict[str, int]]]:
    """One scan: the row count and, per column, how many values of each SQLite storage class."""
    classes = ("integer", "real", "text", "blob", "null")
    parts = ["count(*)"] + [
        f"sum(typeof({_quote(c.source)}) = '{kind}')" for c in table.columns for kind in classes
    ]
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {_quote(table.source)}").fetchone()  # noqa: S608
    values = iter(row)
    rows = int(next(values))
    types: dict[str, dict[str, int]] = {}
    for column in table.columns:
        counts = {kind: int(next(values) or 0) for kind in classes}
        types[column.name] = {k: v for k, v in counts.items() if v}
    return rows, types


def _profile_months(
    conn: sqlite3.Connection, plan: Plan, table: Table, months: set[str], batch_rows: int
) -> tuple[dict[str, int], dict[str, tuple[int, int]], int, list[dict[str, Any]]]:
    column = table.column(str(table.partition_by_month))
    counts: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    unplaceable = 0
    sample: list[dict[str, Any]] = []
    for frame in read_batches(conn, table, batch_rows, columns=[column.name]):
        month = convert.month_key(convert.timestamp_expr(pl.col(column.name), column, plan))
        placed = frame.select(pl.col(ROWID), month.alias("month"), pl.col(column.name))
        inside = placed.filter(pl.col("month").is_in(list(months)))
        outside = placed.filter(~pl.col("month").is_in(list(months)) | pl.col("month").is_null())
        unplaceable += outside.height
        for row in outside.head(10 - len(sample)).iter_rows(named=True) if len(sample) < 10 else ():
            sample.append({"row_id": row[ROWID], "value": row[column.name]})
        grouped = inside.group_by("month").agg(
            pl.len().alias("rows"), pl.col(ROWID).min().alias("lo"), pl.col(ROWID).max().alias("hi")
        )
        for key, rows, lo, hi in grouped.iter_rows():
            counts[key] = counts.get(key, 0) + rows
            old = spans.get(key)
            spans[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return dict(sorted(counts.items())), dict(sorted(spans.items())), unplaceable, sample


def _select_list(table: Table, columns: list[str] | None) -> list[str]:
    wanted = [c for c in table.columns if columns is None or c.name in columns]
    parts = [f"rowid AS {ROWID}"]
    for column in wanted:
        # Everything arrives as text: SQLite is dynamically typed, and one INTEGER column may hold
        # text in some rows. Conversion parses and validates each value, naming the row if it fails.
        parts.append(f"CAST({_quote(column.source)} AS TEXT) AS {_quote(column.name)}")
        if column.convert == "json":
            parts.append(
                f"json_valid({_quote(column.source)}) AS {_quote(convert.json_ok(column.name))}"
            )
    return parts


def read_batches(
    conn: sqlite3.Connection,
    table: Table,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    rowid_range: tuple[int, int] | None = None,
    columns: list[str] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the table in rowid order, `batch_rows` at a time (keyset pagination: memory is bounded)."""
    select = ", ".join(_select_list(table, columns))
    lo, hi = rowid_range if rowid_range else (-(2**63) + 1, 2**63 - 1)
    query = (
        f"SELECT {select} FROM {_quote(table.source)} "  # noqa: S608
        "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
    )
    names = [part.rsplit(" AS ", 1)[1].strip('"') for part in _select_list(table, columns)]
    schema = {
        name: (pl.Int64 if name == ROWID or name.startswith("__json_ok") else pl.String)
        for name in names
    }
    after = lo - 1
    while True:
        try:
            rows = conn.execute(query, (after, hi, batch_rows)).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" in str(exc).lower():
                raise _undecodable(conn, table, after, hi, batch_rows) from None
            raise SourceError(f"Reading {table.source} from SQLite failed: {exc}.") from None
        if not rows:
            return
        yield pl.DataFrame(rows, schema=schema, orient="row")
        after = rows[-1][0]
        if len(rows) < batch_rows:
            return


def _undecodable(
    conn: sqlite3.Connection, table: Table, after: int, hi: int, limit: int
) -> SourceError:
    """Find the row and column holding bytes that are not UTF-8 (the error path only)."""
    conn.text_factory = bytes
    try:
        for column in table.columns:
            query = (
                f"SELECT rowid, CAST({_quote(column.source)} AS TEXT) FROM {_quote(table.source)} "  # noqa: S608
                "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
            )
            for rowid, value in conn.execute(query, (after, hi, limit)):
                if isinstance(value, bytes):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        return SourceError(
                            f"{table.name}.{column.name}: row id {rowid}: value {value[:40]!r} is not "
                            "valid UTF-8, and PostgreSQL text must be. Fix the row in the app's "
                            "database (or re-encode it) and run again."
                        )
    finally:
        conn.text_factory = str
    return SourceError(f"{table.name}: a value is not valid UTF-8 after row id {after}.")
