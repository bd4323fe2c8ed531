"""Behaviour probes: for each NOT NULL, UNIQUE and CHECK a table carries, a write that breaks it,
tried on both sides. Both must refuse it, or the rule does not hold the same in PostgreSQL.

SQLite's side is a scratch database in memory: the table's own CREATE statement and indexes,
and two of its rows copied from the snapshot (the snapshot is never written). PostgreSQL's side
is the loaded staging table, each write inside a transaction that is always rolled back.

A UNIQUE probe gives one row the other's key; a NOT NULL probe sets the column to NULL; a CHECK
probe tries a few plain values in the rule's column until SQLite refuses one, then sends that
value to PostgreSQL. A rule with no such value (or a partial index, or a table with too few rows)
is listed as not probed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlglot
from psycopg import sql
from sqlglot import exp

from emrsim_assets.plan import Table
from emrsim_assets.plan.model import sqlite_fold
from emrsim_assets.schemas import STAGING, Conn
from emrsim_assets.source import app_collations, quote_name, row_locator, stand_in

# Values a CHECK probe tries, by the column's kind, in this order: each means the same to
# SQLite's column and to PostgreSQL's.
_CANDIDATES: dict[str, tuple[Any, ...]] = {
    "integer": (-1, 0, 10**9, -(10**9)),
    "real": (-1.0, 0.0, 0.5, 1e9, -1e9),
    "numeric": (-1, 0, 10**9, -(10**9)),
    "text": ("", "~probe~", "-1", "0"),
}


@dataclass(frozen=True)
class Probe:
    rule: str
    write: str
    sqlite_refused: bool
    postgres_refused: bool

    @property
    def agrees(self) -> bool:
        return self.sqlite_refused == self.postgres_refused

    @property
    def label(self) -> str:
        said = {True: "refused", False: "accepted"}
        return (
            f"{self.rule}: {self.write}: SQLite {said[self.sqlite_refused]}, "
            f"PostgreSQL {said[self.postgres_refused]}"
        )


# SQLite's own names for its text encodings, as PRAGMA encoding reports and takes them.
_ENCODINGS = {e: e for e in ("UTF-8", "UTF-16le", "UTF-16be", "UTF-16")}


def probe(conn: Conn, lite: sqlite3.Connection, table: Table) -> tuple[list[Probe], list[str]]:
    """The probes of `table`, and the rules not probed with why. A scratch write SQLite cannot
    run at all (a CHECK calling a function of the app's own, say) ends the probing of the
    table, said in the list: the catalog comparison still holds."""
    module = lite.execute(
        "SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = ? COLLATE NOCASE",
        (table.source,),
    ).fetchone()
    if module and module[0] == "virtual":
        return [], [f"{table.source}: a virtual table, with no rules of its own"]
    probes: list[Probe] = []
    skipped: list[str] = []
    try:
        scratch, rows = _scratch(lite, table)
    except sqlite3.Error as exc:
        return [], [f"{table.source}: its scratch copy is refused by SQLite ({exc})"]
    try:
        if not rows:
            return [], [f"{table.source}: no row to probe with"]
        for outcome in _probes(conn, lite, scratch, table, rows):
            if isinstance(outcome, Probe):
                probes.append(outcome)
            else:
                skipped.append(outcome)
    except sqlite3.Error as exc:
        skipped.append(f"{table.source}: probing stopped, SQLite cannot run a probe ({exc})")
    finally:
        scratch.close()
    return probes, skipped


def _scratch(lite: sqlite3.Connection, table: Table) -> tuple[sqlite3.Connection, list[int]]:
    """An in-memory SQLite holding the table's schema and up to 50 of its rows, and their rowids
    there (none for a WITHOUT ROWID table: it is not probed)."""
    locator = row_locator(lite, table.source)
    scratch = _memory(lite)
    for (ddl,) in lite.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? COLLATE NOCASE AND type IN ('table', 'index') "
        "AND sql IS NOT NULL ORDER BY type = 'index'",
        (table.source,),
    ).fetchall():
        scratch.execute(str(ddl))
    if locator is None:
        return scratch, []  # WITHOUT ROWID (or every rowid alias shadowed): no row to find
    _copy_rows(scratch, lite, table, "LIMIT 50")
    ids = [int(r[0]) for r in scratch.execute(f"SELECT {locator} FROM {quote_name(table.source)}")]  # noqa: S608
    return scratch, ids


def _memory(lite: sqlite3.Connection) -> sqlite3.Connection:
    """A scratch database in memory, the snapshot attached to it read-only as `snap`: rows are
    copied inside SQLite, each value with its storage class and bytes (never decoded here)."""
    [path] = [str(r[2]) for r in lite.execute("PRAGMA database_list") if r[1] == "main"]
    scratch = sqlite3.connect("file::memory:", uri=True)
    # An attached file must share the main database's text encoding (UTF-16 files exist).
    [(encoding,)] = lite.execute("PRAGMA encoding").fetchall()
    scratch.execute(f"PRAGMA encoding = '{_ENCODINGS[str(encoding)]}'")
    for name in app_collations(lite):
        scratch.create_collation(name, stand_in)
    scratch.execute("ATTACH DATABASE ? AS snap", (f"{Path(path).resolve().as_uri()}?mode=ro",))
    return scratch


def _copy_rows(
    scratch: sqlite3.Connection, lite: sqlite3.Connection, table: Table, which: str
) -> None:
    stored = [
        str(r[1])
        for r in lite.execute("SELECT * FROM pragma_table_xinfo(?)", (table.source,))
        if r[6] not in (1, 2, 3)  # generated columns are computed, not written
    ]
    listed = ", ".join(quote_name(c) for c in stored)
    name = quote_name(table.source)
    loc = _loc(lite, table)
    scratch.execute(
        f"INSERT INTO main.{name} ({loc}, {listed}) "  # noqa: S608
        f"SELECT {loc}, {listed} FROM snap.{name} {which}"
    )


def _loc(db: sqlite3.Connection, table: Table) -> str:
    """The name that reaches the table's rowid (a column may be named rowid)."""
    locator = row_locator(db, table.source)
    assert locator is not None  # a table is probed only where it has one
    return locator


def _probes(
    conn: Conn, lite: sqlite3.Connection, scratch: sqlite3.Connection, table: Table, rows: list[int]
) -> Iterator[Probe | str]:
    by_source = {sqlite_fold(c.source): c for c in table.columns if c.convert != "storage_class"}
    any_row = _pg_rows(conn, table, [])
    if not any_row:
        yield f"{table.source}: no row in PostgreSQL to probe with"
        return
    xinfo = scratch.execute("SELECT * FROM pragma_table_xinfo(?)", (table.source,)).fetchall()
    for _, name, _, notnull, _, _, hidden in xinfo:
        column = by_source.get(sqlite_fold(str(name)))
        if not notnull or column is None or hidden in (2, 3):
            continue
        yield _both(
            conn,
            scratch,
            table,
            f"NOT NULL of {table.source}.{name}",
            f"{name} set to NULL",
            sql.SQL("{} = NULL").format(sql.Identifier(column.name)),
            f"{quote_name(str(name))} = NULL",
            rows[0],
            any_row[0],
        )
    for _, index, unique, _, partial in scratch.execute(
        "SELECT * FROM pragma_index_list(?)", (table.source,)
    ).fetchall():
        if not unique:
            continue
        keys = [
            r[0]
            for r in scratch.execute(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
            )
        ]
        what = f"UNIQUE {index} of {table.source}"
        if partial or None in keys or any(sqlite_fold(str(k)) not in by_source for k in keys):
            yield f"{what}: partial or on expressions (proven by its index in the catalog)"
            continue
        if len(rows) < 2:
            yield f"{what}: one row only"
            continue
        month = table.partition_by_month
        if month and month not in {by_source[sqlite_fold(str(k))].name for k in keys}:
            yield (
                f"{what}: on the table partitioned by month, PostgreSQL holds it unique per "
                "month; key_unique_across_months proves it across them"
            )
            continue
        # Each key column with its storage class beside it, where the plan keeps one (a key
        # that holds 6 and '6' is unique by value and class together).
        folded = {sqlite_fold(str(k)) for k in keys}
        targets = [c.name for c in table.columns if sqlite_fold(c.source) in folded]
        quoted = ", ".join(quote_name(str(k)) for k in keys)
        lite_pair = [
            int(r[0])
            for r in scratch.execute(
                f"SELECT {_loc(scratch, table)} FROM {quote_name(table.source)} WHERE "  # noqa: S608
                + " AND ".join(f"{quote_name(str(k))} IS NOT NULL" for k in keys)
                + " LIMIT 2"
            )
        ]
        pg_pair = _pg_rows(conn, table, targets)
        if len(lite_pair) < 2 or len(pg_pair) < 2:
            yield f"{what}: fewer than two rows with the key set"
            continue
        names = sql.SQL(", ").join(sql.Identifier(t) for t in targets)
        yield _both(
            conn,
            scratch,
            table,
            what,
            f"a second row given the first row's ({', '.join(str(k) for k in keys)})",
            sql.SQL("({}) = (SELECT {} FROM {} WHERE {})").format(
                names, names, _target(table), _row(pg_pair[0])
            ),
            f"({quoted}) = (SELECT {quoted} FROM {quote_name(table.source)} "  # noqa: S608
            f"WHERE {_loc(scratch, table)} = {lite_pair[0]})",
            lite_pair[1],
            pg_pair[1],
        )
        nocase = [by_source[f] for f in folded if by_source[f].collation == "nocase"]
        if len(keys) == 1 and nocase:
            # COLLATE NOCASE: the first row's value in other case is the same key, on both.
            column = nocase[0]
            yield _both(
                conn,
                scratch,
                table,
                f"{what} (COLLATE NOCASE)",
                f"a second row given the first row's {keys[0]} in upper case",
                sql.SQL("{} = (SELECT upper({}) FROM {} WHERE {})").format(
                    sql.Identifier(column.name),
                    sql.Identifier(column.name),
                    _target(table),
                    _row(pg_pair[0]),
                ),
                f"{quoted} = (SELECT upper({quoted}) FROM {quote_name(table.source)} "  # noqa: S608
                f"WHERE {_loc(scratch, table)} = {lite_pair[0]})",
                lite_pair[1],
                pg_pair[1],
            )
    yield from _check_probes(conn, lite, scratch, table, rows, by_source, any_row[0])


def _check_probes(
    conn: Conn,
    lite: sqlite3.Connection,
    scratch: sqlite3.Connection,
    table: Table,
    rows: list[int],
    by_source: dict[str, Any],
    pg_row: tuple[int, str],
) -> Iterator[Probe | str]:
    """A value that breaks one CHECK and no other: found on a scratch table that holds this
    rule alone (SQLite checks every rule at once), then sent to PostgreSQL, which must refuse
    it by this rule's constraint."""
    ddl = scratch.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (table.source,),
    ).fetchone()
    for rule in table.checks:
        what = f"CHECK ({rule.sqlite or rule.postgres}) of {table.source}"
        try:
            tree = sqlglot.parse_one(rule.sqlite or rule.postgres, read="sqlite")
            alone = _one_rule(str(ddl[0]), rule.sqlite) if ddl and rule.sqlite else None
        except sqlglot.errors.SqlglotError:
            alone = None
        if alone is None:
            yield f"{what}: its table is not rewritten by sqlglot with this rule alone"
            continue
        names = {sqlite_fold(c.name) for c in tree.find_all(exp.Column)}
        columns = [by_source[n] for n in names if n in by_source]
        if len(columns) != 1 or columns[0].convert not in _CANDIDATES:
            yield f"{what}: a rule over several columns or of a converted kind"
            continue
        column = columns[0]
        single = _memory(lite)
        try:
            single.execute(alone)
            _copy_rows(single, lite, table, f"WHERE {_loc(lite, table)} = {int(rows[0])}")
            found = _breaking(conn, single, table, rule.name, column, rows[0], pg_row)
        except sqlite3.Error as exc:
            yield f"{what}: its scratch table is refused by SQLite ({exc})"
            continue
        finally:
            single.close()
        yield (
            found
            if found is not None
            else (
                f"{what}: none of {len(_CANDIDATES[column.convert])} plain values breaks it alone"
            )
        )


