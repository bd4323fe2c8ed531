"""The conversions written again as plain Python: an oracle independent of Polars, and the
rows of both sides in comparable form (multisets: a keyless table's copies count)."""

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
import psycopg
from psycopg import sql

from emrsim_assets.legacy_ids import legacy_uuid
from emrsim_assets.plan import Column, Table

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}


def expected(table: Table, column: Column, value: Any, encoding: str = "utf-8") -> Any:
    """The conversion written again as plain Python: an oracle independent of Polars. A blob
    column keeps a text value's bytes in the file's `encoding` (a number's, in UTF-8)."""
    kind = column.convert
    if kind == "storage_class":  # SQLite's typeof() of the value
        return {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), "null")
    if value is None:
        return None
    if kind == "legacy_id":
        return uuid.UUID(legacy_uuid(table.name, int(value)))
    if kind == "ref":
        return uuid.UUID(legacy_uuid(str(column.references), int(value)))
    if kind == "uuid" or kind == "uuid_hex":
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


def json_numbers(value: Any) -> Any:
    """JSON with every number as a normalized decimal: 1e2, 100 and 100.0 are one number."""
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_numbers(v) for v in value]
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = Decimal(str(value))
        return str(Decimal(0) if number.is_zero() else number.normalize())
    return value


def normal(target: Any, column: Column) -> Any:
    if column.convert == "json" and target is not None:
        # jsonb orders object keys and spells numbers its own way: neither is a difference.
        return json.dumps(json_numbers(target), sort_keys=True)
    if column.convert == "numeric" and target is not None:
        return Decimal(target).normalize()
    if column.convert == "blob" and target is not None:
        return bytes(target)
    return target


def text_or_bytes(raw: bytes) -> str | bytes:
    """TEXT as str, or as its bytes where they are not UTF-8 (what a blob column keeps)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def source_rows(path: Path, table: Table) -> Counter[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.text_factory = text_or_bytes
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
            normal(expected(table, c, v, encoding), c)
            if c.convert in ("numeric", "json")
            else expected(table, c, v, encoding)
            for c, v in zip(table.columns, row, strict=True)
        )
        for row in rows
    )


def target_rows(
    conn: psycopg.Connection[Any], table: Table, schema: str = "emrsim"
) -> Counter[tuple[Any, ...]]:
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
            sql.Identifier(schema),
            sql.Identifier(table.name),
        )
    ).fetchall()
    return Counter(
        tuple(normal(v, c) for c, v in zip(table.columns, row, strict=True)) for row in rows
    )
