"""Blocking asset checks, one per table and proof, built from the plan by a factory."""

from collections.abc import Callable
from functools import partial
from pathlib import Path

import dagster as dg

from emrsim_assets import anomalies, content, integrity, schema_match
from emrsim_assets.defs.resources import MigrationResource, as_failure
from emrsim_assets.integrity import Verdict
from emrsim_assets.plan import Column, Plan, Reference, Table
from emrsim_assets.schemas import Conn
from emrsim_assets.source import open_readonly

Proof = Callable[[Conn, MigrationResource], Verdict]


def _check(
    table: Table,
    name: str,
    description: str,
    proof: Proof,
    blocking: bool = True,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    reads: tuple[str, ...] = (),
) -> dg.AssetChecksDefinition:
    # `reads`: other assets whose data the check reads, so Dagster runs it after them. Such a
    # check re-runs by itself (declarative automation, under the daemon of `make dev`) when one
    # of them is reloaded alone: its last verdict was about rows that are gone.
    @dg.asset_check(
        asset=table.name,
        name=name,
        blocking=blocking,
        description=description,
        additional_deps=list(reads),
        automation_condition=dg.AutomationCondition.eager() if reads else None,
    )
    def _run(migration: MigrationResource) -> dg.AssetCheckResult:
        with as_failure(), migration.connect() as conn:
            verdict = proof(conn, migration)
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=severity,
            description=verdict.description,
            metadata=verdict.metadata,
        )

    return _run


def build_checks(
    plan: Plan, months: dg.PartitionsDefinition
) -> tuple[list[dg.AssetChecksDefinition], list[tuple[dg.AssetCheckKey, list[str]]]]:
    """The checks, and for the cutover gate: each ERROR check with the assets whose data it reads."""
    checks: list[dg.AssetChecksDefinition] = []
    gated: list[tuple[dg.AssetCheckKey, list[str]]] = []

    def add(check: dg.AssetChecksDefinition, reads: list[str], gate: bool = True) -> None:
        checks.append(check)
        if gate:
            gated.append((next(iter(check.check_keys)), reads))

    for table in plan.tables:
        add(
            _check(
                table,
                "row_count_matches_source",
                "Rows in staging (+ quarantined) equal the snapshot's, per month when partitioned.",
                partial(_row_count, table),
            ),
            [table.name, "source_snapshot"],
        )
        add(
            _check(
                table,
                "content_matches_source",
                "Every value, read back into its source form (storage class included), equals "
                "the snapshot's: row hashes per bucket of keys, per month when partitioned; the "
                "differing rows named with both values.",
                partial(_content, plan, table, list(months.get_partition_keys())),
            ),
            [table.name, "source_snapshot"],
        )
        add(
            _check(
                table,
                "schema_matches_source",
                "Every schema object of the SQLite table (column, NOT NULL, DEFAULT, key, index, "
                "reference, CHECK, collation, trigger) has its counterpart in PostgreSQL's "
                "catalog, or a skip in the plan with its reason.",
                partial(_schema, plan, table),
            ),
            [table.name, "source_snapshot"],
        )
        if anomalies.time_columns(table):
            add(
                _check(
                    table,
                    "values_look_alike",
                    "No time value stands out from its column: an epoch 1,000 times off, a "
                    "negative epoch, a year outside 1 to 9999, an ambiguous or missing "
                    "local time (a round trip cannot see these). Columns with anomalies: accept "
                    "list them without failing.",
                    partial(_anomalies, plan, table),
                ),
                ["source_snapshot"],
            )
        for column in table.foreign_keys:
            add(
                _fk_check(plan, table, column),
                [table.name, str(column.references)],
                gate=column.enforce == "constraint",
            )
        for reference in table.references:
            enforced = reference.enforce == "constraint"
            add(
                _check(
                    table,
                    f"fk_{reference.name}_resolves",
                    f"Every {table.name} ({', '.join(reference.columns)}) with no NULL points at "
                    f"an existing {reference.references} row"
                    + ("." if enforced else " (reported, not enforced)."),
                    partial(_reference, plan, table, reference),
                    blocking=enforced,
                    severity=dg.AssetCheckSeverity.ERROR
                    if enforced
                    else dg.AssetCheckSeverity.WARN,
                    reads=(reference.references,) if reference.references != table.name else (),
                ),
                [table.name, reference.references],
                gate=enforced,
            )
        if table.partition_by_month and table.primary_key:
            add(
                _check(
                    table,
                    "key_unique_across_months",
                    "The plan's key is unique across every month (PostgreSQL's key includes the "
                    "month column, so it alone proves uniqueness only within a month).",
                    partial(_key_unique, table),
                ),
                [table.name],
            )
        if table.partition_by_month:
            add(
                _check(
                    table,
                    "every_source_month_loaded",
                    "Every source row falls in a partition month loaded from this snapshot.",
                    partial(_coverage, table, list(months.get_partition_keys())),
                ),
                [table.name, "source_snapshot"],
            )
        if table.quarantines:
            add(
                _check(
                    table,
                    "quarantine_within_limit",
                    "Lists rows the plan sent to emrsim_migration.quarantine; fails while there "
                    "are more than the plan's max_quarantined_rows (default 0).",
                    partial(_quarantine, table),
                ),
                [table.name],
            )
    return checks, gated


