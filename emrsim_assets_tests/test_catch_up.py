"""Prepare while the app runs, then catch up: only what changed reloads, and every check still
proves the whole of staging equal to the newest snapshot."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import dagster as dg

from emrsim_assets_tests.conftest import Migration


def _all_checks_passed(result: dg.ExecuteInProcessResult) -> None:
    failed = [
        f"{e.asset_check_key.name} on {e.asset_key.to_user_string()}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    assert result.success and not failed, failed


def _month(conn: sqlite3.Connection, message_id: int) -> str:
    (stamp,) = conn.execute(
        "SELECT created_at FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    return f"{str(stamp)[:7]}-01"


def test_a_second_prepare_reloads_only_what_changed_and_proves_it_all(
    migration: Migration, sample_db: Path
) -> None:
    _all_checks_passed(migration.run_job("load_tables"))
    conn = sqlite3.connect(sample_db, isolation_level=None)
    ids = [r[0] for r in conn.execute("SELECT id FROM messages ORDER BY id")]
    moved, edited, gone = ids[10], ids[len(ids) // 2], ids[-5]
    months = {_month(conn, moved), _month(conn, edited), _month(conn, gone)}
    target = conn.execute("SELECT created_at FROM messages WHERE id = ?", (ids[-1],)).fetchone()[0]
    months.add(f"{str(target)[:7]}-01")
    conn.execute("UPDATE messages SET created_at = ? WHERE id = ?", (target, moved))
    conn.execute("UPDATE messages SET message = message || ' (edited)' WHERE id = ?", (edited,))
    conn.execute("DELETE FROM messages WHERE id = ?", (gone,))
    conn.execute("UPDATE users SET name = 'Renamed' WHERE id = 1")
    conn.close()

    second = migration.run_job("load_tables")
    _all_checks_passed(second)
    snapshot = migration.latest("source_snapshot")
    assert snapshot["catch_up_rows"] == 4, snapshot
    assert snapshot["catch_up_tables"] == {
        "messages": {"inserted": 0, "updated": 2, "deleted": 1},
        "users": {"inserted": 0, "updated": 1, "deleted": 0},
    }
    assert sorted(snapshot["catch_up_months"]["messages"]) == sorted(months)  # type: ignore[index]
    assert migration.latest("users")["carried_over"] is False
    assert migration.latest("conversations")["carried_over"] is True
    for month in migration.months:
        carried = migration.latest("messages", month)["carried_over"]
        assert carried is (month not in months), month

    # Cutover from a third snapshot with nothing changed: everything carried, all proven.
    result = migration.run_job("migrate")
    _all_checks_passed(result)
    assert migration.latest("source_snapshot")["catch_up_rows"] == 0
    assert not (migration.work / "snapshot" / "previous").exists(), "freed after the publish"
    with migration.connect() as pg:
        assert pg.execute("SELECT name FROM emrsim.users ORDER BY created_at LIMIT 1").fetchone()
        (count,) = pg.execute("SELECT count(*) FROM emrsim.messages").fetchone()  # type: ignore[misc]
    assert count == len(ids) - 1


def test_prepare_while_the_app_writes_then_cutover_equals_the_final_source(
    migration: Migration, sample_db: Path
) -> None:
    """An app-like writer inserts, updates and deletes across tables and months while prepare
    runs; it stops; cutover catches up, and every check proves live equal to the final file."""
    stop = threading.Event()
    written = {"rounds": 0}

    def app() -> None:
        conn = sqlite3.connect(sample_db, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        i = 0
        while not stop.is_set():
            i += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "
                "SELECT conversation_id, sender, 'new ' || ?, metadata, created_at FROM messages "
                "WHERE id = (SELECT min(id) FROM messages) + ?",
                (i, i * 7),
            )
            conn.execute(
                "UPDATE messages SET message = message || '.' WHERE id = "
                "(SELECT min(id) FROM messages) + ?",
                (i * 13,),
            )
            conn.execute(
                "DELETE FROM messages WHERE id = (SELECT max(id) FROM messages) - ?", (i * 3,)
            )
            conn.execute(
                "UPDATE conversations SET title = title || '!' WHERE id = ?", (i % 50 + 1,)
            )
            conn.execute("COMMIT")
            written["rounds"] = i
            time.sleep(0.01)
        conn.close()

    writer = threading.Thread(target=app)
    writer.start()
    try:
        _all_checks_passed(migration.run_job("load_tables"))
        _all_checks_passed(migration.run_job("load_tables"))  # a catch-up while it writes
    finally:
        stop.set()
        writer.join()
    assert written["rounds"] > 0
    result = migration.run_job("migrate")  # the app stopped: cutover catches up
    _all_checks_passed(result)
    assert migration.latest("source_snapshot")["catch_up_rows"] > 0
    conn = sqlite3.connect(sample_db)
    expected = {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        for table in ("messages", "conversations", "users")
    }
    titles = conn.execute("SELECT sum(length(title)) FROM conversations").fetchone()[0]
    conn.close()
    with migration.connect() as pg:
        for table, count in expected.items():
            row = pg.execute(f"SELECT count(*) FROM emrsim.{table}").fetchone()  # noqa: S608
            assert row is not None and row[0] == count, table
        row = pg.execute("SELECT sum(length(title)) FROM emrsim.conversations").fetchone()
        assert row is not None and row[0] == titles


def test_staging_altered_behind_the_ledger_is_caught_then_reloaded_not_carried(
    migration: Migration,
) -> None:
    """Carrying over trusts nothing: the checks read the carried rows back, and a table whose
    last proof failed is reloaded by the next run, however unchanged its source."""
    _all_checks_passed(migration.run_job("load_tables"))
    with migration.connect() as pg:
        pg.execute("UPDATE emrsim_staging.users SET name = name || ' (altered)' WHERE true")
    caught = migration.run_job("load_tables")
    assert migration.latest("users")["carried_over"] is True
    failed = [
        e.asset_check_key.name
        for e in caught.get_asset_check_evaluations()
        if not e.passed and e.asset_key == dg.AssetKey("users")
    ]
    assert "content_matches_source" in failed
    _all_checks_passed(migration.run_job("load_tables"))
    assert migration.latest("users")["carried_over"] is False
    # A table reloaded alone, in a run of its own, is reloaded.
    assert migration.materialize(dg.AssetSelection.assets("conversations")).success
    assert migration.latest("conversations")["carried_over"] is False


def test_the_catch_up_sensor_runs_only_while_a_prepared_staging_waits(
    migration: Migration,
) -> None:
    sensor = migration.defs.get_sensor_def("catch_up_while_the_app_runs")

    def tick() -> object:
        context = dg.build_sensor_context(
            instance=migration.instance, resources={"migration": migration.resource}
        )
        return sensor(context)  # type: ignore[operator]

    assert isinstance(tick(), dg.SkipReason)  # nothing prepared yet
    _all_checks_passed(migration.run_job("catch_up"))
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["dagster/asset_partition_range_end"] == migration.months[-1]
    cut = migration.run_job("migrate")
    _all_checks_passed(cut)
    cutover = migration.latest("cutover")
    assert cutover["catch_up_rows"] == 0
    assert float(cutover["write_freeze_seconds"]) > 0  # type: ignore[arg-type]
    assert isinstance(tick(), dg.SkipReason)  # published: nothing to catch up with


def test_a_cutover_killed_during_its_catch_up_leaves_nothing_live_and_a_rerun_finishes(
    tmp_path: Path, pg_url: str
) -> None:
    import os
    import signal
    import subprocess

    import psycopg

    from emrsim_assets.sample import write_sample
    from emrsim_assets_tests.user_shell import REPO, shell, user_env

    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=20_000, seed=3)
    env = user_env(
        tmp_path / "work",
        EMRSIM_SQLITE_PATH=str(sqlite),
        EMRSIM_PG_URL=pg_url,
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    prepared = shell(".venv/bin/emrsim-migrate prepare", env)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    with sqlite3.connect(sqlite) as conn:
        conn.execute("UPDATE messages SET message = message || '!' WHERE id % 100 = 0")
    conn.close()

    run = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "emrsim-migrate"), "cutover"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "Catch-up from snapshot" in line:
            os.killpg(run.pid, signal.SIGKILL)
            break
    run.wait(60)
    assert any("Catch-up from snapshot" in line for line in seen), "".join(seen)
    with psycopg.connect(pg_url) as pg:
        live = pg.execute("SELECT to_regnamespace('emrsim') IS NOT NULL").fetchone()
    assert live == (False,), "the killed cutover published nothing"

    again = shell(".venv/bin/emrsim-migrate cutover", env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cutover: done" in again.stdout and "write freeze: " in again.stdout
    with psycopg.connect(pg_url) as pg:
        row = pg.execute("SELECT count(*) FROM emrsim.messages WHERE message LIKE '%!'").fetchone()
    assert row is not None and row[0] == 200
