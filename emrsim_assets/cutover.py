"""Publish staging as the live schema in one transaction, and swap it back on rollback."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from psycopg import sql

from emrsim_assets import triggers, views
from emrsim_assets.errors import GateClosedError, TargetError
from emrsim_assets.integrity import quarantined_rows
from emrsim_assets.plan import Plan, Reference, Table
from emrsim_assets.plan.names import MAX_NAME, fit
from emrsim_assets.schemas import LIVE, MIGRATION, STAGING, UNPARTITIONED, Conn
from emrsim_assets.snapshot import Manifest
from emrsim_assets.source import open_readonly
from emrsim_assets.target import (
    create_month_partition,
    ensure_migration_schema,
    loads,
    partition_name,
    schema_exists,
    storage_parameters,
    table_exists,
)
from emrsim_assets.times import next_month

BACKUP_PREFIX = "emrsim_backup_"


DEFAULT_KEEP_BACKUPS = 2


@dataclass(frozen=True)
class CutoverResult:
    backup_schema: str | None
    row_counts: dict[str, int]
    seconds: float
    foreign_keys: int
    indexes: int
    backups: dict[str, int]  # kept backup schema -> bytes
    pruned: list[str]
    views: list[views.Proof] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)  # each created, and its probe


def _schema_bytes(conn: Conn, schema: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN "
        "('r', 'm')",
        (schema,),
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _backups(conn: Conn) -> list[str]:
    """Backup schemas, newest first (their names end in a sortable UTC time)."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY nspname DESC",
        (BACKUP_PREFIX.replace("_", "\\_") + "%",),
    ).fetchall()
    return [str(r[0]) for r in rows]


def prune_backups(conn: Conn, keep: int) -> tuple[dict[str, int], list[str]]:
    """Drop all but the newest `keep` backups; the sizes of those kept, and the names dropped."""
    backups = _backups(conn)
    dropped = backups[keep:]
    for schema in dropped:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return {schema: _schema_bytes(conn, schema) for schema in backups[:keep]}, dropped


def staging_problems(conn: Conn, plan: Plan, manifest: Manifest) -> list[str]:
    """What is missing or stale in staging, compared with the current snapshot."""
    if not schema_exists(conn, STAGING):
        return [f"schema {STAGING} does not exist: load the tables first"]
    ensure_migration_schema(conn)
    ledger = {(load.table, load.partition_key): load for load in loads(conn)}
    problems = []
    for table in plan.tables:
        if not table_exists(conn, STAGING, table.name):
            problems.append(f"{table.name} is not loaded")
            continue
        keys = list(manifest.month_counts) if table.partition_by_month else [UNPARTITIONED]
        for key in keys:
            load = ledger.get((table.name, key))
            label = f"{table.name} {key}".strip()
            if load is None:
                problems.append(f"{label} is not loaded")
            elif load.snapshot_sha256 != manifest.sha256:
                problems.append(f"{label} was loaded from an older snapshot")
        quarantined = quarantined_rows(conn, table.name)
        if quarantined > table.max_quarantined_rows:
            problems.append(
                f"{table.name} has {quarantined} quarantined row(s), more than its plan allows "
                f"({table.max_quarantined_rows})"
            )
    return problems


