"""Draft a complete plan from a SQLite file: introspect, infer one rule per kind, say what was seen.

Each inference returns its choice and what it saw, so the YAML carries the evidence beside the
choice. Wherever the draft must guess, it picks what loses nothing and keeps the app working;
the load then checks every value, so a wrong guess stops the run naming the row, never in silence.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from sqlglot import exp

from emrsim_assets.deep import deep
from emrsim_assets.errors import PlanError, SourceError
from emrsim_assets.kinds import KINDS, jsonb_accepts
from emrsim_assets.plan.load import default_problem
from emrsim_assets.plan.model import sqlite_fold
from emrsim_assets.plan.names import MAX_NAME, MAX_TABLE_NAME, target_name
from emrsim_assets.rules import (
    checks_of,
    deferred_references,
    generated_of,
    index_of,
    trigger_form,
    view_query,
)
from emrsim_assets.source import (
    app_collations,
    column_collations,
    count_storage_classes,
    open_readonly,
    quote_name,
    row_locator,
)

# Only a large table with a key is partitioned by month. A month is a table of its own: its DDL,
# indexes, ANALYZE and attach cost a few hundred milliseconds each, its unique indexes must carry
# the month, and references into it cannot be enforced. Below a million rows a whole-table
# reload takes seconds and the months buy nothing but that cost.
PARTITION_MIN_ROWS = 1_000_000
SAMPLE_ROWS = 2_000  # from each end and the middle of a table: what a format is inferred from
EXACT_ROWS = 100_000  # up to this many rows, formats are inferred from the first rows
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|z|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A UUID's 32 hex digits without dashes (Django's and SQLAlchemy's UUID on SQLite): a version
# digit and an RFC variant digit where a UUID has them, so that a column of md5 sums is no UUID.
_HEX_UUID = re.compile(r"^[0-9a-f]{12}[1-8][0-9a-f]{3}[89ab][0-9a-f]{15}$")
_EPOCH_TEXT = re.compile(r"^-?\d+(\.\d{1,6})?$")
_VARCHAR = re.compile(r"^\s*(?:VAR)?CHAR(?:ACTER)?\s*\(\s*(\d+)\s*\)", re.IGNORECASE)
_TIME_NAME = re.compile(r"(_at|_on|_time|_ts|timestamp|date|datetime)$", re.IGNORECASE)
# Plausible epochs (1970 to 2100) per unit: a column outside every range is not a timestamp.
_EPOCH_RANGES = {"s": (0, 4_102_444_800), "ms": (10**11, 4_102_444_800_000)}
_EPOCH_RANGES["us"] = (10**14, 4_102_444_800_000_000)
# Instants from 2000 to 2100 per unit: what a column of epochs looks like by its values alone.
_RECENT_EPOCHS = {
    unit: (946_684_800 * scale, 4_102_444_800 * scale)
    for unit, scale in (("s", 1), ("ms", 1_000), ("us", 1_000_000))
}


@dataclass
class _Column:
    source: str
    declared: str
    notnull: bool
    default: str | None
    pk: int
    hidden: int
    classes: dict[str, int] = field(default_factory=dict)
    # Over every row: the least and greatest INTEGER-class value, and the infinite REALs.
    low: int | None = None
    high: int | None = None
    infinities: int = 0
    samples: list[Any] = field(default_factory=list)
    entry: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Table:
    source: str
    name: str
    rows: int
    without_rowid: bool
    columns: list[_Column]
    foreign_keys: list[dict[str, Any]]
    indexes: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    entry: dict[str, Any] = field(default_factory=dict)
    ddl: str = ""


def draft_plan(path: Path) -> str:
    """The YAML text of a plan for the SQLite file at `path`, with what was seen as comments."""
    started = time.perf_counter()
    conn = open_readonly(path)
    # Invalid UTF-8 must not stop a draft: the load names such a row itself.
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        return _Drafter(conn, path).draft(started)
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"Cannot read SQLite file {path} to draft a plan: {exc}.") from None
    finally:
        conn.close()


class _Drafter:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.tables: list[_Table] = []
        self.skips: list[dict[str, Any]] = []
        self.view_sql: list[tuple[str, str]] = []  # (name, CREATE VIEW) of each view
        self.views: list[dict[str, Any]] = []
        # FTS table -> (the table whose rows it indexes, its columns): a search column there.
        self.searches: dict[str, tuple[str, list[str]]] = {}
        self.table_names: set[str] = set()
        self.index_names: set[str] = set()
        self.partition_column: _Column | None = None
        self.collations: dict[tuple[str, str], str] = {}

    # -- introspection -------------------------------------------------------------------------
    def draft(self, started: float) -> str:
        kinds = {
            str(row[1]): (str(row[2]), bool(row[4]))
            for row in self.conn.execute("SELECT * FROM pragma_table_list WHERE schema = 'main'")
        }
        objects = self.conn.execute(
            "SELECT name, type, coalesce(sql, ''), tbl_name FROM sqlite_master "
            "WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\' ORDER BY name"
        ).fetchall()
        triggers = []
        for name, kind, ddl, on in objects:
            table_kind, without_rowid = kinds.get(name, ("table", False))
            module = _module(ddl) if table_kind == "virtual" else ""
            if kind == "trigger":
                triggers.append((name, ddl, on))
            elif kind == "view":
                self.view_sql.append((name, ddl))
            elif module in ("fts3", "fts4", "fts5"):
                self._full_text(name, ddl)
            elif module in ("rtree", "rtree_i32"):
                self.tables.append(self._introspect(name, False))
                self.tables[-1].ddl = ddl
                self.tables[-1].notes.append(
                    "an R*Tree virtual table: its rows arrive as a plain table; its range "
                    "index does not (index the bounds in PostgreSQL, or use PostGIS)"
                )
            elif table_kind == "virtual":
                self._skip(
                    name,
                    f"a virtual table (its module keeps the data in shadow tables): {_one_line(ddl)}",
                )
            elif table_kind == "shadow":
                self._skip(name, "a shadow table of a virtual table: rebuilt from it, not app data")
            else:
                self.tables.append(self._introspect(name, without_rowid))
                self.tables[-1].ddl = ddl
        self.collations = column_collations(self.conn)
        rtrim = sorted({f"{t}.{c}" for (t, c), name in self.collations.items() if name == "rtrim"})
        if rtrim:
            self._skip(
                "rtrim",
                f"SQLite's RTRIM collation (declared by {', '.join(rtrim)}): PostgreSQL compares "
                "these values with their trailing spaces, so 'a' and 'a ' are two values there.",
                kind="collation",
            )
        for collation in app_collations(self.conn):
            users = sorted({on for _, _, ddl, on in objects if collation in ddl})
            self._skip(
                collation,
                f"a collation of the app's own (declared in {', '.join(users) or 'indexes'}): "
                "read here with a Unicode case-insensitive stand-in; PostgreSQL compares these "
                "values as written (binary), so an order or uniqueness that ignored case is "
                "not kept. Compare with lower() in the app, or declare an ICU collation.",
                kind="collation",
            )
        if not self.tables:
            found = len(self.skips) + len(self.view_sql)
            others = f", only {found} views, triggers or virtual tables" if found else ""
            raise SourceError(
                f"SQLite file {self.path} has no tables to migrate{others}: is it the app's "
                "database (EMRSIM_SQLITE_PATH, or --sqlite)?"
            )
        for table in self.tables:
            self._infer_columns(table)
        for table in self.tables:
            self._infer_generated(table)
        for table in self.tables:
            self._infer_key(table)
        for table in self.tables:
            self._infer_references(table)
        partitioned = self._choose_partitioned()
        for table in self.tables:
            self._infer_indexes(table, partitioned)
            self._keep_classes_in_keys(table)
            self._infer_checks(table, partitioned)
        for table in self.tables:
            self._infer_composite_references(table, partitioned)
        self._infer_searches(partitioned)
        self._infer_views()
        for name, ddl, on in triggers:
            self._infer_trigger(name, ddl, on, partitioned)
        return self._render(partitioned, time.perf_counter() - started)

    def _infer_checks(self, table: _Table, partitioned: _Table | None) -> None:
        """The table's CHECK constraints, written for PostgreSQL by sqlglot; what does not
        translate (or sits on the partitioned table) is listed under skip with why."""
        if "check" not in table.ddl.lower():
            return
        names = {c.source: c.entry["name"] for c in table.columns}
        try:
            translated, refused = checks_of(
                table.ddl,
                names,
                frozenset(
                    c.entry["name"] for c in table.columns if c.entry.get("convert") == "boolean"
                ),
            )
        except sqlglot.errors.ParseError as exc:
            translated, refused = [], [f"its CREATE TABLE is not read by sqlglot ({exc})"]
        if table is partitioned:
            refused += [f"CHECK ({s}): on the table partitioned by month" for s, _ in translated]
            translated = []
        taken: set[str] = set()
        if translated:
            table.entry["checks"] = [
                {
                    "name": target_name(f"{table.name}_check_{n}", taken, MAX_NAME),
                    "postgres": postgres,
                    "sqlite": sqlite,
                }
                for n, (sqlite, postgres) in enumerate(translated, start=1)
            ]
            table.notes.append(f"{len(translated)} CHECK constraint(s), translated by sqlglot")
        for why in refused:
            self._skip(f"{table.source}: {why.split('): ')[0]})", why, kind="check")

    def _keep_classes_in_keys(self, table: _Table) -> None:
        """Beside an any_class column in a key or unique index, its storage class: SQLite
        keeps 6, '6' and x'36' apart (diskcache's UNIQUE(key, raw)); as text or bytes alone
        they would be one key."""
        keys: list[list[str]] = []
        if table.entry.get("primary_key"):
            keys.append(table.entry["primary_key"])
        keys += [ix.get("columns", []) for ix in table.entry.get("indexes", []) if ix.get("unique")]
        mixed = [
            c
            for c in table.columns
            if c.entry.get("any_class") and any(c.entry["name"] in key for key in keys)
        ]
        taken = {c.entry["name"] for c in table.columns}
        for column in mixed:
            name = target_name(f"{column.entry['name']}_class", taken, MAX_NAME)
            companion = _Column(column.source, "", True, None, 0, 0)
            companion.entry = {"name": name, "source": column.source, "convert": "storage_class"}
            companion.notes = [
                f"SQLite's storage class of {column.source}: it is in a key with values of "
                "several classes, which it keeps apart"
            ]
            table.columns.insert(table.columns.index(column) + 1, companion)
            for key in keys:
                if column.entry["name"] in key:
                    key.insert(key.index(column.entry["name"]) + 1, name)

    def _skip(self, name: str, reason: str, column: str | None = None, kind: str = "table") -> None:
        """A skip entry: a table or view (`kind` table, with a column or not), or a trigger."""
        entry: dict[str, Any] = {kind: name}
        if column is not None:
            entry["column"] = column
        entry["reason"] = reason
        self.skips.append(entry)

    def _introspect(self, source: str, without_rowid: bool) -> _Table:
        columns = [
            _Column(str(r[1]), str(r[2] or ""), bool(r[3]), r[4], int(r[5]), int(r[6]))
            for r in self.conn.execute("SELECT * FROM pragma_table_xinfo(?)", (source,))
        ]
        planned = []
        for column in columns:
            if column.hidden == 1:
                continue  # a virtual table's own hidden column (FTS5's rank): not data
            planned.append(column)
        rows = self._sample(source, planned)
        fks: dict[int, list[Any]] = {}
        for r in self.conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (source,)):
            fks.setdefault(int(r[0]), []).append(r)
        foreign_keys = [
            {
                "table": str(parts[0][2]),
                "from": [str(p[3]) for p in parts],
                "to": [p[4] for p in parts],
                "on_update": str(parts[0][5]).lower(),
                "on_delete": str(parts[0][6]).lower(),
            }
            for parts in fks.values()
        ]
        indexes = []
        for r in self.conn.execute("SELECT * FROM pragma_index_list(?)", (source,)):
            info = self.conn.execute(
                "SELECT cid, name FROM pragma_index_info(?) ORDER BY seqno", (r[1],)
            ).fetchall()
            indexes.append(
                {
                    "name": str(r[1]),
                    "unique": bool(r[2]),
                    "origin": str(r[3]),
                    "partial": bool(r[4]),
                    "columns": [None if cid < 0 else str(name) for cid, name in info],
                }
            )
        name = target_name(source, self.table_names, MAX_TABLE_NAME)
        return _Table(source, name, rows, without_rowid, planned, foreign_keys, indexes)

    def _profile(self, source: str, columns: list[_Column]) -> int:
        """One scan of every row: the row count and, per column, its storage classes, its
        integers' range and its infinities (a value no sample may miss: one integer past 2^53
        at row 7,000 decides that no double holds the column)."""
        rows, per_column = count_storage_classes(self.conn, source, [c.source for c in columns])
        parts = []
        for column in columns:
            name = quote_name(column.source)
            integer = f"iif(typeof({name}) = 'integer', {name}, NULL)"
            parts += [f"min({integer})", f"max({integer})", f"sum({name} IN (9e999, -9e999))"]
        if parts:
            found = self.conn.execute(
                f"SELECT {', '.join(parts)} FROM {quote_name(source)}"  # noqa: S608
            ).fetchone()
            for i, column in enumerate(columns):
                column.low, column.high = found[3 * i], found[3 * i + 1]
                column.infinities = int(found[3 * i + 2] or 0)
        for column, kinds in zip(columns, per_column, strict=True):
            column.classes = kinds
        return rows

    def _sample(self, source: str, columns: list[_Column]) -> int:
        """The row count, every column's profile over every row, and values from both ends
        and the middle of the table to infer text formats from (old rows and new ones may be
        written differently; the load checks every value against the format chosen)."""
        rows = self._profile(source, columns)
        select = ", ".join(quote_name(c.source) for c in columns)
        locator = row_locator(self.conn, source)
        if rows <= EXACT_ROWS or locator is None:
            sample = self.conn.execute(
                f"SELECT {select} FROM {quote_name(source)} LIMIT ?",  # noqa: S608
                (3 * SAMPLE_ROWS,),
            ).fetchall()
        else:
            table = quote_name(source)
            sample = self.conn.execute(
                f"SELECT {select} FROM {table} ORDER BY {locator} LIMIT ?",  # noqa: S608
                (SAMPLE_ROWS,),
            ).fetchall()
            sample += self.conn.execute(
                f"SELECT {select} FROM {table} ORDER BY {locator} DESC LIMIT ?",  # noqa: S608
                (SAMPLE_ROWS,),
            ).fetchall()
            low, high = self.conn.execute(
                f"SELECT min({locator}), max({locator}) FROM {table}"  # noqa: S608
            ).fetchone()
            probe = f"SELECT {select} FROM {table} WHERE {locator} >= ? ORDER BY {locator} LIMIT 1"  # noqa: S608
            step = (high - low) / SAMPLE_ROWS
            for i in range(SAMPLE_ROWS):
                sample += self.conn.execute(probe, (int(low + i * step),)).fetchall()
        for i, column in enumerate(columns):
            column.samples = [row[i] for row in sample if row[i] is not None]
        return rows

    # -- one rule per kind of column --------------------------------------------------------------
    def _infer_columns(self, table: _Table) -> None:
        taken: set[str] = set()
        for column in table.columns:
            entry: dict[str, Any] = {"name": target_name(column.source, taken, MAX_NAME)}
            if entry["name"] != column.source:
                entry["source"] = column.source
            convert, extra, saw = _infer_convert(column)
            collation = self.collations.get((table.source, column.source))
            if collation == "nocase":
                if convert != "text":
                    saw += f"; declared COLLATE NOCASE: text (not {convert}), to compare as SQLite does"
                    convert, extra = "text", {k: v for k, v in extra.items() if k == "type"}
                extra["collation"] = "nocase"
                saw += (
                    "; COLLATE NOCASE: its key and unique indexes compare ASCII letters without "
                    "case (an index on lower()); the app's own WHERE clauses on it must use lower()"
                )
            entry["convert"] = convert
            entry.update(extra)
            if column.notnull:
                entry["nullable"] = False
            pg_type = extra.get("type", KINDS[convert].pg_type)
            default, default_note = _infer_default(column.default, convert, pg_type)
            if default is not None:
                entry["default"] = default
            elif default_note:
                self._skip(table.source, default_note, column.source, kind="default")
            column.entry = entry
            column.notes.insert(0, saw)
            if default_note:
                column.notes.append(default_note)

    def _infer_generated(self, table: _Table) -> None:
        """Generated columns: kept as PostgreSQL's own (GENERATED ALWAYS AS ... STORED) where
        sqlglot writes the expression and the column is text, integer or real; else listed
        under skip, saying why."""
        if not any(c.hidden in (2, 3) for c in table.columns):
            return
        expressions = generated_of(
            table.ddl,
            {c.source: c.entry["name"] for c in table.columns if c.hidden not in (2, 3)},
        )
        for column in list(table.columns):
            if column.hidden not in (2, 3):
                continue
            written = expressions.get(sqlite_fold(column.source), "!sqlglot does not read it")
            if not written.startswith("!") and column.entry["convert"] not in (
                "text",
                "integer",
                "real",
            ):
                written = f"!it is {column.entry['convert']}, and generated is kept for text, integer and real"
            if written.startswith("!"):
                table.columns.remove(column)
                self._skip(
                    table.source,
                    f"a generated column not kept ({written[1:]}): SQLite computes it from the "
                    "others; declare it as GENERATED by hand if the app reads it",
                    column.source,
                )
                continue
            column.entry.pop("default", None)
            column.entry["generated"] = written
            column.notes.append(
                f"generated ({written}): loaded, proven equal to SQLite's on every row, then "
                "made PostgreSQL's GENERATED ALWAYS AS ... STORED"
            )

    def _infer_key(self, table: _Table) -> None:
        keys = sorted((c for c in table.columns if c.pk), key=lambda c: c.pk)
        if not keys:
            table.notes.append(
                "no primary key: the table is reloaded whole, and its rows have no key to name"
            )
            return
        with_nulls = [c for c in keys if c.classes.get("null")]
        if with_nulls:
            names = ", ".join(c.source for c in with_nulls)
            table.notes.append(
                f"its declared key has NULLs in {names} (SQLite allows that, PostgreSQL does not): "
                "no primary key; a unique index keeps the key unique where it is set"
            )
            table.indexes.append(
                {
                    "name": f"{table.source}_key",
                    "unique": True,
                    "origin": "pk",
                    "partial": False,
                    "columns": [c.source for c in keys],
                }
            )
            return
        table.entry["primary_key"] = [c.entry["name"] for c in keys]
        for column in keys:
            column.entry.pop("nullable", None)
        if len(keys) == 1 and keys[0].entry["convert"] == "integer":
            keys[0].entry["identity"] = True
            keys[0].notes.append("an integer key: kept as bigint; new rows numbered after the last")
        if table.without_rowid:
            table.notes.append("WITHOUT ROWID: read in primary-key order")

    def _infer_references(self, table: _Table) -> None:
        declared = {tuple(fk["from"]): fk for fk in table.foreign_keys}
        for column in table.columns:
            fk = declared.get((column.source,))
            parent = self._table(fk["table"]) if fk else self._named_parent(column, table)
            unique_target: _Column | None = None
            if parent is None and not fk:
                parent, unique_target = self._unique_parent(column, table)
            if parent is None:
                if fk:
                    column.notes.append(
                        f"declares a reference to {fk['table']}, which is not a table here"
                    )
                continue
            key = _single_key(parent)
            if fk and fk["to"][0] not in (None, key.source if key else None):
                # A declared reference to a unique column that is not the key.
                unique_target = _unique_column(parent, str(fk["to"][0]))
            if unique_target is not None:
                key = unique_target
            if key is None or (
                fk and unique_target is None and fk["to"][0] not in (None, key.source)
            ):
                if fk:
                    column.notes.append(
                        f"references {fk['table']}({fk['to'][0]}), which is not its one-column "
                        "primary key: checked by nothing, kept as a value"
                    )
                continue
            if parent is table and key is column:
                continue
            if not fk and key.entry["convert"] != column.entry["convert"]:
                continue
            orphans, total = self._orphans(table, column, parent, key)
            if not fk and (total == 0 or orphans * 2 > total):
                if total:
                    column.notes.append(
                        f"named like a reference to {parent.name}, but {orphans:,} of {total:,} "
                        "values are not its keys: kept as a value"
                    )
                continue
            column.entry["convert"] = key.entry["convert"]
            for copied in ("type", "epoch"):
                if copied in key.entry:
                    column.entry[copied] = key.entry[copied]
                else:
                    column.entry.pop(copied, None)
            column.entry["references"] = parent.name
            if unique_target is not None:
                column.entry["references_column"] = key.entry["name"]
            if fk:
                for action in ("on_delete", "on_update"):
                    if fk[action] not in ("", "no action"):
                        column.entry[action] = fk[action]
                if (sqlite_fold(column.source),) in deferred_references(table.ddl):
                    column.entry["deferred"] = True
            how = (
                "declared"
                if fk
                else f"its values all sit in {parent.name}.{key.entry['name']}, a unique column"
                if unique_target is not None
                else "inferred from its name and values"
            )
            if orphans or not fk:
                column.entry["enforce"] = "report"
                column.notes.append(
                    f"a reference to {parent.name} ({how}): {orphans:,} of {total:,} "
                    f"{table.source} rows point at no {parent.source} row; reported, not "
                    "enforced, so the app may go on writing them"
                )
            else:
                column.notes.append(f"a reference to {parent.name} ({how}), every value resolves")

    def _infer_composite_references(self, table: _Table, partitioned: _Table | None) -> None:
        """Declared foreign keys over several columns: kept as the table's `references`, each
        with its actions, its deferral and its orphans counted on the file; one the plan cannot
        keep is listed under skip with why."""
        deferred = deferred_references(table.ddl)
        for fk in table.foreign_keys:
            if len(fk["from"]) < 2:
                continue
            label = f"{table.source}({', '.join(fk['from'])})"
            try:
                entry = self._composite(table, fk, partitioned)
            except PlanError as exc:
                self._skip(
                    label, f"a reference to {fk['table']} not carried over: {exc}", kind="reference"
                )
                continue
            if tuple(sqlite_fold(c) for c in fk["from"]) in deferred:
                entry["deferred"] = True
            table.entry.setdefault("references", []).append(entry)

    def _composite(
        self, table: _Table, fk: dict[str, Any], partitioned: _Table | None
    ) -> dict[str, Any]:
        parent = self._table(fk["table"])
        if parent is None:
            raise PlanError(f"{fk['table']} is not a table here")
        keys = sorted((c for c in parent.columns if c.pk), key=lambda c: c.pk)
        to = fk["to"] if None not in fk["to"] else [c.source for c in keys]
        mine = [next((c for c in table.columns if c.source == f), None) for f in fk["from"]]
        theirs = [next((c for c in parent.columns if c.source == t), None) for t in to]
        if None in mine or None in theirs or len(to) != len(mine):
            raise PlanError("a column of it is not migrated")
        own = [c for c in mine if c is not None]
        targets = [c for c in theirs if c is not None]
        if any(a.entry["convert"] != b.entry["convert"] for a, b in zip(own, targets, strict=True)):
            raise PlanError("its columns convert otherwise than the ones they point at")
        wanted = {c.entry["name"] for c in targets}
        key = parent.entry.get("primary_key")
        unique = set([key] if isinstance(key, str) else key or []) == wanted or any(
            ix.get("unique")
            and "columns" in ix
            and "where" not in ix
            and "expressions" not in ix
            and set(ix["columns"]) == wanted
            for ix in parent.entry.get("indexes", [])
        )
        if not unique:
            raise PlanError(f"({', '.join(to)}) is not a unique key of {parent.source} here")
        row = self.conn.execute(
            f"SELECT count(*), sum(NOT EXISTS (SELECT 1 FROM {quote_name(parent.source)} p "  # noqa: S608
            "WHERE "
            + " AND ".join(
                f"p.{quote_name(b.source)} = c.{quote_name(a.source)}"
                for a, b in zip(own, targets, strict=True)
            )
            + f")) FROM {quote_name(table.source)} c WHERE "
            + " AND ".join(f"c.{quote_name(a.source)} IS NOT NULL" for a in own)
        ).fetchone()
        orphans, total = int(row[1] or 0), int(row[0] or 0)
        names = [c.entry["name"] for c in own]
        entry: dict[str, Any] = {
            "name": target_name(f"{table.name}_{'_'.join(names)}_fkey", self.index_names, MAX_NAME),
            "columns": names,
            "references": parent.name,
            "referenced_columns": [c.entry["name"] for c in targets],
        }
        for action in ("on_delete", "on_update"):
            if fk[action] not in ("", "no action"):
                entry[action] = fk[action]
        if orphans or parent is partitioned:
            entry["enforce"] = "report"
            table.notes.append(
                f"reference ({', '.join(names)}) -> {parent.name}: {orphans:,} of {total:,} rows "
                "point at no row there; reported, not enforced"
                if orphans
                else f"reference ({', '.join(names)}) -> {parent.name}, partitioned by month: "
                "reported, not enforced"
            )
        else:
            table.notes.append(
                f"reference ({', '.join(names)}) -> {parent.name}: every one of {total:,} resolves"
            )
        return entry

    def _full_text(self, name: str, ddl: str) -> None:
        """An FTS3/4/5 table: its text arrives as a table (its own, or the one it indexes with
        content=), and its search as a tsvector column there; a contentless one is skipped."""
        columns = [
            str(r[1])
            for r in self.conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,))
            if not r[6]
        ]
        content = re.search(r"\bcontent\s*=\s*(['\"]?)([^'\",)]*)\1", ddl, re.I)
        if content is not None and not content.group(2):
            self._skip(
                name,
                "a contentless full-text table: it holds an index of text kept elsewhere, not "
                f"the text; search that text in PostgreSQL with a tsvector. {_one_line(ddl)}",
            )
            return
        if content is not None:
            self.searches[name] = (content.group(2), columns)
            self._skip(
                name,
                f"a full-text table over {content.group(2)} (content=): its rows are "
                f"{content.group(2)}'s, and its search is {content.group(2)}'s search column",
            )
            return
        self.tables.append(self._introspect(name, False))
        self.tables[-1].ddl = ddl
        self.searches[name] = (name, columns)

    def _infer_searches(self, partitioned: _Table | None) -> None:
        for fts, (holder, columns) in self.searches.items():
            table = self._table(holder)
            if table is None or table is partitioned:
                continue
            by_source = {sqlite_fold(c.source): c for c in table.columns}
            found = [by_source.get(sqlite_fold(c)) for c in columns]
            if None in found or any(c.entry["convert"] != "text" for c in found if c):
                table.notes.append(f"full-text table {fts}: its columns are not all text here")
                continue
            table.entry["search"] = {
                "columns": [c.entry["name"] for c in found if c],
                "config": "simple",
                "source": fts,
            }
            table.notes.append(
                f"full-text search of {fts} kept as the tsvector column search (GIN-indexed); "
                f"the app's `{fts} MATCH ?` becomes "
                "`search @@ websearch_to_tsquery('simple', %s)`"
            )

    def _infer_trigger(self, name: str, ddl: str, on: str, partitioned: _Table | None) -> None:
        """A trigger in a form PL/pgSQL is written for (touch, guard), kept on its table; an
        FTS table's sync trigger, named as not needed; any other, listed under skip with its
        SQL and why."""
        searched = next(
            (f for f in self.searches if re.search(rf"\b{re.escape(f)}\b", ddl, re.I)), None
        )
        if searched:
            self._skip(
                name,
                f"a trigger on {on} that keeps the full-text table {searched} in step: not "
                "needed in PostgreSQL, where the search column is computed from the row. Its "
                f"SQLite SQL: {_one_line(ddl)}",
                kind="trigger",
            )
            return
        table = self._table(on)
        try:
            if table is None:
                raise PlanError(f"{on} is not migrated")
            if table is partitioned:
                raise PlanError("its table is partitioned by month")
            form = trigger_form(
                ddl,
                {c.source: c.entry["name"] for c in table.columns},
                {c.entry["name"]: c.entry["convert"] for c in table.columns},
                {
                    sqlite_fold(t.source): (t.name, {c.source: c.entry["name"] for c in t.columns})
                    for t in self.tables
                },
            )
        except PlanError as exc:
            self._skip(
                name,
                f"a trigger on {on}, not written again in PL/pgSQL ({exc}); if the app relies "
                f"on it, write it by hand. Its SQLite SQL: {_one_line(ddl)}",
                kind="trigger",
            )
            return
        entry: dict[str, Any] = {
            "name": target_name(name, self.index_names, MAX_NAME),
            "source": name,
        }
        if form.form == "touch":
            entry["touch"] = form.column
        else:
            entry["events"] = list(form.events)
        if form.of:
            entry["of"] = list(form.of)
        if form.when is not None:
            entry["when"] = form.when
        if form.message is not None:
            entry["raise"] = form.message
        if form.into is not None:
            entry["insert_into"] = form.into
            entry["columns"] = list(form.columns)
            entry["values"] = list(form.values)
        table.entry.setdefault("triggers", []).append(entry)
        table.notes.append(f"trigger {name}: written again in PL/pgSQL ({form.form})")

    def _infer_views(self) -> None:
        """Each view's SELECT written for PostgreSQL by sqlglot over the drafted tables, to be
        created at cutover and proven there; one it cannot write is listed under skip."""
        tables = [
            _Drafted(
                t.name,
                t.source,
                [_Drafted(c.entry["name"], c.source, [], c.entry["convert"]) for c in t.columns],
            )
            for t in self.tables
        ]
        taken = {t.name for t in self.tables}
        for name, ddl in self.view_sql:
            try:
                body = view_query(ddl, tables)
                width = len(
                    self.conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,)).fetchall()
                )
                query = sqlglot.parse_one(body, read="postgres")
                written = len(query.selects) if isinstance(query, exp.Query) else 0
                if width != written:
                    raise PlanError(
                        f"it gives {width} columns in SQLite and would give {written} over the "
                        "migrated tables (a column it reads is not migrated)"
                    )
            except PlanError as exc:
                self._skip(
                    name,
                    f"a view not recreated: {exc}. Its SQLite SQL: {_one_line(ddl)}",
                )
                continue
            entry: dict[str, Any] = {"name": target_name(name, taken, MAX_TABLE_NAME)}
            if entry["name"] != name:
                entry["source"] = name
            entry["postgres"] = body
            self.views.append(entry)

    def _unique_parent(
        self, column: _Column, table: _Table
    ) -> tuple[_Table | None, _Column | None]:
        """Another table's unique one-column key or index whose name ends this column's (the
        app's sessions.sps_scenario_id -> scenarios.scenario_id), of the same kind, that every
        value of the column finds (checked on the file)."""
        if column.pk or column.entry.get("convert") not in ("text", "integer"):
            return None, None
        name = column.source.lower()
        for parent in self.tables:
            if parent is table:
                continue
            for unique in _unique_columns(parent):
                target = unique.source.lower()
                if len(name) <= len(target) or not name.endswith(target) or len(target) < 4:
                    continue
                if unique.entry.get("convert") != column.entry["convert"]:
                    continue
                orphans, total = self._orphans(table, column, parent, unique)
                if total and not orphans:
                    return parent, unique
        return None, None

    def _named_parent(self, column: _Column, table: _Table) -> _Table | None:
        match = re.match(r"^(.*?)_?id$", column.source, re.IGNORECASE)
        if not match or not match.group(1) or column.pk:
            return None
        stem = match.group(1).lower().rstrip("_")
        for candidate in self.tables:
            name = candidate.source.lower()
            if candidate is not table and name in (stem, f"{stem}s", f"{stem}es"):
                return candidate
        return None

    def _table(self, source: str) -> _Table | None:
        return next((t for t in self.tables if sqlite_fold(t.source) == sqlite_fold(source)), None)

    def _orphans(
        self, table: _Table, column: _Column, parent: _Table, key: _Column
    ) -> tuple[int, int]:
        row = self.conn.execute(
            f"SELECT count(*), sum(NOT EXISTS (SELECT 1 FROM {quote_name(parent.source)} p "  # noqa: S608
            f"WHERE p.{quote_name(key.source)} = c.{quote_name(column.source)})) "
            f"FROM {quote_name(table.source)} c WHERE c.{quote_name(column.source)} IS NOT NULL"
        ).fetchone()
        return int(row[1] or 0), int(row[0] or 0)

    def _choose_partitioned(self) -> _Table | None:
        """The largest table with a NOT NULL timestamp column, when partitioning loses nothing."""
        candidates = []
        for table in self.tables:
            for column in table.columns:
                if column.entry["convert"] == "timestamp" and table.rows:
                    candidates.append((table.rows, column.source == "created_at", table, column))
        if not candidates:
            return None
        _, _, table, column = max(candidates, key=lambda c: (c[0], c[1]))
        why_not = None
        if table.rows < PARTITION_MIN_ROWS:
            why_not = (
                f"it has {table.rows:,} rows, fewer than {PARTITION_MIN_ROWS:,}: a whole-table "
                "reload takes seconds, and months would only add their cost"
            )
        elif not table.entry.get("primary_key"):
            why_not = "it has no key: no row to name in a month, and no key to prove unique"
        elif column.classes.get("null"):
            why_not = (
                f"{column.source} has {column.classes['null']:,} NULLs, and a month needs a time"
            )
        elif table.without_rowid:
            why_not = "it is WITHOUT ROWID, and months are read by rowid ranges"
        elif any(c.entry.get("collation") and c.pk for c in table.columns):
            why_not = "its key compares without case (NOCASE), which one month cannot keep"
        elif any(c.entry.get("identity") for c in table.columns):
            why_not = (
                "its integer key numbers the app's new rows, which a partitioned table here does "
                "not keep (turn the key into legacy_id to partition it)"
            )
        else:
            for index in table.indexes:
                if (
                    index["unique"]
                    and index["origin"] != "pk"
                    and column.source not in index["columns"]
                ):
                    why_not = (
                        f"unique index {index['name']} ({', '.join(map(str, index['columns']))}) "
                        "could not be kept: PostgreSQL enforces uniqueness on a partitioned "
                        "table only within one instant's partition, and the app relies on it"
                    )
                    break
        if why_not:
            table.notes.append(
                f"the largest table with a timestamp ({column.source}); not partitioned by month "
                f"because {why_not}"
            )
            return None
        table.entry["partition_by_month"] = column.entry["name"]
        column.entry["nullable"] = False
        table.notes.append(
            f"the largest table with a timestamp: partitioned by month on {column.source}"
        )
        if (
            table.entry.get("primary_key")
            and column.entry["name"] not in table.entry["primary_key"]
        ):
            table.notes.append(
                f"PostgreSQL's key becomes ({', '.join(table.entry['primary_key'])}, "
                f"{column.entry['name']}); the check key_unique_across_months proves the "
                "migrated keys unique across months"
            )
        for other in self.tables:
            for col in other.columns:
                if col.entry.get("references") == table.name:
                    col.entry["enforce"] = "report"
                    col.notes.append(
                        f"{table.name} is partitioned by month, so PostgreSQL cannot enforce "
                        "this reference: reported by a check"
                    )
        self.partition_column = column
        return table

    def _infer_indexes(self, table: _Table, partitioned: _Table | None) -> None:
        by_source = {c.source: c for c in table.columns}
        entries = []
        for index in table.indexes:
            if index["origin"] == "pk" and "primary_key" in table.entry:
                continue
            expressions: list[str] = []
            predicate: str | None = None
            if index["partial"] or None in index["columns"]:
                translated = self._translate_index(table, index, partitioned)
                if translated is None:
                    continue
                columns, expressions, predicate = translated
            elif any(c not in by_source for c in index["columns"]):
                missing = [c for c in index["columns"] if c not in by_source]
                self._skip(
                    index["name"],
                    f"an index on {table.source} over {', '.join(missing)}, which the plan "
                    "does not migrate",
                    kind="index",
                )
                continue
            else:
                columns = [by_source[c].entry["name"] for c in index["columns"]]
            if table is partitioned and index["unique"]:
                partition = table.entry["partition_by_month"]
                if partition not in columns:
                    columns.append(partition)
            name = index["name"]
            if name.startswith("sqlite_autoindex_"):
                name = f"{table.name}_{'_'.join(columns)}_key"
            entry: dict[str, Any] = {"name": target_name(name, self.index_names, MAX_NAME)}
            if columns:
                entry["columns"] = columns
            if expressions:
                entry["expressions"] = expressions
            if predicate is not None:
                entry["where"] = predicate
            if index["unique"]:
                entry["unique"] = True
            if index["origin"] == "c":
                entry["source"] = index["name"]
            entries.append(entry)
        # A reference column the app looks rows up by (a session's turns) gets an index where
        # nothing leads with it: SQLite's app may scan, PostgreSQL's planner then need not.
        # Found by the workload: a session's turns took 19 ms on both sides without one.
        key = table.entry.get("primary_key")
        leading = {e["columns"][0] for e in entries if "columns" in e} | (
            {key if isinstance(key, str) else key[0]} if key else set()
        )
        for column in table.columns:
            name = column.entry["name"]
            if column.entry.get("references") and name not in leading:
                entries.append(
                    {
                        "name": target_name(f"idx_{table.name}_{name}", self.index_names, MAX_NAME),
                        "columns": [name],
                    }
                )
                leading.add(name)
                table.notes.append(
                    f"index on {name}: it references {column.entry['references']}, and no "
                    "index leads with it (lookups by it, and deletes of its parent, need one)"
                )
        if entries:
            table.entry["indexes"] = entries

    def _translate_index(
        self, table: _Table, index: dict[str, Any], partitioned: _Table | None
    ) -> tuple[list[str], list[str], str | None] | None:
        """A partial or expression index written for PostgreSQL by sqlglot, or None with the
        index listed under skip, saying why."""
        row = self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (index["name"],)
        ).fetchone()
        ddl = str(row[0] or "") if row else ""
        names = {c.source: c.entry["name"] for c in table.columns}
        booleans = frozenset(
            c.entry["name"] for c in table.columns if c.entry.get("convert") == "boolean"
        )
        try:
            if table is partitioned and index["unique"]:
                raise PlanError(
                    "a unique index on expressions or with a WHERE cannot span the months of "
                    "the table partitioned by month"
                )
            translated = index_of(ddl, names, booleans)
        except PlanError as exc:
            self._skip(
                index["name"],
                f"an index on {table.source} that is not carried over: {exc}. "
                f"Its SQLite SQL: {_one_line(ddl)}",
                kind="index",
            )
            return None
        table.notes.append(f"index {index['name']}: partial or on expressions, by sqlglot")
        return translated

    # -- the YAML, with what was seen beside each choice -------------------------------------------
    def _render(self, partitioned: _Table | None, seconds: float) -> str:
        """The plan as YAML: every value through the YAML emitter, every comment through
        `_comment`, and the text proven to read back as exactly the plan drafted. A name from
        the file (a newline, a `#`, YAML of its own) stays a value: it cannot add a key."""
        start = self._first_month(partitioned) if partitioned else None
        document: dict[str, Any] = {"version": 1, "source_timezone": "UTC"}
        lines = [
            _comment(
                f"Drafted by `emrsim-migrate plan` from {self.path} on "
                f"{datetime.now(UTC).isoformat(timespec='seconds')} ({seconds:.1f} s)."
            ),
            "# Review it: every choice is followed by what the draft saw. Storage classes,",
            "# integer ranges and infinities are counted over every row; text formats (dates,",
            f"# UUIDs, JSON) are inferred from up to {3 * SAMPLE_ROWS:,} values a column (its",
            f"# first rows, or, past {EXACT_ROWS:,} rows, rows from both ends and the middle); each",
            "# column says how many. The load checks every value, so a guess that does not hold",
            "# stops the run naming the row. The plan format: docs/plan.md.",
            "version: 1",
            "source_timezone: UTC          # naive source timestamps are read in this zone",
        ]
        if start:
            document["partition_start"] = start.isoformat()
            lines.append(f'partition_start: "{start.isoformat()}"  # first month with data')
        document["tables"] = []
        lines.append("tables:")
        for table in _parents_first(self.tables):
            entry, table_lines = self._render_table(table)
            document["tables"].append(entry)
            lines.extend(table_lines)
        if self.views:
            document["views"] = self.views
            lines.append("views:  # recreated at cutover, and proven to give SQLite's rows")
            lines.extend(f"  - {_flow(view)}" for view in self.views)
        if self.skips:
            document["skip"] = self.skips
            lines.append("skip:")
            for skip in self.skips:
                lines.append(f"  - {_flow(skip)}")
        text = "\n".join(lines) + "\n"
        if yaml.safe_load(text) != document:  # never expected: the emitter quotes every value
            raise SourceError(
                f"The plan drafted from {self.path} does not read back as drafted; a name in the "
                "file defeats the YAML writer. Nothing was written."
            )
        return text

    def _render_table(self, table: _Table) -> tuple[dict[str, Any], list[str]]:
        entry: dict[str, Any] = {"name": table.name}
        lines = [f"  - name: {_flow(table.name)}"]
        if table.name != table.source:
            entry["source"] = table.source
            lines.append(f"    source: {_flow(table.source)}")
        counted = f"{table.rows:,} row{'' if table.rows == 1 else 's'}"
        lines.append("    " + _comment(counted + "".join(f"; {n}" for n in table.notes)))
        if "primary_key" in table.entry:
            keys = table.entry["primary_key"]
            entry["primary_key"] = keys[0] if len(keys) == 1 else keys
            lines.append(f"    primary_key: {_flow(entry['primary_key'])}")
        if "partition_by_month" in table.entry:
            entry["partition_by_month"] = table.entry["partition_by_month"]
            lines.append(f"    partition_by_month: {_flow(entry['partition_by_month'])}")
        entry["columns"] = [column.entry for column in table.columns]
        lines.append("    columns:")
        for column in table.columns:
            lines.append(
                "      " + _comment(f"{column.source}: " + "; ".join(n for n in column.notes if n))
            )
            lines.append(f"      - {_flow(column.entry)}")
        # The table's rules, in this order: a list is written one flow mapping a line.
        for key in ("indexes", "checks", "search", "triggers", "references"):
            if key not in table.entry:
                continue
            entry[key] = value = table.entry[key]
            if isinstance(value, list):
                lines.append(f"    {key}:")
                lines.extend(f"      - {_flow(item)}" for item in value)
            else:
                lines.append(f"    {key}: {_flow(value)}")
        return entry, lines

    def _first_month(self, table: _Table) -> date | None:
        """The month before the earliest time that can be a month at all (years 1 to 9999):
        a value outside them is no month, and the load's coverage check names its row."""
        column = self.partition_column
        assert column is not None
        epoch = column.entry.get("epoch")
        name = quote_name(column.source)
        if epoch:
            per_second = {"s": 1, "ms": 1_000, "us": 1_000_000}[epoch]
            low, high = (bound * per_second for bound in _EPOCH_SECONDS)
            first = self.conn.execute(
                f"SELECT min(CAST({name} AS REAL)) FROM {quote_name(table.source)} "  # noqa: S608
                f"WHERE CAST({name} AS REAL) BETWEEN ? AND ?",
                (low, high),
            ).fetchone()[0]
            if first is None:
                return None
            when = datetime.fromtimestamp(float(first) / per_second, UTC)
            year, month, day = when.year, when.month, when.day
        else:
            # Text compares as text: min() of the trimmed values that start with a date.
            value = f"trim({name})"
            first = self.conn.execute(
                f"SELECT min({value}) FROM {quote_name(table.source)} WHERE {value} GLOB "  # noqa: S608
                f"'[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]*' AND substr({value}, 6, 2) "
                f"BETWEEN '01' AND '12' AND {value} >= '0001-01-01'"
            ).fetchone()[0]
            if first is None:
                return None
            year, month, day = (int(part) for part in str(first)[:10].split("-"))
        # A day earlier: an offset may put the first instant in the month before (an empty
        # month costs nothing).
        if day <= 1 and (year, month) != (1, 1):
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        return date(year, month, 1)


# Epoch seconds of 0001-01-02 and 9999-12-30 (UTC): between them, every instant is in a month.
_EPOCH_SECONDS = (-62_135_510_400, 253_402_128_000)


def _class_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, bytes):
        return "blob"
    return "text"


