"""Bad input ends with one sentence a person can act on, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import conninfo

from emrsim_assets_tests.conftest import PASSWORD, PASSWORD_USER, Migration, run_cli


def _one_sentence(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_missing_source_file_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(monkeypatch, tmp_path, tmp_path / "nope.sqlite", pg_url, capsys)
    assert code == 2
    assert "nope.sqlite does not exist" in _one_sentence(out)


def test_a_file_that_is_not_sqlite_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "notes.sqlite"
    fake.write_text("just some text, not a database\n" * 10)
    code, out = run_cli(monkeypatch, tmp_path, fake, pg_url, capsys)
    assert code == 2
    assert "is not a SQLite database" in _one_sentence(out)


def test_unreachable_postgres_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run_cli(
        monkeypatch, tmp_path, sample_db, "postgresql://postgres:s3cret@127.0.0.1:1/emrsim", capsys
    )
    assert code == 2
    line = _one_sentence(out)
    assert "Cannot reach PostgreSQL at postgres@127.0.0.1:1/emrsim" in line
    assert "s3cret" not in line


def test_bad_password_is_one_sentence_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    pg_server: dict[str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not pg_server["password_auth"]:
        pytest.skip("this server trusts every login; the embedded run checks passwords")
    wrong = conninfo.make_conninfo(pg_url, user=PASSWORD_USER, password="wrong-" + PASSWORD)
    code, out = run_cli(monkeypatch, tmp_path, sample_db, wrong, capsys)
    assert code == 2
    line = _one_sentence(out)
    assert "password authentication failed" in line
    assert PASSWORD not in line
    # And the right password gets in, so the failure above was the password's.
    psycopg.connect(conninfo.make_conninfo(pg_url, user=PASSWORD_USER, password=PASSWORD)).close()


def test_migrate_exits_nonzero_naming_the_failed_check(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from emrsim_assets_tests.test_migration import _add_orphan_message

    _add_orphan_message(sample_db)
    code, out = run_cli(monkeypatch, tmp_path, sample_db, pg_url, capsys)
    assert code == 1
    assert "FAILED messages:fk_conversation_id_resolves" in out
    assert "cutover: NOT done" in out
    # For people: no Dagster stack trace and no DEBUG events, just progress and the report.
    assert "Traceback" not in out and "Stack Trace" not in out and "DEBUG" not in out
    assert len(out.splitlines()) < 60, out  # a new DAGSTER_HOME adds Dagster's welcome


def test_a_failed_step_prints_one_sentence_and_no_stack_trace(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sqlite3

    conn = sqlite3.connect(sample_db)
    conn.execute("UPDATE users SET created_at = 'last tuesday' WHERE id = 4")
    conn.commit()
    conn.close()
    code, out = run_cli(monkeypatch, tmp_path, sample_db, pg_url, capsys)
    assert code == 1
    assert "step users failed: ConversionError: users.created_at: row id 4" in out
    assert "Traceback" not in out and "Stack Trace" not in out
    # Every detail, the stack trace included, is in the run's log file.
    logs = list((tmp_path / "work" / "logs").glob("*.log"))
    assert logs and "last tuesday" in logs[0].read_text()


def test_a_role_that_may_not_create_schemas_gets_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from psycopg import sql

    role = f"emrsim_reader_{tmp_path.name[-6:]}".lower().replace("-", "_")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(str(conninfo.conninfo_to_dict(pg_url)["dbname"]))
            )
        )
    try:
        weak = conninfo.make_conninfo(pg_url, user=role)
        code, out = run_cli(monkeypatch, tmp_path, sample_db, weak, capsys)
        assert code != 0
        assert "PostgreSQL refused: permission denied for database" in out
        assert "needs CREATE on the database" in out
        assert "Traceback" not in out and "InsufficientPrivilege" not in out
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_run_whose_process_died_is_marked_failed_on_the_next_start(tmp_path: Path) -> None:
    import dagster as dg
    from dagster._core.test_utils import create_run_for_test

    from emrsim_assets import cli

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dead = subprocess.Popen(["true"])
        dead.wait()
        abandoned = create_run_for_test(
            instance,
            job_name="migrate",
            status=dg.DagsterRunStatus.STARTED,
            tags={cli._PID_TAG: str(dead.pid)},
        )
        alive = create_run_for_test(
            instance,
            job_name="migrate",
            status=dg.DagsterRunStatus.STARTED,
            tags={cli._PID_TAG: str(os.getpid())},
        )
        cli._fail_abandoned_runs(instance)
        assert instance.get_run_by_id(abandoned.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]


def test_dagster_step_shows_the_same_sentence(migration: Migration, tmp_path: Path) -> None:
    from emrsim_assets.definitions import build_defs
    from emrsim_assets.defs.resources import MigrationResource

    migration.resource = MigrationResource(
        sqlite_path=str(tmp_path / "gone.sqlite"),
        work_dir=str(tmp_path / "work"),
        pg_url=migration.pg_url,
    )
    migration.defs = build_defs(migration.plan, migration.resource)
    result = migration.materialize(dg.AssetSelection.assets("source_snapshot"))
    assert not result.success
    data = result.get_step_failure_events()[0].step_failure_data
    assert data.user_failure_data is not None
    assert "gone.sqlite does not exist" in str(data.user_failure_data.description)
