"""Backups that are proven: pg_dump of the live schema, restored and compared."""

from __future__ import annotations

import dagster as dg

from emrsim_assets import backup
from emrsim_assets_tests.conftest import Migration, failure_sentence

SELECTION = dg.AssetSelection.assets("backup")


def test_a_backup_restores_to_the_live_data(migration: Migration) -> None:
    assert migration.run_job("migrate").success
    result = migration.materialize(SELECTION)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "restore_is_identical" and check.passed, check.description
    tables = check.metadata["tables"].value
    assert isinstance(tables, dict) and tables["messages"] > 0 and "users" in tables
    [event] = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
    assert int(metadata["bytes"].value) > 0  # type: ignore[arg-type]
    assert (migration.work / "backups").is_dir()


def test_a_restore_that_differs_from_the_live_data_is_named(migration: Migration) -> None:
    assert migration.run_job("migrate").success
    made = backup.dump(migration.pg_url, migration.work / "backups", keep=2)
    with migration.connect() as conn:
        conn.execute(
            "UPDATE emrsim.messages SET message = message || '!' "
            "WHERE id = (SELECT id FROM emrsim.messages LIMIT 1)"
        )
        conn.execute(
            "DELETE FROM emrsim.user_sessions WHERE token = (SELECT min(token) FROM emrsim.user_sessions)"
        )
    compared = backup.restore_and_compare(migration.pg_url, made.path)
    assert compared.differing["messages"].endswith("rows on both, contents differ")
    assert "rows live against" in compared.differing["user_sessions"]
    assert "users" in compared.tables


def test_only_the_newest_dumps_are_kept(migration: Migration) -> None:
    assert migration.run_job("migrate").success
    made = [backup.dump(migration.pg_url, migration.work / "backups", keep=2) for _ in range(3)]
    left = sorted(p.name for p in (migration.work / "backups").glob("*.dump"))
    assert left == sorted(m.path.name for m in made[1:])
    assert made[-1].pruned == [made[0].path.name]


def test_before_cutover_the_backup_refuses_in_one_sentence(migration: Migration) -> None:
    assert migration.run_job("load_tables").success
    result = migration.materialize(SELECTION)
    assert not result.success
    assert "backups start after cutover" in failure_sentence(result)


def test_the_daily_schedule_backs_up_only_once_something_is_live(migration: Migration) -> None:
    from emrsim_assets.defs.jobs import daily_backup

    with dg.instance_for_test() as instance:  # a schedule context needs a persistent one
        migration.instance = instance
        context = dg.build_schedule_context(instance=instance)
        assert isinstance(daily_backup(context), dg.SkipReason)
        assert migration.run_job("migrate").success
        assert isinstance(daily_backup(context), dg.RunRequest)
