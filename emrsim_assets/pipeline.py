"""One table or one month, end to end: snapshot rows, converted in batches, COPYed into staging."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl

from emrsim_assets import convert, source, target
from emrsim_assets.convert import Converted
from emrsim_assets.plan import Plan, Table
from emrsim_assets.source import Manifest
from emrsim_assets.target import Conn, LoadStats, Progress

log = logging.getLogger(__name__)


def _converted(
    snapshot: Path,
    plan: Plan,
    table: Table,
    batch_rows: int,
    rowid_range: tuple[int, int] | None = None,
    month: date | None = None,
) -> Iterator[Converted]:
    conn = source.open_readonly(snapshot)
    try:
        for frame in source.read_batches(conn, table, batch_rows, rowid_range=rowid_range):
            if month is not None:
                # The rowid span of a month may hold rows of neighbouring months: keep this one's.
                column = table.column(str(table.partition_by_month))
                stamp = convert.timestamp_expr(pl.col(column.name), column, plan)
                frame = frame.filter(convert.month_key(stamp) == month.isoformat())
                if frame.is_empty():
                    continue
            yield convert.convert_frame(frame, table, plan)
    finally:
        conn.close()


def load_table(
    conn: Conn,
    plan: Plan,
    table: Table,
    manifest: Manifest,
    batch_rows: int,
    progress: Progress = log.info,
) -> LoadStats:
    batches = _converted(Path(manifest.snapshot_path), plan, table, batch_rows)
    return target.load_table(
        conn, table, batches, manifest.sha256, progress, manifest.row_counts.get(table.name)
    )


def load_month(
    conn: Conn,
    plan: Plan,
    table: Table,
    month: date,
    manifest: Manifest,
    batch_rows: int,
    progress: Progress = log.info,
) -> LoadStats:
    """Load one month; a month with no source rows becomes an empty partition."""
    key = month.isoformat()
    span = manifest.month_rowids.get(key)
    batches: Iterator[Converted] = (
        _converted(Path(manifest.snapshot_path), plan, table, batch_rows, span, month)
        if span
        else iter(())
    )
    return target.load_month(
        conn, table, month, batches, manifest.sha256, progress, manifest.month_counts.get(key)
    )
