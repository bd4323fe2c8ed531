"""The day of the migration, as the UI shows it: reruns after cutover, backups, true metadata."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from emrsim_assets.definitions import build_defs
from emrsim_assets.defs.resources import MigrationResource
from emrsim_assets_tests.conftest import Migration, failure_sentence


def test_rerunning_a_table_or_a_month_after_cutover_changes_nothing_and_says_why(
    migration: Migration,
) -> None:
    """Dagster's UI has no hook that refuses a run before it exists: the rerun's step refuses,
    materializes nothing and fails nothing, so the asset and its checks keep their state."""
    assert migration.run_job("migrate").success
    for selection, partition in (("users", None), ("messages", "2024-03-01")):
        key = dg.AssetKey(selection)
        before = migration.instance.get_latest_materialization_event(key)
        result = migration.materialize(dg.AssetSelection.assets(selection), partition)
        assert result.success, "a refused rerun is not a failed run"
        assert not result.get_asset_materialization_events()
        assert not result.get_asset_check_evaluations()
        warnings = [
            e.message
            for e in migration.instance.all_logs(result.run_id)
            if e.level == logging.WARNING and e.message
        ]
        said = next((w for w in warnings if "Not reloaded" in w), "")
        assert f"{selection} alone cannot be reloaded" in said, warnings
        assert "Run the whole migration" in said
        after = migration.instance.get_latest_materialization_event(key)
        assert after is not None and before is not None and after.timestamp == before.timestamp
        # No "failed to materialize" that would turn the asset red in the UI.
        failures = [
            e
            for e in migration.instance.all_logs(result.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_FAILED_TO_MATERIALIZE"
        ]
        assert all(
            f.dagster_event.asset_failed_to_materialize_data.failure_type.value == "SKIPPED"  # type: ignore[union-attr]
            for f in failures
        ), failures
    # The whole migration again works, and keeps the first live schema as a backup.
    again = migration.run_job("migrate")
    assert again.success
    assert migration.latest("cutover")["backup_schema"] != "(none: first cutover)"


def test_cutover_keeps_only_the_newest_backups(
    plan, sample_db: Path, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    migration = Migration(plan, sample_db, pg_url, tmp_path / "work")
    migration.resource = MigrationResource(
        sqlite_path=str(sample_db), work_dir=str(tmp_path / "work"), pg_url=pg_url, keep_backups=1
    )
    migration.defs = build_defs(plan, migration.resource)
    for _ in range(3):
        assert migration.run_job("migrate").success
    with migration.connect() as conn:
        backups = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'emrsim\\_backup\\_%'"
        ).fetchall()
    assert len(backups) == 1
    metadata = migration.latest("cutover")
    kept = metadata["backups_kept_bytes"]
    assert isinstance(kept, dict) and list(kept) == [backups[0][0]]
    assert next(iter(kept.values())) > 0
    assert len(metadata["backups_dropped"]) == 1  # type: ignore[arg-type]


def test_metadata_tells_the_truth_per_table_and_month(
    migration: Migration, sample_db: Path
) -> None:
    assert migration.run_job("load_tables").success
    snapshot = migration.latest("source_snapshot")
    assert snapshot["source_path"] == str(sample_db)
    users = migration.latest("users")
    assert users["dagster/row_count"] == users["loaded_rows"] > 0
    assert users["copy_bytes"] > 0  # type: ignore[operator]
    assert "emrsim_staging.users (in emrsim after cutover)" == users["pg_table"]
    # A range run records each month with that month's own numbers, counted in the snapshot.
    import sqlite3

    conn = sqlite3.connect(sample_db)
    try:
        in_source = dict(
            conn.execute(
                "SELECT substr(created_at, 1, 7) || '-01', count(*) FROM messages GROUP BY 1"
            ).fetchall()
        )
    finally:
        conn.close()
    assert len(in_source) > 1
    for month, count in in_source.items():
        one_month = migration.latest("messages", month)
        assert one_month["source_rows"] == one_month["loaded_rows"] == count, month
        assert one_month["dagster/row_count"] == count
        assert one_month["copy_bytes"] > 0  # type: ignore[operator]
        assert one_month[
            "pg_table"
        ].startswith(  # type: ignore[union-attr]
            f"emrsim_staging.messages_y{month[:4]}m{month[5:7]}"
        )
        assert one_month["months_in_run"] == len(migration.months)
        assert "months" not in one_month
    # One month alone: its own count again.
    assert migration.materialize(dg.AssetSelection.assets("messages"), "2024-03-01").success
    alone = migration.latest("messages", "2024-03-01")
    assert alone["dagster/row_count"] == in_source["2024-03-01"]


def test_reloading_a_parent_reruns_the_foreign_key_checks_of_its_children(
    migration: Migration,
) -> None:
    """The daemon's view: after users is reloaded alone, its children's FK checks are
    requested again (declarative automation), and no other check is."""
    assert migration.run_job("load_tables").success
    first = dg.evaluate_automation_conditions(defs=migration.defs, instance=migration.instance)
    assert migration.materialize(dg.AssetSelection.assets("users")).success
    second = dg.evaluate_automation_conditions(
        defs=migration.defs, instance=migration.instance, cursor=first.cursor
    )
    requested = {
        f"{r.key.asset_key.to_user_string()}:{r.key.name}"
        for r in second.results
        if isinstance(r.key, dg.AssetCheckKey) and r.true_subset.size
    }
    assert requested == {
        "patients:fk_created_by_resolves",
        "conversations:fk_user_id_resolves",
        "user_sessions:fk_user_id_resolves",
    }


def test_the_partitions_are_the_months_with_data_and_the_jobs_carry_them_all(
    migration: Migration, sample_db: Path
) -> None:
    import sqlite3
    from datetime import UTC, datetime

    conn = sqlite3.connect(sample_db)
    try:
        with_data = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT substr(created_at, 1, 7) || '-01' FROM messages"
            )
        }
    finally:
        conn.close()
    this_month = datetime.now(UTC).date().replace(day=1)
    following = this_month.replace(
        year=this_month.year + this_month.month // 12, month=this_month.month % 12 + 1
    )
    live = {this_month.isoformat(), following.isoformat()}
    assert migration.months == sorted(with_data | live)
    for name in ("migrate", "load_tables"):
        tags = migration.defs.resolve_job_def(name).tags
        assert tags["dagster/asset_partition_range_start"] == migration.months[0]
        assert tags["dagster/asset_partition_range_end"] == migration.months[-1]


def test_after_cutover_a_new_connection_finds_the_tables_without_naming_the_schema(
    migration: Migration,
) -> None:
    """The printed psql line and the app's DB_* settings reach the tables: cutover sets this
    role's search_path in this database to the live schema (new sessions)."""
    import psycopg

    assert migration.run_job("migrate").success
    with psycopg.connect(migration.pg_url) as conn:
        path = conn.execute("SHOW search_path").fetchone()
        assert path is not None and str(path[0]).startswith("emrsim")
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()
        assert messages is not None and int(messages[0]) > 0
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = ANY (current_schemas(false))"
        ).fetchone()
        assert tables is not None and int(tables[0]) >= 6


