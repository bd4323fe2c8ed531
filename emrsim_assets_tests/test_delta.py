"""The delta between two snapshots of a source: every kind of change, exactly, and nothing else."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from emrsim_assets.delta import SchemaChangedError, find_delta
from emrsim_assets_tests.harness import drafted

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, score NUMERIC);
CREATE TABLE "Tag Names" (label TEXT COLLATE NOCASE PRIMARY KEY, weight REAL) WITHOUT ROWID;
CREATE TABLE codes (code TEXT PRIMARY KEY, note TEXT, extra);
CREATE TABLE log (at TEXT, line TEXT);
"""


def _source(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            [(i, f"User {i}", i) for i in range(1, 201)],
        )
        conn.executemany(
            'INSERT INTO "Tag Names" VALUES (?, ?)', [(f"tag{i}", i / 2) for i in range(50)]
        )
        conn.executemany(
            "INSERT INTO codes VALUES (?, ?, ?)", [(f"c{i:04d}", "n", i) for i in range(300)]
        )
        conn.executemany("INSERT INTO log VALUES (?, ?)", [("2024-01-01", "a")] * 2 + [("b", "b")])
    conn.close()


def _snapshot(source: Path, to: Path) -> Path:
    with sqlite3.connect(source) as live, sqlite3.connect(to) as copy:
        live.backup(copy)
    live.close()
    copy.close()
    return to


