"""Every hostile shape: draft a plan, migrate it, and compare every row and column with the source."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from emrsim_assets.draft import draft_plan
from emrsim_assets.plan import load_plan
from emrsim_assets.plan.names import RESERVED
from emrsim_assets.snapshot import sha256_file
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.harness import drafted
from emrsim_assets_tests.oracle import source_rows, target_rows
from emrsim_assets_tests.shapes import SHAPES, write_shape


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_drafts_migrates_and_arrives_equal(
    shape: str, tmp_path: Path, pg_url: str
) -> None:
    sqlite = write_shape(shape, tmp_path / f"{shape}.sqlite")
    before = sha256_file(sqlite)
    plan = drafted(sqlite, tmp_path)
    migration = Migration(plan, sqlite, pg_url, tmp_path / "work")
    result = migration.run_job("migrate")
    failures = [
        f"{e.asset_key.to_user_string()}:{e.check_name}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    steps = [str(e.event_specific_data.error) for e in result.get_step_failure_events()]  # type: ignore[union-attr]
    assert result.success and not failures, (failures, steps)
    assert sha256_file(sqlite) == before
    with psycopg.connect(pg_url) as conn:
        for table in plan.tables:
            source = source_rows(sqlite, table)
            target = target_rows(conn, table)
            assert target == source, f"{shape}: {table.name} differs from {table.source}"


def test_the_app_schema_draft_reports_orphans_and_keeps_the_unique_fingerprint(
    tmp_path: Path,
) -> None:
    sqlite = write_shape("app_schema", tmp_path / "app.sqlite")
    text = draft_plan(sqlite)
    plan = load_plan(_written(tmp_path, text))
    turns = plan.table("turns")
    session = turns.column("session_id")
    assert (session.references, session.enforce) == ("sessions", "report")
    assert "rows point at no sessions row" in text
    assert not plan.table("sessions").column("persona_id").references
    assert "named like a reference to personas" in text
    assert any(ix.unique and ix.columns == ("fingerprint",) for ix in turns.indexes)
    assert turns.partition_by_month is None and "idx_turns_fingerprint" in text
    assert plan.table("sessions").column("sps_session_id").convert == "uuid"
    assert plan.table("sessions").column("started_at").default == "now()"
    assert plan.table("scenarios").column("tags_json").default == "[]"


def test_reserved_and_mixed_case_names_are_mapped_and_the_source_spelling_kept(
    tmp_path: Path,
) -> None:
    plan = load_plan(
        _written(tmp_path, draft_plan(write_shape("reserved_names", tmp_path / "r.sqlite")))
    )
    assert {t.name for t in plan.tables} == {"def_", "config_", "type_", "input_"}
    assert plan.table("type_").source == "type"
    mixed = load_plan(
        _written(
            tmp_path,
            draft_plan(write_shape("mixed_case_and_long_names", tmp_path / "m.sqlite")),
        )
    )
    album = mixed.table("album")
    assert album.source == "Album" and album.column("artist_id").source == "ArtistId"
    assert album.column("artist_id").references == "artist"
    assert all(len(t.name) <= 53 for t in mixed.tables)


def test_views_and_generated_columns_are_carried_and_the_rest_named(tmp_path: Path) -> None:
    sqlite = write_shape("views_and_rowid_columns", tmp_path / "v.sqlite")
    plan = load_plan(_written(tmp_path, draft_plan(sqlite)))
    # The view is recreated over the migrated tables, its LIKE as ILIKE (SQLite's ignores case).
    [view] = plan.views
    assert view.source == "people_named_a" and "ILIKE 'A%'" in view.postgres
    # The generated column is PostgreSQL's own, from sqlglot's writing of its expression.
    assert plan.table("people").column("initial").generated == 'SUBSTRING("name" FROM 1 FOR 1)'
    # A trigger of no form carried over is named, with its SQL.
    noted = plan.skipped("people_noted", kind="trigger")
    assert noted is not None and "INSERT INTO notes VALUES" in noted.reason


def test_our_reserved_names_cover_dagsters() -> None:
    from dagster._core.definitions.utils import DISALLOWED_NAMES

    assert set(DISALLOWED_NAMES) <= RESERVED


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"plan-{abs(hash(text))}.yaml"
    path.write_text(text, encoding="utf-8")
    yaml.safe_load(text)
    return path


def test_batches_are_bounded_by_bytes_so_a_table_of_large_blobs_streams_and_arrives_equal(
    tmp_path: Path, pg_url: str
) -> None:
    """A row count alone would hold 50,000 one-megabyte scans at once: a batch holds about
    BATCH_BYTES of values, however wide the rows, and small rows still come many at a time."""
    from emrsim_assets.source import BATCH_BYTES, read_batches

    sqlite = tmp_path / "scans.sqlite"
    conn = sqlite3.connect(sqlite)
    conn.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, label TEXT, image BLOB)")
    conn.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT)")
    sizes = [1 << 20, 3 << 20, 1, 0, 2 << 20, 700_000] * 4
    conn.executemany(
        "INSERT INTO scans (label, image) VALUES (?, randomblob(?))",
        [(f"scan {i}", size) for i, size in enumerate(sizes)],
    )
    conn.executemany("INSERT INTO tags (name) VALUES (?)", [(f"t{i}",) for i in range(5_000)])
    conn.commit()
    conn.close()
    plan = drafted(sqlite, tmp_path)

    batches = list(read_batches(sqlite, plan.table("scans"), 50_000))
    widest = max(sizes)
    for batch in batches:
        assert batch.estimated_size() <= BATCH_BYTES + 2 * widest, batch.height
    assert sum(b.height for b in batches) == len(sizes) and len(batches) > 4
    ids = [int(i) for b in batches for i in b["id"]]
    assert ids == list(range(1, len(sizes) + 1))
    # Narrow rows: pages grow from one row, eight times a page, and travel on as one batch
    # of at most the caller's batch_rows.
    assert [b.height for b in read_batches(sqlite, plan.table("tags"), 50_000)] == [5_000]
    assert [b.height for b in read_batches(sqlite, plan.table("tags"), 100)] == [100] * 50
    assert [b.height for b in read_batches(sqlite, plan.table("tags"), 4_000)] == [4_000, 1_000]

    result = Migration(plan, sqlite, pg_url, tmp_path / "work").run_job("migrate")
    assert result.success
    with psycopg.connect(pg_url) as pg:
        for table in plan.tables:
            assert target_rows(pg, table) == source_rows(sqlite, table), table.name