def cutover(
    conn: Conn,
    plan: Plan,
    manifest: Manifest,
    today: date | None = None,
    keep_backups: int = DEFAULT_KEEP_BACKUPS,
) -> CutoverResult:
    """Add FKs to staging (its indexes came with the loads), then rename it to the live schema,
    all in one transaction."""
    started = time.perf_counter()
    problems = staging_problems(conn, plan, manifest)
    if problems:
        raise GateClosedError("Cutover refused: " + "; ".join(problems[:8]) + ".")
    today = today or datetime.now(UTC).date()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    foreign_keys = indexes = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('emrsim.cutover'))")
        for table in plan.tables:
            foreign_keys += _add_foreign_keys(conn, plan, table)
            _restart_identities(conn, table)
            indexes += len(table.indexes)  # built with each table and month
            if table.partition_by_month:
                # The live app writes from the first minute: it needs this month and the next.
                this_month = today.replace(day=1)
                for month in (this_month, next_month(this_month)):
                    create_month_partition(conn, table, month)
            _set_autovacuum(conn, table)
        made = _recreate_triggers(conn, plan)
        proofs = _recreate_views(conn, plan, manifest)
        backup = None
        if schema_exists(conn, LIVE):
            backup = f"{BACKUP_PREFIX}{stamp}"
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(LIVE), sql.Identifier(backup)
                )
            )
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(STAGING), sql.Identifier(LIVE)
            )
        )
        # The app's connections find the tables without naming the schema: this role's
        # sessions in this database search the live schema first (new sessions; the role may
        # set its own defaults, no other privilege needed).
        conn.execute(
            sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} SET search_path = {}, public").format(
                sql.Identifier(str(conn.info.dbname)), sql.Identifier(LIVE)
            )
        )
        counts = {t.name: _count(conn, LIVE, t.name) for t in plan.tables}
        _record(conn, "cutover", manifest.sha256, backup, counts)
        # Staging is consumed: the next migration starts from a fresh snapshot and fresh loads.
        conn.execute(sql.SQL("DELETE FROM {}.loads").format(sql.Identifier(MIGRATION)))
        backups, pruned = prune_backups(conn, keep_backups)
    # Every table and month was analyzed as it loaded; a partitioned parent also keeps statistics
    # of its own (autovacuum never gathers them). PostgreSQL 18 can gather only those.
    only = sql.SQL("ONLY ") if conn.info.server_version >= 180000 else sql.SQL("")
    for table in plan.tables:
        if table.partition_by_month:
            conn.execute(
                sql.SQL("ANALYZE {}{}.{}").format(
                    only, sql.Identifier(LIVE), sql.Identifier(table.name)
                )
            )
    conn.commit()
    return CutoverResult(
        backup,
        counts,
        time.perf_counter() - started,
        foreign_keys,
        indexes,
        backups,
        pruned,
        proofs,
        made,
    )


def _recreate_triggers(conn: Conn, plan: Plan) -> list[str]:
    """The plan's triggers in PL/pgSQL on staging; each touch trigger proven by an update."""
    said = []
    for table in plan.tables:
        for trigger in table.triggers:
            triggers.create(conn, STAGING, table, trigger)
            if trigger.form == "touch":
                said.append(triggers.prove_touch(conn, STAGING, table, trigger))
            else:
                said.append(f"{trigger.name}: {trigger.form} on {', '.join(trigger.events)}")
    return said


def _recreate_views(conn: Conn, plan: Plan, manifest: Manifest) -> list[views.Proof]:
    """The plan's views, created over staging and proven against SQLite's on the snapshot: the
    same number of rows and the same digest of their values. A view that differs refuses the
    cutover, named (the transaction rolls back: nothing is published)."""
    if not plan.views:
        return []
    proofs = []
    lite = open_readonly(Path(manifest.snapshot_path))
    try:
        for view in plan.views:
            views.create(conn, STAGING, plan, view)
            proof = views.prove(conn, STAGING, lite, view)
            if not proof.equal:
                raise GateClosedError(
                    f"Cutover refused: view {view.name} gives {proof.postgres_rows:,} rows in "
                    f"PostgreSQL and {proof.rows:,} in SQLite's {view.source}"
                    + ("" if proof.rows != proof.postgres_rows else ", with other values")
                    + "; fix its postgres SELECT in the plan, or list it under skip."
                )
            proofs.append(proof)
    finally:
        lite.close()
    return proofs


def _add_foreign_keys(conn: Conn, plan: Plan, table: Table) -> int:
    """The plan's enforced references as PostgreSQL's foreign keys, with their actions and
    deferral: one-column ones (on the column) and those over several columns (the table's)."""
    added = 0
    for column in table.foreign_keys:
        if column.enforce != "constraint":
            continue
        key = plan.referenced(column)
        assert key is not None  # validated by the plan
        _add_foreign_key(
            conn,
            table,
            Reference(
                name=fit(f"{table.name}_{column.name}_fkey", MAX_NAME),
                columns=(column.name,),
                references=str(column.references),
                referenced_columns=(key.name,),
                on_delete=column.on_delete,
                on_update=column.on_update,
                deferred=column.deferred,
            ),
        )
        added += 1
    for reference in table.references:
        if reference.enforce == "constraint":
            _add_foreign_key(conn, table, reference)
            added += 1
    return added


