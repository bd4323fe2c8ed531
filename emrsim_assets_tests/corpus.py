"""A corpus of hostile single values: every declared type an app writes, every value that can sit
in it, drafted with the value present and planted after the draft. Each case ends one of four
ways, and only two are allowed:

- exact: loaded, every check passed, and the row equals the oracle's (plain Python) reading;
- named: refused by a sentence that names the table, the column and the row;
- silent: loaded and passed, but the row differs from the oracle's (never allowed);
- unnamed: refused without naming where, or with a traceback (never allowed).

`emrsim_assets_tests/test_hostile_corpus.py` runs it; `python -m emrsim_assets_tests.corpus URL`
prints the counts.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from emrsim_assets import anomalies, content, pipeline, snapshot
from emrsim_assets.draft import draft_plan
from emrsim_assets.errors import MigrationError
from emrsim_assets.plan import Plan, load_plan
from emrsim_assets_tests.oracle import source_rows, target_rows

# Declared type -> two values an app would usually write there.
USUAL: dict[str, tuple[str, str]] = {
    "": ("'a'", "'b'"),
    "TEXT": ("'alpha'", "'beta'"),
    "INTEGER": ("1", "2"),
    "REAL": ("1.5", "2.25"),
    "NUMERIC": ("10", "2.5"),
    "BLOB": ("x'01'", "x'02'"),
    "BOOLEAN": ("0", "1"),
    "DATE": ("'2024-01-01'", "'2024-02-02'"),
    "DATETIME": ("'2024-01-01 10:00:00'", "'2024-02-02 11:00:00.5'"),
    "TIMESTAMP": ("1700000000", "1700003600"),
    "JSON": ("'{\"a\": 1}'", "'[1, 2]'"),
    "UUID": ("'550e8400-e29b-41d4-a716-446655440000'", "'6ba7b810-9dad-11d1-80b4-00c04fd430c8'"),
    "VARCHAR(5)": ("'abc'", "'de'"),
}

# Hostile values as SQLite literals (each becomes row 3 of its table).
HOSTILE: tuple[str, ...] = (
    "NULL",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "9007199254740993",
    "1152921504606846977",
    "1.5",
    "-0.0",
    "1e308",
    "5e-324",
    "9e999",
    "-9e999",
    "''",
    "' '",
    "'text'",
    "' padded '",
    "'Äpfel ✓'",
    "'a' || char(0) || 'b'",
    "x''",
    "x'00ff'",
    "x'36'",
    "CAST(x'c328' AS TEXT)",
    "'2024-03-01 12:00:00'",
    "'2024-03-01T12:00:00Z'",
    "'2024-03-01 12:00:00+05:30'",
    "'2024-03-01 12:00:00.123456789'",
    "'2024-03-01 12:00:00.1234560'",
    "'2024-02-30'",
    "'2024-03-01 12:34:56'",
    "'0000-01-01'",
    "'9999-12-31 23:59:59'",
    "'10000-01-01'",
    "'{\"a\": 1}'",
    '\'{"a": 1, "a": 2}\'',
    "'[1, 2e2, 3.50]'",
    '\'{"s": "\\ud800"}\'',
    '\'{"s": "\\u0000"}\'',
    "'null'",
    "'1e2'",
    "'01'",
    "'+5'",
    "'0x10'",
    "'true'",
    "'NaN'",
    "'Infinity'",
    "'12345678901234567890123'",
    "'550E8400-E29B-41D4-A716-446655440000'",
    "'550e8400e29b41d4a716446655440000'",
    "'abcdef'",
)
MODES = ("drafted", "planted")


@dataclass(frozen=True)
class Outcome:
    declared: str
    value: str
    mode: str
    verdict: str  # exact, named, silent, unnamed
    said: str


def _write(path: Path, declared: str, planted: bool) -> None:
    conn = sqlite3.connect(path)
    try:
        for i, value in enumerate(HOSTILE):
            conn.execute(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v {declared})")
            first, second = USUAL[declared]
            conn.execute(f"INSERT INTO t{i} VALUES (1, {first}), (2, {second})")  # noqa: S608
            if not planted:
                conn.execute(f"INSERT INTO t{i} VALUES (3, {value})")  # noqa: S608
        conn.commit()
    finally:
        conn.close()


def _plant(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        for i, value in enumerate(HOSTILE):
            conn.execute(f"INSERT INTO t{i} VALUES (3, {value})")  # noqa: S608
        conn.commit()
    finally:
        conn.close()


def _named(said: str, table: str) -> bool:
    return f"{table}.v" in said and ("row id 3" in said or "'3'" in said or "id=3" in said)


def _case(
    conn: psycopg.Connection[tuple[object, ...]],
    url: str,
    plan: Plan,
    table: str,
    manifest: snapshot.Manifest,
    copy: Path,
) -> tuple[str, str]:
    planned = plan.table(table)
    try:
        pipeline.load_table(conn, plan, planned, manifest, 1000, progress=lambda _: None)
    except MigrationError as exc:
        return ("named" if _named(str(exc), table) else "unnamed"), str(exc)
    except Exception as exc:  # a traceback: never allowed
        return "unnamed", f"{type(exc).__name__}: {exc}"
    for passed, said, _ in (
        content.content_matches_source(conn, url, plan, planned, manifest, [], 1000),
        anomalies.values_look_alike(manifest, plan, planned, 1000, conn),
    ):
        if not passed:
            return (
                "named" if _named(said, table) or ("v" in said and "3" in said) else "unnamed"
            ), said
    expected = source_rows(copy, planned)
    got = target_rows(conn, planned, schema="emrsim_staging")
    if expected != got:
        return "silent", f"expected {sorted(map(repr, expected))}, got {sorted(map(repr, got))}"
    return "exact", ""


def run(url: str, work: Path, declared_types: list[str] | None = None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for declared in declared_types or list(USUAL):
        for mode in MODES:
            base = work / f"{declared or 'untyped'}-{mode}".replace("(", "").replace(")", "")
            base.mkdir(parents=True, exist_ok=True)
            path = base / "corpus.sqlite"
            _write(path, declared, planted=mode == "planted")
            try:
                plan_path = base / "plan.yaml"
                plan_path.write_text(draft_plan(path), encoding="utf-8")
                plan = load_plan(plan_path)
            except MigrationError as exc:
                outcomes += [Outcome(declared, v, mode, "unnamed", str(exc)) for v in HOSTILE]
                continue
            if mode == "planted":
                _plant(path)
            try:
                manifest = snapshot.take_snapshot(path, base / "snapshot", plan, [])
            except MigrationError as exc:
                outcomes += [Outcome(declared, v, mode, "unnamed", str(exc)) for v in HOSTILE]
                continue
            copy = Path(manifest.snapshot_path)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS emrsim_staging CASCADE"))
            for i, value in enumerate(HOSTILE):
                # A connection per case, as a Dagster step has: a refused load rolls back.
                with psycopg.connect(url) as conn:
                    verdict, said = _case(conn, url, plan, f"t{i}", manifest, copy)
                outcomes.append(Outcome(declared, value, mode, verdict, said))
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counted = Counter(o.verdict for o in outcomes)
    return {k: counted.get(k, 0) for k in ("exact", "named", "silent", "unnamed")}


if __name__ == "__main__":
    found = run(sys.argv[1], Path(tempfile.mkdtemp()))
    print(json.dumps(summary(found)))
    for outcome in found:
        if outcome.verdict in ("silent", "unnamed"):
            print(outcome)