def _before_and_after(source: Path, tmp_path: Path, *statements: str) -> tuple[Path, Path]:
    """A snapshot, `statements` run on the source in one transaction, and a second snapshot."""
    before = _snapshot(source, tmp_path / "before.sqlite")
    with sqlite3.connect(source) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    return before, _snapshot(source, tmp_path / "after.sqlite")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(delta_path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(delta_path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608
    finally:
        conn.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "app.sqlite"
    _source(path)
    return path


def test_every_kind_of_change_is_found_exactly(source: Path, tmp_path: Path) -> None:
    plan = drafted(source, tmp_path)
    before = _snapshot(source, tmp_path / "before.sqlite")
    with sqlite3.connect(source) as conn:
        conn.execute("INSERT INTO users VALUES (1001, 'New', 5)")
        conn.execute("UPDATE users SET name = 'user 2' WHERE id = 2")  # equal under NOCASE
        conn.execute("UPDATE users SET score = 3.0 WHERE id = 3")  # NUMERIC keeps 3: no change
        conn.execute("UPDATE users SET score = CAST('4' AS BLOB) WHERE id = 4")  # a storage class
        conn.execute("DELETE FROM users WHERE id = 5")
        conn.execute("DELETE FROM users WHERE id = 6")  # deleted and inserted again, the same
        conn.execute("INSERT INTO users VALUES (6, 'User 6', 6)")
        conn.execute("DELETE FROM users WHERE id = 7")  # deleted and inserted again, changed
        conn.execute("INSERT INTO users VALUES (7, 'User 7', 70)")
        conn.execute("UPDATE \"Tag Names\" SET weight = 99 WHERE label = 'tag1'")
        conn.execute("DELETE FROM \"Tag Names\" WHERE label = 'tag2'")
        conn.execute("UPDATE \"Tag Names\" SET label = 'TAG3' WHERE label = 'tag3'")  # key's case
        conn.execute("INSERT INTO codes VALUES ('c9999', 'new', 1)")
        # A column of no type keeps what it is given: 7 becoming 7.0 is a change; 8 becoming 8
        # again is none, and neither is 'n' written again.
        conn.execute("UPDATE codes SET extra = 7.0 WHERE code = 'c0007'")
        conn.execute("UPDATE codes SET extra = 8, note = 'n' WHERE code = 'c0008'")
    conn.close()
    after = _snapshot(source, tmp_path / "after.sqlite")
    shas = (_sha(before), _sha(after))

    delta = find_delta(before, after, plan, tmp_path / "delta.sqlite")

    users = delta.of("users")
    assert (users.inserted, users.updated, users.deleted) == (1, 3, 1)
    assert _keys(delta.path, users.upserts) == [(2, 0), (4, 0), (7, 0), (1001, 1)]
    assert _keys(delta.path, users.deletes) == [(5,)]
    tags = delta.of("tag_names")
    # 'tag3' -> 'TAG3': equal keys under NOCASE, different ones in PostgreSQL: gone and new.
    assert (tags.inserted, tags.updated, tags.deleted) == (1, 1, 2)
    assert _keys(delta.path, tags.deletes) == [("tag2",), ("tag3",)]
    codes = delta.of("codes")
    assert (codes.inserted, codes.updated, codes.deleted) == (1, 1, 0)
    assert _keys(delta.path, codes.upserts) == [("c0007", 0), ("c9999", 1)]
    assert not delta.of("log").changed
    assert delta.rows == 5 + 4 + 2
    assert (_sha(before), _sha(after)) == shas, "the snapshots are never written"
    assert oct(delta.path.stat().st_mode & 0o777) == "0o600"


def test_a_keyless_table_is_compared_as_a_multiset(source: Path, tmp_path: Path) -> None:
    plan = drafted(source, tmp_path)
    # {a, a, b} becomes {a, b, b}: the same rows as a set, not as a multiset.
    before, after = _before_and_after(
        source, tmp_path, "DELETE FROM log WHERE rowid = 1", "INSERT INTO log VALUES ('b', 'b')"
    )
    log = find_delta(before, after, plan, tmp_path / "delta.sqlite").of("log")
    assert log.whole and log.changed


def test_rowids_renumbered_between_snapshots_are_no_change(source: Path, tmp_path: Path) -> None:
    """A VACUUM may renumber the rowids of a table without an INTEGER PRIMARY KEY; so does a
    table rebuilt by the app. Rows are matched by their key, so neither is a change."""
    plan = drafted(source, tmp_path)
    before = _snapshot(source, tmp_path / "before.sqlite")
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TEMP TABLE kept AS SELECT * FROM codes")
        conn.execute("DELETE FROM codes")
        conn.execute("INSERT INTO codes SELECT * FROM kept ORDER BY code DESC")
    conn.close()
    conn = sqlite3.connect(source)
    conn.execute("VACUUM")
    conn.close()
    after = _snapshot(source, tmp_path / "after.sqlite")
    query = "SELECT rowid FROM codes WHERE code = 'c0000'"
    assert sqlite3.connect(before).execute(query).fetchall() != (
        sqlite3.connect(after).execute(query).fetchall()
    ), "the rowids were renumbered"
    delta = find_delta(before, after, plan, tmp_path / "delta.sqlite")
    assert delta.rows == 0 and not any(t.changed for t in delta.tables)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("ALTER TABLE users ADD COLUMN extra TEXT", "column users.extra is new"),
        ("CREATE TABLE extra (id INTEGER PRIMARY KEY)", "table extra is new"),
        ("CREATE INDEX users_name ON users (name)", "index users_name is new"),
        ("DROP TABLE log", "table log was dropped"),
    ],
)
def test_a_schema_change_between_snapshots_is_refused_naming_it(
    source: Path, tmp_path: Path, change: str, said: str
) -> None:
    plan = drafted(source, tmp_path)
    before, after = _before_and_after(source, tmp_path, change)
    with pytest.raises(SchemaChangedError) as refused:
        find_delta(before, after, plan, tmp_path / "delta.sqlite")
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_the_session_extension_misses_what_the_delta_sees(source: Path, tmp_path: Path) -> None:
    """Why the delta is not SQLite's session diff: it compares with the column's collation and
    affinity, so a change of case in a NOCASE column, or of storage class, is no change to it."""
    apsw = pytest.importorskip("apsw")
    plan = drafted(source, tmp_path)
    before, after = _before_and_after(
        source,
        tmp_path,
        "UPDATE users SET name = 'USER 2' WHERE id = 2",
        "UPDATE users SET score = CAST('1' AS BLOB) WHERE id = 1",
    )
    ours = find_delta(before, after, plan, tmp_path / "delta.sqlite").of("users")
    assert ours.updated == 2

    conn = apsw.Connection(str(after))
    conn.execute("ATTACH DATABASE ? AS b", (str(before),))
    session = apsw.Session(conn, "main")
    session.diff("b", "users")
    theirs = list(apsw.Changeset.iter(session.changeset()))
    conn.close()
    assert len(theirs) < ours.updated, theirs
