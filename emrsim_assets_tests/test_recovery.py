"""Point-in-time recovery, on an embedded server as `migrate` starts it (the `archiving`
fixture): the target must archive WAL, which the shared test server (and a system one) need not."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from emrsim_assets import recovery
from emrsim_assets.errors import TargetError
from emrsim_assets.plan import Plan
from emrsim_assets_tests.conftest import Migration, failure_sentence


def _notes(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [str(r[0]) for r in conn.execute("SELECT n FROM notes ORDER BY n").fetchall()]


def test_a_restore_to_a_moment_between_two_writes_has_the_first_and_not_the_second(
    archiving: tuple[str, Path], tmp_path: Path
) -> None:
    url, work = archiving
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW archive_mode").fetchone() == ("on",)
        conn.execute("CREATE TABLE notes (n text)")
    made = recovery.base_backup(url, work)
    assert made.path.is_dir() and made.bytes > 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO notes VALUES ('first')")
        time.sleep(0.3)
        moment = datetime.now(UTC)
        time.sleep(0.3)
        conn.execute("INSERT INTO notes VALUES ('second')")
    recovery.wait_archived(url)
    restored = recovery.restore_to(work, moment, tmp_path / "restored")
    try:
        assert _notes(restored.url("emrsim")) == ["first"]
    finally:
        restored.stop()
    assert _notes(url) == ["first", "second"]  # the live server is untouched


def test_recovery_to_a_moment_before_any_base_backup_is_refused_in_one_sentence(
    archiving: tuple[str, Path], tmp_path: Path
) -> None:
    url, work = archiving
    recovery.base_backup(url, work)
    with pytest.raises(TargetError, match=r"No base backup .* was taken before"):
        recovery.restore_to(work, datetime(2020, 1, 1, tzinfo=UTC), tmp_path / "restored")


def test_the_base_backup_asset_proves_recovery_after_cutover(
    archiving: tuple[str, Path], plan: Plan, sample_db: Path
) -> None:
    url, work = archiving
    migration = Migration(plan, sample_db, url, work)
    selection = dg.AssetSelection.assets("base_backup")
    refused = migration.materialize(selection)
    assert not refused.success
    assert "point-in-time recovery starts after cutover" in failure_sentence(refused)
    assert migration.run_job("migrate").success
    result = migration.materialize(selection)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "restores_to_a_moment" and check.passed, check.description
    tables = check.metadata["tables"].value
    assert isinstance(tables, dict) and tables["messages"] > 0
    assert not (work / "pitr_check").exists()  # the restored copy is removed


def test_a_server_without_wal_archiving_gets_one_sentence(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if conn.execute("SHOW archive_mode").fetchone() != ("off",):
            pytest.skip("this server archives WAL")
    with pytest.raises(TargetError, match="WAL archiving is off"):
        recovery.base_backup(pg_url, tmp_path / "work")


def test_the_weekly_base_backup_runs_on_the_embedded_server_once_something_is_live(
    migration: Migration, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emrsim_assets.defs.jobs import weekly_base_backup

    with dg.instance_for_test() as instance:
        migration.instance = instance
        context = dg.build_schedule_context(instance=instance)
        monkeypatch.delenv("EMRSIM_PG_URL", raising=False)
        assert isinstance(weekly_base_backup(context), dg.SkipReason)  # nothing live yet
        assert migration.run_job("migrate").success
        assert isinstance(weekly_base_backup(context), dg.RunRequest)
    monkeypatch.setenv("EMRSIM_PG_URL", migration.pg_url)  # the target is the user's own server
    skipped = weekly_base_backup(dg.build_schedule_context())
    assert isinstance(skipped, dg.SkipReason) and "your own server" in str(skipped.skip_message)
