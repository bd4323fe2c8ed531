"""The app's views, carried over: each SQLite view's SELECT read by sqlglot, its tables and
columns renamed to the plan's, written for PostgreSQL, created with the tables at cutover and
proven there to give the same rows as SQLite's view on the snapshot.

A view body is SQL by nature. It reaches PostgreSQL only as sqlglot writes it from a tree that
has been checked: a SELECT (joins, subqueries, UNION, GROUP BY, ORDER BY, LIMIT) over the plan's
tables and their columns, literals, operators, aggregates and the functions a CHECK may call.
Anything else (another view, a table the plan does not migrate, a function PostgreSQL lacks)
is refused by name, and the draft lists the view under skip instead.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import sql

from emrsim_assets.plan import Plan
from emrsim_assets.plan.model import View
from emrsim_assets.rules import composed_view
from emrsim_assets.schemas import Conn
from emrsim_assets.source import quote_name

BATCH = 10_000


def create(conn: Conn, schema: str, plan: Plan, view: View) -> None:
    """The view in `schema`, its tables read from that schema: the plan's text read again and
    checked (it could have been edited since it loaded), then as sqlglot writes the tree."""
    conn.execute(
        sql.SQL("CREATE VIEW {}.{} AS {}").format(
            sql.Identifier(schema),
            sql.Identifier(view.name),
            composed_view(view.postgres, plan.tables, schema),
        )
    )


@dataclass(frozen=True)
class Proof:
    view: str
    rows: int
    postgres_rows: int
    by_value: int  # columns compared value by value
    by_presence: int  # columns compared as NULL or not (a timestamp, uuid or json there)
    equal: bool


# PostgreSQL types whose values SQLite writes otherwise (text, an epoch, 32 hex digits): date,
# time, timestamp, timestamptz, uuid, json, jsonb (type OIDs). The proof compares them as
# present or NULL; the tables' own content check proved each of their values.
_PRESENCE = frozenset({1082, 1083, 1114, 1184, 2950, 114, 3802})


def prove(conn: Conn, schema: str, lite: sqlite3.Connection, view: View) -> Proof:
    """The same rows from SQLite's view (on the snapshot) and PostgreSQL's: counted, and summed
    as an order-free digest of each row's values, streamed in batches (memory stays flat)."""
    pg = conn.cursor()
    pg.execute(
        sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(view.name))
    )
    first = pg.fetchmany(BATCH)
    presence = _presence_columns(pg.description)
    pg_rows, pg_digest = _digest(_batches(first, pg), presence)
    lite_cursor = lite.execute(f"SELECT * FROM {quote_name(view.source)}")  # noqa: S608
    lite_rows, lite_digest = _digest(_batches(lite_cursor.fetchmany(BATCH), lite_cursor), presence)
    width = len(pg.description or ())
    return Proof(
        view.name,
        lite_rows,
        pg_rows,
        width - len(presence),
        len(presence),
        lite_rows == pg_rows and lite_digest == pg_digest,
    )


def _presence_columns(description: Any) -> set[int]:
    return {i for i, column in enumerate(description or ()) if column.type_code in _PRESENCE}


def _batches(first: list[Any], cursor: Any) -> Iterator[list[Any]]:
    batch = first
    while batch:
        yield batch
        batch = cursor.fetchmany(BATCH)


def _digest(batches: Iterable[list[Any]], presence: set[int]) -> tuple[int, int]:
    count = total = 0
    for batch in batches:
        for row in batch:
            parts = [
                (value is None) if index in presence else _canonical(value)
                for index, value in enumerate(row)
            ]
            digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
            total = (total + struct.unpack("<Q", digest)[0]) % (1 << 64)
            count += 1
    return count, total


def _canonical(value: Any) -> Any:
    """A value as both databases' drivers may give it: numbers by value (SQLite's 1 and
    PostgreSQL's true, its 9.5 and Decimal('9.50')), text, bytes."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal | float):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value
