"""Hostile SQLite files, one writer per shape: the databases people actually bring.

Each writer creates its tables in a fresh file through Python's sqlite3, the way an app would.
Adding a shape is adding a function here and a row in SHAPES.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from emrsim_assets.sample_app import write_app_sample

LONG = "A" + "very_long_name_" * 5  # 76 characters: past PostgreSQL's 63


def mixed_case_and_long_names(conn: sqlite3.Connection) -> None:
    """Chinook's spelling: CamelCase tables and columns, a declared reference, NVARCHAR."""
    conn.executescript(
        f"""
        CREATE TABLE "Artist" ("ArtistId" INTEGER PRIMARY KEY, "Name" NVARCHAR(120));
        CREATE TABLE "Album" (
            "AlbumId" INTEGER PRIMARY KEY,
            "Title" NVARCHAR(160) NOT NULL,
            "ArtistId" INTEGER NOT NULL REFERENCES "Artist" ("ArtistId")
        );
        CREATE INDEX "IFK_AlbumArtistId" ON "Album" ("ArtistId");
        CREATE TABLE "{LONG}" ("{LONG}_column" TEXT, "{LONG}_Column2" TEXT);
        """
    )
    conn.executemany('INSERT INTO "Artist" VALUES (?, ?)', [(1, "AC/DC"), (2, "Björk"), (3, None)])
    conn.executemany(
        'INSERT INTO "Album" VALUES (?, ?, ?)',
        [(i, f"Album №{i}", 1 + i % 3) for i in range(1, 260)],
    )
    conn.execute(
        'CREATE TABLE "Order Details" ("Order ID" INTEGER PRIMARY KEY, "Unit ""Price""" REAL)'
    )
    conn.executemany('INSERT INTO "Order Details" VALUES (?, ?)', [(1, 0.99), (2, 1.5e-7)])
    rows = [("a", "b"), ("a", "b"), (None, "c")]
    conn.executemany(f'INSERT INTO "{LONG}" VALUES (?, ?)', rows)  # noqa: S608 (our constant)


def composite_and_missing_keys(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE enrollment (
            student_id INTEGER NOT NULL, course_code TEXT NOT NULL, grade REAL,
            PRIMARY KEY (student_id, course_code)
        );
        CREATE TABLE log_lines (line TEXT, level TEXT);
        """
    )
    conn.executemany(
        "INSERT INTO enrollment VALUES (?, ?, ?)",
        [(s, c, s / 7) for s in range(1, 60) for c in ("BIO101", "CHEM2")],
    )
    # No key, and duplicate rows: every copy must arrive.
    conn.executemany(
        "INSERT INTO log_lines VALUES (?, ?)", [("started", "info")] * 3 + [("x", None)] * 150
    )


def without_rowid(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, n INTEGER) WITHOUT ROWID;
        CREATE TABLE pairs (a INTEGER, b TEXT, PRIMARY KEY (b, a)) WITHOUT ROWID;
        """
    )
    conn.executemany(
        "INSERT INTO kv VALUES (?, ?, ?)",
        [(f"key-{i:04d}", bytes([i % 256, 0, 255]), i) for i in range(300)],
    )
    conn.executemany("INSERT INTO pairs VALUES (?, ?)", [(i, f"b{i % 5}") for i in range(250)])


