"""What changed in the source between two snapshots, table by table, found by SQLite itself.

Both snapshots are attached read-only to one scratch database, and a few set-based statements
per table (a join on the key, and an anti-join for deletes) run in SQLite's C engine; no row
passes through Python. The keys of the rows that are new or changed, and of those that are
gone, land in the scratch file: a delta is small, and its rows are read from the later
snapshot when it is applied.

Rows are matched by the plan's key, never by rowid: a VACUUM between the snapshots may renumber
rowids without changing a row. Two values are equal only when SQLite's storage class and bytes
are equal (`IS` under BINARY collation, and `typeof`): 1 becoming 1.0, or 'Alice' becoming
'alice' in a NOCASE column, is a change. (SQLite's session extension compares with `IS` under
the column's own collation and affinity, and misses both.) A table without a key is compared as
a multiset of rows; when it changed at all, the delta says so and it is reloaded whole.

A schema that changed between the snapshots (a new table or column, a dropped one, a changed
definition) is refused, naming the first change: the plan was drafted for the earlier one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import pathname2url

from emrsim_assets.errors import SourceError
from emrsim_assets.plan import Plan, Table
from emrsim_assets.private import private_file
from emrsim_assets.source import open_readonly, quote_name


class SchemaChangedError(SourceError):
    """The source's schema is not the one the earlier snapshot had."""


@dataclass(frozen=True)
class TableChange:
    """One table's changes: keys of new and changed rows in `upserts`, of gone rows in
    `deletes` (tables of the delta file); a keyless table that changed is `whole`."""

    table: str
    inserted: int
    updated: int
    deleted: int
    whole: bool = False
    upserts: str = ""
    deletes: str = ""

    @property
    def rows(self) -> int:
        return self.inserted + self.updated + self.deleted

    @property
    def changed(self) -> bool:
        return self.whole or self.rows > 0