def _add_foreign_key(conn: Conn, table: Table, reference: Reference) -> None:
    conn.execute(
        sql.SQL(
            "ALTER TABLE {}.{} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}.{} ({}) "
            "ON DELETE {} ON UPDATE {}{}"
        ).format(
            sql.Identifier(STAGING),
            sql.Identifier(table.name),
            sql.Identifier(reference.name),
            sql.SQL(", ").join(sql.Identifier(c) for c in reference.columns),
            sql.Identifier(STAGING),
            sql.Identifier(reference.references),
            sql.SQL(", ").join(sql.Identifier(c) for c in reference.referenced_columns),
            ACTIONS[reference.on_delete],
            ACTIONS[reference.on_update],
            sql.SQL(" DEFERRABLE INITIALLY DEFERRED" if reference.deferred else ""),
        )
    )


# The referential actions a plan may name, as SQL: the plan's text never reaches it.
ACTIONS = {
    "no action": sql.SQL("NO ACTION"),
    "restrict": sql.SQL("RESTRICT"),
    "cascade": sql.SQL("CASCADE"),
    "set null": sql.SQL("SET NULL"),
    "set default": sql.SQL("SET DEFAULT"),
}


def _restart_identities(conn: Conn, table: Table) -> None:
    """An integer key kept as bigint: the app's next insert gets max(id) + 1, as in SQLite,
    also where every key is 0 or below (the identity's MINVALUE then goes down to it)."""
    for column in table.columns:
        if not column.identity:
            continue
        row = conn.execute(
            # At bigint's largest id there is no next one: the app's next insert then fails loudly.
            sql.SQL(
                "SELECT least(coalesce(max({}), 0), 9223372036854775806) + 1 FROM {}.{}"
            ).format(
                sql.Identifier(column.name), sql.Identifier(STAGING), sql.Identifier(table.name)
            )
        ).fetchone()
        following = int(row[0]) if row else 1  # type: ignore[call-overload]
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} ALTER COLUMN {} SET MINVALUE {} RESTART WITH {}").format(
                sql.Identifier(STAGING),
                sql.Identifier(table.name),
                sql.Identifier(column.name),
                sql.Literal(min(following, 1)),
                sql.Literal(following),
            )
        )


def _set_autovacuum(conn: Conn, table: Table, schema: str = STAGING) -> None:
    if not table.autovacuum:
        return
    options = storage_parameters(table)
    # Storage parameters live on the partitions, not on a partitioned parent.
    names = _partitions(conn, schema, table.name) if table.partition_by_month else [table.name]
    for name in names:
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} SET ({})").format(
                sql.Identifier(schema), sql.Identifier(name), options
            )
        )


def _partitions(conn: Conn, schema: str, parent: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = %s ORDER BY 1",
        (schema, parent),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _count(conn: Conn, schema: str, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _record(
    conn: Conn, action: str, sha: str | None, backup: str | None, counts: dict[str, int]
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.cutovers (action, snapshot_sha256, backup_schema, row_counts) "
            "VALUES (%s, %s, %s, %s::jsonb)"
        ).format(sql.Identifier(MIGRATION)),
        (action, sha, backup, json.dumps(counts)),
    )


def ensure_live_partition(conn: Conn, table: Table, month: date) -> str | None:
    """Create `month`'s partition in the live schema (the monthly schedule's job)."""
    if not table_exists(conn, LIVE, table.name):
        return None
    with conn.transaction():
        name = create_month_partition(conn, table, month, schema=LIVE)
        if table.autovacuum:
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET ({})").format(
                    sql.Identifier(LIVE),
                    sql.Identifier(partition_name(table, month)),
                    storage_parameters(table),
                )
            )
    return name


def rollback(conn: Conn) -> str:
    """Put the previous live schema back; the migrated one is kept aside, not dropped."""
    if not schema_exists(conn, LIVE):
        raise TargetError(f"Nothing to roll back: schema {LIVE} does not exist.")
    ensure_migration_schema(conn)
    backups = _backups(conn)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    aside = f"emrsim_rolled_back_{stamp}"
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(LIVE), sql.Identifier(aside)
            )
        )
        restored = None
        if backups:
            restored = backups[0]
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(restored), sql.Identifier(LIVE)
                )
            )
        _record(conn, "rollback", None, restored, {})
    if restored:
        return f"Restored {restored} as {LIVE}; the migrated schema is kept as {aside}."
    return (
        f"No earlier live schema existed: {LIVE} is now {aside}, and the app goes back to "
        "its SQLite file, which was never modified."
    )
