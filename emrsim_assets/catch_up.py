"""Catching up: a new snapshot reloads only what changed since the one staging was loaded from.

When the snapshot asset runs while a staging schema holds a load of the previous snapshot (a
`prepare` earlier in the day), the previous snapshot is kept beside the new one and the delta
between them is found (delta.py). Every table, and every month of the partitioned table, that
the delta leaves untouched is carried over: its staging rows are the previous snapshot's, which
equal the new one's row for row (the delta compared them exactly), so its ledger, digest and
time profile are restamped to the new snapshot instead of reloaded. The rest reloads as usual.
Every check then runs on the whole of staging, as after a full load: the proofs do not trust
the carry-over, they confirm it.

Nothing here touches the live schema: a kill or a restart during a catch-up leaves staging as
the ledger describes it (each restamp and each reload is one transaction), and a rerun
finishes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
from psycopg import sql

from emrsim_assets import pipeline, times
from emrsim_assets.content import fingerprint
from emrsim_assets.delta import Delta, attach_read_only, find_delta, scratch
from emrsim_assets.plan import Plan, Table
from emrsim_assets.private import private_dir, write_private
from emrsim_assets.progress import Report
from emrsim_assets.schemas import MIGRATION, STAGING, UNPARTITIONED, Conn
from emrsim_assets.snapshot import MANIFEST_FILE, SNAPSHOT_FILE, Manifest, take_snapshot
from emrsim_assets.source import quote_name
from emrsim_assets.target import LoadStats, partition_name

PREVIOUS = "previous"
CATCH_UP_FILE = "catch_up.json"
PLAN_FILE = "plan_fingerprint"
_LEDGERS = ("loads", "quarantine", "content_digest", "time_profile")


@dataclass
class CatchUp:
    """What changed from the previous snapshot to this one, as the table assets read it."""

    previous_sha: str
    sha: str
    run_id: str  # the run whose snapshot found it: only that run's loads carry anything over
    seconds: float
    rows: int
    # Per table: [inserted, updated, deleted], whether it reloads whole, and the months whose
    # rows changed (the partitioned table: a row's old month and its new one).
    tables: dict[str, list[int]] = field(default_factory=dict)
    whole: list[str] = field(default_factory=list)
    months: dict[str, list[str]] = field(default_factory=dict)

    def changed(self, table: str) -> bool:
        counts = self.tables.get(table, [0, 0, 0])
        return table in self.whole or sum(counts) > 0

    def month_changed(self, table: str, month: str) -> bool:
        return table in self.whole or month in self.months.get(table, [])

    def summary(self) -> str:
        """One line for the terminal and the run's log."""
        changed = {name: counts for name, counts in self.tables.items() if sum(counts)}
        said = (
            f"Catch-up from snapshot {self.previous_sha[:12]}: {self.rows:,} rows changed"
            + (
                " ("
                + "; ".join(f"{name} +{i:,} ~{u:,} -{d:,}" for name, (i, u, d) in changed.items())
                + ")"
                if changed
                else ""
            )
            + f", found in {self.seconds:.1f} s"
        )
        if self.whole:
            said += f"; reloaded whole (no key): {', '.join(self.whole)}"
        for name, months in self.months.items():
            said += f"; {name}: {len(months)} months touched"
        return said + ". Everything else is carried over."

    def save(self, snapshot_dir: Path) -> None:
        write_private(snapshot_dir / CATCH_UP_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, snapshot_dir: Path, sha: str, run_id: str) -> CatchUp | None:
        """The catch-up recorded for the snapshot `sha` by run `run_id`'s snapshot. A table or
        month reloaded alone, in a run of its own, is reloaded, never carried over."""
        path = snapshot_dir / CATCH_UP_FILE
        if not path.exists():
            return None
        found = cls(**json.loads(path.read_text(encoding="utf-8")))
        return found if found.sha == sha and found.run_id == run_id else None


def plan_fingerprint(plan: Plan) -> str:
    return hashlib.sha256("|".join(fingerprint(t, plan) for t in plan.tables).encode()).hexdigest()


def keep_previous(snapshot_dir: Path, plan: Plan) -> Path | None:
    """Before a new snapshot replaces it: the current one moved to `previous/`, if it was taken
    with this plan (a new plan reloads everything: nothing of the old load can be carried)."""
    current = snapshot_dir / SNAPSHOT_FILE
    manifest = snapshot_dir / MANIFEST_FILE
    planned = snapshot_dir / PLAN_FILE
    (snapshot_dir / CATCH_UP_FILE).unlink(missing_ok=True)
    if not (current.exists() and manifest.exists() and planned.exists()):
        return None
    if planned.read_text(encoding="utf-8").strip() != plan_fingerprint(plan):
        return None
    previous = private_dir(snapshot_dir / PREVIOUS)
    for name in (SNAPSHOT_FILE, MANIFEST_FILE):
        (snapshot_dir / name).replace(previous / name)
    return previous