def blob_real_numeric(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE measurements (id INTEGER PRIMARY KEY, payload BLOB, ratio REAL, "
        "amount NUMERIC, price DECIMAL(10,2), gauge)"
    )
    # gauge: untyped, so SQLite keeps an integer as an INTEGER where REAL's affinity would not.
    conn.executemany(
        "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
        [
            (1, b"\x00\xff\xfe not utf-8 \x80", 0.1 + 0.2, 2**62 + 1, 19.99, 0.5),
            (2, b"", 1e300, -5, 0.1, 2),
            (3, None, -2.5, 12345678901234567, 3, -1.25),
            (4, bytes(range(256)), 5e-324, 1.5, None, None),
        ],
    )


def text_keys_with_orphans(conn: sqlite3.Connection) -> None:
    """Nanoid keys and an undeclared reference that the app writes orphans into by design."""
    conn.executescript(
        """
        CREATE TABLE sessions (id TEXT PRIMARY KEY, started_at TEXT DEFAULT CURRENT_TIMESTAMP);
        CREATE TABLE turns (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, said TEXT);
        """
    )
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?)",
        [(f"s{i:03d}xYz-_Q", f"2024-0{1 + i % 9}-1{i % 10} 10:00:00") for i in range(20)],
    )
    conn.executemany(
        "INSERT INTO turns VALUES (?, ?, ?)",
        [(f"t{i:05d}", f"s{i % 25:03d}xYz-_Q", f"turn {i} ✓") for i in range(400)],
    )


def defaults_and_booleans(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE settings (id INTEGER PRIMARY KEY AUTOINCREMENT, theme TEXT DEFAULT 'dark', "
        "retries INTEGER DEFAULT 3, ratio REAL DEFAULT 0.5, quote TEXT DEFAULT 'it''s', "
        "created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, enabled BOOLEAN DEFAULT 0, "
        # Defaults PostgreSQL cannot take as written: translated, or named and not kept.
        'stamp TIMESTAMP DEFAULT 0, label TEXT DEFAULT "0", '
        "made TEXT DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')), count INTEGER DEFAULT '7')"
    )
    conn.executemany(
        "INSERT INTO settings (theme, enabled, created_at, stamp, made) VALUES (?, ?, ?, ?, ?)",
        [
            ("light", 1, "2024-05-01 08:00:00", "2024-05-01 08:00:00", "2024-05-01 08:00:00.000"),
            ("dark", 0, "2024-05-02T09:30:00.250Z", None, "2024-05-02 09:30:00.250"),
        ],
    )


def reserved_names(conn: sqlite3.Connection) -> None:
    for name in ("def", "config", "type", "input"):
        conn.execute(f'CREATE TABLE "{name}" ("select" TEXT, "from" INTEGER, "context" TEXT)')
        conn.execute(f'INSERT INTO "{name}" VALUES (?, ?, ?)', ("where", 1, "x"))  # noqa: S608


def views_and_rowid_columns(conn: sqlite3.Connection) -> None:
    """A view (no rows of its own), a generated column (computed from the others), a trigger
    (the app's behaviour, which PostgreSQL will not run) and a column named rowid that hides
    the real one."""
    conn.executescript(
        """
        CREATE TABLE notes (rowid TEXT, body TEXT);
        CREATE TABLE people (
            id INTEGER PRIMARY KEY, name TEXT,
            initial TEXT GENERATED ALWAYS AS (substr(name, 1, 1)) VIRTUAL
        );
        CREATE VIEW people_named_a AS SELECT * FROM people WHERE name LIKE 'A%';
        CREATE TRIGGER people_noted AFTER INSERT ON people
        BEGIN INSERT INTO notes VALUES ('p' || new.id, 'added ' || new.name); END;
        CREATE TRIGGER notes AFTER DELETE ON people BEGIN SELECT 1; END;  -- a table's name
        """
    )
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(f"r{i}", f"note {i}") for i in range(54)])
    conn.executemany(
        "INSERT INTO people (id, name) VALUES (?, ?)", [(-(2**63), "Ann"), (2**63 - 1, "Bo")]
    )


def timestamps_every_form(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, happened_at TEXT NOT NULL, "
        "at_seconds_at INTEGER, logged_ms_at INTEGER, precise_at TEXT, day DATE)"
    )
    texts = [
        "2024-03-01 10:00:00",
        "2024-03-01T10:00:00Z",
        "2024-03-01T10:00:00.123Z",
        "2024-03-01T12:00:00+02:00",
        "2024-03-01 10:00:00.123456",
        "2024-02-29T23:59:59.999999-05:30",
        "2024-03-01 10:00",
    ]
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                i + 1,
                text,
                1_700_000_000 + i,
                1_700_000_000_000 + i,
                f"1700000000.{i}25",
                f"2024-03-0{1 + i}",
            )
            for i, text in enumerate(texts)
        ],
    )