def _one_rule(ddl: str, keep: str) -> str:
    """A CREATE TABLE with every CHECK but `keep` taken out, written back by sqlglot."""
    tree = sqlglot.parse_one(ddl, read="sqlite")
    for found in list(tree.find_all(exp.CheckColumnConstraint)):
        if found.this.sql("sqlite") != keep:
            holder = found.parent
            (holder if isinstance(holder, exp.ColumnConstraint | exp.Constraint) else found).pop()
    return tree.sql("sqlite")


def _breaking(
    conn: Conn,
    single: sqlite3.Connection,
    table: Table,
    name: str,
    column: Any,
    row: int,
    pg_row: tuple[int, str],
) -> Probe | None:
    for value in _CANDIDATES[column.convert]:
        if not _sqlite_refuses(single, table, f"{quote_name(column.source)} = ?", (value,), row):
            continue
        write = f"{column.source} set to {value!r}"
        refusal = _postgres_refusal(
            conn,
            table,
            sql.SQL("{} = {}").format(sql.Identifier(column.name), sql.Literal(value)),
            pg_row,
            (psycopg.errors.IntegrityError,),
        )
        if refusal is None:
            return Probe(f"CHECK {name}", write, True, False)
        if isinstance(refusal, psycopg.errors.CheckViolation):
            if refusal.diag.constraint_name == name:
                return Probe(f"CHECK {name}", write, True, True)
        # Else another rule of PostgreSQL's refused it first: try the next value.
    return None


