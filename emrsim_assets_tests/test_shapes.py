"""Every hostile shape: draft a plan, migrate it, and compare every row and column with the source."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc_sqlite
import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from emrsim_assets.convert import legacy_uuid
from emrsim_assets.plan import Column, Plan, Table, load_plan
from emrsim_assets.plan.draft import draft_plan
from emrsim_assets.plan.names import RESERVED
from emrsim_assets.source import sha256_file
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.shapes import SHAPES, write_shape

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}


def expected(table: Table, column: Column, value: Any, encoding: str = "utf-8") -> Any:
    """The conversion written again as plain Python: an oracle independent of Polars. A blob
    column keeps a text value's bytes in the file's `encoding` (a number's, in UTF-8)."""
    if value is None:
        return None
    kind = column.convert
    if kind == "legacy_id":
        return uuid.UUID(legacy_uuid(table.name, int(value)))
    if kind == "ref":
        return uuid.UUID(legacy_uuid(str(column.references), int(value)))
    if kind == "uuid":
        return uuid.UUID(value)
    if kind == "timestamp" and column.epoch:
        micros = Decimal(str(value)) * 1_000_000 / _PER_SECOND[column.epoch]
        return _EPOCH + timedelta(microseconds=int(micros))
    if kind == "timestamp":
        text = re.sub(r"[zZ]$", "+00:00", str(value).strip())
        # Python 3.11 wants 3 or 6 fraction digits: '.5' is '.500000'.
        text = re.sub(r"\.(\d{1,6})", lambda m: "." + m.group(1).ljust(6, "0"), text)
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "json":
        return json.loads(value, parse_float=Decimal)
    if kind == "boolean":
        return bool(int(value))
    if kind == "integer":
        return int(value)
    if kind == "real":
        return float(value)
    if kind == "numeric":
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if kind == "blob":
        if isinstance(value, str):
            return value.encode(encoding)
        return value if isinstance(value, bytes) else sqlite_text(value).encode()
    if kind == "text" and not isinstance(value, str):
        return value.decode() if isinstance(value, bytes) else sqlite_text(value)
    return value


def sqlite_text(value: Any) -> str:
    """A value as SQLite's CAST(x AS TEXT) prints it, asked of the SQLite the load reads with
    (its REAL text round-trips in 17 digits; Python's own sqlite3 may be older)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    with adbc_sqlite.connect(":memory:") as conn, conn.cursor() as cur:
        cur.execute("SELECT CAST(? AS TEXT)", (value,))
        row = cur.fetchone()
    assert row is not None
    return str(row[0])


def _json_numbers(value: Any) -> Any:
    """JSON with every number as a normalized decimal: 1e2, 100 and 100.0 are one number."""
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = Decimal(str(value))
        return str(Decimal(0) if number.is_zero() else number.normalize())
    return value


def _normal(target: Any, column: Column) -> Any:
    if column.convert == "json" and target is not None:
        # jsonb orders object keys and spells numbers its own way: neither is a difference.
        return json.dumps(_json_numbers(target), sort_keys=True)
    if column.convert == "numeric" and target is not None:
        return Decimal(target).normalize()
    if column.convert == "blob" and target is not None:
        return bytes(target)
    return target


def _text_or_bytes(raw: bytes) -> str | bytes:
    """TEXT as str, or as its bytes where they are not UTF-8 (what a blob column keeps)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def source_rows(path: Path, table: Table) -> Counter[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.text_factory = _text_or_bytes
    try:
        encoding = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}[
            conn.execute("PRAGMA encoding").fetchone()[0]
        ]
        names = ", ".join('"' + c.source.replace('"', '""') + '"' for c in table.columns)
        source = '"' + table.source.replace('"', '""') + '"'
        rows = conn.execute(f"SELECT {names} FROM {source}").fetchall()  # noqa: S608
    finally:
        conn.close()
    return Counter(
        tuple(
            _normal(expected(table, c, v, encoding), c)
            if c.convert in ("numeric", "json")
            else expected(table, c, v, encoding)
            for c, v in zip(table.columns, row, strict=True)
        )
        for row in rows
    )


def target_rows(conn: psycopg.Connection[Any], table: Table) -> Counter[tuple[Any, ...]]:
    rows = conn.execute(
        sql.SQL("SELECT {} FROM emrsim.{}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
            sql.Identifier(table.name),
        )
    ).fetchall()
    return Counter(
        tuple(_normal(v, c) for c, v in zip(table.columns, row, strict=True)) for row in rows
    )


def drafted(sqlite: Path, tmp_path: Path) -> Plan:
    text = draft_plan(sqlite)
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


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


def test_views_and_generated_columns_are_skipped_with_a_reason(tmp_path: Path) -> None:
    sqlite = write_shape("views_and_rowid_columns", tmp_path / "v.sqlite")
    plan = load_plan(_written(tmp_path, draft_plan(sqlite)))
    skip = plan.skipped("people_named_a")
    assert skip is not None and "a view" in skip.reason


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
