"""schema_matches_source: every rule a SQLite table declares has its counterpart in PostgreSQL,
read from PostgreSQL's own catalog (not from the plan), or a plan skip that says why.

The SQLite side is the snapshot's schema: each column, NOT NULL, DEFAULT, the primary key, each
index (unique, partial, on expressions), each foreign key, CHECK, collation and trigger of the
table. The PostgreSQL side is the loaded staging table: its columns, NOT NULLs and defaults
(pg_attribute), its key, indexes and constraints (pg_index, pg_constraint). Foreign keys are
added at cutover, after this check: a reference is carried when the plan holds it, and its own
check (fk_<column>_resolves) proves its rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from emrsim_assets import probes
from emrsim_assets.integrity import Verdict
from emrsim_assets.plan import Column, Plan, Table
from emrsim_assets.plan.model import sqlite_fold
from emrsim_assets.rules import check_texts
from emrsim_assets.schemas import STAGING, Conn
from emrsim_assets.source import app_collations, column_collations
from emrsim_assets.target import index_name, table_exists

SHOWN = 20


@dataclass
class Ledger:
    """Each source object of a table, sorted into what PostgreSQL holds, what the plan leaves
    behind (with its reason) and what is missing."""

    carried: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return len(self.carried) + len(self.reported) + len(self.skipped) + len(self.missing)


@dataclass(frozen=True)
class _Catalog:
    """What PostgreSQL holds for one staging table."""

    columns: dict[str, tuple[bool, bool, bool]]  # name -> (NOT NULL, has a default, generated)
    primary_key: frozenset[str]
    indexes: dict[str, tuple[bool, bool, int]]  # name -> (unique, partial, number of keys)
    checks: frozenset[str]


def schema_matches_source(
    conn: Conn, lite: sqlite3.Connection, plan: Plan, table: Table
) -> Verdict:
    if not table_exists(conn, STAGING, table.name):
        return Verdict(False, f"{table.name} is not loaded in {STAGING}.")
    ledger = compare(lite, plan, table, _catalog(conn, table))
    tried, not_probed = probes.probe(conn, lite, table)
    ledger.missing.extend(p.label for p in tried if not p.agrees)
    metadata: dict[str, Any] = {
        "probes": len(tried),
        "probes_refused_on_both_sides": sum(p.sqlite_refused and p.postgres_refused for p in tried),
        "probes_that_differ": sum(not p.agrees for p in tried),
        "probe_results": [p.label for p in tried][:SHOWN],
        "not_probed": not_probed[:SHOWN],
        "source_objects": ledger.objects,
        "in_postgresql": len(ledger.carried),
        "references_reported_not_enforced": len(ledger.reported),
        "skipped_by_plan": len(ledger.skipped),
        "missing": len(ledger.missing),
        "carried_sample": ledger.carried[:SHOWN],
    }
    if ledger.reported:
        metadata["reported"] = ledger.reported[:SHOWN]
    if ledger.skipped:
        metadata["skipped"] = ledger.skipped[:SHOWN]
    if ledger.missing:
        metadata["missing_objects"] = ledger.missing[:SHOWN]
        return Verdict(
            False,
            f"{len(ledger.missing)} of the {ledger.objects} schema objects of SQLite table "
            f"{table.source} have no counterpart in PostgreSQL and no skip in the plan, or behave "
            "otherwise there: " + "; ".join(ledger.missing[:5]) + ".",
            metadata,
        )
    return Verdict(
        True,
        f"All {ledger.objects} schema objects of SQLite table {table.source} are in PostgreSQL "
        f"({len(ledger.carried)}), held by the plan as reported references "
        f"({len(ledger.reported)}) or skipped by it with a reason ({len(ledger.skipped)}); "
        f"{len(tried)} writes that break a rule were refused alike by SQLite and PostgreSQL.",
        metadata,
    )


def compare(lite: sqlite3.Connection, plan: Plan, table: Table, pg: _Catalog) -> Ledger:
    ledger = Ledger()
    for outcome, label in _outcomes(lite, plan, table, pg):
        getattr(ledger, outcome).append(label)
    return ledger


def _outcomes(
    lite: sqlite3.Connection, plan: Plan, table: Table, pg: _Catalog
) -> Iterator[tuple[str, str]]:
    source = table.source
    planned = {sqlite_fold(c.source): c for c in table.columns if c.convert != "storage_class"}
    xinfo = lite.execute("SELECT * FROM pragma_table_xinfo(?)", (source,)).fetchall()
    keys: list[tuple[int, Column | None, str]] = []
    for _, name, _, notnull, default, pk, hidden in xinfo:
        if hidden == 1:
            continue  # a virtual table's own hidden column (FTS5's rank)
        column = planned.get(sqlite_fold(str(name)))
        label = f"{source}.{name}"
        if pk:
            keys.append((int(pk), column, str(name)))
        if column is None:
            skip = plan.skipped(source, str(name))
            yield _skipped_or_missing(skip, f"column {label}", "not in the plan")
            continue
        if column.name not in pg.columns:
            yield "missing", f"column {label}: no column {column.name} in PostgreSQL"
            continue
        not_null, has_default, generated = pg.columns[column.name]
        yield "carried", f"column {label} -> {column.name}"
        if hidden in (2, 3):
            yield (
                ("carried", f"GENERATED expression of {label}")
                if generated
                else ("missing", f"GENERATED expression of {label}: plain data in PostgreSQL")
            )
        if notnull:
            yield (
                ("carried", f"NOT NULL of {label}")
                if not_null
                else ("missing", f"NOT NULL of {label}: PostgreSQL takes NULL in {column.name}")
            )
        if default is not None and str(default).strip("() ").upper() != "NULL":
            what = f"DEFAULT {default} of {label}"
            if has_default:
                yield "carried", what
            else:
                skip = plan.skipped(source, str(name), kind="default")
                yield _skipped_or_missing(skip, what, "PostgreSQL has no default there")
    yield from _primary_key(table, sorted(keys), pg)
    yield from _indexes(lite, plan, table, pg)
    yield from _references(lite, plan, table)
    kept = {rule.sqlite: rule.name for rule in table.checks}
    row = lite.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (source,)
    ).fetchone()
    for text in check_texts(str(row[0] or "") if row else ""):
        what = f"CHECK ({text}) of {source}"
        if text in kept:
            name = kept[text]
            yield (
                ("carried", f"{what} -> {name}")
                if name in pg.checks
                else ("missing", f"{what}: no constraint {name} in PostgreSQL")
            )
        else:
            skip = plan.skipped(f"{source}: CHECK ({text})", kind="check")
            yield _skipped_or_missing(skip, what, "not in the plan")
    yield from _collations(lite, plan, table)
    for (trigger,) in lite.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE",
        (source,),
    ):
        written = next(
            (t for t in table.triggers if sqlite_fold(t.source) == sqlite_fold(str(trigger))), None
        )
        if written is not None:
            yield (
                "carried",
                f"trigger {trigger} on {source}: {written.form}, in PL/pgSQL at cutover",
            )
            continue
        skip = plan.skipped(str(trigger), kind="trigger")
        yield _skipped_or_missing(skip, f"trigger {trigger} on {source}", "not in the plan")


def _skipped_or_missing(skip: Any, what: str, why: str) -> tuple[str, str]:
    if skip is not None:
        return "skipped", f"{what}: {skip.reason}"
    return "missing", f"{what}: {why}"


def _primary_key(
    table: Table, keys: list[tuple[int, Column | None, str]], pg: _Catalog
) -> Iterator[tuple[str, str]]:
    if not keys:
        return
    what = f"PRIMARY KEY ({', '.join(name for _, _, name in keys)}) of {table.source}"
    mapped = {column.name for _, column, _ in keys if column is not None}
    extra = pg.primary_key - mapped
    if len(mapped) == len(keys) and mapped <= pg.primary_key and extra <= _month(table):
        yield "carried", what
    else:
        yield "missing", f"{what}: PostgreSQL's key is ({', '.join(sorted(pg.primary_key))})"


def _month(table: Table) -> set[str]:
    return {table.partition_by_month} if table.partition_by_month else set()


def _indexes(
    lite: sqlite3.Connection, plan: Plan, table: Table, pg: _Catalog
) -> Iterator[tuple[str, str]]:
    by_source = {
        sqlite_fold(c.source): c.name for c in table.columns if c.convert != "storage_class"
    }
    for _, name, unique, origin, partial in lite.execute(
        "SELECT * FROM pragma_index_list(?)", (table.source,)
    ):
        if origin == "pk":
            continue  # the primary key, above
        info = lite.execute(
            "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,)
        ).fetchall()
        columns = [by_source.get(sqlite_fold(str(n))) if n is not None else None for (n,) in info]
        kind = "UNIQUE index" if unique else "index"
        what = f"{kind} {name} on {table.source}"
        index = next((ix for ix in table.indexes if ix.source == name), None)
        if index is None and not partial and None not in columns:
            wanted = set(columns)
            keys = {sqlite_fold(str(n)) for (n,) in info}
            companions = {
                c.name
                for c in table.columns
                if c.convert == "storage_class" and sqlite_fold(c.source) in keys
            }
            index = next(
                (
                    ix
                    for ix in table.indexes
                    if ix.plain
                    and ix.unique == bool(unique)
                    and wanted <= set(ix.columns)
                    and set(ix.columns) - wanted <= _month(table) | companions
                ),
                None,
            )
        if index is None:
            skip = plan.skipped(str(name), kind="index")
            yield _skipped_or_missing(skip, what, "not in the plan")
            continue
        held = pg.indexes.get(index_name(table, table.name, index))
        expected = (bool(unique), bool(partial), len(info))
        if held is None:
            yield "missing", f"{what}: no index {index.name} in PostgreSQL"
        elif held[:2] != expected[:2] or (not partial and held[2] < expected[2]):
            yield "missing", f"{what}: PostgreSQL's {index.name} is not the same (unique, partial)"
        else:
            yield "carried", f"{what} -> {index.name}"


def _references(lite: sqlite3.Connection, plan: Plan, table: Table) -> Iterator[tuple[str, str]]:
    declared: dict[int, list[Any]] = {}
    for row in lite.execute("SELECT * FROM pragma_foreign_key_list(?)", (table.source,)):
        declared.setdefault(int(row[0]), []).append(row)
    planned = {sqlite_fold(c.source): c for c in table.columns}
    for parts in declared.values():
        parent_source = str(parts[0][2])
        sources = [str(p[3]) for p in parts]
        what = f"reference {table.source}({', '.join(sources)}) -> {parent_source}"
        column = planned.get(sqlite_fold(sources[0])) if len(sources) == 1 else None
        parent = next(
            (t for t in plan.tables if sqlite_fold(t.source) == sqlite_fold(parent_source)), None
        )
        if column is not None and parent is not None and column.references == parent.name:
            if column.enforce == "constraint":
                yield "carried", f"{what}: a foreign key of PostgreSQL from cutover"
            else:
                yield "reported", f"{what}: reported by fk_{column.name}_resolves, not enforced"
            continue
        mapped = tuple(
            planned[sqlite_fold(c)].name if sqlite_fold(c) in planned else "" for c in sources
        )
        held = next(
            (
                r
                for r in table.references
                if parent is not None and r.references == parent.name and r.columns == mapped
            ),
            None,
        )
        if held is not None:
            if held.enforce == "constraint":
                yield "carried", f"{what}: foreign key {held.name} of PostgreSQL from cutover"
            else:
                yield "reported", f"{what}: reported by fk_{held.name}_resolves, not enforced"
            continue
        skip = plan.skipped(f"{table.source}({', '.join(sources)})", kind="reference")
        yield _skipped_or_missing(skip, what, "not in the plan")


def _collations(lite: sqlite3.Connection, plan: Plan, table: Table) -> Iterator[tuple[str, str]]:
    planned = {sqlite_fold(c.source): c for c in table.columns}
    own = {sqlite_fold(name) for name in app_collations(lite)}
    for (name, column_name), collation in column_collations(lite).items():
        if sqlite_fold(name) != sqlite_fold(table.source):
            continue
        what = f"COLLATE {collation.upper()} of {name}.{column_name}"
        column = planned.get(sqlite_fold(column_name))
        if collation == "nocase" and column is not None and column.collation == "nocase":
            yield "carried", f"{what}: keys and unique indexes on lower()"
        elif collation in ("rtrim", *own) or collation == "nocase":
            skip = plan.skipped(collation, kind="collation")
            yield _skipped_or_missing(skip, what, "not in the plan")


def _catalog(conn: Conn, table: Table) -> _Catalog:
    oid = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (STAGING, table.name),
    ).fetchone()
    assert oid is not None
    columns = {
        str(name): (bool(not_null), bool(has_default) and generated == "", generated != "")
        for name, not_null, has_default, generated in conn.execute(
            "SELECT attname, attnotnull, atthasdef OR attidentity <> '', attgenerated::text "
            "FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            oid,
        )
    }
    key = conn.execute(
        "SELECT array_agg(a.attname::text) FROM pg_constraint k "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) "
        "WHERE k.conrelid = %s AND k.contype = 'p'",
        oid,
    ).fetchone()
    indexes = {
        str(name): (bool(unique), bool(partial), int(str(keys)))
        for name, unique, partial, keys in conn.execute(
            "SELECT c.relname, i.indisunique, i.indpred IS NOT NULL, i.indnkeyatts "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s",
            oid,
        )
    }
    checks = frozenset(
        str(name)
        for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s AND contype = 'c'", oid
        )
    )
    primary_key = frozenset(str(k) for k in (key[0] if key and key[0] else []))  # type: ignore[attr-defined]
    return _Catalog(columns, primary_key, indexes, checks)
