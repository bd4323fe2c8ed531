"""A random hostile SQLite file per seed: names, declarations, keys and values nobody listed.

The shapes in shapes.py are the databases we thought of; a soup is one we did not. Each seed
writes one to three tables whose names, declared types, keys and values are drawn from pools of
what SQLite accepts and apps write: quoted and reserved names, names equal after 63 bytes,
affinities that surprise (FLOATING POINT is an integer), values of another storage class than
the declaration, NUL bytes, invalid UTF-8, extreme numbers, every timestamp form. The same seed
always writes the same file.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

LONG = "x" * 60  # two names that share their first 63 bytes
NAMES = [
    "items",
    "Order",
    "user",
    "select",
    "My Table",
    'say "hi"',
    "naïve_ünïcode",
    "表",
    "Mixed_Case_Name",
    LONG + "_first",
    LONG + "_second",
    "dagster",
    "a-b.c",
    "a_b.c",  # the same target name as a-b.c
    "rowid",  # shadows the row id
    "",  # SQLite takes the empty name
    "$$$",  # no character a target name keeps
    "ü" * 40,  # 80 bytes: past 63 in the middle of a character
    "表" * 30,
    "0starts_with_digit",
    "trailing space ",
]
DECLARED = [
    "",
    "INTEGER",
    "INT",
    "BIGINT",
    "TEXT",
    "REAL",
    "BLOB",
    "NUMERIC",
    "DECIMAL(10,2)",
    "BOOLEAN",
    "DATETIME",
    "DATE",
    "TIMESTAMP",
    "JSON",
    "VARCHAR(5)",
    "FLOATING POINT",  # INTEGER affinity: it contains INT
    "STRING",  # NUMERIC affinity
    "DOUBLE PRECISION",
    "UNSIGNED BIG INT",
    "CHARACTER(20)",
    "UUID",
]


# The values each kind draws from: what apps write, and the extremes of each storage class.
POOLS: dict[str, list[Any]] = {
    "text": [
        "",
        " ",
        "plain",
        "ünïcödé ✓ 表",
        "line\nbreak\ttab",
        "quote ' and \" and \\",
        "x" * 3000,
        "42",
        "4.20",
        "1e3",
        "NULL",
        "true",
        "\U0001f600 emoji",
    ],
    "integer": [0, 1, -1, 7, -42, 999, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)],
    "real": [0.0, -0.0, 0.1 + 0.2, 1e300, -1e-300, 5e-324, float("inf"), float("-inf"), 2.5],
    "blob": [b"", b"\x00", bytes(range(256)), b"\xff\xfe\x80 not utf-8", b"plain"],
    "timestamp": [
        "2024-01-31 23:59:59",
        "2024-02-29T12:00:00Z",
        "2024-03-01T00:00:00.123456+05:30",
        "2023-12-31 10:00",
        "2024-06-15T08:30:00.5z",
        " 2024-06-15 08:30:00 ",
        "1999-12-31 23:59:59-08:00",
    ],
    "json": [
        '{"a": 1}',
        '{"b": [1, 2, {"c": null}], "a": "x"}',
        "[]",
        '{"n": 1e2}',
        '{"s": "\\u00e9\\n"}',
        '{"deep": {"deeper": {"deepest": [true, false]}}}',
    ],
}


def _pick(pool: list[Any]) -> Callable[[random.Random], Any]:
    return lambda rng: rng.choice(pool)


def _uuid(rng: random.Random) -> str:
    return "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031 (a fixed layout)
        rng.getrandbits(32),
        rng.getrandbits(16),
        rng.getrandbits(16),
        rng.getrandbits(16),
        rng.getrandbits(48),
    )


KINDS: dict[str, Callable[[random.Random], Any]] = {
    **{kind: _pick(pool) for kind, pool in POOLS.items()},
    "uuid": _uuid,
    "epoch": lambda rng: rng.randint(1_500_000_000, 1_800_000_000),
    "boolean": lambda rng: rng.randint(0, 1),
}


_START = datetime(2023, 12, 20, tzinfo=UTC)
_EDGES = [  # the last and first microsecond of a month, and one an offset moves across it
    datetime(2024, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 22, 30, tzinfo=UTC),
]


def _instant(rng: random.Random, form: str) -> str | int:
    """A time in the plan's forms: text (naive UTC, T/Z, an offset, fractions) or an epoch."""
    moment = (
        rng.choice(_EDGES)
        if rng.random() < 0.1
        else _START + timedelta(seconds=rng.randint(0, 100 * 86_400))
    )
    if form == "s":
        return int(moment.timestamp())
    if form == "ms":
        return int(moment.timestamp() * 1000)
    spelled = rng.choice(["naive", "t_z", "offset", "fraction"]) if form == "mixed" else "naive"
    if spelled == "t_z":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if spelled == "offset":
        return moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    if spelled == "fraction":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _start(seed: int) -> tuple[random.Random, list[str], bool]:
    rng = random.Random(seed)
    names = rng.sample(NAMES, rng.randint(1, 3))
    # A quarter of the soups hold what PostgreSQL text cannot: a NUL byte, invalid UTF-8.
    return rng, names, rng.random() < 0.25


def utf16(seed: int) -> bool:
    """Whether the soup of `seed` keeps its text in UTF-16 (PRAGMA encoding), as some apps'
    files do: one in five."""
    return random.Random(f"utf16:{seed}").random() < 0.2


