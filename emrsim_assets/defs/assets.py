"""Assets: the source snapshot, one asset per plan table (a factory), and cutover."""

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import dagster as dg

from emrsim_assets import backup as core_backup
from emrsim_assets import catch_up, progress, recovery, workload
from emrsim_assets import cutover as core_cutover
from emrsim_assets import health as core_health
from emrsim_assets.defs.dagster_internals import AssetCheckExecutionRecordStatus as Status
from emrsim_assets.defs.gate import gate_problems
from emrsim_assets.defs.resources import MigrationResource, as_failure
from emrsim_assets.errors import GateClosedError, MigrationError
from emrsim_assets.plan import Plan, Table
from emrsim_assets.schemas import LIVE, STAGING
from emrsim_assets.target import (
    LoadStats,
    ensure_migration_schema,
    ensure_staging_schema,
    schema_exists,
)

SNAPSHOT = "source_snapshot"
CUTOVER = "cutover"


def build_snapshot_asset(plan: Plan, months: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=SNAPSHOT,
        group_name="source",
        kinds={"sqlite"},
        description="A consistent copy of the app's SQLite file (backup API), integrity-checked, "
        "with row counts, month counts and sha256. Every table reads this copy, never the source.",
    )
    def _snapshot(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> dg.MaterializeResult[None]:
        with as_failure():
            manifest, found = catch_up.snapshot(
                Path(migration.sqlite_path),
                migration.snapshot_dir,
                plan,
                list(months.get_partition_keys()),
                migration.batch_rows,
                migration.connect,
                context.run_id,
            )
            # A new snapshot starts a new migration: its loads go to a staging schema (after a
            # cutover published the last one, a fresh one).
            with migration.connect() as conn:
                ensure_migration_schema(conn)
                with conn.transaction():
                    ensure_staging_schema(conn)
        context.log.info(
            progress.snapshot_line(manifest.sha256, manifest.row_counts, manifest.seconds)
        )
        if found is not None:
            context.log.info(found.summary())
        return dg.MaterializeResult(
            metadata={
                **(_catch_up_metadata(found) if found is not None else {"catch_up": "none"}),
                "source_path": manifest.source_path,
                "snapshot_path": manifest.snapshot_path,
                "plan": str(plan.path),
                "sha256": manifest.sha256,
                "size_bytes": manifest.size_bytes,
                "seconds": manifest.seconds,
                "row_counts": dg.MetadataValue.json(manifest.row_counts),
                "unplaceable_rows": manifest.unplaceable_count,
                "column_storage_classes": dg.MetadataValue.json(manifest.column_types),
                "dagster/row_count": sum(manifest.row_counts.values()),
            },
            data_version=dg.DataVersion(manifest.sha256),
        )

    return _snapshot


def _catch_up_metadata(found: catch_up.CatchUp) -> dict[str, Any]:
    return {
        "catch_up": f"from snapshot {found.previous_sha[:12]}",
        "catch_up_rows": found.rows,
        "catch_up_seconds": found.seconds,
        "catch_up_tables": dg.MetadataValue.json(
            {
                name: dict(zip(("inserted", "updated", "deleted"), counts, strict=True))
                for name, counts in found.tables.items()
                if sum(counts)
            }
        ),
        "catch_up_months": dg.MetadataValue.json(found.months),
        "catch_up_whole_tables": dg.MetadataValue.json(found.whole),
    }


def _metadata(stat: LoadStats, carried: bool = False) -> dict[str, Any]:
    """True numbers of one load: a table, or one month of the partitioned table."""
    return {
        "source_rows": stat.source_rows,
        "loaded_rows": stat.loaded_rows,
        "quarantined_rows": stat.quarantined_rows,
        "seconds": round(stat.seconds, 3),
        "rows_per_second": round(stat.rows_per_second),
        "copy_bytes": stat.copy_bytes,
        "pg_table": f"{stat.pg_table} (in {LIVE} after cutover)",
        "dagster/row_count": stat.loaded_rows,
        # Unchanged since the snapshot staging was loaded from: restamped, not reloaded.
        "carried_over": carried,
    }


def _months_result(
    context: dg.AssetExecutionContext, stats: Sequence[LoadStats], kept: set[str]
) -> dg.MaterializeResult[None]:
    """One run over several months records one materialization per month: each carries that
    month's own numbers (partition-scoped metadata), and the run's totals under names of
    their own, so that no month shows another's or the whole run's count as its own."""
    for stat in stats:
        context.add_asset_metadata(
            _metadata(stat, stat.partition_key in kept), partition_key=stat.partition_key
        )
    return dg.MaterializeResult(
        metadata={
            "months_in_run": len(stats),
            "months_carried_over": len(kept),
            "run_loaded_rows": sum(s.loaded_rows for s in stats),
            "run_seconds": round(sum(s.seconds for s in stats), 3),
        }
    )


def _proven(context: dg.AssetExecutionContext) -> bool:
    """Whether every check of this table passed (or only warned) at its latest evaluation: only
    then may its staging rows be carried over to a new snapshot rather than reloaded."""
    graph = context.job_def.asset_layer.asset_graph
    storage = context.instance.event_log_storage
    for key in (k for k in graph.asset_check_keys if k.asset_key == context.asset_key):
        # The latest evaluation: this run's own checks are only planned yet.
        done = storage.get_asset_check_execution_history(
            key, limit=1, status={Status.SUCCEEDED, Status.FAILED}
        )
        evaluation = done[0].evaluation if done else None
        if evaluation is None:
            return False
        if not evaluation.passed and evaluation.severity != dg.AssetCheckSeverity.WARN:
            return False
    return True


def _refusal(migration: MigrationResource, table: Table) -> str | None:
    """Why a rerun of this table or month alone cannot run, or None. Such a rerun needs the
    staging schema of the migration in progress; after a cutover published it there is none."""
    with migration.connect() as conn:
        if schema_exists(conn, STAGING):
            return None
        published = schema_exists(conn, LIVE)
    return (
        f"Not reloaded: {table.name} alone cannot be reloaded, because "
        + (
            f"the last cutover published {STAGING} as {LIVE}, and the app may have written to "
            "it since; "
            if published
            else f"there is no {STAGING} schema yet; "
        )
        + "nothing was changed, and the last materialization and checks still stand. Run the "
        "whole migration (the migrate job, or emrsim-migrate migrate): it takes a new snapshot, "
        "reloads every table and cuts over again, keeping the current schema as a backup."
    )


def build_table_asset(
    plan: Plan, table: Table, months: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    deps = [SNAPSHOT, *(p for p in table.parents if p != table.name)]
    common: dict[str, Any] = {
        "name": table.name,
        "deps": deps,
        "group_name": "tables",
        "kinds": {"polars", "postgres"},
        # A rerun refused after cutover materializes nothing (and fails nothing).
        "output_required": False,
        "description": f"SQLite {table.source} converted by Polars and COPYed into "
        f"emrsim_staging.{table.name}.",
    }
    if table.partition_by_month:
        # One run may carry a range of months (a backfill): each month is its own transaction.
        @dg.asset(**common, partitions_def=months, backfill_policy=dg.BackfillPolicy.single_run())
        def _months(
            context: dg.AssetExecutionContext, migration: MigrationResource
        ) -> Iterator[dg.MaterializeResult[None]]:
            with as_failure():
                refusal = _refusal(migration, table)
                if refusal:
                    # Nothing materialized, nothing failed: the asset keeps its last state.
                    context.log.warning(refusal)
                    return
                stats, kept = catch_up.load_months(
                    migration.connect,
                    plan,
                    table,
                    list(context.partition_keys),
                    migration.manifest(),
                    migration.snapshot_dir,
                    migration.batch_rows,
                    migration.workers,
                    _reporter(context),
                    context.run_id,
                    _proven(context),
                )
            if kept:
                context.log.info(
                    f"{table.name}: {len(kept)} of {len(stats)} months unchanged since the "
                    "last snapshot, carried over"
                )
            yield _months_result(context, stats, kept)

        return _months  # type: ignore[no-any-return]

    @dg.asset(**common)
    def _table(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> Iterator[dg.MaterializeResult[None]]:
        with as_failure():
            refusal = _refusal(migration, table)
        if refusal:
            context.log.warning(refusal)
            return
        with as_failure(), migration.connect() as conn:
            manifest = migration.manifest()
            ensure_migration_schema(conn)
            stat, kept = catch_up.load_table(
                conn,
                plan,
                table,
                manifest,
                migration.snapshot_dir,
                migration.batch_rows,
                _reporter(context),
                context.run_id,
                _proven(context),
            )
        context.log.info(
            f"{table.name}: unchanged since the last snapshot, carried over"
            if kept
            else progress.loaded_line(table.name, stat.loaded_rows, stat.seconds)
        )
        yield dg.MaterializeResult(metadata=_metadata(stat, kept))

    return _table  # type: ignore[no-any-return]


def build_cutover_asset(
    plan: Plan, check_specs: Sequence[tuple[dg.AssetCheckKey, Sequence[str]]]
) -> dg.AssetsDefinition:
    @dg.asset(
        name=CUTOVER,
        deps=list(plan.table_names),
        group_name="publish",
        kinds={"postgres"},
        description="Gate: every check of every table passed on its latest materialization. Then, "
        "in one transaction: foreign keys, indexes, autovacuum, live partitions, and the rename "
        "of emrsim_staging to emrsim (the previous emrsim is kept as a backup).",
    )
    def _cutover(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> dg.MaterializeResult[None]:
        with as_failure():
            problems = gate_problems(context.instance, check_specs)
            if problems:
                raise GateClosedError("Cutover refused: " + "; ".join(problems) + ".")
            with migration.connect() as conn:
                result = core_cutover.cutover(
                    conn, plan, migration.manifest(), keep_backups=migration.keep_backups
                )
            # Published: nothing is left to catch up with, and that snapshot's disk is freed.
            catch_up.drop_previous(migration.snapshot_dir)
        context.log.info(
            progress.cutover_line(result.row_counts, LIVE, result.backup_schema, len(plan.skip))
        )
        manifest = migration.manifest()
        found = catch_up.CatchUp.load(migration.snapshot_dir, manifest.sha256, context.run_id)
        record = context.instance.get_run_record_by_id(context.run_id)
        began = record.start_time if record is not None else None
        return dg.MaterializeResult(
            metadata={
                # The app's writes must stop before this run's snapshot: from the run's start
                # to this publish is the write freeze (emrsim-migrate cutover also counts its
                # freeze command).
                "write_freeze_seconds": round(time.time() - began, 1) if began else "unknown",
                "catch_up_rows": found.rows if found is not None else "none: a full load",
                "row_counts": dg.MetadataValue.json(result.row_counts),
                "dagster/row_count": sum(result.row_counts.values()),
                "backup_schema": result.backup_schema or "(none: first cutover)",
                "backups_kept_bytes": dg.MetadataValue.json(result.backups),
                "backups_dropped": dg.MetadataValue.json(result.pruned),
                "foreign_keys": result.foreign_keys,
                "indexes": result.indexes,
                "triggers": dg.MetadataValue.json(result.triggers),
                "views": dg.MetadataValue.json(
                    {
                        v.view: {
                            "rows": v.rows,
                            "columns_by_value": v.by_value,
                            "columns_by_presence": v.by_presence,
                        }
                        for v in result.views
                    }
                ),
                "seconds": round(result.seconds, 3),
            }
        )

    return _cutover


WORKLOAD = "app_workload"


def _require_live(migration: MigrationResource, why: str) -> None:
    """The assets after cutover refuse, in one sentence, while there is no live schema."""
    with migration.connect() as conn:
        if not schema_exists(conn, LIVE):
            raise GateClosedError(f"No live schema yet: {why} (run migrate first).")


def build_workload_asset(plan: Plan, bundled_plan: bool) -> dg.AssetsDefinition:
    """After cutover: the app's queries on the snapshot and on the live schema (workload.py)."""

    @dg.asset(
        name=WORKLOAD,
        deps=[CUTOVER],
        group_name="after_cutover",
        kinds={"sqlite", "postgres"},
        description="The app's workload (EMRSIM_WORKLOAD, or the bundled one for the EMRsim-chat "
        "schema) on a copy of the snapshot and on the live schema: the same answers, latency "
        "per query, throughput at 1, 3 and 6 clients.",
        check_specs=[
            dg.AssetCheckSpec(
                "app_gets_same_answers",
                asset=WORKLOAD,
                description="Every read gives the same rows on both sides; every write affects "
                "the same number of rows.",
            ),
            dg.AssetCheckSpec(
                "postgres_meets_or_exceeds_sqlite",
                asset=WORKLOAD,
                description="Each query's median latency on PostgreSQL is at most SQLite's (the "
                "plan's success criterion); a warning that names the slower queries.",
            ),
        ],
    )
    # Unparametrized: with check specs, Dagster reads MaterializeResult[None] as one output.
    def _workload(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with as_failure():
            path = workload.workload_path(bundled_plan)
            _require_live(migration, "the workload runs after cutover")
            proof = workload.prove(
                path,
                Path(migration.manifest().snapshot_path),
                Path(migration.work_dir).resolve(),
                migration.url(),
                LIVE,
                plan,
            )
        context.log.info(f"Workload report: {proof.saved}")
        report = proof.report
        same, same_said = report.answers_verdict(path.name)
        fast, fast_said = report.speed_verdict()
        figures = report.figures()
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(report.markdown()),
                "workload_file": str(path),
                "key_query": figures["key_query"],
                "key_query_p95_ms": figures["key_query_p95_ms"],
                "throughput": dg.MetadataValue.json(figures["throughput"]),
                "index_review": dg.MetadataValue.md(proof.review.markdown()),
                "suggested_indexes": dg.MetadataValue.json(proof.review.suggestions),
                "replica_lag": dg.MetadataValue.json(proof.replica_lag()),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="app_gets_same_answers",
                    passed=same,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=same_said,
                    metadata={
                        "differences": dg.MetadataValue.json(
                            {q.name: q.differences for q in report.differing}
                        ),
                        "reordered_draws": dg.MetadataValue.json(
                            {q.name: q.reordered for q in report.queries if q.reordered}
                        ),
                    },
                ),
                dg.AssetCheckResult(
                    check_name="postgres_meets_or_exceeds_sqlite",
                    passed=fast,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=fast_said,
                ),
            ],
        )

    return _workload


def _reporter(context: dg.AssetExecutionContext) -> progress.Report:
    """A load's progress: its line in the run's log, and its event to whoever draws it in this
    process (the CLI's bars at a terminal)."""

    def report(event: progress.Progress) -> None:
        progress.publish(event)
        context.log.info(event.line())

    return report


BACKUP = "backup"


class _Proof(Protocol):
    @property
    def tables(self) -> dict[str, int]: ...
    @property
    def seconds(self) -> float: ...


P = TypeVar("P", bound=_Proof)


def _proven_copy(
    check: str,
    made: dict[str, Any],
    pruned: list[str],
    prove: Callable[[], P],
    verdict: Callable[[P], tuple[bool, str]],
    failed: str,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """A backup's materialization and the check that its copy restores (the dump restored and
    compared, or the base backup restored to a moment): a restore that fails is a failed
    check with its sentence, not a failed step, as the backup itself was made."""
    proof: P | None = None
    try:
        made_proof = prove()
    except MigrationError as exc:
        passed, said = False, f"{failed}: {exc}"
    else:
        proof = made_proof
        passed, said = verdict(made_proof)
    return dg.MaterializeResult(
        metadata={**made, "pruned": dg.MetadataValue.json(pruned)},
        check_results=[
            dg.AssetCheckResult(
                check_name=check,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=said,
                metadata={
                    "tables": dg.MetadataValue.json(proof.tables if proof else {}),
                    "restore_seconds": round(proof.seconds, 3) if proof else 0.0,
                },
            )
        ],
    )


def build_backup_asset() -> dg.AssetsDefinition:
    """After cutover: a pg_dump of the live schema, restored and compared (backup.py)."""

    @dg.asset(
        name=BACKUP,
        deps=[CUTOVER],
        group_name="after_cutover",
        kinds={"postgres"},
        description="pg_dump -Fc of the live schema (and emrsim_migration) into "
        "<work dir>/backups, the newest EMRSIM_KEEP_DUMPS (default 7) kept; then restored into "
        "a scratch database and compared with the live schema table by table.",
        check_specs=[
            dg.AssetCheckSpec(
                "restore_is_identical",
                asset=BACKUP,
                description="The dump restores, and every table of the restore equals the live "
                "one: rows, and a 64-bit hash sum of the rows' text.",
            )
        ],
    )
    # Unparametrized: with check specs, Dagster reads MaterializeResult[None] as one output.
    def _backup(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with as_failure():
            url = migration.url()
            _require_live(migration, "backups start after cutover")
            made = core_backup.dump(
                url, Path(migration.work_dir).resolve() / "backups", migration.keep_dumps
            )
            context.log.info(f"Backup {made.path} ({made.bytes:,} bytes, {made.seconds:.1f} s)")
        return _proven_copy(
            "restore_is_identical",
            {"path": str(made.path), "bytes": made.bytes, "seconds": round(made.seconds, 3)},
            made.pruned,
            lambda: core_backup.restore_and_compare(url, made.path),
            lambda compared: compared.verdict(made.path.name),
            f"{made.path.name} does not restore to the live data",
        )

    return _backup


BASE_BACKUP = "base_backup"


def build_base_backup_asset() -> dg.AssetsDefinition:
    """After cutover: WAL archiving on and a base backup, proven by a restore to a moment."""

    @dg.asset(
        name=BASE_BACKUP,
        deps=[CUTOVER],
        group_name="after_cutover",
        kinds={"postgres"},
        description="Point-in-time recovery: WAL archiving into <work dir>/wal_archive turned on "
        "and a base backup (pg_basebackup) into <work dir>/base_backups, the newest 2 kept. From "
        "then on the live database can be brought back to any moment (recovery.restore_to). "
        "Needs a superuser and archive_mode = on (the embedded server has both).",
        check_specs=[
            dg.AssetCheckSpec(
                "restores_to_a_moment",
                asset=BASE_BACKUP,
                description="Two marks written a moment apart; a copy restored from the base "
                "backup and the archive to that moment has the first and not the second.",
            )
        ],
    )
    # Unparametrized: with check specs, Dagster reads MaterializeResult[None] as one output.
    def _base_backup(
        context: dg.AssetExecutionContext, migration: MigrationResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        work = Path(migration.work_dir).resolve()
        with as_failure():
            url = migration.url()
            _require_live(migration, "point-in-time recovery starts after cutover")
            made = recovery.base_backup(url, work)
            context.log.info(
                f"Base backup {made.path} ({made.bytes:,} bytes, {made.seconds:.1f} s)"
            )
        return _proven_copy(
            "restores_to_a_moment",
            {
                "path": str(made.path),
                "bytes": made.bytes,
                "seconds": round(made.seconds, 3),
                "archived_segments": made.archived_segments,
            },
            made.pruned,
            lambda: recovery.prove_point_in_time(url, work, LIVE),
            lambda proof: proof.verdict(),
            "Point-in-time recovery does not work",
        )

    return _base_backup


HEALTH = "live_database_is_healthy"


def build_health_check(plan: Plan, bundled_plan: bool) -> dg.AssetChecksDefinition:
    """The live database, every 5 minutes under make dev (health_every_5_minutes)."""

    @dg.asset_check(
        asset=WORKLOAD,
        name=HEALTH,
        description="Connectivity, the workload's key query against its baseline (3 times its "
        "p95 at the last app_workload, at least 50 ms), connections in use (at most 80% of "
        "max_connections), replica lag (at most 30 s).",
    )
    def _health(
        context: dg.AssetCheckExecutionContext, migration: MigrationResource
    ) -> dg.AssetCheckResult:
        with as_failure():
            plan_workload = workload.load_workload(workload.workload_path(bundled_plan), plan)
            query = next(q for q in plan_workload.queries if not q.write)
            params = workload.draw_one(plan_workload, Path(migration.manifest().snapshot_path))
            baseline = None
            event = context.instance.get_latest_materialization_event(dg.AssetKey(WORKLOAD))
            if event is not None and event.asset_materialization is not None:
                value = event.asset_materialization.metadata.get("key_query_p95_ms")
                baseline = float(value.value) if value is not None else None
            found = core_health.health(migration.url(), query.statement, params, baseline)
        return dg.AssetCheckResult(
            passed=not found.problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "Healthy: "
                if not found.problems
                else "Unhealthy: " + "; ".join(found.problems) + ". "
            )
            + f"connect {found.connect_ms:.1f} ms, {query.name} {found.key_query_ms:.1f} ms, "
            f"{found.connections} of {found.max_connections} connections, "
            f"{len(found.replicas)} replica(s).",
            metadata={
                "connect_ms": round(found.connect_ms, 3),
                "key_query_ms": round(found.key_query_ms, 3),
                "baseline_p95_ms": baseline if baseline is not None else "(no workload run yet)",
                "connections": found.connections,
                "max_connections": found.max_connections,
                "replica_lag_seconds": dg.MetadataValue.json(found.replicas),
            },
        )

    return _health
