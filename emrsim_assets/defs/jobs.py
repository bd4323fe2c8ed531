"""Jobs and the schedule: migrate everything, roll back, keep next month's partition ready."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from emrsim_assets import cutover as core_cutover
from emrsim_assets import postgres
from emrsim_assets.defs.dagster_internals import UnresolvedAssetJobDefinition
from emrsim_assets.defs.resources import MigrationResource, as_failure
from emrsim_assets.plan import Plan
from emrsim_assets.schemas import STAGING
from emrsim_assets.source import check_plan_matches_source, open_readonly
from emrsim_assets.target import schema_exists
from emrsim_assets.times import next_month

MIGRATE = "migrate"


START = "start_migration"
CATCH_UP = "catch_up"
_BUSY = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def every_month_tags(months: dg.PartitionsDefinition) -> dict[str, str]:
    """Every month of the partitioned table as one partition range: a run that carries these
    loads every month, in one run (the partitioned asset's backfill policy)."""
    keys = list(months.get_partition_keys())
    if not keys:
        return {}
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def build_catch_up_sensor(months: dg.PartitionsDefinition) -> dg.SensorDefinition:
    every_month = every_month_tags(months)

    @dg.sensor(
        name="catch_up_while_the_app_runs",
        job_name=CATCH_UP,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Every 5 minutes, while a prepared staging schema waits for its cutover: a "
        "catch_up run, so that the cutover's own catch-up stays small. Off by default.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, migration: MigrationResource
    ) -> dg.RunRequest | dg.SkipReason:
        busy = context.instance.get_runs(filters=dg.RunsFilter(statuses=list(_BUSY)), limit=1)
        if busy:
            return dg.SkipReason(f"run {busy[0].run_id} ({busy[0].job_name}) is not finished")
        with migration.connect() as conn:
            prepared = schema_exists(conn, STAGING)
        if not prepared:
            return dg.SkipReason(
                "no prepared staging schema (prepare first; after a cutover, none)"
            )
        return dg.RunRequest(tags=every_month)

    return _sensor


def build_migration_jobs(months: dg.PartitionsDefinition) -> list[UnresolvedAssetJobDefinition]:
    """migrate and load_tables. Each run carries every month of the partitioned table by
    default (a partition range tag); a single month is still a run of its own from the asset's
    page."""
    every_month = every_month_tags(months)
    return [
        dg.define_asset_job(
            MIGRATE,
            selection=dg.AssetSelection.all() - dg.AssetSelection.groups("after_cutover"),
            description="Snapshot, every table and month, every check, then cutover (gated by "
            "the checks). From the UI, start it with start_migration (no partition to choose).",
            tags=every_month,
        ),
        dg.define_asset_job(
            CATCH_UP,
            selection=dg.AssetSelection.all()
            - dg.AssetSelection.assets("cutover")
            - dg.AssetSelection.groups("after_cutover"),
            description="While the app runs: a new snapshot, then only what changed since the "
            "last one reloads (the rest is carried over), and every check proves staging again. "
            "Run by the catch_up_while_the_app_runs sensor when it is turned on.",
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


def build_start_migration(
    plan: Plan, months: dg.PartitionsDefinition, migrate: UnresolvedAssetJobDefinition
) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    """The UI's one action for the whole migration. Dagster's UI asks for partitions (or warns
    that none is chosen) before it launches a job with a partitioned asset, and cannot preselect
    them all; this job has none. Its one step checks the plan against the source and reaches
    PostgreSQL, so a mistake is one sentence on a run that touches no asset; once it succeeds, a
    run status sensor launches `migrate` over every month."""
    every_month = every_month_tags(months)

    @dg.op(name="check_plan_source_and_postgresql")
    def _check(context: dg.OpExecutionContext, migration: MigrationResource) -> None:
        source = Path(migration.sqlite_path)
        with as_failure():
            reader = open_readonly(source)
            try:
                check_plan_matches_source(reader, plan, source)
            finally:
                reader.close()
            with migration.connect() as conn:
                conn.execute("SELECT 1")
        span = (
            f", months {every_month['dagster/asset_partition_range_start'][:7]} to "
            f"{every_month['dagster/asset_partition_range_end'][:7]}"
            if every_month
            else ""
        )
        context.log.info(
            f"Plan {plan.path.name} matches {source.name} ({len(plan.tables)} tables{span}); "
            "PostgreSQL answers. The migrate run starts within seconds: see Runs."
        )

    @dg.job(
        name=START,
        description="Start the whole migration in one action: Launchpad, then Launch Run. "
        "Checks the plan against the source and PostgreSQL, then runs migrate over every month.",
        tags={"emrsim/launcher": "true"},
    )
    def _start() -> None:
        _check()

    @dg.run_status_sensor(
        name="start_migration_runs_migrate",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[_start],
        request_job=migrate,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description="When start_migration succeeds, launch migrate over every month.",
    )
    def _launch(context: dg.RunStatusSensorContext) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=context.dagster_run.run_id,
            tags={**every_month, "emrsim/started_by": context.dagster_run.run_id},
        )

    return _start, _launch


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
