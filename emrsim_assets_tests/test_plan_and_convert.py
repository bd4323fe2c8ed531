"""The plan is validated on load; conversions name the row that does not fit, or quarantine it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from emrsim_assets.errors import ConversionError, PlanError
from emrsim_assets.legacy_ids import legacy_id_of, legacy_uuid
from emrsim_assets.plan import default_plan_path, load_plan
from emrsim_assets_tests.conftest import Migration


def _plan_with(tmp_path: Path, edit: object) -> Path:
    raw = yaml.safe_load(default_plan_path().read_text())
    edit(raw)  # type: ignore[operator]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_plan_errors_name_the_offending_key(tmp_path: Path) -> None:
    def typo(raw: dict) -> None:  # type: ignore[type-arg]
        raw["tables"][0]["columns"][1]["nulable"] = False

    with pytest.raises(PlanError, match=r"unknown key\(s\) \['nulable'\]"):
        load_plan(_plan_with(tmp_path, typo))

    def dangling(raw: dict) -> None:  # type: ignore[type-arg]
        raw["tables"][2]["columns"][2]["references"] = "accounts"

    with pytest.raises(PlanError, match="references 'accounts', which is not in the plan"):
        load_plan(_plan_with(tmp_path, dangling))

    def opclass(raw: dict) -> None:  # type: ignore[type-arg]
        raw["tables"][3]["indexes"][2]["opclass"] = "jsonb_fast_ops"

    with pytest.raises(PlanError, match="opclass 'jsonb_fast_ops' is not one of"):
        load_plan(_plan_with(tmp_path, opclass))

    def trigram_btree(raw: dict) -> None:  # type: ignore[type-arg]
        raw["tables"][3]["indexes"].append(
            {"name": "idx_messages_message_trgm", "columns": ["message"], "opclass": "gin_trgm_ops"}
        )

    with pytest.raises(PlanError, match="opclass gin_trgm_ops needs method: gin"):
        load_plan(_plan_with(tmp_path, trigram_btree))

    def pipeline_name(raw: dict) -> None:  # type: ignore[type-arg]
        # A batch carries the pipeline's own columns beside the plan's (its row ids as
        # __rowid): a plan column of that name would be read and written as the other.
        raw["tables"][3]["columns"][2]["name"] = "__rowid"

    with pytest.raises(PlanError, match="'__rowid' starts with '__', which this pipeline keeps"):
        load_plan(_plan_with(tmp_path, pipeline_name))


def test_a_trigram_index_in_the_plan_serves_ilike_after_cutover(
    tmp_path: Path, sample_db: Path, pg_url: str
) -> None:
    """The plan's section 4: LIKE '%term%' becomes ILIKE, served by a pg_trgm GIN index (the
    extension is created where the plan asks for one)."""

    def trigram(raw: dict) -> None:  # type: ignore[type-arg]
        raw["tables"][3]["indexes"].append(
            {
                "name": "idx_messages_message_trgm",
                "columns": ["message"],
                "method": "gin",
                "opclass": "gin_trgm_ops",
            }
        )

    plan = load_plan(_plan_with(tmp_path, trigram))
    migration = Migration(plan, sample_db, pg_url, tmp_path / "work")
    assert migration.run_job("migrate").success
    with migration.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        shown = conn.execute(
            "EXPLAIN SELECT id FROM emrsim.messages WHERE message ILIKE %s", ("%patient%",)
        ).fetchall()
    assert "idx_messages_message_trgm" in " ".join(str(r[0]) for r in shown), shown


EVERY_KIND_OF_ID = [0, 1, 123456789, 10**15 - 1, 10**15, -1, -5, -(2**63), 2**63 - 1]


def test_uuids_are_deterministic_and_reversible() -> None:
    import uuid

    import polars as pl

    from emrsim_assets.legacy_ids import uuid_bytes

    value = legacy_uuid("users", 123456789)
    assert value == legacy_uuid("users", 123456789) != legacy_uuid("patients", 123456789)
    assert legacy_id_of(value) == 123456789
    # Every SQLite integer: the vectorized bytes, the scalar text and the way back agree.
    ids = pl.Series("id", [str(i) for i in EVERY_KIND_OF_ID])
    for legacy, raw in zip(EVERY_KIND_OF_ID, uuid_bytes(ids, "users").to_list(), strict=True):
        text = str(uuid.UUID(bytes=raw))
        assert text == legacy_uuid("users", legacy)
        assert legacy_id_of(text) == legacy
        assert uuid.UUID(text).version == 8 and uuid.UUID(text).variant == uuid.RFC_4122
    assert len({legacy_uuid("users", i) for i in EVERY_KIND_OF_ID}) == len(EVERY_KIND_OF_ID)


def test_legacy_ids_of_any_64_bit_value_migrate_and_come_back_in_sql(
    tmp_path: Path, pg_url: str
) -> None:
    sqlite = tmp_path / "ids.sqlite"
    conn = sqlite3.connect(sqlite)
    conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, thing_id INTEGER)")
    conn.executemany("INSERT INTO things VALUES (?, ?)", [(i, str(i)) for i in EVERY_KIND_OF_ID])
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?)",
        [(n + 1, i) for n, i in enumerate(EVERY_KIND_OF_ID)],
    )
    conn.commit()
    conn.close()
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "tables": [
                    {
                        "name": "things",
                        "primary_key": "id",
                        "columns": [
                            {"name": "id", "convert": "legacy_id"},
                            {"name": "name", "convert": "text"},
                        ],
                    },
                    {
                        "name": "notes",
                        "primary_key": "id",
                        "columns": [
                            {"name": "id", "convert": "legacy_id"},
                            {"name": "thing_id", "convert": "ref", "references": "things"},
                        ],
                    },
                ],
            }
        )
    )
    migration = Migration(load_plan(plan_path), sqlite, pg_url, tmp_path / "work")
    result = migration.run_job("migrate")
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    with migration.connect() as pg:
        back = pg.execute(
            "SELECT emrsim_migration.legacy_id(id), name FROM emrsim.things ORDER BY 1"
        ).fetchall()
        joined = pg.execute(
            "SELECT count(*) FROM emrsim.notes n JOIN emrsim.things t ON t.id = n.thing_id"
        ).fetchone()
    assert back == [(i, str(i)) for i in sorted(EVERY_KIND_OF_ID)]
    assert joined == (len(EVERY_KIND_OF_ID),)


def _break(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, params)
    conn.commit()
    conn.close()


def test_an_unparseable_timestamp_stops_the_load_naming_table_column_and_row(
    migration: Migration, sample_db: Path
) -> None:
    _break(sample_db, "UPDATE users SET created_at = 'last tuesday' WHERE id = 4")
    from emrsim_assets import pipeline, snapshot

    manifest = snapshot.take_snapshot(
        sample_db, migration.resource.snapshot_dir, migration.plan, migration.months
    )
    with migration.connect() as conn, pytest.raises(ConversionError) as error:
        conn.autocommit = False
        pipeline.load_table(conn, migration.plan, migration.plan.table("users"), manifest, 50)
    assert "users.created_at: row id 4: value 'last tuesday' is not a valid text timestamp" in str(
        error.value
    )


def test_quarantined_rows_close_the_cutover_gate_until_the_plan_allows_them(
    tmp_path: Path, sample_db: Path, pg_url: str
) -> None:
    def quarantine(raw: dict) -> None:  # type: ignore[type-arg]
        for column in raw["tables"][3]["columns"]:
            if column["name"] == "metadata":
                column["on_invalid"] = "quarantine"

    plan = load_plan(_plan_with(tmp_path, quarantine))
    _break(sample_db, "UPDATE messages SET metadata = '{broken' WHERE id = 10")
    migration = Migration(plan, sample_db, pg_url, tmp_path / "work")
    result = migration.run_job("migrate")
    evaluations = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "messages"
    }
    assert evaluations["row_count_matches_source"].passed
    assert not evaluations["quarantine_within_limit"].passed
    assert evaluations["quarantine_within_limit"].metadata["quarantined_rows"].value == 1
    assert "cutover" not in {
        e.event_specific_data.materialization.asset_key.to_user_string()  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }
    with migration.connect() as conn:
        row = conn.execute(
            "SELECT row_id, column_name, value FROM emrsim_migration.quarantine"
        ).fetchone()
    assert row == (10, "metadata", "{broken")

    # The plan may accept a known number of quarantined rows: then the gate opens.
    def allow_one(raw: dict) -> None:  # type: ignore[type-arg]
        quarantine(raw)
        raw["tables"][3]["max_quarantined_rows"] = 1

    allowed = Migration(
        load_plan(_plan_with(tmp_path, allow_one)), sample_db, pg_url, tmp_path / "w2"
    )
    result = allowed.run_job("migrate")
    assert result.success
    assert "cutover" in {
        e.event_specific_data.materialization.asset_key.to_user_string()  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }


def test_invalid_json_stops_the_month_load_naming_table_column_and_row(
    migration: Migration, sample_db: Path
) -> None:
    # metadata fails by default: PostgreSQL's jsonb input judges it, and the error names the row.
    from datetime import date

    from emrsim_assets import pipeline, snapshot

    def taken() -> snapshot.Manifest:
        return snapshot.take_snapshot(
            sample_db, migration.resource.snapshot_dir, migration.plan, migration.months
        )

    month, (lo, hi) = next(iter(taken().month_rowids.items()))
    row = (lo + hi) // 2  # inside the month and inside a batch: not its first row
    _break(sample_db, "UPDATE messages SET metadata = ? WHERE id = ?", ('{"model": sim-gpt}', row))
    manifest = taken()
    with migration.connect() as conn, pytest.raises(ConversionError) as error:
        conn.autocommit = False
        pipeline.load_month(
            conn,
            migration.plan,
            migration.plan.table("messages"),
            date.fromisoformat(month),
            manifest,
            50,
        )
    assert f"messages.metadata: row id {row}: PostgreSQL refused the value" in str(error.value)
    assert "json" in str(error.value)
    with migration.connect() as conn:
        loaded = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'emrsim_staging' "
            "AND tablename LIKE 'messages_y%'"
        ).fetchone()
    assert loaded == (0,)  # the month's transaction rolled back: nothing half-loaded


def test_a_refused_value_in_a_month_with_late_rows_names_its_own_row_id(
    migration: Migration, sample_db: Path
) -> None:
    # A message written late into an earlier month: that month's batches have gaps in their row
    # ids, and the refused row must still be named by its own id, not a neighbour's.
    conn = sqlite3.connect(sample_db)
    try:
        late = conn.execute(
            "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "
            "VALUES (1, 'user', 'late', '{broken', '2023-02-10 09:00:00')"
        ).lastrowid
        conn.commit()
    finally:
        conn.close()
    from datetime import date

    from emrsim_assets import pipeline, snapshot

    manifest = snapshot.take_snapshot(
        sample_db, migration.resource.snapshot_dir, migration.plan, migration.months
    )
    assert "2023-02-01" not in manifest.pure_months
    with migration.connect() as pg, pytest.raises(ConversionError) as error:
        pg.autocommit = False
        pipeline.load_month(
            pg,
            migration.plan,
            migration.plan.table("messages"),
            date(2023, 2, 1),
            manifest,
            7,
        )
    assert f"messages.metadata: row id {late}: PostgreSQL refused the value" in str(error.value)


def test_a_drafted_plan_says_how_many_values_it_inferred_formats_from_and_no_column_exceeds_it(
    tmp_path: Path,
) -> None:
    """The header and the columns agree: a column of a table longer than the sample says it
    saw exactly the number of values the header promises, no more."""
    import re

    from emrsim_assets.draft import draft_plan

    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT, token TEXT)")
        conn.executemany(
            "INSERT INTO events (at, token) VALUES (?, ?)",
            [(f"2024-01-{1 + i % 28:02d}T10:00:00Z", f"{i:032x}") for i in range(7_000)],
        )
    conn.close()
    text = draft_plan(path)
    header = re.search(r"inferred from up to ([\d,]+) values a column", text)
    assert header is not None, text[:800]
    limit = int(header.group(1).replace(",", ""))
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) sampled", text)]
    assert counts and max(counts) == limit == 6_000, (limit, counts)
