"""Values that cannot arrive as they are: each stops the run with one sentence naming table,
column and row, or goes to a quarantine that closes the cutover gate. Never the quiet middle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from emrsim_assets.errors import PlanError
from emrsim_assets.plan import default_plan_path, load_plan, parse_plan
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.harness import execute, planted, run_sentences, step_failures
from emrsim_assets_tests.shapes import write_shape

# (shape, statements planted after the draft, what the sentence must say)
PLANTED: dict[str, tuple[str, list[str], list[str]]] = {
    "invalid_utf8": (
        "text_keys_with_orphans",
        ["UPDATE turns SET said = CAST(X'C328' AS TEXT) WHERE id = 't00007'"],
        ["turns.said", "row id 8", "key id='t00007'", "not valid UTF-8"],
    ),
    "nul_byte_in_text": (
        "text_keys_with_orphans",
        ["UPDATE turns SET said = 'a' || char(0) || 'b' WHERE id = 't00009'"],
        ["turns.said", "row id 10", "key id='t00009'", "NUL byte"],
    ),
    "blob_and_text_keys_that_meet_as_text": (
        "text_keys_with_orphans",
        # SQLite keeps a BLOB key apart from the TEXT key of the same bytes; PostgreSQL text
        # cannot: the BLOB is refused before it could meet the other (with any_class: true,
        # key_unique_across_months would name both).
        ["INSERT INTO sessions (id) VALUES (X'7330303078597a2d5f51')"],
        ["sessions.id", "'s000xYz-_Q'", "stored by SQLite as BLOB, where a text column takes TEXT"],
    ),
    "integer_in_a_text_column": (
        "mixed_storage_classes",
        # An untyped column (no affinity turns the number into text, as TEXT's would).
        ["UPDATE notes SET body = 42 WHERE id = 3"],
        [
            "notes.body",
            "row id 3",
            "value '42' is stored by SQLite as INTEGER, where a text column takes TEXT",
            "any_class: true on this column keeps every value as its text",
        ],
    ),
    "blob_in_a_text_column": (
        "text_keys_with_orphans",
        ["UPDATE turns SET said = X'48656c6c6f' WHERE id = 't00007'"],
        ["turns.said", "row id 8", "key id='t00007'", "value 'Hello' is stored by SQLite as BLOB"],
    ),
    "blob_in_an_integer_key": (
        "composite_and_missing_keys",
        [
            "UPDATE enrollment SET student_id = X'393939' WHERE student_id = 7 "
            "AND course_code = 'BIO101'"
        ],
        [
            "enrollment.student_id",
            "row id 13 (key course_code='BIO101'): value '999'",
            "stored by SQLite as BLOB, where an integer column takes INTEGER",
            "a key column cannot quarantine",
        ],
    ),
    "text_in_a_blob_column": (
        "blob_real_numeric",
        ["UPDATE measurements SET payload = 'a note' WHERE id = 2"],
        ["measurements.payload", "row id 2", "stored by SQLite as TEXT", "as its bytes"],
    ),
    "timestamp_of_year_57756": (
        "timestamps_every_form",
        ["UPDATE events SET happened_at = '57756-01-01 00:00:00' WHERE id = 3"],
        ["events.happened_at", "row id 3", "'57756-01-01 00:00:00'", "not a valid text timestamp"],
    ),
    "timestamp_to_the_nanosecond": (
        "timestamps_every_form",
        ["UPDATE events SET happened_at = '2024-03-01 12:00:00.123456789' WHERE id = 3"],
        ["events.happened_at", "row id 3", "'2024-03-01 12:00:00.123456789'", "microsecond"],
    ),
    "timestamp_one_nanosecond_past_the_second": (
        "timestamps_every_form",
        ["UPDATE events SET happened_at = '2024-03-01T12:00:00.000000001Z' WHERE id = 4"],
        ["events.happened_at", "row id 4", "'2024-03-01T12:00:00.000000001Z'", "microsecond"],
    ),
    "epoch_of_minus_two_to_the_63": (
        "timestamps_every_form",
        ["UPDATE events SET at_seconds_at = -9223372036854775808 WHERE id = 2"],
        ["events.at_seconds_at", "row id 2", "'-9223372036854775808'", "not a valid epoch s"],
    ),
    "integer_no_double_holds_in_a_real_column": (
        "blob_real_numeric",
        ["UPDATE measurements SET gauge = 1152921504606846977 WHERE id = 3"],
        ["measurements.gauge", "row id 3", "'1152921504606846977'", "no double holds exactly"],
    ),
    "trailing_garbage_after_a_date": (
        "timestamps_every_form",
        ["UPDATE events SET day = '2024-03-01 garbage' WHERE id = 1"],
        ["events.day", "row id 1", "'2024-03-01 garbage'", "is not a date (YYYY-MM-DD)"],
    ),
    "a_time_in_a_date_column": (
        "timestamps_every_form",
        ["UPDATE events SET day = '2024-03-01 12:34:56' WHERE id = 3"],
        ["events.day", "row id 3", "'2024-03-01 12:34:56'", "is not a date (YYYY-MM-DD)"],
    ),
    "epoch_beyond_year_9999": (
        "timestamps_every_form",
        ["UPDATE events SET logged_ms_at = 1800000000000000000 WHERE id = 2"],
        ["events.logged_ms_at", "row id 2", "not a valid epoch ms"],
    ),
    "blob_in_a_uuid_column": (
        "app_schema",
        ["UPDATE sessions SET sps_session_id = X'3132' WHERE rowid = 4"],
        ["sessions.sps_session_id", "row id 4", "not a canonical lower-case UUID"],
    ),
    "text_in_an_integer_column": (
        "composite_and_missing_keys",
        [
            "UPDATE enrollment SET student_id = 'seven' WHERE student_id = 7 AND course_code = 'BIO101'"
        ],
        ["enrollment.student_id", "'seven'", "is not an integer"],
    ),
    "json_nested_200000_deep": (
        "app_schema",
        [
            "UPDATE turns SET timings_json = printf('%.*c%.*c', 200000, '[', 200000, ']') WHERE rowid = 5"
        ],
        ["turns.timings_json", "row id 5", "stack depth limit exceeded"],
    ),
    "json_with_a_lone_surrogate": (
        "app_schema",
        ['UPDATE turns SET timings_json = \'{"s": "\\ud800"}\' WHERE rowid = 5'],
        ["turns.timings_json", "row id 5", "ud800", "not valid JSON for jsonb"],
    ),
    "source_table_the_plan_does_not_know": (
        "without_rowid",
        ["CREATE TABLE added_later (x TEXT)", "INSERT INTO added_later VALUES ('y')"],
        ["neither migrates nor skips", "table 'added_later'"],
    ),
    "trigger_the_plan_does_not_know": (
        "without_rowid",
        ["CREATE TRIGGER kv_stamp AFTER UPDATE ON kv BEGIN SELECT 1; END"],
        ["neither migrates nor skips", "trigger 'kv_stamp'"],
    ),
    "source_column_the_plan_does_not_know": (
        "without_rowid",
        ["ALTER TABLE kv ADD COLUMN note TEXT"],
        ["neither migrates nor skips", "column kv.note"],
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_value_stops_the_run_with_a_sentence_naming_it(
    case: str, tmp_path: Path, pg_url: str
) -> None:
    shape, statements, said = PLANTED[case]
    sentences = planted(shape, statements, tmp_path, pg_url)
    assert "Traceback" not in sentences
    for fragment in said:
        assert fragment in sentences, (fragment, sentences)


def test_a_nul_byte_can_be_quarantined_and_is_kept_as_readable_evidence(
    tmp_path: Path, sample_db: Path, pg_url: str
) -> None:
    raw = yaml.safe_load(default_plan_path().read_text())
    for column in raw["tables"][3]["columns"]:
        if column["name"] == "message":
            column["on_invalid"] = "quarantine"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    execute(sample_db, "UPDATE messages SET message = 'before' || char(0) || 'after' WHERE id = 12")
    sentences = run_sentences(sample_db, tmp_path, pg_url, path)
    assert "1 messages row(s) are in emrsim_migration.quarantine" in sentences
    assert "cutover is refused" in sentences


def test_json_with_a_lone_surrogate_can_be_quarantined(
    tmp_path: Path, sample_db: Path, pg_url: str
) -> None:
    raw = yaml.safe_load(default_plan_path().read_text())
    for column in raw["tables"][3]["columns"]:
        if column["name"] == "metadata":
            column["on_invalid"] = "quarantine"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    execute(sample_db, """UPDATE messages SET metadata = '{"s": "\\udc00 x"}' WHERE id = 12""")
    sentences = run_sentences(sample_db, tmp_path, pg_url, path)
    assert "1 messages row(s) are in emrsim_migration.quarantine" in sentences
    assert "Traceback" not in sentences and "TypeError" not in sentences


def _bundled(edit: Callable[[dict], None]) -> dict:  # type: ignore[type-arg]
    raw = yaml.safe_load(default_plan_path().read_text())
    edit(raw)
    return raw  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda raw: raw["tables"][0].update(name="def"), "'def' is reserved"),
        (
            lambda raw: raw["tables"][3]["indexes"].append(
                {"name": "one_per_sender", "columns": ["sender"], "unique": True}
            ),
            "cannot keep a unique index on a table partitioned by month",
        ),
        (
            lambda raw: raw["tables"].append(
                {
                    "name": "reads",
                    "primary_key": "id",
                    "columns": [
                        {"name": "id", "convert": "legacy_id"},
                        {"name": "message_id", "convert": "ref", "references": "messages"},
                    ],
                }
            ),
            "which is partitioned by month: PostgreSQL cannot enforce that key",
        ),
        (
            lambda raw: (
                raw["tables"][0]["columns"][1].update(on_invalid="quarantine")
                or raw["tables"][0].update(primary_key="email")
            ),
            "a primary-key column cannot quarantine",
        ),
        (
            lambda raw: raw.update(skip=[{"table": "audit_log"}]),
            "'reason' must say why the data is left behind",
        ),
        (
            lambda raw: raw.update(skip=[{"trigger": "users_touch"}]),
            "'reason' must say why the trigger is left behind",
        ),
        (
            lambda raw: raw.update(skip=[{"trigger": "users_touch", "column": "x", "reason": "y"}]),
            r"unknown key\(s\) \['column'\]",
        ),
    ],
)
def test_plans_that_cannot_work_are_refused_in_one_sentence(
    edit: Callable[[dict], None],  # type: ignore[type-arg]
    said: str,
) -> None:
    with pytest.raises(PlanError, match=said) as error:
        parse_plan(_bundled(edit), Path("plan.yaml"))
    assert "\n" not in str(error.value)


def test_changing_a_plan_from_partitioned_to_not_leaves_no_demand_for_old_months(
    tmp_path: Path, sample_db: Path, pg_url: str
) -> None:
    first = Migration(load_plan(), sample_db, pg_url, tmp_path / "work")
    assert first.run_job("load_tables").success
    raw = yaml.safe_load(default_plan_path().read_text())
    raw["tables"][3].pop("partition_by_month")
    raw["tables"][3].pop("autovacuum")
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(raw))
    flat = Migration(load_plan(path), sample_db, pg_url, tmp_path / "work")
    flat.instance = first.instance
    result = flat.run_job("migrate")
    failed = [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    # And back: the partitioned table replaces the flat one instead of failing to attach.
    again = Migration(load_plan(), sample_db, pg_url, tmp_path / "work")
    again.instance = first.instance
    result = again.run_job("load_tables")
    failed = [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed


def test_a_plan_names_source_tables_and_columns_in_any_case_as_sqlite_does(
    tmp_path: Path, pg_url: str
) -> None:
    sqlite = write_shape("mixed_case_and_long_names", tmp_path / "m.sqlite")
    from emrsim_assets.draft import draft_plan

    text = draft_plan(sqlite)
    # A person writes the source names in another case: SQLite finds them, and so does the plan.
    text = text.replace("source: Album", "source: ALBUM").replace(
        "source: ArtistId", "source: artistid"
    )
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    assert "ALBUM" in text and "artistid" in text
    sentences = _run_ok(sqlite, tmp_path, pg_url, path)
    assert sentences == ""


def _run_ok(sqlite: Path, tmp_path: Path, pg_url: str, plan_path: Path) -> str:
    result = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work").run_job("migrate")
    failures = step_failures(result)
    assert result.success, failures
    return "\n".join(failures)
