"""Index review after cutover (a post-migration task): the slowest statements on the live schema
from pg_stat_statements, and for each sequential scan of a big table in their plans, the index
that would serve it.

Plans come from `EXPLAIN (GENERIC_PLAN)` (PostgreSQL 16 and later), which plans a statement
with its `$n` parameters unknown, as pg_stat_statements records it. Nothing is created: the
suggestions are for a person to weigh (every index costs writes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

BIG_ROWS = 10_000  # a sequential scan of fewer rows is cheap enough
TOP = 10


@dataclass(frozen=True)
class Statement:
    query: str
    calls: int
    mean_ms: float
    total_ms: float
    suggestions: list[str] = field(default_factory=list)
    seq_scans: list[str] = field(default_factory=list)  # "table (rows): filter"


@dataclass(frozen=True)
class IndexReview:
    statements: list[Statement]
    note: str = ""  # why there is no review, or what it could not do

    @property
    def suggestions(self) -> list[str]:
        return sorted({s for st in self.statements for s in st.suggestions})

    def markdown(self) -> str:
        lines = ["## Index review (pg_stat_statements)", ""]
        if self.note:
            lines += [self.note, ""]
        if not self.statements:
            return "\n".join(lines)
        lines += [
            "| statement | calls | mean ms | sequential scans of big tables | suggested index |",
            "|---|---:|---:|---|---|",
        ]
        for st in self.statements:
            text = " ".join(st.query.split())[:120].replace("|", "\\|")
            lines.append(
                f"| `{text}` | {st.calls:,} | {st.mean_ms:.2f} | "
                f"{'; '.join(st.seq_scans).replace('|', '/') or 'none'} | "
                f"{'; '.join(st.suggestions) or '-'} |"
            )
        return "\n".join(lines)


def review(url: str, schema: str, top: int = TOP, big_rows: int = BIG_ROWS) -> IndexReview:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = conn.execute(
                "SELECT query, calls, mean_exec_time, total_exec_time FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query LIKE %s AND query !~* '^\\s*(explain|create|alter|drop|copy|analyze"
                "|vacuum|truncate|comment|grant|set|begin|commit|rollback)' "
                "ORDER BY mean_exec_time DESC LIMIT %s",
                (f"%{schema}.%", top),
            ).fetchall()
        except psycopg.Error as exc:
            reason = (exc.diag.message_primary or str(exc)).strip().rstrip(".")
            return IndexReview(
                [], f"No index review: pg_stat_statements is not available ({reason})."
            )
        version = conn.info.server_version
        statements = []
        for query, calls, mean, total in rows:
            scans: list[str] = []
            suggestions: list[str] = []
            if version >= 160000:
                _plan_review(conn, str(query), big_rows, scans, suggestions)
            statements.append(
                Statement(
                    str(query),
                    int(str(calls)),
                    float(str(mean)),
                    float(str(total)),
                    suggestions,
                    scans,
                )
            )
    note = (
        ""
        if version >= 160000
        else "Plans not reviewed: EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16 or later; the "
        "slowest statements are listed."
    )
    return IndexReview(statements, note)


def _plan_review(
    conn: psycopg.Connection[Any],
    query: str,
    big_rows: int,
    scans: list[str],
    suggestions: list[str],
) -> None:
    if ";" in query.strip().rstrip(";"):
        return  # one statement only (its literals are $n already: a ';' would start another)
    try:
        with conn.transaction(force_rollback=True):  # a write statement is planned, never run
            row = conn.execute(
                sql.SQL("EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) {}").format(sql.SQL(query))
            ).fetchone()
    except psycopg.Error:
        return  # a statement that cannot be planned alone (a utility command, a temp table)
    if not row:
        return
    # Per table (a partitioned table's months together): the rows its whole-table reads cover,
    # so an empty month scanned in full is nothing and 25 months of 8,000 rows are 200,000.
    read: dict[tuple[str, str], tuple[int, str, str]] = {}
    for node in _nodes(row[0][0]["Plan"]):
        kind = node.get("Node Type")
        # A whole-table read: a sequential scan, or an index walked end to end for its order
        # (ORDER BY id LIMIT n) with the condition left to a filter.
        whole = kind == "Seq Scan" or (
            kind in ("Index Scan", "Index Only Scan")
            and "Index Cond" not in node
            and "Filter" in node
        )
        if not whole or "Relation Name" not in node:
            continue
        table, rows = _owner(conn, node.get("Schema", "public"), node["Relation Name"])
        how = "sequential scan" if kind == "Seq Scan" else "whole index, filtered"
        before, condition, _ = read.get(table, (0, str(node.get("Filter", "")), how))
        read[table] = (before + rows, condition, how)
    for table, (rows, condition, how) in read.items():
        if rows < big_rows:
            continue
        scans.append(f"{table[1]} ({rows:,} rows, {how}): {condition or 'no filter'}")
        suggestion = _suggest(conn, table, condition)
        if suggestion and suggestion not in suggestions:
            suggestions.append(suggestion)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _owner(conn: psycopg.Connection[Any], schema: str, name: str) -> tuple[tuple[str, str], int]:
    """The table a scan reads (a partition's partitioned parent), and the rows of the relation
    scanned (the planner's estimate)."""
    row = conn.execute(
        "SELECT coalesce(pn.nspname, n.nspname), coalesce(p.relname, c.relname), "
        "greatest(c.reltuples, 0)::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
        "LEFT JOIN pg_class p ON p.oid = i.inhparent "
        "LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    if not row:
        return (schema, name), 0
    return (str(row[0]), str(row[1])), int(str(row[2]))


_OPERATOR = re.compile(r"\(?\(?(\w+)\)?(?:::\w+(?: \w+)*)?\)?\s*(~~\*|~~|@>|\?|=|<=|>=|<|>)")


def _suggest(conn: psycopg.Connection[Any], table: tuple[str, str], condition: str) -> str:
    """The index for the filter's columns: GIN trigram for LIKE/ILIKE, GIN for JSON
    containment, else a btree on the columns compared (equality first)."""
    columns = {
        str(r[0])
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (f'"{table[0]}"."{table[1]}"',),
        ).fetchall()
    }
    found = [(c, op) for c, op in _OPERATOR.findall(condition) if c in columns]
    if not found:
        return ""
    target = f"{table[0]}.{table[1]}"
    for column, op in found:
        if op in ("~~", "~~*"):
            return f"CREATE INDEX ON {target} USING gin ({column} gin_trgm_ops) (pg_trgm)"
        if op in ("@>", "?"):
            return f"CREATE INDEX ON {target} USING gin ({column})"
    ordered = [c for c, op in found if op == "="] + [c for c, op in found if op != "="]
    unique = list(dict.fromkeys(ordered))
    return f"CREATE INDEX ON {target} ({', '.join(unique)})"