def restore_previous(snapshot_dir: Path, previous: Path) -> None:
    """A snapshot that failed: the previous one is the current one again."""
    for name in (SNAPSHOT_FILE, MANIFEST_FILE):
        if (previous / name).exists():
            (previous / name).replace(snapshot_dir / name)


def record_plan(snapshot_dir: Path, plan: Plan) -> None:
    write_private(snapshot_dir / PLAN_FILE, plan_fingerprint(plan))


def staged_from(conn: Conn, sha: str) -> bool:
    """Whether staging holds anything loaded from the snapshot `sha`."""
    with conn.transaction():
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND "
            "EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)",
            (f"{MIGRATION}.loads", STAGING),
        ).fetchone()
        if not exists or not exists[0]:
            return False
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT FROM {}.loads WHERE snapshot_sha256 = %s)").format(
                sql.Identifier(MIGRATION)
            ),
            (sha,),
        ).fetchone()
    return bool(row and row[0])


def find_catch_up(
    previous: Path,
    previous_sha: str,
    manifest: Manifest,
    plan: Plan,
    snapshot_dir: Path,
    run_id: str,
) -> CatchUp:
    """The delta from the previous snapshot to this one, with the months it touches."""
    started = time.perf_counter()
    before = previous / SNAPSHOT_FILE
    after = Path(manifest.snapshot_path)
    delta = find_delta(before, after, plan, snapshot_dir / "delta.sqlite")
    months: dict[str, list[str]] = {}
    partitioned = plan.partitioned_table
    if partitioned is not None and delta.of(partitioned.name).rows:
        months[partitioned.name] = sorted(_months_touched(delta, partitioned, plan, before, after))
    found = CatchUp(
        previous_sha=previous_sha,
        sha=manifest.sha256,
        run_id=run_id,
        seconds=round(time.perf_counter() - started, 3),
        rows=delta.rows,
        tables={t.table: [t.inserted, t.updated, t.deleted] for t in delta.tables},
        whole=[t.table for t in delta.tables if t.whole],
        months=months,
    )
    found.save(snapshot_dir)
    return found


def _months_touched(delta: Delta, table: Table, plan: Plan, before: Path, after: Path) -> set[str]:
    """The months of the changed rows: the new version's month (inserted, updated) and the old
    version's (updated, deleted). A row that moved between months touches both."""
    change = delta.of(table.name)
    column = table.column(str(table.partition_by_month))
    keys = [quote_name(table.column(k).source) for k in table.primary_key]
    stamp = quote_name(column.source)
    source = quote_name(table.source)
    on = " AND ".join(f"k.{k} = r.{k}" for k in keys)
    # Only values of the storage class the column's format reads; any other is unplaceable,
    # which the snapshot counts and the coverage check refuses.
    kinds = "('integer', 'real')" if column.epoch else "('text')"
    value = f"CASE WHEN typeof(r.{stamp}) IN {kinds} THEN r.{stamp} END"
    conn = scratch(delta.path, new=False)
    try:
        attach_read_only(conn, before, "b")
        attach_read_only(conn, after, "a")
        values = [
            row[0]
            for keyed, side in ((change.upserts, "a"), (change.upserts, "b"), (change.deletes, "b"))
            for row in conn.execute(
                f"SELECT {value} FROM {keyed} AS k JOIN {side}.{source} AS r ON {on}"  # noqa: S608
            )
        ]
    finally:
        conn.close()
    if not values:
        return set()
    series = pl.Series(column.name, values, strict=False)
    stamps = times.timestamps(series, column, plan)
    return {m.isoformat() for m in times.month_start(stamps).drop_nulls().to_list()}


def carried(conn: Conn, catch_up: CatchUp | None, plan: Plan, table: Table, key: str) -> bool:
    """Carry a table or month over (restamp it) rather than reload it: the delta left it
    untouched, and staging holds its load of the previous snapshot under this plan."""
    if catch_up is None:
        return False
    untouched = (
        not catch_up.month_changed(table.name, key)
        if table.partition_by_month
        else not catch_up.changed(table.name)
    )
    if not untouched:
        return False
    # Its own transaction: on a connection that is not in autocommit, a query left open would
    # turn the restamp that follows into a savepoint, rolled back when the connection closes.
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT FROM {}.loads WHERE table_name = %s AND partition_key = %s "
                "AND snapshot_sha256 = %s) AND EXISTS (SELECT FROM {}.content_digest WHERE "
                "table_name = %s AND partition_key = %s AND snapshot_sha256 = %s AND "
                "plan_fingerprint = %s)"
            ).format(sql.Identifier(MIGRATION), sql.Identifier(MIGRATION)),
            (
                table.name,
                key,
                catch_up.previous_sha,
                table.name,
                key,
                catch_up.previous_sha,
                fingerprint(table, plan),
            ),
        ).fetchone()
    return bool(row and row[0])


