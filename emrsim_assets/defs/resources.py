"""The one resource: where the source, the work files and PostgreSQL are (secrets via EnvVar)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_manager
import dagster as dg
import psycopg
from pydantic import Field

from emrsim_assets import postgres
from emrsim_assets.defs.runs import record_worker
from emrsim_assets.errors import MigrationError, connection_lost
from emrsim_assets.private import private_work_dir
from emrsim_assets.schemas import Conn
from emrsim_assets.settings import DEFAULT_WORK_DIR
from emrsim_assets.snapshot import Manifest, load_manifest

_POOLED: set[int] = set()


class MigrationResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The SQLite file to migrate and the PostgreSQL to migrate it into."""

    sqlite_path: str = Field(description="The app's SQLite database (opened read-only).")
    work_dir: str = Field(
        default=DEFAULT_WORK_DIR, description="Snapshot, manifest and embedded PostgreSQL."
    )
    pg_url: str | None = Field(
        default=None,
        description="Target PostgreSQL; unset: the seed's DB_* variables, else the embedded server.",
    )
    batch_rows: int = Field(
        default=50_000,
        description="Most rows per extraction batch; a batch also holds no more than about "
        "8 MiB of source values, so wide rows come fewer at a time (the sample's messages "
        "about 47,000 a batch). Bounds memory with the number of workers.",
    )
    workers: int = Field(
        default=3,
        description="Months loaded at once, each over its own PostgreSQL connection. One more "
        "than the cores: while a month's indexes build on the server, another month converts.",
    )

    keep_backups: int = Field(
        default=2,
        description="Backup schemas (emrsim_backup_<time>) kept after a cutover, newest first; "
        "older ones are dropped.",
    )

    keep_dumps: int = Field(
        default=7,
        description="pg_dump files (<work dir>/backups) kept by the backup asset, newest first.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Once per run process: tag the run with this process (so a run whose process dies is
        marked failed, see defs/runs.py), and pool the instance's storage connections. dagster-postgres
        opens a new connection for every event it stores unless told otherwise (NullPool
        outside the webserver): runs launched from the UI took 2 to 5 times as long as the CLI's
        in their messages and cutover steps. No-op for other storages, and done once per
        instance (the CLI's is pooled already)."""
        private_work_dir(Path(self.work_dir).resolve())
        instance = context.instance
        record_worker(instance, context.run_id)
        if instance is not None and id(instance) not in _POOLED:
            _POOLED.add(id(instance))
            instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=8)

    @property
    def snapshot_dir(self) -> Path:
        return Path(self.work_dir).resolve() / "snapshot"

    def manifest(self) -> Manifest:
        return load_manifest(self.snapshot_dir)

    def url(self) -> str:
        if self.pg_url:
            return self.pg_url
        return postgres.configured_url() or postgres.embedded_url(
            Path(self.work_dir).resolve(), postgres.EMBEDDED_DATABASE
        )

    @contextmanager
    def connect(self) -> Iterator[Conn]:
        conn = postgres.connect(self.url())
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def as_failure() -> Iterator[None]:
    """Show a MigrationError, or a refusal by PostgreSQL a person can act on, as one sentence on
    the failed step, not as a traceback."""
    try:
        yield
    except MigrationError as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise dg.Failure(
            description=f"TargetError: PostgreSQL refused: {exc.diag.message_primary}. The role "
            "in EMRSIM_PG_URL needs CREATE on the database (it creates the schemas "
            "emrsim_staging and emrsim_migration), or connect as the database's owner.",
            allow_retries=False,
        ) from None
    except psycopg.OperationalError as exc:
        if exc.sqlstate and not exc.sqlstate.startswith(("08", "57P")):
            # A refusal with a code of its own (a server limit, say): not a lost connection.
            raise dg.Failure(
                description=f"TargetError: PostgreSQL refused: {exc.diag.message_primary}.",
                allow_retries=False,
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise dg.Failure(description=connection_lost(first), allow_retries=False) from None
    except (adbc_driver_manager.OperationalError, OSError) as exc:
        # The Arrow readers (ADBC's libpq) lose a connection as these: "[libpq]
        # PQgetCopyData() failed" when a restart ends the server mid-read.
        text = str(exc).strip()
        if isinstance(exc, OSError) and "[libpq]" not in text:
            raise
        first = text.splitlines()[0] if text else type(exc).__name__
        raise dg.Failure(description=connection_lost(first), allow_retries=False) from None