def _both(
    conn: Conn,
    scratch: sqlite3.Connection,
    table: Table,
    rule: str,
    write: str,
    postgres_set: sql.Composable,
    sqlite_set: str,
    row: int,
    pg_row: tuple[int, str],
) -> Probe:
    sqlite_refused = _sqlite_refuses(scratch, table, sqlite_set, (), row)
    refusal = _postgres_refusal(
        conn,
        table,
        postgres_set,
        pg_row,
        (psycopg.errors.IntegrityError, psycopg.errors.DataError),
    )
    return Probe(rule, write, sqlite_refused, refusal is not None)


def _sqlite_refuses(
    scratch: sqlite3.Connection, table: Table, assignments: str, values: tuple[Any, ...], row: int
) -> bool:
    """Whether SQLite refuses `UPDATE table SET <assignments>` on one row (rolled back)."""
    scratch.execute("SAVEPOINT probe")
    try:
        scratch.execute(
            f"UPDATE {quote_name(table.source)} SET {assignments} "  # noqa: S608
            f"WHERE {_loc(scratch, table)} = ?",
            (*values, row),
        )
        return False
    except sqlite3.IntegrityError:
        return True
    finally:
        scratch.execute("ROLLBACK TO probe")
        scratch.execute("RELEASE probe")


