"""Old code against new, alternated: `emrsim-migrate migrate` of one SQLite file by two checkouts,
each round on a fresh database of the same server, so that a change to the structure shows
whether it costs time or memory.

    .venv/bin/python bench/compare_trees.py --old /tmp/old --sqlite app.sqlite --rounds 3 \
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres

--old is a checkout of the older code (git worktree add /tmp/old <commit>); it runs with this
venv's packages, its own package first on PYTHONPATH. Dagster's instance is a fresh temporary
DAGSTER_HOME each run (SQLite storage), the same for both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from run import run_timed  # noqa: E402  (bench/run.py: one way to time a process)


def run(tree: Path | None, sqlite: Path, admin_url: str, database: str) -> tuple[float, float]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "EMRSIM_PG_URL": conninfo.make_conninfo(admin_url, dbname=database),
            "EMRSIM_WORK_DIR": str(Path(scratch) / "work"),
            "DAGSTER_HOME": str(Path(scratch) / "dagster_home"),
        }
        Path(env["DAGSTER_HOME"]).mkdir()
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        seconds, peak, output = run_timed(
            [sys.executable, "-m", "emrsim_assets.cli", "migrate", "--sqlite", str(sqlite)], env
        )
    if "cutover: done" not in output:
        raise RuntimeError(output[-3000:])
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--sqlite", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", required=True, help="a role that may create databases")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    peaks: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, tree in (("old", args.old.resolve()), ("new", None)):
            seconds, peak = run(tree, args.sqlite.resolve(), args.pg_url, f"bench_{name}")
            times[name].append(seconds)
            peaks[name].append(peak)
            print(f"{name}: {seconds:.2f} s, peak {peak:.0f} MB", flush=True)
    for name in ("old", "new"):
        print(
            f"{name}: {', '.join(f'{s:.2f}' for s in times[name])} s; "
            f"median {statistics.median(times[name]):.2f} s; peak "
            f"{min(peaks[name]):.0f} to {max(peaks[name]):.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