def _unique_columns(table: _Table) -> list[_Column]:
    """The table's columns that are unique alone: its one-column key, or a one-column unique
    index that is not partial."""
    by_source = {c.source: c for c in table.columns}
    found = [
        by_source[str(ix["columns"][0])]
        for ix in table.indexes
        if ix["unique"]
        and not ix["partial"]
        and len(ix["columns"]) == 1
        and ix["columns"][0] in by_source
    ]
    key = _single_key(table)
    return [*([key] if key else []), *[c for c in found if c is not key]]


def _unique_column(table: _Table, source: str) -> _Column | None:
    return next((c for c in _unique_columns(table) if c.source == source), None)


def _single_key(table: _Table) -> _Column | None:
    keys = table.entry.get("primary_key") or []
    if len(keys) != 1:
        return None
    return next(c for c in table.columns if c.entry["name"] == keys[0])


def _parents_first(tables: list[_Table]) -> list[_Table]:
    done: list[_Table] = []
    pending = list(tables)
    while pending:
        ready = [
            t
            for t in pending
            if all(
                c.entry.get("references") in (None, t.name)
                or any(d.name == c.entry["references"] for d in done)
                for c in t.columns
            )
        ]
        if not ready:  # a cycle: references among these are reported, not ordered
            ready = pending[:1]
            for column in ready[0].columns:
                if column.entry.get("references") and column.entry["references"] != ready[0].name:
                    if not any(d.name == column.entry["references"] for d in done):
                        column.entry.pop("references")
                        column.entry.pop("enforce", None)
                        column.entry.pop("on_delete", None)
                        column.notes.append("part of a cycle of references: kept as a value")
        for table in ready:
            done.append(table)
            pending.remove(table)
    return done