def test_start_migration_checks_first_then_requests_migrate_over_every_month(
    migration: Migration, sample_db: Path, tmp_path: Path
) -> None:
    """The UI's one action: a job with no partitions (no dialog), whose success makes its
    sensor request migrate over every month. The browser test clicks it for real."""
    start = migration.defs.resolve_job_def("start_migration")
    result = start.execute_in_process(instance=migration.instance, raise_on_error=False)
    assert result.success
    sensor = migration.defs.get_sensor_def("start_migration_runs_migrate")
    run = migration.instance.get_run_by_id(result.run_id)
    assert run is not None
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=result.get_run_success_event(),
        dagster_instance=migration.instance,
        dagster_run=run,
    )
    request = sensor(context)  # type: ignore[operator]
    assert isinstance(request, dg.RunRequest)
    assert request.tags["dagster/asset_partition_range_start"] == migration.months[0]
    assert request.tags["dagster/asset_partition_range_end"] == migration.months[-1]
    assert sensor.job_name == "migrate"  # type: ignore[attr-defined]

    # A typo in the plan: one sentence on the launcher's run, and no asset touched.
    import yaml

    from emrsim_assets.plan import default_plan_path, load_plan

    raw = yaml.safe_load(default_plan_path().read_text())
    users = next(t for t in raw["tables"] if t["name"] == "users")
    next(c for c in users["columns"] if c["name"] == "email")["source"] = "emial"
    typo = tmp_path / "plan.yaml"
    typo.write_text(yaml.safe_dump(raw), encoding="utf-8")
    wrong = Migration(load_plan(typo), sample_db, migration.pg_url, tmp_path / "work2")
    failed = wrong.defs.resolve_job_def("start_migration").execute_in_process(
        instance=wrong.instance, raise_on_error=False
    )
    assert not failed.success
    said = failure_sentence(failed)
    assert "users.emial" in said and "did you mean email?" in said, said
    assert wrong.instance.get_latest_materialization_event(dg.AssetKey("users")) is None


def test_a_source_the_plan_does_not_fit_still_loads_the_ui_and_start_migration_names_it(
    plan, tmp_path: Path, pg_url: str
) -> None:  # type: ignore[no-untyped-def]
    """A file without the partitioned table: the definitions load (the UI opens), and the
    launcher's run says what is missing in one sentence, touching no asset."""
    import sqlite3

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()
    wrong = Migration(plan, other, pg_url, tmp_path / "work")
    failed = wrong.defs.resolve_job_def("start_migration").execute_in_process(
        instance=wrong.instance, raise_on_error=False
    )
    assert not failed.success
    said = failure_sentence(failed)
    assert "messages" in said or "users" in said, said
    assert "\n" not in said and "Traceback" not in said
    assert wrong.instance.get_latest_materialization_event(dg.AssetKey("users")) is None