def _postgres_refusal(
    conn: Conn,
    table: Table,
    assignments: sql.Composable,
    row: tuple[int, str],
    refusals: tuple[type[psycopg.Error], ...],
) -> psycopg.Error | None:
    """The error PostgreSQL refuses `UPDATE ... SET <assignments>` on one row with (one of
    `refusals`), or None when it takes it; rolled back either way."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE {}").format(_target(table), assignments, _row(row))
            )
    except refusals as exc:
        return exc
    return None


def _target(table: Table) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(STAGING), sql.Identifier(table.name))


def _row(row: tuple[int, str]) -> sql.Composable:
    """One row of the staging table (of one of its months, when partitioned), by its place."""
    return sql.SQL("tableoid = {} AND ctid = {}::tid").format(
        sql.Literal(row[0]), sql.Literal(row[1])
    )


def _pg_rows(conn: Conn, table: Table, keys: list[str]) -> list[tuple[int, str]]:
    """Two rows of the staging table (whose `keys` are all set), found without a sort."""
    where = (
        sql.SQL(" WHERE ")
        + sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(k)) for k in keys)
        if keys
        else sql.SQL("")
    )
    rows = conn.execute(
        sql.SQL("SELECT tableoid::int, ctid::text FROM {}{} LIMIT 2").format(_target(table), where)
    ).fetchall()
    return [(int(str(r[0])), str(r[1])) for r in rows]