def _infer_convert(column: _Column) -> tuple[str, dict[str, Any], str]:
    """The conversion that loses nothing for what this column holds, and what was seen."""
    classes = column.classes
    seen = ", ".join(f"{n:,} {k}" for k, n in classes.items()) or "no rows"
    declared = column.declared.upper()
    saw = f"{column.declared or 'no declared type'}; {seen}"
    present = set(classes) - {"null"}
    if not present:
        return _from_declared(declared), {}, saw + " (typed from its declaration)"
    if "blob" in present:
        if present != {"blob"}:
            saw += "; mixed storage classes: bytea keeps every value's bytes, not its class"
            return "blob", {"any_class": True}, saw
        return "blob", {}, saw
    if present == {"integer"}:
        return _integer_kind(column, declared, saw)
    if present <= {"integer", "real"}:
        large = _beyond_doubles(column)
        infinite = column.infinities > 0
        if large and infinite:
            return (
                "text",
                {"any_class": True},
                saw + "; integers beyond 2^53 (no double) and infinities (no numeric): kept as "
                "their text, not their class",
            )
        if infinite:
            return "real", {}, saw + "; infinities, which only a double holds"
        if "NUM" in declared or "DEC" in declared:
            return "numeric", {}, saw
        if large:
            return "numeric", {}, saw + "; integers beyond 2^53 would not fit a double"
        return "real", {}, saw
    if present == {"text"}:
        return _text_kind(column, declared, saw)
    return (
        "text",
        {"any_class": True},
        saw + "; mixed storage classes: kept as their text, not their class",
    )