def poisoned(seed: int) -> bool:
    """Whether the soup of `seed` may hold a value PostgreSQL text cannot (NUL, not UTF-8)."""
    return _start(seed)[2]


def write_soup(path: Path, seed: int) -> Path:
    """Write the soup of `seed` to `path` (a new file) and return the path."""
    rng, names, poison = _start(seed)
    conn = sqlite3.connect(path)
    try:
        if utf16(seed):
            conn.execute("PRAGMA encoding = 'UTF-16le'")
        parents: dict[str, list[int]] = {}  # tables keyed by integer: their keys
        for table in names:
            _write_table(conn, rng, table, poison, parents)
            # The app's behaviour: a trigger now and then, named like its table or not.
            chance = random.Random(f"trigger:{seed}:{table}").random()
            if chance < 0.25:
                trigger = table if chance < 0.1 else f"{table} touch"
                conn.execute(
                    f"CREATE TRIGGER {quote_name(trigger)} AFTER INSERT ON {quote_name(table)} "
                    "BEGIN SELECT 1; END"
                )
        conn.commit()
    finally:
        conn.close()
    return path


def _write_table(
    conn: sqlite3.Connection,
    rng: random.Random,
    table: str,
    poison: bool,
    parents: dict[str, list[int]],
) -> None:
    columns = rng.sample(NAMES, rng.randint(1, 5))
    kinds = [rng.choice(list(KINDS)) for _ in columns]
    declared = [rng.choice(DECLARED) for _ in columns]
    key = rng.choice(
        ["rowid", "integer", "int_not_alias", "text", "composite", "none", "without_rowid"]
    )
    parts = [f"{quote_name(c)} {d}".strip() for c, d in zip(columns, declared, strict=True)]
    # A reference to an earlier table's integer key, declared or not, with orphans now and then.
    parent = rng.choice(sorted(parents)) if parents and rng.random() < 0.6 else None
    declare = rng.random() < 0.5
    if parent is not None:
        target = f" REFERENCES {quote_name(parent)} (id)" if declare else ""
        parts.append(f'"parent_id" INTEGER{target}')
    # A time-ordered table (what the draft partitions by month): one form per table, or all
    # text forms mixed, instants across month ends.
    timed = rng.choice([None, None, "text", "mixed", "s", "ms"])
    if timed is not None:
        parts.append('"created_at" NOT NULL')
    suffix = ""
    if key == "integer":
        parts.insert(0, '"id" INTEGER PRIMARY KEY')
    elif key == "int_not_alias":
        parts.insert(0, '"id" INT PRIMARY KEY NOT NULL')  # not the rowid: INT is not INTEGER
    elif key in ("text", "without_rowid"):
        parts.insert(0, '"id" TEXT PRIMARY KEY NOT NULL')
        suffix = " WITHOUT ROWID" if key == "without_rowid" else ""
    elif key == "composite":
        parts.insert(0, '"id_b" TEXT NOT NULL')
        parts.insert(0, '"id_a" INTEGER NOT NULL')
        parts.append('PRIMARY KEY ("id_a", "id_b")')
    conn.execute(f"CREATE TABLE {quote_name(table)} ({', '.join(parts)}){suffix}")
    rows = rng.randint(0, 300)
    wrong = rng.random() < 0.3  # this table has values of another storage class, now and then
    written: list[int] = []
    for n in range(rows):
        values: list[Any] = []
        for kind in kinds:
            if rng.random() < 0.1:
                values.append(None)
            elif wrong and rng.random() < 0.05:
                values.append(KINDS[rng.choice(list(KINDS))](rng))
            elif poison and kind == "text" and rng.random() < 0.05:
                values.append("with\x00nul")
            else:
                values.append(KINDS[kind](rng))
        if parent is not None:
            choices = parents[parent]
            orphan = not choices or rng.random() < 0.1
            values.append(999_999_999 if orphan else rng.choice(choices))
        if timed is not None:
            values.append(_instant(rng, timed))
        keys: list[Any] = []
        if key in ("integer", "int_not_alias"):
            # Negative, zero and 64-bit ids beside small ones.
            keys = [n * 3 - 150 if n % 50 else 2**62 + n]
            written.append(keys[0])
        elif key in ("text", "without_rowid"):
            keys = [f"k-{n:05d}-{_uuid(rng)[:4]}"]
        elif key == "composite":
            keys = [n // 4, f"part {n % 4}"]
        marks = ", ".join("?" * (len(keys) + len(values)))
        conn.execute(f"INSERT INTO {quote_name(table)} VALUES ({marks})", [*keys, *values])  # noqa: S608
    if key in ("integer", "int_not_alias"):
        parents[table] = written
    if poison and rng.random() < 0.5 and rows:
        # Invalid UTF-8 stored as TEXT: only SQL's CAST writes it, as an app's C code might.
        if key in ("integer", "int_not_alias", "text", "without_rowid"):
            where = f"id = (SELECT min(id) FROM {quote_name(table)})"  # noqa: S608
        elif "rowid" not in columns:
            where = f"rowid = (SELECT min(rowid) FROM {quote_name(table)})"  # noqa: S608
        else:
            return  # the real row id is shadowed and there is no key: no one row to name
        conn.execute(
            f"UPDATE {quote_name(table)} SET {quote_name(columns[0])} = CAST(x'ff80fe41' AS TEXT) "  # noqa: S608
            f"WHERE {where}"
        )