def wide_table(conn: sqlite3.Connection) -> None:
    """40 columns of every storage class (a storage class per column takes 27 per 64-bit
    integer), NULL runs and a blob at the far end."""
    kinds = ["INTEGER", "REAL", "TEXT", "BLOB"]
    columns = ", ".join(f"c{i:02d} {kinds[i % 4]}" for i in range(1, 40))
    conn.execute(f"CREATE TABLE wide (id INTEGER PRIMARY KEY, {columns})")

    def value(row: int, i: int) -> object:
        if (row + i) % 7 == 0:
            return None
        return [row * i, row / (i + 1), f"r{row}c{i}", bytes([row % 256, i])][i % 4]

    rows = [(row, *(value(row, i) for i in range(1, 40))) for row in range(1, 120)]
    conn.executemany(f"INSERT INTO wide VALUES ({', '.join('?' * 40)})", rows)  # noqa: S608


def mixed_storage_classes(conn: sqlite3.Connection) -> None:
    """SQLite's dynamic typing as apps use it: an untyped settings value holding numbers and
    text, a BLOB column an app also wrote text (some not UTF-8) and numbers into, and numbers
    no single PostgreSQL number type holds (infinities beside integers past 2^53)."""
    conn.executescript(
        """
        CREATE TABLE settings (key TEXT PRIMARY KEY, value);
        CREATE TABLE attachments (id INTEGER PRIMARY KEY, data BLOB);
        CREATE TABLE readings (sensor TEXT, level NUMERIC, ratio REAL);
        CREATE TABLE notes (id INTEGER PRIMARY KEY, body);
        """
    )
    # An untyped column that holds only text today: text (a number written later is refused).
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"note {i}") for i in range(1, 6)])
    conn.executemany(
        "INSERT INTO settings VALUES (?, ?)",
        [
            ("retries", 3),
            ("ratio", 0.1 + 0.2),
            ("huge", 1e300),
            ("tiny", 5e-324),
            ("limit", 2**63 - 1),
            ("theme", "dark"),
            ("empty", ""),
            ("number_as_text", "42"),
            ("unset", None),
        ],
    )
    conn.executemany(
        "INSERT INTO attachments VALUES (?, ?)",
        [(1, b"\x89PNG\x00\xff"), (2, "a note ✓"), (3, 1234), (4, 2.5), (5, None), (6, b"")],
    )
    conn.execute("INSERT INTO attachments VALUES (7, CAST(x'ff80fe41' AS TEXT))")  # not UTF-8
    conn.executemany(
        "INSERT INTO readings VALUES (?, ?, ?)",
        [
            ("a", 2**62 + 1, float("inf")),
            ("b", float("-inf"), 1.5),
            ("c", 7, float("-inf")),
            ("d", None, None),
        ],
    )


def app_schema(path: Path) -> None:
    write_app_sample(path, turns=600, seed=11)


Writer = Callable[[sqlite3.Connection], None]
SHAPES: dict[str, Writer | Callable[[Path], None]] = {
    "mixed_case_and_long_names": mixed_case_and_long_names,
    "composite_and_missing_keys": composite_and_missing_keys,
    "without_rowid": without_rowid,
    "blob_real_numeric": blob_real_numeric,
    "text_keys_with_orphans": text_keys_with_orphans,
    "defaults_and_booleans": defaults_and_booleans,
    "reserved_names": reserved_names,
    "views_and_rowid_columns": views_and_rowid_columns,
    "timestamps_every_form": timestamps_every_form,
    "wide_table": wide_table,
    "mixed_storage_classes": mixed_storage_classes,
    "app_schema": app_schema,
}


def write_shape(name: str, path: Path) -> Path:
    writer = SHAPES[name]
    if writer is app_schema:
        app_schema(path)
        return path
    conn = sqlite3.connect(path)
    try:
        writer(conn)  # type: ignore[arg-type]
        conn.commit()
    finally:
        conn.close()
    return path
