"""Bad input ends with one sentence a person can act on, never a traceback."""

from __future__ import annotations

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