@dataclass(frozen=True)
class Delta:
    path: Path  # the scratch SQLite file that holds the keys
    tables: tuple[TableChange, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def of(self, table: str) -> TableChange:
        return next(t for t in self.tables if t.table == table)


def find_delta(before: Path, after: Path, plan: Plan, into: Path) -> Delta:
    """The changes from `before` to `after` (two snapshots of one source) of every plan table,
    their keys written to a new SQLite file `into` (private: keys are the user's data)."""
    started = time.perf_counter()
    refuse_schema_change(before, after)
    into.unlink(missing_ok=True)
    conn = scratch(into)
    try:
        attach_read_only(conn, before, "b")
        attach_read_only(conn, after, "a")
        conn.execute("PRAGMA temp_store = FILE")
        conn.execute("BEGIN")
        changes = [
            _table_change(conn, table, index) for index, table in enumerate(plan.load_order())
        ]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Delta(into, tuple(changes), time.perf_counter() - started)


def scratch(path: Path, new: bool = True) -> sqlite3.Connection:
    """A private scratch database (created empty, unless `new` is false), opened in URI mode
    so that ATTACH takes read-only URIs."""
    if new:
        private_file(path)
    return sqlite3.connect(
        f"file:{pathname2url(str(path.resolve()))}?mode=rw", uri=True, isolation_level=None
    )


def attach_read_only(conn: sqlite3.Connection, path: Path, alias: str) -> None:
    """`path` attached as `alias` so that nothing can be written to it (mode=ro)."""
    conn.execute(
        "ATTACH DATABASE ? AS " + alias, (f"file:{pathname2url(str(path.resolve()))}?mode=ro",)
    )


def _table_change(conn: sqlite3.Connection, table: Table, index: int) -> TableChange:
    source = quote_name(table.source)
    columns = [quote_name(c.source) for c in table.columns]
    if not table.primary_key:
        return _keyless_change(conn, table, columns)
    keys = [quote_name(table.column(k).source) for k in table.primary_key]
    loose = _class_may_differ(conn, table.source)
    # The join uses the key's own collation (so the key's index serves it); the comparisons
    # after it are exact: bytes under BINARY, and the storage class where `IS` could miss it.
    on = " AND ".join(f"o.{k} = n.{k}" for k in keys)
    differs = " OR ".join(_differs(c, c in loose) for c in columns)
    # Unmatched: a NULL key never matches (`=`), so a matched row's key is never NULL. A key
    # equal only under its collation ('tag3', 'TAG3' in a NOCASE key) is another key for
    # PostgreSQL: new here, gone there.
    same_key = " AND ".join(f"NOT ({_differs(k, k in loose)})" for k in keys)
    is_new = f"o.{keys[0]} IS NULL OR NOT ({same_key})"
    upserts, deletes = f"upserts_{index}", f"deletes_{index}"
    key_list = ", ".join(f"n.{k}" for k in keys)
    # ORDER BY the key: SQLite then walks each side in key order, so the other side's lookups
    # are sequential (scanning by another index, the anti-join took 7 s instead of 0.8 s at 2 M
    # rows: every lookup a cache miss).
    conn.execute(
        f"CREATE TABLE {upserts} AS SELECT {key_list}, ({is_new}) AS is_new "  # noqa: S608
        f"FROM a.{source} AS n LEFT JOIN b.{source} AS o ON {on} "
        f"WHERE o.{keys[0]} IS NULL OR {differs} ORDER BY {key_list}"
    )
    exact = " AND ".join(f"n.{k} = o.{k} AND NOT ({_differs(k, k in loose)})" for k in keys)
    old_keys = ", ".join(f"o.{k}" for k in keys)
    conn.execute(
        f"CREATE TABLE {deletes} AS SELECT {old_keys} FROM b.{source} AS o "  # noqa: S608
        f"WHERE NOT EXISTS (SELECT 1 FROM a.{source} AS n WHERE {exact}) ORDER BY {old_keys}"
    )
    inserted, updated = conn.execute(
        f"SELECT coalesce(sum(is_new), 0), coalesce(sum(NOT is_new), 0) FROM {upserts}"  # noqa: S608
    ).fetchone()
    (deleted,) = conn.execute(f"SELECT count(*) FROM {deletes}").fetchone()  # noqa: S608
    # A key that changed only in case or storage class is an old key gone and a new one
    # there, as PostgreSQL's exact keys see it.
    return TableChange(
        table.name, int(inserted), int(updated), int(deleted), False, upserts, deletes
    )


def _differs(column: str, loose: bool) -> str:
    """SQL true when the column's new and old values differ in bytes (BINARY: 'Alice' and
    'alice' differ in a NOCASE column too) or, where `loose`, in storage class."""
    said = f"n.{column} IS NOT o.{column} COLLATE BINARY"
    return f"{said} OR typeof(n.{column}) IS NOT typeof(o.{column})" if loose else said


def _class_may_differ(conn: sqlite3.Connection, source: str) -> set[str]:
    """The (quoted) columns where `IS` may call values of two storage classes equal (1 and
    1.0): those no affinity coerces, declared BLOB, ANY or with no type. Elsewhere SQLite
    stores 1.0 as 1 (INTEGER, NUMERIC), 1 as 1.0 (REAL) or either as text (TEXT), and values
    of other classes are never equal under `IS`: a typeof() per value would only cost time."""
    loose = set()
    for row in conn.execute("SELECT name, type FROM pragma_table_xinfo(?, 'a')", (source,)):
        declared = str(row[1] or "").upper().strip()
        coerced = (
            "INT" in declared
            or any(t in declared for t in ("CHAR", "CLOB", "TEXT", "REAL", "FLOA", "DOUB"))
            or (declared not in ("", "ANY") and "BLOB" not in declared)
        )
        if not coerced:
            loose.add(quote_name(str(row[0])))
    return loose


def _keyless_change(conn: sqlite3.Connection, table: Table, columns: list[str]) -> TableChange:
    """A keyless table, compared as a multiset of exact rows both ways."""
    source = quote_name(table.source)
    exact = ", ".join(f"{c} COLLATE BINARY, typeof({c})" for c in columns)

    def grouped(alias: str) -> str:
        return f"SELECT {exact}, count(*) FROM {alias}.{source} GROUP BY {exact}"  # noqa: S608

    (added,) = conn.execute(
        f"SELECT count(*) FROM ({grouped('a')} EXCEPT {grouped('b')})"  # noqa: S608
    ).fetchone()
    (gone,) = conn.execute(
        f"SELECT count(*) FROM ({grouped('b')} EXCEPT {grouped('a')})"  # noqa: S608
    ).fetchone()
    return TableChange(table.name, 0, 0, 0, whole=bool(added or gone))


def refuse_schema_change(before: Path, after: Path) -> None:
    """The first difference between the two schemas, as one sentence: a table, view, index or
    trigger that is new, gone or defined otherwise, or a column added or dropped."""
    old, new = _schema(before), _schema(after)
    for key in sorted(set(old) | set(new)):
        kind, name = key
        if key not in old:
            raise SchemaChangedError(
                f"The source's {kind} {name} is new since the last prepare: the plan does not "
                "know it. Draft the plan again (emrsim-migrate plan), then prepare again."
            )
        if key not in new:
            raise SchemaChangedError(
                f"The source's {kind} {name} was dropped since the last prepare. Draft the plan "
                "again (emrsim-migrate plan), then prepare again."
            )
        if old[key] == new[key]:
            continue
        old_columns, new_columns = old[key][1], new[key][1]
        added = [c for c in new_columns if c not in old_columns]
        dropped = [c for c in old_columns if c not in new_columns]
        what = (
            f"column {name}.{added[0]} is new"
            if added
            else f"column {name}.{dropped[0]} was dropped"
            if dropped
            else f"the definition of {kind} {name} changed"
        )
        raise SchemaChangedError(
            f"The source's schema changed since the last prepare: {what}. Draft the plan again "
            "(emrsim-migrate plan), then prepare again."
        )


def _schema(path: Path) -> dict[tuple[str, str], tuple[str, list[str]]]:
    conn = open_readonly(path)
    try:
        rows = conn.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchall()
        schema: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for kind, name, text in rows:
            columns = (
                [str(r[1]) for r in conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,))]
                if kind in ("table", "view")
                else []
            )
            schema[(str(kind), str(name))] = (str(text), columns)
        return schema
    finally:
        conn.close()
