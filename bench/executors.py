"""Our threaded executor against Dagster's multiprocess one (forkserver start), alternated: the
`migrate` job run by `dagster job execute`, as a UI-launched run is, on one SQLite file, each
round on a fresh database.

    .venv/bin/python bench/executors.py --sqlite app.sqlite --rounds 2 \
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from emrsim_assets.defs.build import month_partitions
from emrsim_assets.plan import load_plan

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from run import run_timed  # noqa: E402  (bench/run.py: one way to time a process)


def run(executor: str, sqlite: Path, admin_url: str, months: list[str]) -> tuple[float, float]:
    database = f"bench_{executor}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "dagster_home"
        home.mkdir()
        env = {
            **os.environ,
            "EMRSIM_EXECUTOR": executor,
            "EMRSIM_SQLITE_PATH": str(sqlite),
            "EMRSIM_PG_URL": conninfo.make_conninfo(admin_url, dbname=database),
            "EMRSIM_WORK_DIR": str(Path(scratch) / "work"),
            "DAGSTER_HOME": str(home),
        }
        tags = {
            "dagster/asset_partition_range_start": months[0],
            "dagster/asset_partition_range_end": months[-1],
        }
        seconds, peak, _ = run_timed(
            [
                str(REPO / ".venv" / "bin" / "dagster"),
                "job",
                "execute",
                "-m",
                "emrsim_assets.definitions",
                "-j",
                "migrate",
                "--tags",
                json.dumps(tags),
            ],
            env,
        )
    # Peak of the largest process: the run's own (threads) or of one step's (multiprocess).
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sqlite", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg-url", required=True)
    args = parser.parse_args()
    sqlite = args.sqlite.resolve()
    months = list(month_partitions(load_plan(), sqlite).get_partition_keys())
    times: dict[str, list[float]] = {"threads": [], "multiprocess": []}
    for _ in range(args.rounds):
        for executor in times:
            seconds, peak = run(executor, sqlite, args.pg_url, months)
            times[executor].append(seconds)
            print(f"{executor}: {seconds:.2f} s, largest process {peak:.0f} MB", flush=True)
    for executor, found in times.items():
        print(
            f"{executor}: median {statistics.median(found):.2f} s ({', '.join(f'{s:.2f}' for s in found)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
