"""Every setting a user gives, read from the environment in one place and checked once.

The environment is the interface because a migration runs in several processes: the CLI, and,
under `make dev`, Dagster's webserver, daemon and run workers, which load the definitions
afresh. The CLI therefore writes what it was told on its command line (--sqlite, --plan) into
its own environment before it starts them; every process then reads the same Settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg import conninfo

from emrsim_assets.errors import MigrationError

DEFAULT_WORK_DIR = ".emrsim"


@dataclass(frozen=True)
class Settings:
    work_dir: Path  # snapshot, logs, reports, backups, the embedded server (EMRSIM_WORK_DIR)
    sqlite_path: Path | None  # the app's file (EMRSIM_SQLITE_PATH, or --sqlite)
    plan_path: Path | None  # the user's plan (EMRSIM_PLAN, or --plan)
    pg_url: str | None  # the user's PostgreSQL; None: the embedded server
    batch_rows: int = 50_000  # EMRSIM_BATCH_ROWS
    workers: int = 3  # EMRSIM_WORKERS: months loaded at once
    steps: int = 3  # EMRSIM_STEPS: steps of a run side by side
    keep_backups: int = 2  # EMRSIM_KEEP_BACKUPS: backup schemas kept after a cutover
    keep_dumps: int = 7  # EMRSIM_KEEP_DUMPS: pg_dump files kept
    partition_start: str | None = None  # EMRSIM_PARTITION_START: overrides the plan's first month
    workload_path: Path | None = None  # EMRSIM_WORKLOAD
    replica_url: str | None = None  # EMRSIM_REPLICA_URL: a replica of the user's own server
    # EMRSIM_EXECUTOR: threads (ours: steps side by side in one process) or multiprocess
    # (Dagster's own: a process per step, started by a forkserver); see docs/benchmarks.md.
    executor: str = "threads"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(
            work_dir=Path(env.get("EMRSIM_WORK_DIR") or DEFAULT_WORK_DIR).resolve(),
            sqlite_path=path("EMRSIM_SQLITE_PATH"),
            plan_path=path("EMRSIM_PLAN"),
            pg_url=configured_url(env),
            batch_rows=_whole(env, "EMRSIM_BATCH_ROWS", 50_000),
            workers=_whole(env, "EMRSIM_WORKERS", 3),
            steps=_whole(env, "EMRSIM_STEPS", 3),
            keep_backups=_whole(env, "EMRSIM_KEEP_BACKUPS", 2),
            keep_dumps=_whole(env, "EMRSIM_KEEP_DUMPS", 7),
            partition_start=env.get("EMRSIM_PARTITION_START") or None,
            workload_path=path("EMRSIM_WORKLOAD"),
            replica_url=env.get("EMRSIM_REPLICA_URL") or None,
            executor=_choice(env, "EMRSIM_EXECUTOR", ("threads", "multiprocess")),
        )


def configured_url(env: Mapping[str, str] = os.environ) -> str | None:
    """The user's PostgreSQL, if they named one (EMRSIM_PG_URL, else the app's own DB_HOST,
    DB_PORT, DB_NAME, DB_USER, DB_PASSWORD); None means: use the embedded server."""
    if env.get("EMRSIM_PG_URL"):
        return env["EMRSIM_PG_URL"]
    if env.get("DB_HOST") or env.get("DB_NAME") or env.get("DB_USER"):
        return conninfo.make_conninfo(
            host=env.get("DB_HOST", "localhost"),
            port=env.get("DB_PORT", "5432"),
            dbname=env.get("DB_NAME", "emrsim"),
            user=env.get("DB_USER") or None,
            password=env.get("DB_PASSWORD") or None,
        )
    return None


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise MigrationError(f"{name}={raw!r} must be a whole number of at least 1.")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or allowed[0]
    if raw not in allowed:
        raise MigrationError(f"{name}={raw!r} must be one of {', '.join(allowed)}.")
    return raw


def settings(env: Mapping[str, str] = os.environ) -> Settings:
    """The settings as the environment gives them now."""
    return Settings.from_env(env)
