"""content_matches_source: every value read back into its source form equals the snapshot's.
Changes nothing else catches (counts and keys stay right) fail it, naming the row and both values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from emrsim_assets.batch import CLASSES, ROWID
from emrsim_assets.content import JsonPrinter, canonical_json, excerpt
from emrsim_assets.draft import draft_plan
from emrsim_assets.plan import load_plan
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.harness import execute, planted
from emrsim_assets_tests.shapes import write_shape

CHECK = "content_matches_source"


def _evaluation(result: dg.ExecuteInProcessResult, asset: str) -> dg.AssetCheckEvaluation:
    found = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == CHECK and e.asset_key == dg.AssetKey(asset)
    ]
    assert len(found) == 1, [
        (e.asset_key, e.check_name) for e in result.get_asset_check_evaluations()
    ]
    return found[0]


def test_one_character_changed_in_postgresql_fails_the_check_naming_the_row(
    migration: Migration,
) -> None:
    dry = migration.run_job("load_tables")
    assert dry.success
    evaluation = _evaluation(dry, "messages")
    assert evaluation.passed, evaluation.description
    months = evaluation.metadata["months"].value
    assert (
        isinstance(months, dict)
        and sum(months.values()) == evaluation.metadata["rows_compared"].value
    )

    with migration.connect() as conn:
        changed = conn.execute(
            "UPDATE emrsim_staging.messages SET message = overlay(message PLACING 'Q' FROM 5 FOR 1) "
            "WHERE id = (SELECT id FROM emrsim_staging.messages ORDER BY created_at OFFSET 7 "
            "LIMIT 1) RETURNING message, created_at, emrsim_migration.legacy_id(id)"
        ).fetchone()
    assert changed is not None
    legacy = changed[2]
    month = f"{changed[1]:%Y-%m}"
    check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("messages"), CHECK))
    result = migration.materialize(check)
    evaluation = _evaluation(result, "messages")
    assert not evaluation.passed
    description = str(evaluation.description)
    assert f"values differ from the snapshot in {month}" in description, description
    assert f"id={legacy}, message:" in description, description
    differences = evaluation.metadata["differences"].value
    assert isinstance(differences, list) and len(differences) == 1, differences
    [difference] = differences
    assert difference["key"] == f"id={legacy}" and difference["column"] == "message"
    assert difference["target"] == "t:" + str(changed[0])
    assert difference["source"][:6] + "Q" + difference["source"][7:] == difference["target"]
    # Every other month still passes: the failure is reported where it is.
    assert list(evaluation.metadata["differing"].value) == [month]


def test_the_source_side_is_summed_by_the_load_and_a_digest_that_lies_changes_nothing(
    migration: Migration,
) -> None:
    """The load sums the source side as it reads the snapshot; the check reads only the target.
    A digest that disagrees with the snapshot cannot pass a wrong target or fail a right one:
    every difference is confirmed against the snapshot itself."""
    assert migration.run_job("load_tables").success
    check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("messages"), CHECK))
    evaluation = _evaluation(migration.materialize(check), "messages")
    assert evaluation.passed, evaluation.description
    months = len(evaluation.metadata["months"].value)  # type: ignore[arg-type]
    assert evaluation.metadata["source_side"].value == (
        f"summed during the load ({months} of {months})"
    )
    with migration.connect() as conn:
        # Every month's digest is wrong now: one bucket's count off by one.
        conn.execute(
            "UPDATE emrsim_migration.content_digest SET sums = overlay(sums PLACING "
            "'\\x05'::bytea FROM 1 FOR 1) WHERE table_name = 'messages'"
        )
    evaluation = _evaluation(migration.materialize(check), "messages")
    assert evaluation.passed, evaluation.description  # confirmed against the snapshot
    with migration.connect() as conn:
        # A digest made with another plan is not used at all.
        conn.execute("UPDATE emrsim_migration.content_digest SET plan_fingerprint = 'another'")
    evaluation = _evaluation(migration.materialize(check), "messages")
    assert evaluation.passed and evaluation.metadata["source_side"].value == (
        "read from the snapshot"
    ), evaluation.metadata


# (shape, statement planted after the draft, fragments of the check's sentence). A value of a
# storage class its column does not keep (a BLOB in a text column), or a date with text after it,
# the load refuses itself: test_hostile_values.PLANTED.
SILENT: dict[str, tuple[str, str, list[str]]] = {
    "json_with_a_duplicate_key": (
        "app_schema",
        """UPDATE turns SET timings_json = '{"model":"first","model":"second"}' WHERE rowid = 5""",
        [
            "turns: values differ",
            "timings_json: source 't:duplicate key",
            'target \'t:{"model": "second"}\'',
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(SILENT))
def test_a_value_that_would_change_in_silence_fails_the_content_check(
    case: str, tmp_path: Path, pg_url: str
) -> None:
    shape, statement, said = SILENT[case]
    sentences = planted(shape, [statement], tmp_path, pg_url)
    for fragment in said:
        assert fragment in sentences, (fragment, sentences)


def test_json_prints_as_postgresql_prints_jsonb(pg_url: str) -> None:
    texts = [
        '{"b":1,"a":[1.50,1e2,-0,0.0,-0.0,12345678901234567890, 1E-7]}',
        '{"é":"\\u00e9\\n\\t\\"q\\"","aa":null,"z":true,"":false, "ab": {"y": [], "x": {}}}',
        "[]",
        "3",
        '"a\\\\b/c"',
        '{"long key": 1, "k": 2, "kk": 3, "B": 4, "a": 5}',
    ]
    with psycopg.connect(pg_url) as conn:
        for text in texts:
            row = conn.execute("SELECT %s::jsonb::text", (text,)).fetchone()
            assert row is not None and canonical_json(text) == row[0], text
    assert canonical_json('{"m":"x","m":"y"}').startswith("duplicate key 'm'")  # type: ignore[union-attr]
    assert json.loads("[1]") == [1]


def test_the_server_prints_source_json_and_finds_every_duplicate_key(pg_url: str) -> None:
    """JsonPrinter: PostgreSQL's own jsonb text for each value; a duplicate key (jsonb keeps the
    last value only) named, also where escapes hide the colons; a batch jsonb refuses printed in
    Python; values of another storage class left alone."""
    texts = [
        '{"b":1,"a":[1.50,1e2,-0,12345678901234567890]}',
        '{"m":"x","m":"y"}',
        '{"k\\u003a":{"m":1,"m":2},"a":"\\u003a:"}',
        '{"a":"x:y","b":"c"}',
        "[1, 2]",
        "3",
    ]
    frame = pl.DataFrame(
        {
            ROWID: list(range(1, len(texts) + 2)),
            CLASSES: [2] * len(texts) + [0],  # the last: an INTEGER-class value, not printed
            "doc": [*texts, "7"],
        }
    )
    with JsonPrinter(pg_url) as printer, psycopg.connect(pg_url) as conn:
        printed = printer.print_columns(frame, ["doc"], {"doc": 0})["doc"].to_list()
        for text, out in zip(texts, printed, strict=False):
            if '"m"' in text:
                assert out.startswith("duplicate key 'm'"), out
                continue
            row = conn.execute("SELECT %s::jsonb::text", (text,)).fetchone()
            assert row is not None and out == row[0], (text, out)
        assert printed[-1] == "7"
        refused = frame.with_columns(pl.lit('{"nul": "\\u0000"}').alias("doc"))
        again = printer.print_columns(refused, ["doc"], {"doc": 0})["doc"].to_list()
        assert again[0] == canonical_json('{"nul": "\\u0000"}')


def test_a_row_changed_in_a_table_without_a_key_is_named_by_its_source_row_id(
    tmp_path: Path, pg_url: str
) -> None:
    """No key pairs the rows of log_lines: the check names the source row that has no equal
    in the target by its row id and values, and the target row that has none in the source."""
    sqlite = write_shape("composite_and_missing_keys", tmp_path / "keys.sqlite")
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(draft_plan(sqlite), encoding="utf-8")
    migration = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work")
    assert migration.run_job("load_tables").success
    with migration.connect() as conn:
        conn.execute(
            "UPDATE emrsim_staging.log_lines SET level = 'warn' WHERE ctid = (SELECT ctid FROM "
            "emrsim_staging.log_lines WHERE line = 'started' LIMIT 1)"
        )
    check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("log_lines"), CHECK))
    evaluation = _evaluation(migration.materialize(check), "log_lines")
    assert not evaluation.passed
    differences = evaluation.metadata["differences"].value
    assert isinstance(differences, list) and len(differences) == 2, differences
    source, target = differences
    # Three source rows read ('started', 'info'); row ids 1 to 3: one of them has no equal now.
    assert source["key"] in {"row id 1", "row id 2", "row id 3"}, source
    assert source["source"] == "line=t:started, level=t:info" and source["target"] == "no equal row"
    assert target["key"] == "a target row" and target["target"] == "line=t:started, level=t:warn"
    description = str(evaluation.description)
    assert f"first: {source['key']}, (row): source 'line=t:started, level=t:info'" in description


def test_an_excerpt_shows_where_two_long_values_differ() -> None:
    was, now = excerpt("x" * 100 + "abc" + "y" * 100, "x" * 100 + "aXc" + "y" * 100)
    assert "abc" in was and "aXc" in now and was.startswith("...") and now.endswith("...")


def test_a_row_dated_in_one_month_with_an_id_inside_another_months_range_migrates_exactly(
    migration: Migration, sample_db: Path
) -> None:
    """T1: month id ranges overlap; every month must still get exactly its own rows."""
    execute(
        sample_db,
        "UPDATE messages SET created_at = '2023-01-15 08:00:00' WHERE id = (SELECT id FROM "
        "messages WHERE created_at LIKE '2024-03%' ORDER BY id LIMIT 1 OFFSET 3)",
        "UPDATE messages SET created_at = '2024-03-20 08:00:00' WHERE id = (SELECT min(id) FROM "
        "messages)",
    )
    result = migration.run_job("migrate")
    assert result.success, [e.description for e in result.get_asset_check_evaluations()]
    evaluation = _evaluation(result, "messages")
    assert evaluation.passed, evaluation.description


def test_json_nested_2000_deep_loads_and_is_proven_even_where_the_column_quarantines(
    tmp_path: Path, pg_url: str
) -> None:
    """T3: SQLite's json_valid() stops at 1,000 levels and Python's json at its recursion
    limit; jsonb takes 2,000. Not quarantined, and compared like any other value."""
    import yaml

    sqlite = write_shape("app_schema", tmp_path / "app.sqlite")
    plan = yaml.safe_load(draft_plan(sqlite))
    [turns] = [t for t in plan["tables"] if t["name"] == "turns"]
    [timings] = [c for c in turns["columns"] if c["name"] == "timings_json"]
    assert timings["convert"] == "json"
    timings["on_invalid"] = "quarantine"
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    execute(
        sqlite,
        "UPDATE turns SET timings_json = replace(printf('%.*c', 2000, 'x'), 'x', '{\"a\": ') "
        "|| '1' || printf('%.*c', 2000, '}') WHERE rowid = 5",
    )
    migration = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work")
    result = migration.run_job("migrate")
    assert result.success, [e.description for e in result.get_asset_check_evaluations()]
    evaluation = _evaluation(result, "turns")
    assert evaluation.passed, evaluation.description
    with migration.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM emrsim_migration.quarantine WHERE table_name = 'turns'"
        ).fetchone()
        assert row is not None and row[0] == 0
        depth = conn.execute(
            "SELECT timings_json #>> %s FROM emrsim.turns WHERE timings_json ? 'a'",
            ("{" + ",".join(["a"] * 2000) + "}",),
        ).fetchone()
        assert depth is not None and depth[0] == "1"


def test_reading_ahead_never_hangs_when_the_reader_stops_early() -> None:
    """The snapshot is read a batch ahead on a thread. A reader that stops (an error while it
    works on one batch) must not wait forever on a thread with nobody left to take its next."""
    import threading
    import time

    from emrsim_assets.content import ahead

    def two() -> Iterator[int]:
        yield 1
        yield 2

    reader = ahead(two())
    assert next(reader) == 1
    time.sleep(0.3)  # the thread has handed over 2 and wants to say it is done
    closed = threading.Event()
    threading.Thread(target=lambda: (reader.close(), closed.set()), daemon=True).start()
    assert closed.wait(5), "stopping the reader hung"

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(ahead(failing()))
