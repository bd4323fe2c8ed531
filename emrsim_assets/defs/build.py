"""Build the Dagster definitions from a plan: assets, checks, jobs, sensor, resources."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from emrsim_assets.defs.assets import (
    build_backup_asset,
    build_base_backup_asset,
    build_cutover_asset,
    build_health_check,
    build_snapshot_asset,
    build_table_asset,
    build_workload_asset,
)
from emrsim_assets.defs.checks import build_checks
from emrsim_assets.defs.jobs import (
    backup_live,
    base_backup_live,
    build_catch_up_sensor,
    build_migration_jobs,
    build_partition_maintenance,
    build_start_migration,
    daily_backup,
    health_every_5_minutes,
    prove_after_cutover,
    rollback,
    weekly_base_backup,
)
from emrsim_assets.defs.loggers import file_logger, progress_logger
from emrsim_assets.defs.resources import MigrationResource
from emrsim_assets.defs.runs import abandoned_runs_marked_failed
from emrsim_assets.defs.threads import threaded_executor
from emrsim_assets.errors import SourceError
from emrsim_assets.plan import Plan, default_plan_path, load_plan
from emrsim_assets.postgres import work_dir as work_dir_of
from emrsim_assets.private import keep_private
from emrsim_assets.settings import settings
from emrsim_assets.snapshot import data_months
from emrsim_assets.times import next_month


def month_partitions(
    plan: Plan, sqlite: Path | None = None, work_dir: Path | None = None
) -> dg.PartitionsDefinition:
    """The partitioned table's months: those in which the source has rows, plus this month and
    the next (the live app writes there from the first minute). So the UI lists what there is
    to load, and launching every month is launching all partitions. With no source to look at,
    or one that cannot be read as the plan says (a table it lacks: the definitions still load,
    and the first run says what is wrong in one sentence), every calendar month from the plan's
    first one to this month."""
    start = settings().partition_start or plan.partition_start.isoformat()
    calendar = dg.MonthlyPartitionsDefinition(start_date=start, end_offset=1, timezone="UTC")
    if sqlite is None or not sqlite.is_file() or plan.partitioned_table is None:
        return calendar
    try:
        with_data = data_months(sqlite, plan, (work_dir or work_dir_of()) / "cache")
    except SourceError:
        return calendar
    this_month = datetime.now(UTC).date().replace(day=1)
    live = [this_month.isoformat(), next_month(this_month).isoformat()]
    months = sorted({m for m in with_data if m >= start[:10]} | set(live))
    return dg.StaticPartitionsDefinition(months)


def build_defs(plan: Plan, resource: MigrationResource | None = None) -> dg.Definitions:
    # Every Dagster process loads these definitions: each writes the user's data privately.
    keep_private()
    if resource is not None:
        sqlite: Path | None = Path(resource.sqlite_path)
        work: Path | None = Path(resource.work_dir).resolve()
    else:
        sqlite, work = settings().sqlite_path, None
    months = month_partitions(plan, sqlite, work)
    checks, gated = build_checks(plan, months)
    maintenance, schedule = build_partition_maintenance(plan)
    # Checks that read another table's rows (foreign keys) follow it: reloading users re-runs
    # the FK checks of its children. Running by default, so the UI never shows a stale pass.
    follow = dg.AutomationConditionSensorDefinition(
        "checks_follow_reloaded_parents",
        target=dg.AssetSelection.checks(
            *(c for c in checks if any(k.name.startswith("fk_") for k in c.check_keys))
        ),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
    )
    assets = [
        build_snapshot_asset(plan, months),
        *(build_table_asset(plan, table, months) for table in plan.load_order()),
        build_cutover_asset(plan, gated),
        build_workload_asset(plan, bundled_plan=plan == load_plan(default_plan_path())),
        build_backup_asset(),
        build_base_backup_asset(),
    ]
    bundled = plan == load_plan(default_plan_path())
    migration_jobs = build_migration_jobs(months)
    start, starts_migrate = build_start_migration(plan, months, migration_jobs[0])
    return dg.Definitions(
        assets=assets,
        asset_checks=[*checks, build_health_check(plan, bundled)],
        jobs=[
            *migration_jobs,
            start,
            prove_after_cutover,
            backup_live,
            base_backup_live,
            rollback,
            maintenance,
        ],
        schedules=[schedule, daily_backup, weekly_base_backup, health_every_5_minutes],
        sensors=[
            follow,
            abandoned_runs_marked_failed,
            starts_migrate,
            build_catch_up_sensor(months),
        ],
        resources={"migration": resource or default_resource()},
        # One process per run, its ready steps side by side in threads (defs.threads): steps
        # share the warm interpreter and wait on SQLite, PostgreSQL and Polars, not the GIL.
        executor=_executor(),
        # Dagster's console logger as usual, plus a progress view and a log file (the CLI turns
        # the console down unless -v).
        loggers={
            "console": dg.default_loggers()["console"],
            "progress": progress_logger,
            "file": file_logger,
        },
    )


def _executor() -> dg.ExecutorDefinition:
    """Ours, or Dagster's multiprocess executor (a forkserver starts each step's process)."""
    given = settings()
    if given.executor == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"max_concurrent": given.steps, "start_method": {"forkserver": {}}}
        )
    return threaded_executor


def default_resource() -> MigrationResource:
    given = settings()
    return MigrationResource(
        sqlite_path=dg.EnvVar("EMRSIM_SQLITE_PATH"),
        work_dir=str(given.work_dir),
        # The URL stays an EnvVar: the UI shows its name, never its password.
        pg_url=dg.EnvVar("EMRSIM_PG_URL") if os.environ.get("EMRSIM_PG_URL") else None,
        batch_rows=given.batch_rows,
        workers=given.workers,
        keep_backups=given.keep_backups,
        keep_dumps=given.keep_dumps,
    )
