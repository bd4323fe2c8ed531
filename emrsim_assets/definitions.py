"""The one place that wires assets, checks, jobs, schedules and resources into `defs`."""

from __future__ import annotations

import os

import dagster as dg

from emrsim_assets.defs.assets import build_cutover_asset, build_snapshot_asset, build_table_asset
from emrsim_assets.defs.checks import build_checks
from emrsim_assets.defs.jobs import (
    build_partition_maintenance,
    load_tables_job,
    migrate_job,
    rollback,
)
from emrsim_assets.defs.resources import MigrationResource
from emrsim_assets.plan import Plan
from emrsim_assets.plan.resolve import resolve_plan


def messages_partitions(plan: Plan) -> dg.MonthlyPartitionsDefinition:
    start = os.environ.get("EMRSIM_MESSAGES_START") or plan.messages_partition_start.isoformat()
    # end_offset=1: the current month is a partition too.
    return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=1, timezone="UTC")


def build_defs(plan: Plan, resource: MigrationResource | None = None) -> dg.Definitions:
    months = messages_partitions(plan)
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
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[migrate_job, load_tables_job, rollback, maintenance],
        schedules=[schedule],
        sensors=[follow],
        resources={"migration": resource or default_resource()},
        # One process per run: steps are short and share the warm interpreter.
        executor=dg.in_process_executor,
    )


def default_resource() -> MigrationResource:
    return MigrationResource(
        sqlite_path=dg.EnvVar("EMRSIM_SQLITE_PATH"),
        work_dir=os.environ.get("EMRSIM_WORK_DIR", ".emrsim"),
        pg_url=dg.EnvVar("EMRSIM_PG_URL") if os.environ.get("EMRSIM_PG_URL") else None,
        batch_rows=int(os.environ.get("EMRSIM_BATCH_ROWS", "50000")),
        workers=int(os.environ.get("EMRSIM_WORKERS", "3")),
        keep_backups=int(os.environ.get("EMRSIM_KEEP_BACKUPS", "2")),
    )


defs = build_defs(resolve_plan())