# What a declared type promises, in SQLite's order of reading it (its affinity rules, then the
# types apps declare): the first words found decide.
_DECLARED = (
    (("BOOL",), "boolean"),
    (("DATETIME", "TIMESTAMP"), "timestamp"),
    (("DATE",), "date"),
    (("JSON",), "json"),
    (("UUID", "GUID"), "uuid"),
    (("INT",), "integer"),
    (("REAL", "FLOA", "DOUB"), "real"),
    (("BLOB",), "blob"),
    (("NUM", "DEC"), "numeric"),
)


def _from_declared(declared: str) -> str:
    """The kind a declared type promises, for a column with no value to contradict it (an empty
    table's, an all-NULL column's): BOOLEAN, DATE, DATETIME/TIMESTAMP, JSON and UUID too."""
    return next((kind for words, kind in _DECLARED if any(w in declared for w in words)), "text")


def _integer_kind(column: _Column, declared: str, saw: str) -> tuple[str, dict[str, Any], str]:
    low, high = column.low, column.high  # over every row
    if low is None or high is None:
        return "integer", {}, saw
    if "BOOL" in declared and 0 <= low and high <= 1:
        return "boolean", {}, saw + "; declared boolean, only 0 and 1"
    named = bool(_TIME_NAME.search(column.source)) or "DATE" in declared or "TIME" in declared
    # By the values first: a whole column of one unit's instants from 2000 to 2100 (seconds,
    # milliseconds or microseconds: the ranges do not overlap), varying, and no key, is a
    # time (Trac's microsecond `time`, peewee's `posted`). A name or a declaration widens the
    # range back to 1970.
    ranges = _EPOCH_RANGES if named else _RECENT_EPOCHS
    if named or (low != high and not column.pk):
        for unit, (lo, hi) in ranges.items():
            if lo <= low and high <= hi:
                when = datetime.fromtimestamp(high / {"s": 1, "ms": 1e3, "us": 1e6}[unit], UTC)
                how = "" if named else ", recognized by its values"
                return (
                    "timestamp",
                    {"epoch": unit},
                    saw + f"; epoch {unit}{how} (latest: {when:%Y-%m-%d %H:%M})",
                )
    if named:
        saw += "; named like a time, but its values fit no one epoch unit: kept as integers"
    return "integer", {}, saw


