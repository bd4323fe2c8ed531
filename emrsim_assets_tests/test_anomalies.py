"""values_look_alike: time values that convert and read back the same, yet are wrong (S2, S6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emrsim_assets.draft import draft_plan
from emrsim_assets.source import read_batches
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.harness import execute, run_sentences
from emrsim_assets_tests.shapes import write_shape

# (statement planted after the draft, plan changes, fragments of the sentence)
CASES: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "seconds_in_a_milliseconds_column": (
        "UPDATE events SET logged_ms_at = 1767225600 WHERE id = 4",
        {},
        ["events.logged_ms_at: row id 4 (id=4): value '1767225600'", "10 digits", "have 13"],
    ),
    "negative_epoch": (
        "UPDATE events SET at_seconds_at = -86400 WHERE id = 2",
        {},
        ["events.at_seconds_at: row id 2 (id=2): value '-86400': a negative epoch"],
    ),
    "a_year_before_the_calendar": (
        "UPDATE events SET day = '0000-03-01' WHERE id = 5",
        {},
        ["events.day: row id 5 (id=5): value '0000-03-01': year 0 is outside 1 to 9999"],
    ),
    "a_date_alone_whose_midnight_happens_twice": (
        "UPDATE events SET happened_at = '2024-11-03' WHERE id = 2",
        {"source_timezone": "America/Havana"},
        ["events.happened_at: row id 2 (id=2): value '2024-11-03': an ambiguous local time"],
    ),
    "an_ambiguous_local_time": (
        "UPDATE events SET happened_at = '2024-11-03 01:30:00' WHERE id = 1",
        {"source_timezone": "America/New_York"},
        ["events.happened_at: row id 1 (id=1): value '2024-11-03 01:30:00': an ambiguous local"],
    ),
}


def _plan(sqlite: Path, tmp_path: Path, changes: dict[str, str], accept: str | None = None) -> Path:
    plan = yaml.safe_load(draft_plan(sqlite))
    plan.update(changes)
    if accept:
        for table in plan["tables"]:
            for column in table["columns"]:
                if column["name"] == accept:
                    column["anomalies"] = "accept"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_time_value_that_stands_out_stops_the_cutover_naming_it(
    case: str, tmp_path: Path, pg_url: str
) -> None:
    statement, changes, said = CASES[case]
    sqlite = write_shape("timestamps_every_form", tmp_path / "events.sqlite")
    plan_path = _plan(sqlite, tmp_path, changes)
    execute(sqlite, statement)
    sentences = run_sentences(sqlite, tmp_path, pg_url, plan_path)
    for fragment in said:
        assert fragment in sentences, (fragment, sentences)


def test_a_plan_can_accept_a_columns_anomalies_and_the_check_still_lists_them(
    tmp_path: Path, pg_url: str
) -> None:
    import dagster as dg

    from emrsim_assets.plan import load_plan
    from emrsim_assets_tests.conftest import Migration

    sqlite = write_shape("timestamps_every_form", tmp_path / "events.sqlite")
    plan_path = _plan(sqlite, tmp_path, {}, accept="at_seconds_at")
    execute(sqlite, "UPDATE events SET at_seconds_at = -86400 WHERE id = 2")
    result = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work").run_job()
    assert result.success
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_look_alike"
    ]
    assert evaluation.passed and "Accepted by the plan" in str(evaluation.description)
    assert evaluation.metadata["pass_one"].value == "summed during the load"
    assert evaluation.metadata["anomalies"].value == {"at_seconds_at": 1}
    assert dg.AssetKey("cutover") in {
        e.asset_key for e in result.get_asset_materialization_events()
    }


def test_dates_spread_over_a_century_and_a_half_are_no_anomaly(tmp_path: Path, pg_url: str) -> None:
    """A facilities table's dates, 1850 to 2014: wide, and right."""
    sqlite = write_shape("timestamps_every_form", tmp_path / "events.sqlite")
    plan_path = _plan(sqlite, tmp_path, {})
    execute(
        sqlite,
        "UPDATE events SET day = CASE id % 3 WHEN 0 THEN '1850-06-01' WHEN 1 THEN '1931-01-15' "
        "ELSE '2014-12-31' END",
    )
    from emrsim_assets.plan import load_plan

    result = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work").run_job()
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_look_alike"
    ]
    assert evaluation.passed, evaluation.description
    assert result.success


def test_the_loads_sum_pass_one_as_a_read_of_the_snapshot_would(migration: Migration) -> None:
    """Pass one comes from the loads' profiles (every month of messages, each small table),
    equal to what the check makes from the snapshot; with one month's profile gone, the check
    reads the snapshot again and says so."""
    from emrsim_assets import anomalies

    result = migration.run_job("load_tables")
    assert result.success
    evaluations = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "values_look_alike"
    ]
    assert len(evaluations) == len([t for t in migration.plan.tables if anomalies.time_columns(t)])
    for evaluation in evaluations:
        assert evaluation.passed, evaluation.description
        assert evaluation.metadata["pass_one"].value == "summed during the load"
    manifest = migration.resource.manifest()
    with migration.connect() as conn:
        for table in migration.plan.tables:
            if not anomalies.time_columns(table):
                continue
            summed = anomalies.Profile.stored(conn, table, manifest, migration.plan)
            read = anomalies.Profile()
            for frame in read_batches(Path(manifest.snapshot_path), table, 1000):
                read.add(frame, table, migration.plan)
            assert summed == read, table.name
            assert summed.rows == manifest.row_counts[table.name] > 0
        messages = migration.plan.table("messages")
        month = next(m for m, n in manifest.month_counts.items() if n)
        conn.execute(
            "DELETE FROM emrsim_migration.time_profile WHERE table_name = 'messages' "
            "AND partition_key = %s",
            (month,),
        )
        assert anomalies.Profile.stored(conn, messages, manifest, migration.plan) is None
        passed, _, metadata = anomalies.values_look_alike(
            manifest, migration.plan, messages, 1000, conn
        )
    assert passed and metadata["pass_one"] == "read from the snapshot"
