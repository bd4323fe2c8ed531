"""Benchmark: the write freeze of `prepare` then `cutover`, beside the full `migrate`.

    python bench/freeze.py --sizes 2000000 10000000 [--changed 0.001]

For each size: a copy of the sample is the app's live file. `emrsim-migrate prepare` runs while
an app-like writer changes `--changed` of the rows in small transactions (new messages and
conversations, edits, deletes, messages moved to another month, across the whole file); the
writer stops, and `emrsim-migrate cutover` runs: its write freeze (printed by it, from its start
to the publish) is the number. Then the live schema is compared with the final file (row counts
per table; every value is proven by the cutover's own checks), and `emrsim-migrate migrate` of
the same final file into a fresh database is timed: the freeze of the one-shot route, which,
like pgloader's and DuckDB's, stops the app for the whole copy.
Results: bench/results/freeze.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    BIN,
    WORK,
    database_url,
    recreate_database,
    sample,
    server,
    write_results,
)

TABLES = ("users", "patients", "conversations", "messages", "patient_records", "user_sessions")


def _copy(source: Path, to: Path) -> None:
    to.unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(to) as dst:
        src.backup(dst, pages=-1)
    src.close()
    dst.close()
    conn = sqlite3.connect(to)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def _writer(
    path: Path, share: float, stop: threading.Event, done: dict[str, int], after: Path
) -> None:
    """`share` of the messages changed in transactions of 100 rows, spread over the file, once
    prepare's snapshot exists (`after`): changes it has not seen, for the cutover to catch."""
    while not after.exists() and not stop.is_set():
        time.sleep(0.05)
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    low, high = conn.execute("SELECT min(id), max(id) FROM messages").fetchone()
    total = int((high - low + 1) * share)
    step = max((high - low) // max(total, 1), 1)
    changed = 0
    position = low
    while changed < total and not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        ids = list(range(position, position + 100 * step, step))
        third = len(ids) // 4
        edit, drop, move, copy = (
            ids[:third],
            ids[third : 2 * third],
            ids[2 * third : 2 * third + 5],
            ids[2 * third + 5 :],
        )

        def marks(group: list[int]) -> str:
            return ",".join("?" * len(group))

        conn.execute(
            f"UPDATE messages SET message = message || ' (edited)' WHERE id IN ({marks(edit)})",  # noqa: S608
            edit,
        )
        conn.execute(f"DELETE FROM messages WHERE id IN ({marks(drop)})", drop)  # noqa: S608
        conn.execute(
            "UPDATE messages SET created_at = (SELECT max(created_at) FROM messages) "  # noqa: S608
            f"WHERE id IN ({marks(move)})",
            move,
        )
        conn.execute(
            "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "  # noqa: S608
            "SELECT conversation_id, sender, message, metadata, created_at FROM messages "
            f"WHERE id IN ({marks(copy)})",
            copy,
        )
        conn.execute(
            "UPDATE conversations SET title = title || '!' WHERE id = "
            "(SELECT conversation_id FROM messages WHERE id >= ? LIMIT 1)",
            (position,),
        )
        conn.execute("COMMIT")
        changed += len(ids)
        position += 100 * step
        time.sleep(0.005)
    done["rows"] = changed
    conn.close()


def _run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout


def one(admin: str, messages: int, share: float) -> dict[str, Any]:
    work = WORK / f"freeze_{messages}"
    work.mkdir(parents=True, exist_ok=True)
    live = work / "live.sqlite"
    _copy(sample(messages), live)
    recreate_database(admin, "bench_freeze")
    env = {
        **os.environ,
        "EMRSIM_SQLITE_PATH": str(live),
        "EMRSIM_PG_URL": database_url(admin, "bench_freeze"),
        "EMRSIM_WORK_DIR": str(work / "emrsim"),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    (work / "dagster_home").mkdir(exist_ok=True)
    for stale in (work / "emrsim" / "snapshot",):
        subprocess.run(["rm", "-rf", str(stale)], check=True)
    tool = str(BIN / "emrsim-migrate")
    stop, done = threading.Event(), {"rows": 0}
    manifest = work / "emrsim" / "snapshot" / "manifest.json"
    writer = threading.Thread(target=_writer, args=(live, share, stop, done, manifest))
    writer.start()
    prepare_s, _ = _run([tool, "prepare"], env)
    writer.join()  # the writer's share is done: the app stops writing
    cutover_s, said = _run([tool, "cutover"], env)
    freeze = re.search(r"write freeze: ([\d.]+) s", said)
    caught = re.search(r"catch-up: ([\d,]+) rows changed", said)
    conn = sqlite3.connect(live)
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608
    conn.close()
    with psycopg.connect(env["EMRSIM_PG_URL"]) as pg:
        live_counts = {
            t: pg.execute(f"SELECT count(*) FROM emrsim.{t}").fetchone()[0]  # type: ignore[index]  # noqa: S608
            for t in TABLES
        }
    assert counts == live_counts, (counts, live_counts)
    # The one-shot route on the same final file: its whole run is its freeze.
    recreate_database(admin, "bench_freeze")
    subprocess.run(["rm", "-rf", str(work / "emrsim" / "snapshot")], check=True)
    migrate_s, _ = _run([tool, "migrate"], env)
    return {
        "messages": messages,
        "changed_rows_written": done["rows"],
        "catch_up_rows": int(caught.group(1).replace(",", "")) if caught else None,
        "prepare_seconds": round(prepare_s, 1),
        "cutover_process_seconds": round(cutover_s, 1),
        "write_freeze_seconds": float(freeze.group(1)) if freeze else None,
        "migrate_seconds": round(migrate_s, 1),
        "live_equals_final_file": True,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--changed", type=float, default=0.001)
    args = parser.parse_args()
    admin, _ = server()
    results = []
    for messages in args.sizes:
        row = one(admin, messages, args.changed)
        print(json.dumps(row), flush=True)
        results.append(row)
    print(
        write_results(
            "freeze",
            results,
            [
                "messages",
                "changed after prepare's snapshot",
                "catch-up rows",
                "prepare (app running)",
                "write freeze: prepare, then cutover",
                "write freeze: migrate",
            ],
            lambda r: [
                f"{r['messages']:,}",
                f"{r['changed_rows_written']:,}",
                f"{r['catch_up_rows']:,}",
                f"{r['prepare_seconds']} s",
                f"{r['write_freeze_seconds']} s",
                f"{r['migrate_seconds']} s",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
