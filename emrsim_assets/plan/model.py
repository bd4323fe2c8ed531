"""The plan's concepts as frozen dataclasses: tables, columns, keys, references, indexes, skips."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from emrsim_assets.errors import PlanError

CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TEXT_TYPE = re.compile(r"^(text|varchar\((\d+)\))$")
ENFORCE = ("constraint", "report")
EPOCH_UNITS = ("s", "ms", "us")
# What a skip entry may name besides a table or column: behaviour and rules, not rows.
SKIP_KINDS = ("table", "trigger", "collation", "check", "index", "default", "reference")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def sqlite_fold(name: str) -> str:
    """A name as SQLite compares names: ASCII letters without regard to case, every other
    character as it is ("Äpfel" and "äpfel" are two tables; Python's lower() would merge them)."""
    return name.translate(_ASCII_LOWER)


# Operator classes a plan may name (one per index, applied to each of its columns).
OPCLASSES = (
    "jsonb_ops",
    "jsonb_path_ops",
    "text_pattern_ops",
    "varchar_pattern_ops",
    "gin_trgm_ops",  # extension pg_trgm: LIKE / ILIKE '%term%'
)
# The per-table storage parameters a plan's `autovacuum` may set (PostgreSQL 15 to 18 all take
# them), each with the type of its value: a name outside this list never reaches SQL.
AUTOVACUUM_PARAMETERS: dict[str, type] = {
    "autovacuum_enabled": bool,
    "autovacuum_vacuum_threshold": int,
    "autovacuum_vacuum_scale_factor": float,
    "autovacuum_vacuum_insert_threshold": int,
    "autovacuum_vacuum_insert_scale_factor": float,
    "autovacuum_analyze_threshold": int,
    "autovacuum_analyze_scale_factor": float,
    "autovacuum_vacuum_cost_delay": float,
    "autovacuum_vacuum_cost_limit": int,
    "autovacuum_freeze_min_age": int,
    "autovacuum_freeze_max_age": int,
    "autovacuum_freeze_table_age": int,
    "autovacuum_multixact_freeze_min_age": int,
    "autovacuum_multixact_freeze_max_age": int,
    "autovacuum_multixact_freeze_table_age": int,
    "log_autovacuum_min_duration": int,
}


@dataclass(frozen=True)
class Column:
    name: str  # the PostgreSQL column
    convert: str
    source: str  # the SQLite column, spelled as in the source
    pg_type: str
    nullable: bool = True
    references: str | None = None  # a plan table, by its target name
    # The referenced column when it is not the table's key (a unique column of it).
    references_column: str | None = None
    on_delete: str = "no action"
    on_update: str = "no action"
    deferred: bool = False  # DEFERRABLE INITIALLY DEFERRED: checked at commit (Django's)
    enforce: str = "constraint"  # constraint: a PostgreSQL FK; report: a check counts orphans
    epoch: str | None = None  # s, ms or us for numeric timestamps
    on_invalid: str = "fail"
    default: str | int | float | bool | None = None  # "now()" or a literal
    identity: bool = False  # integer key kept as bigint: the app's inserts get the next id
    anomalies: str = "fail"  # timestamp/date outliers: fail the values_look_alike check, or accept
    any_class: bool = False  # text/blob: values of every storage class kept as their text/bytes
    # SQLite's COLLATE NOCASE: keys and unique indexes compare ASCII letters without case.
    collation: str | None = None
    # A generated column: PostgreSQL computes it from this expression (GENERATED ALWAYS AS
    # ... STORED); the load proves it gives SQLite's value on every row before it is made so.
    generated: str | None = None

    @property
    def max_length(self) -> int | None:
        match = TEXT_TYPE.match(self.pg_type)
        return int(match.group(2)) if match and match.group(2) else None


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    method: str = "btree"
    opclass: str | None = None
    # Keys after the columns, and a partial index's predicate: PostgreSQL expressions over the
    # table's columns, checked by rules.checked when the plan loads and again where used.
    expressions: tuple[str, ...] = ()
    where: str | None = None
    source: str | None = None  # the SQLite index it carries, as the source spells it

    @property
    def plain(self) -> bool:
        """Keys that are columns only, over every row: what a reference may point at."""
        return not self.expressions and self.where is None


@dataclass(frozen=True)
class Reference:
    """A foreign key over several columns: (a, b) -> parent (x, y), matched as SQL's MATCH
    SIMPLE matches it (a row with a NULL in any of them points at nothing)."""

    name: str
    columns: tuple[str, ...]
    references: str  # a plan table, by its target name
    referenced_columns: tuple[str, ...]
    on_delete: str = "no action"
    on_update: str = "no action"
    deferred: bool = False
    enforce: str = "constraint"


@dataclass(frozen=True)
class Search:
    """Full-text search kept from SQLite's FTS4/FTS5: a tsvector column PostgreSQL computes from
    the text columns (GENERATED ALWAYS ... STORED), with a GIN index."""

    name: str  # the tsvector column
    columns: tuple[str, ...]
    config: str = "simple"  # a text search configuration: simple (no stemming), english, ...
    source: str | None = None  # the SQLite FTS table it replaces


@dataclass(frozen=True)
class Trigger:
    """A SQLite trigger written again for PostgreSQL, in one of three forms: `touch` (an update
    sets `column` to now()), `guard` (a write on `events` is refused with `message` when `when`
    holds) or `audit` (after a write on `events`, a row of `values` goes into table `into`).
    `when` is a PostgreSQL condition over NEW."col" and OLD."col"."""

    name: str
    source: str  # the SQLite trigger
    form: str
    events: tuple[str, ...]
    of: tuple[str, ...] = ()
    column: str | None = None
    when: str | None = None
    message: str | None = None
    into: str | None = None  # audit: the plan table a row is written to, after the write
    columns: tuple[str, ...] = ()
    values: tuple[str, ...] = ()  # PostgreSQL expressions over NEW."col" / OLD."col"


@dataclass(frozen=True)
class Rule:
    """A CHECK constraint: the app's rule as SQLite has it, and as PostgreSQL takes it."""

    name: str
    postgres: str
    sqlite: str = ""


@dataclass(frozen=True)
class Table:
    name: str  # the PostgreSQL table and the Dagster asset
    source: str  # the SQLite table, spelled as in the source
    primary_key: tuple[str, ...]  # empty: no key (the table is reloaded whole)
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    partition_by_month: str | None = None
    autovacuum: Mapping[str, int | float | bool] = field(default_factory=dict)
    max_quarantined_rows: int = 0  # cutover refuses while more rows than this are quarantined
    checks: tuple[Rule, ...] = ()  # CHECK constraints, held by the staging table once loaded
    references: tuple[Reference, ...] = ()  # foreign keys over several columns
    search: Search | None = None  # full-text search of its FTS table, as a tsvector column
    triggers: tuple[Trigger, ...] = ()  # created at cutover

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def foreign_keys(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.references is not None)

    @property
    def parents(self) -> tuple[str, ...]:
        named = [c.references for c in self.foreign_keys if c.references]
        return tuple(dict.fromkeys([*named, *(r.references for r in self.references)]))

    @property
    def key_column(self) -> Column | None:
        """The single-column primary key, the one a reference can point at."""
        return self.column(self.primary_key[0]) if len(self.primary_key) == 1 else None

    @property
    def keyed_by_legacy_id(self) -> bool:
        key = self.key_column
        return key is not None and key.convert == "legacy_id"

    @property
    def quarantines(self) -> bool:
        return any(c.on_invalid == "quarantine" for c in self.columns)


@dataclass(frozen=True)
class View:
    """A SQLite view recreated in PostgreSQL: its SELECT over the plan's tables, as sqlglot
    wrote it for PostgreSQL (checked when the plan loads and again where it is used)."""

    name: str  # the PostgreSQL view
    source: str  # the SQLite view, spelled as in the source
    postgres: str


@dataclass(frozen=True)
class Skip:
    """A source table or column, a trigger or a collation of the app's own that the plan leaves
    behind on purpose, and why."""

    table: str  # the table or view, trigger or collation, spelled as in the source
    reason: str
    column: str | None = None
    kind: str = "table"  # one of SKIP_KINDS: a trigger's name may be a table's too

    @property
    def trigger(self) -> bool:
        return self.kind == "trigger"

    @property
    def label(self) -> str:
        if self.kind == "default":
            return f"default of {self.table}.{self.column}"
        if self.kind != "table":
            return f"{self.kind} {self.table}"
        return f"{self.table}.{self.column}" if self.column else self.table


@dataclass(frozen=True)
class Plan:
    tables: tuple[Table, ...]
    source_timezone: ZoneInfo
    partition_start: date
    path: Path
    skip: tuple[Skip, ...] = ()
    views: tuple[View, ...] = ()
    freeze: tuple[str, ...] = ()  # run by `cutover` before its final snapshot
    unfreeze: tuple[str, ...] = ()  # run by `cutover` once it published, or failed

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise PlanError(f"The plan has no table {name!r}; it has {', '.join(self.table_names)}.")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    @property
    def partitioned_table(self) -> Table | None:
        return next((t for t in self.tables if t.partition_by_month), None)

    def referenced(self, column: Column) -> Column | None:
        """The column a reference points at: the parent's key, or the unique column it names."""
        parent = self.table(str(column.references))
        if column.references_column is None:
            return parent.key_column
        return next((c for c in parent.columns if c.name == column.references_column), None)

    def load_order(self) -> tuple[Table, ...]:
        """Parents before children, so FK checks see their parents loaded."""
        done: list[str] = []
        pending = list(self.tables)
        while pending:
            ready = [t for t in pending if all(p in done or p == t.name for p in t.parents)]
            if not ready:
                names = ", ".join(t.name for t in pending)
                raise PlanError(f"The plan's foreign keys form a cycle among: {names}.")
            for table in ready:
                done.append(table.name)
                pending.remove(table)
        return tuple(self.table(name) for name in done)

    def skipped(self, table: str, column: str | None = None, kind: str = "table") -> Skip | None:
        """The skip that leaves this source table (or column, trigger or collation) behind;
        names compare as SQLite compares them, ASCII letters without regard to case."""
        for skip in self.skip:
            if sqlite_fold(skip.table) != sqlite_fold(table) or skip.kind != kind:
                continue
            if skip.column is None or (column and sqlite_fold(skip.column) == sqlite_fold(column)):
                return skip
        return None


def describe_default(value: Any) -> str:
    return "now()" if value == "now()" else repr(value)
