"""The DuckDB route to the schema `emrsim-migrate migrate` delivers, timed by bench/run.py.

    python bench/duckdb_route.py SQLITE POSTGRES_URL PREFIXES_JSON

DuckDB (pip duckdb, with its sqlite and postgres extensions from pip duckdb-ext-sqlite and
duckdb-ext-postgres: the benchmark host cannot download them) attaches the SQLite file read-only
and the PostgreSQL database, creates the typed tables there (uuid, timestamptz, jsonb, messages
partitioned by month), and fills them with one INSERT ... SELECT per table, converting in DuckDB:
the same uuids as the plan's legacy_id (PREFIXES_JSON: table -> its 17 hex digits), naive text
times read as UTC, epoch milliseconds, 0/1 as boolean. bench/typed_keys.sql then adds the keys,
indexes, foreign keys and statistics (run by bench/run.py, timed with this). No checks, no
snapshot: DuckDB proves nothing about the rows it moved.
"""

# The SQL below is DuckDB's, over fixed benchmark names; the only values spliced in are the
# uuid prefixes, checked to be 17 hex digits first.
# ruff: noqa: S608

from __future__ import annotations

import json
import re
import site
import sys
from datetime import date
from pathlib import Path
from typing import Any

TABLES = """
CREATE SCHEMA typed;
CREATE TABLE typed.users (id uuid, email varchar(255), name varchar(255),
    password_hash varchar(255), role varchar(50), is_active boolean, created_at timestamptz,
    updated_at timestamptz);
CREATE TABLE typed.patients (id uuid, name varchar(255), date_of_birth date, sex varchar(20),
    scenario text, created_by uuid, created_at timestamptz);
CREATE TABLE typed.conversations (id uuid, title varchar(255), user_id uuid, patient_id uuid,
    status varchar(50), created_at timestamptz, updated_at timestamptz);
CREATE TABLE typed.patient_records (id uuid, patient_id uuid, record_type varchar(50),
    data jsonb, is_abnormal boolean, recorded_at timestamptz, created_at timestamptz);
CREATE TABLE typed.user_sessions (token varchar(128), user_id uuid, data jsonb,
    expires_at timestamptz, is_revoked boolean, created_at timestamptz);
CREATE TABLE typed.messages (id uuid NOT NULL, conversation_id uuid NOT NULL,
    sender varchar(50) NOT NULL, message text NOT NULL, metadata jsonb,
    created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
"""


def uuid(prefixes: dict[str, str], table: str, column: str) -> str:
    return f"('{prefixes[table]}' || lpad(CAST({column} AS VARCHAR), 15, '0'))::UUID"


def utc(column: str) -> str:
    return f"CAST({column} AS TIMESTAMPTZ)"  # TimeZone is UTC: naive text is read as UTC


def inserts(p: dict[str, str]) -> list[str]:
    return [
        f"""INSERT INTO pg.typed.users SELECT {uuid(p, "users", "id")}, email, name, password_hash,
            role, is_active <> 0, {utc("created_at")}, {utc("updated_at")} FROM src.users""",
        f"""INSERT INTO pg.typed.patients SELECT {uuid(p, "patients", "id")}, name,
            CAST(date_of_birth AS DATE), sex, scenario, {uuid(p, "users", "created_by")},
            {utc("created_at")} FROM src.patients""",
        f"""INSERT INTO pg.typed.conversations SELECT {uuid(p, "conversations", "id")}, title,
            {uuid(p, "users", "user_id")}, {uuid(p, "patients", "patient_id")}, status,
            {utc("created_at")}, {utc("updated_at")} FROM src.conversations""",
        f"""INSERT INTO pg.typed.patient_records SELECT {uuid(p, "patient_records", "id")},
            {uuid(p, "patients", "patient_id")}, record_type, data, is_abnormal <> 0,
            {utc("recorded_at")}, {utc("created_at")} FROM src.patient_records""",
        f"""INSERT INTO pg.typed.user_sessions SELECT token, {uuid(p, "users", "user_id")}, data,
            make_timestamptz(expires_at * 1000), is_revoked <> 0, {utc("created_at")}
            FROM src.user_sessions""",
        f"""INSERT INTO pg.typed.messages SELECT {uuid(p, "messages", "id")},
            {uuid(p, "conversations", "conversation_id")}, sender, message, metadata,
            {utc("created_at")} FROM src.messages""",
    ]


def months(con: Any) -> list[date]:
    row = con.execute(
        f"SELECT min({utc('created_at')}), max({utc('created_at')}) FROM src.messages"
    ).fetchone()
    assert row is not None
    first, last = row[0].date().replace(day=1), row[1].date()
    found = []
    while first <= last:
        found.append(first)
        first = following(first)
    return found


def following(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partitions(first_days: list[date]) -> str:
    return "".join(
        f"CREATE TABLE typed.messages_y{month:%Y}m{month:%m} PARTITION OF typed.messages "
        f"FOR VALUES FROM ('{month}') TO ('{following(month)}');\n"
        for month in first_days
    )


def main() -> int:
    import duckdb

    sqlite_path, url, prefixes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if not all(re.fullmatch("[0-9a-f]{17}", p) for p in prefixes.values()):
        raise SystemExit(f"not 17 hex digits each: {prefixes}")
    extensions = Path(site.getsitepackages()[0]) / "duckdb_ext" / "extensions"
    con = duckdb.connect(
        config={
            "extension_directory": str(extensions),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    con.execute("LOAD sqlite_scanner; LOAD postgres_scanner; SET TimeZone = 'UTC'")
    con.execute(f"ATTACH '{sqlite_path}' AS src (TYPE sqlite, READ_ONLY)")
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres)")
    ddl = TABLES + partitions(months(con))
    con.execute("CALL postgres_execute('pg', ?)", [ddl])
    con.execute("CALL pg_clear_cache()")
    for statement in inserts(prefixes):
        con.execute(statement)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
