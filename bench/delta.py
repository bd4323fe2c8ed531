"""Benchmark: finding what changed between two snapshots of the source, at several sizes.

    python bench/delta.py --sizes 2000000 10000000 [--changed 0.001]

For each size it writes (or reuses) the sample, takes a first snapshot (SQLite's backup API, as
`source_snapshot` does), then changes a share of the rows as an app would: updates of messages
(some moved to another month), conversations and users, deletes across tables and months, new
conversations and messages. Then it takes the second snapshot and times, each on the same pair:
  - snapshot: the backup API copy of the changed source (what a final snapshot costs);
  - delta (SQL join): emrsim_assets.delta.find_delta, a key join and an anti-join per table in
    SQLite's engine, exact (storage class and bytes);
  - delta (session diff): SQLite's session extension through apsw (`Session.diff` per table,
    then the changeset), when apsw is installed; it compares with the column's collation and
    affinity, so it sees fewer changes on hostile data (not on this sample).
Results: bench/results/delta.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import WORK, sample, write_results  # noqa: E402
from emrsim_assets.delta import find_delta  # noqa: E402
from emrsim_assets.plan import load_plan  # noqa: E402


def _backup(source: Path, to: Path) -> float:
    to.unlink(missing_ok=True)
    started = time.perf_counter()
    with sqlite3.connect(source) as live, sqlite3.connect(to) as copy:
        live.backup(copy, pages=65536)
    live.close()
    copy.close()
    return time.perf_counter() - started


def _change(path: Path, share: float) -> dict[str, int]:
    """Change `share` of every table's rows, spread over the whole table (every month)."""
    conn = sqlite3.connect(path, isolation_level=None)
    counts = {
        name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # noqa: S608
        for name in ("messages", "conversations", "users")
    }
    every = max(int(1 / share), 1)
    done: dict[str, int] = {}
    conn.execute("BEGIN")
    cur = conn.execute(
        f"UPDATE messages SET message = message || ' (edited)' WHERE rowid % {every} = 1"  # noqa: S608
    )
    done["messages updated"] = cur.rowcount
    # A row whose month changes: it takes the timestamp of a row a third of the table back
    # (another month, in the sample's own format).
    cur = conn.execute(
        "UPDATE messages SET created_at = coalesce((SELECT m.created_at FROM messages AS m "  # noqa: S608
        f"WHERE m.rowid = messages.rowid - {counts['messages'] // 3}), created_at) "
        f"WHERE rowid % {every * 4} = 2"
    )
    done["messages moved to another month"] = cur.rowcount
    cur = conn.execute(f"DELETE FROM messages WHERE rowid % {every} = 3")  # noqa: S608
    done["messages deleted"] = cur.rowcount
    cur = conn.execute(
        f"UPDATE conversations SET title = title || '!' WHERE rowid % {every} = 1"  # noqa: S608
    )
    done["conversations updated"] = cur.rowcount
    cur = conn.execute(
        f"UPDATE users SET updated_at = created_at WHERE rowid % {every} = 1"  # noqa: S608
    )
    done["users updated"] = cur.rowcount
    # New rows: copies of existing ones under new keys, written now.
    cur = conn.execute(
        "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "
        "SELECT conversation_id, sender, message, metadata, created_at FROM messages "
        "WHERE rowid % ? = 5 LIMIT ?",
        (every, max(counts["messages"] // every, 1)),
    )
    inserted = cur.rowcount
    done["messages inserted"] = inserted
    conn.execute("COMMIT")
    conn.close()
    return done


def _session_diff(before: Path, after: Path, tables: list[str]) -> tuple[float, int] | None:
    try:
        import apsw
    except ImportError:
        return None
    started = time.perf_counter()
    conn = apsw.Connection(str(after), flags=apsw.SQLITE_OPEN_READONLY)
    conn.execute("ATTACH DATABASE ? AS b", (str(before),))
    session = apsw.Session(conn, "main")
    changes = 0
    for table in tables:
        session.diff("b", table)
    changeset = session.changeset()
    for _ in apsw.Changeset.iter(changeset):
        changes += 1
    conn.close()
    return time.perf_counter() - started, changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--changed", type=float, default=0.001)
    args = parser.parse_args()
    plan = load_plan()
    results: list[dict[str, Any]] = []
    for messages in args.sizes:
        source = sample(messages)
        work = WORK / f"delta_{messages}"
        work.mkdir(parents=True, exist_ok=True)
        live = work / "live.sqlite"
        _backup(source, live)  # a copy to change: the sample stays as written
        before = work / "before.sqlite"
        first = _backup(live, before)
        changed = _change(live, args.changed)
        after = work / "after.sqlite"
        second = _backup(live, after)
        delta = find_delta(before, after, plan, work / "delta.sqlite")
        session = _session_diff(before, after, [t.source for t in plan.tables])
        row = {
            "messages": messages,
            "size_mb": round(after.stat().st_size / 2**20),
            "changed": changed,
            "snapshot_seconds": [round(first, 2), round(second, 2)],
            "delta_sql_seconds": round(delta.seconds, 2),
            "delta_sql_rows": delta.rows,
            "delta_tables": {
                t.table: [t.inserted, t.updated, t.deleted] for t in delta.tables if t.changed
            },
            "session_diff_seconds": round(session[0], 2) if session else None,
            "session_diff_changes": session[1] if session else None,
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    print(
        write_results(
            "delta",
            results,
            [
                "messages",
                "file",
                "final snapshot",
                "delta, SQL join",
                "rows in delta",
                "delta, session diff",
                "changes",
            ],
            lambda r: [
                f"{r['messages']:,}",
                f"{r['size_mb']:,} MB",
                f"{r['snapshot_seconds'][1]} s",
                f"{r['delta_sql_seconds']} s",
                f"{r['delta_sql_rows']:,}",
                "n/a" if r["session_diff_seconds"] is None else f"{r['session_diff_seconds']} s",
                "n/a" if r["session_diff_changes"] is None else f"{r['session_diff_changes']:,}",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