def _beyond_doubles(column: _Column) -> bool:
    """Whether an integer of the column lies past 2^53, where doubles skip integers."""
    ends = [v for v in (column.low, column.high) if v is not None]
    return any(abs(v) > 2**53 for v in ends)


def _text_kind(column: _Column, declared: str, saw: str) -> tuple[str, dict[str, Any], str]:
    values = [v for v in column.samples if isinstance(v, str)]
    sampled = f"{len(values):,} sampled"
    if values and all(_UUID.match(v) for v in values):
        return "uuid", {}, saw + f"; {sampled} are canonical UUID text"
    # Where the schema says so too (CHAR(32), as Django and SQLAlchemy declare a UUID on SQLite,
    # or a name that says uuid): a TEXT column of such values may be the app's own token.
    uuid_declared = bool(re.match(r"^N?CHAR\(\s*32\s*\)$", declared.strip())) or bool(
        re.search(r"uuid|guid", column.source, re.IGNORECASE)
    )
    if values and uuid_declared and all(_HEX_UUID.match(v) for v in values):
        return "uuid_hex", {}, saw + f"; {sampled} are UUIDs as 32 hex digits"
    if values and all(_DATE.match(v) for v in values) and _valid(values, date.fromisoformat):
        return "date", {}, saw + f"; {sampled} are dates"
    if values and all(_TIMESTAMP.match(v.strip()) for v in values):
        forms = sorted({_form(v) for v in values})
        return "timestamp", {}, saw + f"; {sampled} are timestamps ({' and '.join(forms)})"
    if values and _TIME_NAME.search(column.source) and all(_EPOCH_TEXT.match(v) for v in values):
        numbers = [float(v) for v in values]
        for unit, (lo, hi) in _EPOCH_RANGES.items():
            if lo <= min(numbers) and max(numbers) <= hi:
                return "timestamp", {"epoch": unit}, saw + f"; {sampled} are epoch {unit} text"
    if values and "JSON" in declared and all(jsonb_accepts(v) for v in values):
        # Declared JSON: scalars and null are JSON too (a text column of "1" is not).
        duplicates = sum(_has_duplicate_keys(v) for v in values)
        if not duplicates:
            return "json", {}, saw + f"; declared JSON, and {sampled} parse as JSON"
    if values and all(v.lstrip()[:1] in ("{", "[") for v in values):
        duplicates = sum(_has_duplicate_keys(v) for v in values)
        invalid = sum(not jsonb_accepts(v) for v in values)
        if not invalid and not duplicates:
            return "json", {}, saw + f"; {sampled} are JSON objects or arrays"
        saw += f"; looks like JSON, but {invalid} invalid and {duplicates} with duplicate keys (jsonb would drop one): kept as text"
    extra: dict[str, Any] = {}
    match = _VARCHAR.match(declared)
    if match:
        limit = int(match.group(1))
        longest = max((len(v) for v in values), default=0)
        if longest <= limit:
            extra["type"] = f"varchar({limit})"
        else:
            saw += f"; declared {limit} characters, but a value has {longest}: text"
    return "text", extra, saw


