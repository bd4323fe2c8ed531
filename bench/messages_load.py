"""The messages table alone, SQLite read to committed rows: `python bench/messages_load.py SQLITE URL DIR`.

A snapshot first (not timed), then every month loaded by the code path `migrate` uses, with the
plan's secondary indexes left out; it prints the seconds from the first SQLite read to the last
commit: what `psql \\copy` of a ready CSV is compared with. The primary key is still built.
Then it times content_matches_source over the same rows (`check_seconds`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from emrsim_assets import content, pipeline, postgres, snapshot
from emrsim_assets.definitions import month_partitions
from emrsim_assets.plan import load_plan
from emrsim_assets.schemas import Conn


def main() -> int:
    sqlite_path, url, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    plan = load_plan(None)
    months = list(month_partitions(plan).get_partition_keys())
    manifest = snapshot.take_snapshot(sqlite_path, work, plan, months)
    table = dataclasses.replace(plan.table("messages"), indexes=())

    @contextmanager
    def connect() -> Iterator[Conn]:
        conn = postgres.connect(url)
        try:
            yield conn
        finally:
            conn.close()

    started = time.perf_counter()
    stats = pipeline.load_months(
        connect,
        plan,
        table,
        [date.fromisoformat(m) for m in months],
        manifest,
        int(os.environ.get("EMRSIM_BATCH_ROWS", "50000")),
        int(os.environ.get("EMRSIM_WORKERS", "3")),
        lambda line: None,
    )
    seconds = time.perf_counter() - started
    rows = sum(s.loaded_rows for s in stats)
    # Then the proof: content_matches_source over the same months (read both sides back).
    started = time.perf_counter()
    with connect() as conn:
        passed, description, _ = content.content_matches_source(
            conn,
            url,
            plan,
            table,
            manifest,
            months,
            int(os.environ.get("EMRSIM_BATCH_ROWS", "50000")),
        )
    check_seconds = time.perf_counter() - started
    if not passed:
        print(description, file=sys.stderr)
        return 1
    print(json.dumps({"rows": rows, "seconds": seconds, "check_seconds": check_seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