def restamp(conn: Conn, table: Table, key: str, catch_up: CatchUp) -> tuple[int, int]:
    """The ledger of a carried table or month, moved to the new snapshot in one transaction.
    Returns its loaded and quarantined rows."""
    with conn.transaction():
        for ledger in _LEDGERS:
            conn.execute(
                sql.SQL(
                    "UPDATE {}.{} SET snapshot_sha256 = %s WHERE table_name = %s AND "
                    "partition_key = %s AND snapshot_sha256 = %s"
                ).format(sql.Identifier(MIGRATION), sql.Identifier(ledger)),
                (catch_up.sha, table.name, key, catch_up.previous_sha),
            )
        row = conn.execute(
            sql.SQL(
                "SELECT loaded_rows, quarantined_rows FROM {}.loads WHERE table_name = %s AND "
                "partition_key = %s"
            ).format(sql.Identifier(MIGRATION)),
            (table.name, key),
        ).fetchone()
    return (int(str(row[0])), int(str(row[1]))) if row else (0, 0)


def drop_previous(snapshot_dir: Path) -> None:
    """After a cutover: the previous snapshot has nothing left to be compared with."""
    shutil.rmtree(snapshot_dir / PREVIOUS, ignore_errors=True)


def snapshot(
    source: Path,
    snapshot_dir: Path,
    plan: Plan,
    months: list[str],
    batch_rows: int,
    connect: Callable[[], AbstractContextManager[Conn]],
    run_id: str,
) -> tuple[Manifest, CatchUp | None]:
    """A new snapshot and, when staging holds a load of the previous one under this plan, the
    catch-up from it. A failure (a schema that changed, say) leaves the previous snapshot the
    current one, so that a rerun compares against it again."""
    previous = keep_previous(snapshot_dir, plan)
    try:
        manifest = take_snapshot(source, snapshot_dir, plan, months, batch_rows)
        found = None
        if previous is not None:
            previous_sha = Manifest.load(previous / MANIFEST_FILE).sha256
            with connect() as conn:
                staged = staged_from(conn, previous_sha)
            if staged:
                found = find_catch_up(previous, previous_sha, manifest, plan, snapshot_dir, run_id)
    except BaseException:
        if previous is not None:
            restore_previous(snapshot_dir, previous)
        raise
    record_plan(snapshot_dir, plan)
    return manifest, found


def load_table(
    conn: Conn,
    plan: Plan,
    table: Table,
    manifest: Manifest,
    snapshot_dir: Path,
    batch_rows: int,
    progress: Report,
    run_id: str,
    proven: bool,
) -> tuple[LoadStats, bool]:
    """The table reloaded, or carried over when this run's catch-up left it untouched and its
    last proofs passed (`proven`: a table whose check failed is reloaded, whatever changed)."""
    found = CatchUp.load(snapshot_dir, manifest.sha256, run_id) if proven else None
    if carried(conn, found, plan, table, UNPARTITIONED):
        assert found is not None
        rows = restamp(conn, table, UNPARTITIONED, found)
        return _carried_stats(table, UNPARTITIONED, manifest, *rows), True
    return pipeline.load_table(conn, plan, table, manifest, batch_rows, progress), False


def load_months(
    connect: Callable[[], AbstractContextManager[Conn]],
    plan: Plan,
    table: Table,
    keys: list[str],
    manifest: Manifest,
    snapshot_dir: Path,
    batch_rows: int,
    workers: int,
    progress: Report,
    run_id: str,
    proven: bool,
) -> tuple[list[LoadStats], set[str]]:
    """The months reloaded, but those this run's catch-up left untouched, which are carried
    over (when the table's last proofs passed)."""
    found = CatchUp.load(snapshot_dir, manifest.sha256, run_id) if proven else None
    kept: set[str] = set()
    stats: list[LoadStats] = []
    if found is not None:
        with connect() as conn:
            for key in keys:
                if carried(conn, found, plan, table, key):
                    rows = restamp(conn, table, key, found)
                    stats.append(_carried_stats(table, key, manifest, *rows))
                    kept.add(key)
    rest = [date.fromisoformat(k) for k in keys if k not in kept]
    if rest:
        stats += pipeline.load_months(
            connect, plan, table, rest, manifest, batch_rows, workers, progress
        )
    return sorted(stats, key=lambda s: s.partition_key), kept


def _carried_stats(
    table: Table, key: str, manifest: Manifest, rows: int, quarantined: int
) -> LoadStats:
    month = key != UNPARTITIONED
    return LoadStats(
        table=table.name,
        partition_key=key,
        source_rows=manifest.month_counts.get(key, 0) if month else manifest.row_counts[table.name],
        loaded_rows=rows,
        quarantined_rows=quarantined,
        seconds=0.0,
        copy_bytes=0,
        pg_table=f"{STAGING}.{partition_name(table, date.fromisoformat(key)) if month else table.name}",
    )