def _fk_check(plan: Plan, table: Table, column: Column) -> dg.AssetChecksDefinition:
    """A reference the plan enforces blocks and gates cutover; one it only reports (an app that
    writes orphans by design) warns, with the orphans counted and named."""
    enforced = column.enforce == "constraint"
    return _check(
        table,
        f"fk_{column.name}_resolves",
        f"Every {table.name}.{column.name} points at an existing {column.references} row"
        + ("." if enforced else " (reported, not enforced)."),
        partial(_foreign_key, plan, table, column),
        blocking=enforced,
        severity=dg.AssetCheckSeverity.ERROR if enforced else dg.AssetCheckSeverity.WARN,
        reads=(str(column.references),) if column.references != table.name else (),
    )


def _row_count(table: Table, conn: Conn, migration: MigrationResource) -> Verdict:
    return integrity.row_count_matches_source(conn, table, migration.manifest())


def _coverage(table: Table, months: list[str], conn: Conn, migration: MigrationResource) -> Verdict:
    return integrity.every_source_month_loaded(conn, table, migration.manifest(), months)


def _key_unique(table: Table, conn: Conn, migration: MigrationResource) -> Verdict:
    return integrity.key_unique_across_months(conn, table)


def _quarantine(table: Table, conn: Conn, migration: MigrationResource) -> Verdict:
    return integrity.quarantine_within_limit(conn, table)


def _foreign_key(
    plan: Plan, table: Table, column: Column, conn: Conn, migration: MigrationResource
) -> Verdict:
    return integrity.foreign_key_resolves(conn, plan, table, column)


def _schema(plan: Plan, table: Table, conn: Conn, migration: MigrationResource) -> Verdict:
    lite = open_readonly(Path(migration.manifest().snapshot_path))
    try:
        return schema_match.schema_matches_source(conn, lite, plan, table)
    finally:
        lite.close()


def _reference(
    plan: Plan, table: Table, reference: Reference, conn: Conn, migration: MigrationResource
) -> Verdict:
    return integrity.reference_resolves(conn, plan, table, reference)


def _content(
    plan: Plan, table: Table, months: list[str], conn: Conn, migration: MigrationResource
) -> Verdict:
    passed, description, metadata = content.content_matches_source(
        conn, migration.url(), plan, table, migration.manifest(), months, migration.batch_rows
    )
    return Verdict(passed, description, metadata)


def _anomalies(plan: Plan, table: Table, conn: Conn, migration: MigrationResource) -> Verdict:
    passed, description, metadata = anomalies.values_look_alike(
        migration.manifest(), plan, table, migration.batch_rows, conn
    )
    return Verdict(passed, description, metadata)
