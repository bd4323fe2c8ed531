"""Jobs and the schedule: migrate everything, roll back, keep next month's partition ready."""

from datetime import UTC, datetime

import dagster as dg

from emrsim_assets import cutover as core_cutover
from emrsim_assets import postgres
from emrsim_assets.defs.dagster_internals import UnresolvedAssetJobDefinition
from emrsim_assets.defs.resources import MigrationResource, as_failure
from emrsim_assets.plan import Plan
from emrsim_assets.times import next_month

MIGRATE = "migrate"


def build_migration_jobs(months: dg.PartitionsDefinition) -> list[UnresolvedAssetJobDefinition]:
    """migrate and load_tables. Each run carries every month of the partitioned table by
    default (a partition range tag), so launching either from the UI's launchpad is one action;
    a single month is still a run of its own from the asset's page."""
    keys = list(months.get_partition_keys())
    every_month = (
        {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
        if keys
        else {}
    )
    return [
        dg.define_asset_job(
            MIGRATE,
            selection=dg.AssetSelection.all() - dg.AssetSelection.groups("after_cutover"),
            description="Snapshot, every table and month, every check, then cutover (gated by "
            "the checks).",
            tags=every_month,
        ),
        dg.define_asset_job(
            "load_tables",
            selection=dg.AssetSelection.all()
            - dg.AssetSelection.assets("cutover")
            - dg.AssetSelection.groups("after_cutover"),
            description="Snapshot, tables and checks, without cutover: a dry run that proves "
            "the data.",
            tags=every_month,
        ),
    ]


prove_after_cutover = dg.define_asset_job(
    "prove_after_cutover",
    selection=dg.AssetSelection.assets("app_workload"),
    description="After cutover: the app's workload on both sides (same answers, latency, "
    "throughput).",
)


backup_live = dg.define_asset_job(
    "backup_live",
    selection=dg.AssetSelection.assets("backup"),
    description="pg_dump of the live schema, restored into a scratch database and compared.",
)


@dg.schedule(
    job=backup_live,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 02:00 UTC, once a cutover has happened: a proven backup.",
)
def daily_backup(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return _once_live(context, "nothing live to back up")


base_backup_live = dg.define_asset_job(
    "base_backup_live",
    selection=dg.AssetSelection.assets("base_backup"),
    description="WAL archiving and a base backup, proven by a restore to a moment.",
)


@dg.schedule(
    job=base_backup_live,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every Sunday at 03:00 UTC, once a cutover has happened, on the embedded "
    "server: a new base backup (recovery replays the archive from the newest one).",
)
def weekly_base_backup(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if postgres.configured_url() is not None:
        return dg.SkipReason(
            "The target is your own server: point-in-time recovery is its own tools' job "
            "(archive_command and base backups); materialize base_backup to use ours."
        )
    return _once_live(context, "nothing live to recover")


health_check = dg.define_asset_job(
    "health_check",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("app_workload"), "live_database_is_healthy")
    ),
    description="The live database's health: connectivity, key query latency, connections, "
    "replica lag.",
)


@dg.schedule(
    job=health_check,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes, once a cutover has happened: the live database's health.",
)
def health_every_5_minutes(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return _once_live(context, "nothing live to watch")


def _once_live(context: dg.ScheduleEvaluationContext, why: str) -> dg.RunRequest | dg.SkipReason:
    """The schedules after cutover run once a cutover has happened, and skip until then."""
    if context.instance.get_latest_materialization_event(dg.AssetKey("cutover")) is None:
        return dg.SkipReason(f"No cutover yet: {why}.")
    return dg.RunRequest()


@dg.op(
    description="Swap the live schema back to the one it replaced (the SQLite file is untouched)."
)
def rollback_cutover(context: dg.OpExecutionContext, migration: MigrationResource) -> None:
    with as_failure(), migration.connect() as conn:
        context.log.info(core_cutover.rollback(conn))


@dg.job(description="Undo the last cutover: emrsim goes aside, the previous emrsim comes back.")
def rollback() -> None:
    rollback_cutover()


def build_partition_maintenance(plan: Plan) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(
        name="ensure_next_month_partition",
        description="Create next month's partition of the live partitioned table.",
    )
    def create_next_month_partition(
        context: dg.OpExecutionContext, migration: MigrationResource
    ) -> None:
        table = plan.partitioned_table
        if table is None:
            return
        month = next_month(datetime.now(UTC).date().replace(day=1))
        with as_failure(), migration.connect() as conn:
            name = core_cutover.ensure_live_partition(conn, table, month)
        context.log.info(
            f"Partition {name} ready." if name else "No live schema yet: nothing to do."
        )

    @dg.job(name="create_next_month_partition")
    def maintenance() -> None:
        create_next_month_partition()

    schedule = dg.ScheduleDefinition(
        name="monthly_partition_schedule",
        job=maintenance,
        cron_schedule="0 3 20 * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="On the 20th of each month, create next month's live partition.",
    )
    return maintenance, schedule
