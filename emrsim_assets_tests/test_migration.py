"""The user's story: migrate, rerun a table or a month, and be stopped by bad data."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import conninfo, sql
from sqlalchemy.engine import URL

from emrsim_assets.legacy_ids import legacy_uuid
from emrsim_assets.plan import Column, Plan, Table
from emrsim_assets.snapshot import sha256_file
from emrsim_assets_tests.conftest import Migration, run_cli
from emrsim_assets_tests.harness import add_orphan_message


def _expected(table: Table, column: Column, value: Any) -> Any:
    """The conversion, written again as plain scalar Python: an oracle independent of Polars."""
    if value is None:
        return None
    if column.convert == "legacy_id":
        return uuid.UUID(legacy_uuid(table.name, int(value)))
    if column.convert == "ref":
        return uuid.UUID(legacy_uuid(str(column.references), int(value)))
    if column.convert == "timestamp" and column.epoch == "ms":
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    if column.convert == "timestamp":
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if column.convert == "date":
        return date.fromisoformat(value)
    if column.convert == "json":
        return json.loads(value)
    if column.convert == "boolean":
        return bool(int(value))
    return value


def _source_rows(path: Path, table: Table) -> dict[Any, dict[str, Any]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(f'SELECT * FROM "{table.source}"').fetchall()  # noqa: S608
    finally:
        conn.close()
    pk = table.key_column
    assert pk is not None
    return {
        _expected(table, pk, row[pk.source]): {
            c.name: _expected(table, c, row[c.source]) for c in table.columns
        }
        for row in rows
    }


def _target_rows(migration: Migration, schema: str, table: Table) -> dict[Any, dict[str, Any]]:
    with migration.connect() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {}.{}").format(
                sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
                sql.Identifier(schema),
                sql.Identifier(table.name),
            )
        )
        names = [c.name for c in table.columns]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string()  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }


def test_full_migration_reproduces_every_source_row_and_leaves_sqlite_untouched(
    migration: Migration, sample_db: Path, plan: Plan
) -> None:
    before = sha256_file(sample_db)
    result = migration.run_job("migrate")
    assert result.success
    checks = _checks(result)
    assert checks and all(e.passed for e in checks.values()), checks
    assert "cutover" in _materialized(result)
    for table in plan.tables:
        source = _source_rows(sample_db, table)
        target = _target_rows(migration, "emrsim", table)
        assert len(source) > 0
        assert target == source, f"{table.name} differs from its source"
    assert sha256_file(sample_db) == before
    with migration.connect() as conn:
        # The live schema is the finished product: keys, indexes, and partitions for the app.
        fks = conn.execute(
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'emrsim' AND c.contype = 'f' AND c.conparentid = 0"
        ).fetchone()
        assert fks == (sum(len(t.foreign_keys) for t in plan.tables),)
        gin = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'emrsim' AND indexdef LIKE '%USING gin%' "
            "AND tablename IN ('messages', 'patient_records')"
        ).fetchone()
        assert gin == (2,)
        # Months were indexed as tables of their own, then attached: every index of the
        # partitioned parent must have found its copy on every partition (else it is invalid).
        invalid = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'emrsim' AND NOT i.indisvalid"
        ).fetchone()
        assert invalid == (0,)
        # The app's inserts keep working: its defaults came along, and new ids are uuids.
        defaults = dict(
            conn.execute(
                "SELECT column_name, column_default FROM information_schema.columns "
                "WHERE table_schema = 'emrsim' AND table_name = 'users'"
            ).fetchall()
        )
        assert defaults["id"] == "gen_random_uuid()"
        assert defaults["created_at"] == "now()"
        assert str(defaults["role"]).startswith("'student'")
        this_month = datetime.now(UTC).strftime("messages_y%Ym%m")
        assert conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = 'emrsim' AND tablename = %s", (this_month,)
        ).fetchone()
        assert not conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = 'emrsim_staging'"
        ).fetchone()


def test_rerunning_one_table_twice_leaves_exactly_the_source_rows(
    migration: Migration, sample_db: Path, plan: Plan
) -> None:
    assert migration.run_job("load_tables").success
    users = plan.table("users")
    for _ in range(2):
        result = migration.materialize(dg.AssetSelection.assets("users"))
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations)
    assert _target_rows(migration, "emrsim_staging", users) == _source_rows(sample_db, users)


def test_rerunning_one_month_replaces_only_that_month(migration: Migration, plan: Plan) -> None:
    assert migration.run_job("load_tables").success
    month = "2024-03-01"

    def snapshot() -> dict[str, list[tuple[object, ...]]]:
        # xmin changes when a row is rewritten: equal xmins mean the partition was not touched.
        with migration.connect() as conn:
            return {
                name: conn.execute(
                    sql.SQL("SELECT id, xmin::text FROM emrsim_staging.{} ORDER BY id").format(
                        sql.Identifier(name)
                    )
                ).fetchall()
                for name in ("messages_y2024m02", "messages_y2024m03", "messages_y2024m04")
            }

    before = snapshot()
    for _ in range(2):
        result = migration.materialize(dg.AssetSelection.assets("messages"), partition_key=month)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations)
    after = snapshot()
    assert after["messages_y2024m02"] == before["messages_y2024m02"]
    assert after["messages_y2024m04"] == before["messages_y2024m04"]
    assert [r[0] for r in after["messages_y2024m03"]] == [r[0] for r in before["messages_y2024m03"]]
    assert after["messages_y2024m03"] != before["messages_y2024m03"]
    assert len(after["messages_y2024m03"]) > 0


def test_orphan_message_fails_its_fk_check_and_cutover_does_not_happen(
    migration: Migration, sample_db: Path
) -> None:
    orphan = add_orphan_message(sample_db)
    result = migration.run_job("migrate")
    check = _checks(result)["messages:fk_conversation_id_resolves"]
    assert not check.passed
    assert str(orphan) in check.metadata["orphan_row_keys"].value  # type: ignore[operator]
    assert check.metadata["missing_parent_keys"].value == ["987654"]
    assert "cutover" not in _materialized(result)
    with migration.connect() as conn:
        assert not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'emrsim'").fetchone()


def test_cutover_alone_refuses_after_a_failed_check_and_names_it(
    migration: Migration, sample_db: Path
) -> None:
    add_orphan_message(sample_db)
    migration.run_job("load_tables")
    result = migration.materialize(dg.AssetSelection.assets("cutover"))
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    message = str(failure.user_failure_data.description)  # type: ignore[union-attr]
    assert "messages:fk_conversation_id_resolves failed" in message
    with migration.connect() as conn:
        assert not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'emrsim'").fetchone()


def test_cutover_alone_refuses_when_a_table_changed_after_its_checks(migration: Migration) -> None:
    assert migration.run_job("load_tables").success
    stale = migration.materialize(dg.AssetSelection.assets("users").without_checks())
    assert stale.success
    result = migration.materialize(dg.AssetSelection.assets("cutover"))
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    message = str(failure.user_failure_data.description)  # type: ignore[union-attr]
    assert "users:row_count_matches_source is stale" in message
    # The children's FK checks read users too: they are stale as well.
    assert "conversations:fk_user_id_resolves is stale" in message
    # Rerunning the table with its checks and the FK checks that read it opens the gate again.
    children = ("patients", "conversations", "user_sessions")
    rerun = dg.AssetSelection.assets("users") | dg.AssetSelection.checks_for_assets(*children)
    assert migration.materialize(rerun).success
    assert migration.materialize(dg.AssetSelection.assets("cutover")).success


def test_second_cutover_keeps_the_first_as_backup_and_rollback_restores_it(
    migration: Migration,
) -> None:
    from emrsim_assets.cutover import rollback

    assert migration.run_job("migrate").success
    assert migration.run_job("migrate").success
    with migration.connect() as conn:
        backups = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'emrsim_backup_%'"
        ).fetchall()
        assert len(backups) == 1
        message = rollback(conn)  # type: ignore[arg-type]
        assert backups[0][0] in message
        assert conn.execute("SELECT count(*) FROM emrsim.users").fetchone() != (0,)
        actions = conn.execute(
            "SELECT action FROM emrsim_migration.cutovers ORDER BY id"
        ).fetchall()
        assert actions == [("cutover",), ("cutover",), ("rollback",)]


def test_a_message_written_late_into_an_earlier_month_lands_in_that_month(
    migration: Migration, sample_db: Path, plan: Plan
) -> None:
    conn = sqlite3.connect(sample_db)
    try:
        # The highest rowid, but a timestamp in March 2023: it sits in no month's rowid span.
        late = conn.execute(
            "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "
            "SELECT min(id), 'user', 'late', NULL, '2023-03-15 12:00:00' FROM conversations"
        ).lastrowid
        conn.commit()
    finally:
        conn.close()
    result = migration.run_job("migrate")
    assert result.success
    manifest = json.loads((migration.work / "snapshot" / "manifest.json").read_text())
    assert "2023-03-01" not in manifest["pure_months"]
    assert "2023-02-01" in manifest["pure_months"]
    messages = plan.table("messages")
    with migration.connect() as conn:
        row = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM emrsim.messages m "
            "JOIN pg_class c ON c.oid = m.tableoid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE m.id = %s",
            (legacy_uuid("messages", int(late or 0)),),
        ).fetchone()
    assert row == ("emrsim.messages_y2023m03",)
    assert _target_rows(migration, "emrsim", messages) == _source_rows(sample_db, messages)


def test_snapshot_counts_every_row_once_whatever_the_scan_slices(
    sample_db: Path, plan: Plan, tmp_path: Path
) -> None:
    from emrsim_assets.definitions import month_partitions
    from emrsim_assets.snapshot import take_snapshot

    months = list(month_partitions(plan).get_partition_keys())
    manifest = take_snapshot(sample_db, tmp_path / "snapshot", plan, months, batch_rows=53)
    conn = sqlite3.connect(sample_db)
    try:
        for table in plan.tables:
            (rows,) = conn.execute(f'SELECT count(*) FROM "{table.source}"').fetchone()  # noqa: S608
            assert manifest.row_counts[table.name] == rows, table.name
        by_month = dict(
            conn.execute(
                "SELECT substr(created_at, 1, 7) || '-01', count(*) FROM messages GROUP BY 1"
            ).fetchall()
        )
    finally:
        conn.close()
    assert manifest.month_counts == by_month
    assert manifest.column_types["messages"]["id"] == {"integer": manifest.row_counts["messages"]}


def test_row_count_check_names_a_month_missing_a_row_and_rows_in_a_partition_of_no_month(
    migration: Migration, plan: Plan
) -> None:
    from emrsim_assets import integrity, snapshot

    assert migration.run_job("load_tables").success
    manifest = snapshot.load_manifest(migration.resource.snapshot_dir)
    with migration.connect() as conn:
        conn.execute("DELETE FROM emrsim_staging.messages_y2024m03 WHERE ctid = '(0,1)'")
        conn.execute(
            "CREATE TABLE emrsim_staging.messages_stray PARTITION OF emrsim_staging.messages "
            "FOR VALUES FROM ('2031-01-01 00:00+00') TO ('2031-02-01 00:00+00')"
        )
        conn.execute(
            "INSERT INTO emrsim_staging.messages_stray SELECT id, conversation_id, sender, "
            "message, metadata, '2031-01-05 00:00+00' FROM emrsim_staging.messages LIMIT 1"
        )
        verdict = integrity.row_count_matches_source(conn, plan.table("messages"), manifest)
    assert not verdict.passed
    mismatches = verdict.metadata["mismatches"]
    source_rows = manifest.month_counts["2024-03-01"]
    assert mismatches["2024-03-01"] == {
        "source": source_rows,
        "target": source_rows - 1,
        "quarantined": 0,
    }
    assert mismatches["messages_stray"] == {"source": 0, "target": 1, "quarantined": 0}


def test_key_uniqueness_finds_a_key_in_two_months_and_leaves_the_planner_as_it_was(
    migration: Migration, plan: Plan
) -> None:
    """The check steers the planner (a merge of the months' key indexes) for its own query
    only: the caller's transaction goes on with its settings as they were."""
    from emrsim_assets import integrity

    assert migration.run_job("load_tables").success
    with psycopg.connect(migration.pg_url) as conn:  # not autocommit: a savepoint inside
        conn.execute(
            "INSERT INTO emrsim_staging.messages SELECT id, conversation_id, sender, message, "
            "metadata, '2024-05-05 00:00+00' FROM emrsim_staging.messages "
            "WHERE created_at < '2024-03-01' LIMIT 1"
        )
        verdict = integrity.key_unique_across_months(conn, plan.table("messages"))
        settings = conn.execute(
            "SELECT current_setting('enable_sort'), current_setting('enable_hashagg')"
        ).fetchone()
        conn.rollback()
    assert not verdict.passed and "repeats across months" in verdict.description
    assert [d["rows"] for d in verdict.metadata["duplicate_keys"]] == [2]
    assert settings == ("on", "on")


def test_cli_run_is_recorded_in_a_dagster_instance_kept_in_postgres(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The deployed shape: DAGSTER_HOME's storage is PostgreSQL (dagster-postgres, with the
    pooled connections the CLI asks for); the run, its checks and the cutover land there."""
    params = conninfo.conninfo_to_dict(pg_url)
    storage_db = f"{params['dbname']}_dagster"
    admin = conninfo.make_conninfo(pg_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(storage_db)))
    try:
        storage_url = URL.create(
            "postgresql+psycopg2",
            username=str(params.get("user", "postgres")),
            password=str(params["password"]) if params.get("password") else None,
            database=storage_db,
            query={k: str(params[k]) for k in ("host", "port") if params.get(k)},
        ).render_as_string(hide_password=False)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            yaml.safe_dump({"storage": {"postgres": {"postgres_url": storage_url}}}),
            encoding="utf-8",
        )
        code, out = run_cli(monkeypatch, tmp_path, sample_db, pg_url, capsys)
        assert code == 0, out
        assert "cutover: done" in out
        reported = re.search(r"checks: (\d+) passed, 0 failed", out)
        assert reported is not None, out

        with psycopg.connect(conninfo.make_conninfo(pg_url, dbname=storage_db)) as conn:
            runs = conn.execute("SELECT status FROM runs").fetchall()
            checks = conn.execute(
                "SELECT count(*) FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'"
            ).fetchone()
            cutover = conn.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                "'ASSET_MATERIALIZATION' AND asset_key = %s",
                (dg.AssetKey("cutover").to_string(),),
            ).fetchone()
        assert runs == [("SUCCESS",)]
        assert checks is not None and checks[0] == int(reported.group(1)) > 0
        assert cutover == (1,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(storage_db)
                )
            )
