"""Is the live database well? Connectivity, the app's key query against its baseline,
connections in use, replica lag (a post-migration task: health checks)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Health:
    problems: list[str]
    connect_ms: float
    key_query_ms: float
    connections: int
    max_connections: int
    replicas: dict[str, float]  # application name -> replay lag in seconds


def health(
    url: str, key_query: str, params: dict[str, object], baseline_ms: float | None
) -> Health:
    """Connectivity, the key query's latency against its baseline (3 times the workload's p95,
    at least 50 ms), connections in use against max_connections (at most 80%), replica lag
    (at most 30 s)."""
    problems: list[str] = []
    started = time.perf_counter()
    try:
        conn = psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Health([f"cannot connect: {first}"], 0.0, 0.0, 0, 0, {})
    with conn:
        connect_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        conn.execute(key_query, params).fetchall()
        key_ms = (time.perf_counter() - started) * 1000
        limit = max(3 * baseline_ms, 50.0) if baseline_ms else None
        if limit is not None and key_ms > limit:
            problems.append(f"the key query took {key_ms:.1f} ms (limit {limit:.1f} ms)")
        row = conn.execute(
            "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity"
        ).fetchone()
        used, most = (int(str(row[0])), int(str(row[1]))) if row else (0, 0)
        if most and used > 0.8 * most:
            problems.append(f"{used} of {most} connections in use")
        replicas = {
            str(name): float(str(lag or 0))
            for name, lag in conn.execute(
                "SELECT application_name, extract(epoch FROM replay_lag) FROM pg_stat_replication"
            ).fetchall()
        }
        for name, lag in replicas.items():
            if lag > 30:
                problems.append(f"replica {name} is {lag:.0f} s behind")
    return Health(problems, connect_ms, key_ms, used, most, replicas)