def _form(value: str) -> str:
    form = "ISO 8601 with T" if "T" in value else "SQLite text"
    if value.endswith(("Z", "z")):
        form += ", Z"
    elif re.search(r"[+-]\d{2}:?\d{2}$", value):
        form += ", offset"
    if "." in value:
        form += ", fractional seconds"
    return form


def _valid(values: Iterable[str], parse: Any) -> bool:
    try:
        for value in values:
            parse(value)
    except ValueError:
        return False
    return True


def _has_duplicate_keys(value: str) -> bool:
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        keys = [k for k, _ in items]
        found = found or len(keys) != len(set(keys))
        return dict(items)

    def parse() -> object:
        return json.loads(value, object_pairs_hook=pairs)

    try:
        try:
            parse()
        except RecursionError:
            deep(parse)  # nested deeper than Python recurses by default; jsonb takes it
    except ValueError:
        return False
    return found


def _infer_default(raw: str | None, convert: str, pg_type: str) -> tuple[Any, str]:
    """The plan's default for SQLite's `raw` DEFAULT text, or None and why it was not kept. A
    default is kept only where the plan loader takes it for this column's kind."""
    if raw is None:
        return None, ""
    text = raw.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    upper = " ".join(text.upper().split())
    if upper == "NULL":
        return None, ""
    # The moment of the insert, as text SQLite writes (CURRENT_TIMESTAMP, datetime('now'),
    # strftime('%Y-%m-%d ...', 'now')): now() where the column is a timestamp or date.
    now = upper in ("CURRENT_TIMESTAMP", "CURRENT_DATE") or bool(
        re.match(r"^(DATETIME|DATE)\('NOW'\)$|^STRFTIME\('%Y-%M-%D[^']*', ?'NOW'\)$", upper)
    )
    if now:
        if KINDS[convert].time:
            return "now()", f"default {raw} -> now()"
        return (
            None,
            f"default {raw} not kept: the column is {convert}, and now() would change its form",
        )
    # SQLite reads a double-quoted word it cannot resolve as a name as a string literal.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        quote = text[0]
        literal: Any = text[1:-1].replace(quote * 2, quote)
    elif re.match(r"^[+-]?\d+$", text):
        literal = int(text)
    elif re.match(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$", text):
        literal = float(text)
    else:
        return None, f"default {raw} is an expression the draft does not translate"
    if convert == "boolean" and literal in (0, 1):
        literal = bool(literal)
    elif convert == "text" and isinstance(literal, int | float):
        literal = text.lstrip("+")  # SQLite stores the number; the text column shows it so
    elif convert in ("real", "numeric", "integer") and isinstance(literal, str):
        try:
            literal = int(literal) if convert == "integer" else float(literal)
        except ValueError:
            pass
    problem = default_problem(literal, convert, pg_type)
    if problem:
        return None, f"default {raw} not kept: it {problem}"
    return literal, ""


@dataclass(frozen=True)
class _Drafted:
    """A drafted table or column as a view's translation reads it (rules.TableLike)."""

    name: str
    source: str
    columns: list[_Drafted]
    convert: str = ""


class _OneLineDumper(yaml.SafeDumper):
    """A SafeDumper whose strings never span lines: any string holding a character that is not
    printable (a line break of any kind, a control character) is written double-quoted, where
    the emitter escapes it (`\\n`, `\\L`, `\\x00`)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if value.isprintable() else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_OneLineDumper.add_representer(str, _represent_str)


def _flow(value: Any) -> str:
    """`value` as YAML on one line (flow style), written by the YAML emitter."""
    text = yaml.dump(
        value,
        Dumper=_OneLineDumper,
        default_flow_style=True,
        width=10**9,
        sort_keys=False,
        allow_unicode=True,
    )
    return str(text).strip().removesuffix("...").strip()


def _comment(text: str) -> str:
    """A YAML comment line that nothing in `text` can end: every character that is not
    printable (line breaks of every kind, YAML's NEL and separators included) is escaped."""
    return "# " + "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode() for c in text
    )


def _module(ddl: str) -> str:
    """The module of a CREATE VIRTUAL TABLE (fts5, rtree, ...), lower case."""
    found = re.search(r"\bUSING\s+(\w+)", ddl, re.I)
    return found.group(1).lower() if found else ""


def _one_line(ddl: str) -> str:
    return " ".join(ddl.split())
