"""What the SQLite schema promised, PostgreSQL promises too: types from the declarations (empty
tables included) and from every value, in databases written by the libraries apps use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from emrsim_assets.draft import draft_plan
from emrsim_assets.plan import Plan, load_plan
from emrsim_assets_tests.conftest import Migration, failure_sentence
from emrsim_assets_tests.harness import drafted


class _Base(DeclarativeBase):
    pass


class Run(_Base):
    """An MLflow-like table, written through SQLAlchemy's ORM (its UUID, Boolean, DateTime and
    JSON types as SQLite stores them)."""

    __tablename__ = "runs"
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    deleted: Mapped[bool] = mapped_column(sa.Boolean)
    started: Mapped[datetime] = mapped_column(sa.DateTime)
    params: Mapped[dict[str, object] | None] = mapped_column(sa.JSON, nullable=True)
    score: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))
    # Trac's `time`: microseconds since 1970, an integer named like nothing in particular.
    changed: Mapped[int] = mapped_column(sa.BigInteger)


class Tag(_Base):
    """The same declarations, and no row yet (Dagster's event index, on a fresh instance)."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    hidden: Mapped[bool] = mapped_column(sa.Boolean)
    at: Mapped[datetime] = mapped_column(sa.DateTime)
    payload: Mapped[dict[str, object] | None] = mapped_column(sa.JSON, nullable=True)


def _written_by_sqlalchemy(path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{path}")
    _Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            Run(
                id=uuid.UUID(int=(i + 1) * 0x1234_5678_9ABC, version=4),
                name=f"run {i}",
                deleted=i % 3 == 0,
                started=datetime(2024, 3, 1 + i % 28, 12, 0, i % 60),
                # Scalars and null are JSON too (a bare number would be stored as a number:
                # JSON's NUMERIC affinity turns the text 7 into the integer 7).
                params=[{"lr": 0.1 * i}, None, [1, "two"], "text", True][i % 5],
                score=Decimal(f"{i}.{i % 100:02d}"),
                changed=1_700_000_000_000_000 + i * 1_000_003,
            )
            for i in range(40)
        )
        session.commit()
    engine.dispose()


def test_types_come_from_declarations_and_values_and_arrive_proven(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "mlflow.db"
    _written_by_sqlalchemy(path)
    plan = drafted(path, tmp_path)
    kinds = {(t.name, c.name): c.convert for t in plan.tables for c in t.columns}
    assert kinds[("runs", "id")] == "uuid_hex"  # CHAR(32): the app's own spelling comes back
    assert kinds[("runs", "deleted")] == "boolean"
    assert kinds[("runs", "started")] == "timestamp"
    assert kinds[("runs", "params")] == "json"  # scalars and null too: declared JSON
    assert kinds[("runs", "score")] == "numeric"
    assert kinds[("runs", "changed")] == "timestamp"  # microseconds, by its values
    assert plan.table("runs").column("changed").epoch == "us"
    # The empty table is typed by what it declares, not as text.
    # CHAR(32) alone does not say UUID, and an empty table has no value that would.
    assert kinds[("tags", "run_id")] == "text"
    assert kinds[("tags", "hidden")] == "boolean"
    assert kinds[("tags", "at")] == "timestamp"
    assert kinds[("tags", "payload")] == "json"

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    with psycopg.connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'emrsim'"
            ).fetchall()
        )
        assert types["runs.id"] == "uuid" and types["tags.hidden"] == "boolean"
        assert types["tags.at"] == "timestamp with time zone" and types["tags.payload"] == "jsonb"
        # A boolean parameter works against the migrated table, as the app's ORM sends it.
        assert conn.execute(
            "SELECT count(*) FROM emrsim.runs WHERE deleted = %s", (True,)
        ).fetchone() == (14,)
        # The UUID comes back in the app's spelling (32 hex digits) and as a uuid.
        spelled = conn.execute(
            "SELECT replace(id::text, '-', '') FROM emrsim.runs ORDER BY started, name LIMIT 1"
        ).fetchone()
        assert spelled is not None and len(str(spelled[0])) == 32
        first = conn.execute("SELECT min(changed) FROM emrsim.runs").fetchone()
        assert first == (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),)


class _People(DeclarativeBase):
    pass


class Person(_People):
    """A unique e-mail that SQLite compares without case (COLLATE NOCASE), and a code compared
    without trailing spaces (RTRIM), through SQLAlchemy's String(collation=...)."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(collation="NOCASE"), unique=True)
    code: Mapped[str] = mapped_column(sa.String(collation="RTRIM"))


def test_a_unique_nocase_column_refuses_a_case_collision_on_both_sides(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil
    import sqlite3

    import pytest
    import yaml

    from emrsim_assets.errors import SourceError
    from emrsim_assets.plan import parse_plan
    from emrsim_assets.source import check_plan_matches_source, open_readonly

    path = tmp_path / "people.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    _People.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            [
                Person(id=1, email="ann@example.org", code="a"),
                Person(id=2, email="Bo@X.org", code="b"),
            ]
        )
        session.commit()
    engine.dispose()

    text = draft_plan(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(plan_path)
    assert plan.table("people").column("email").collation == "nocase"
    assert plan.skipped("rtrim", kind="collation") is not None
    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    assert result.success
    # The check's own probe: the first e-mail in upper case, refused by both.
    probes = _schema_verdict(result, "people").metadata["probe_results"].value
    assert any(
        "(COLLATE NOCASE): a second row given the first row's email in upper case: SQLite "
        "refused, PostgreSQL refused" in p
        for p in probes
    ), probes

    # SQLite refuses a second ANN@EXAMPLE.ORG (on a copy: the source is never written).
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy)
    with pytest.raises(sqlite3.IntegrityError):
        lite.execute("INSERT INTO people (id, email, code) VALUES (3, 'ANN@EXAMPLE.ORG', 'c')")
    lite.close()
    # And so does PostgreSQL, in a transaction rolled back.
    with psycopg.connect(pg_url) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO emrsim.people (id, email, code) VALUES (3, 'ANN@EXAMPLE.ORG', 'c')"
            )
        conn.rollback()
        # Letters beyond ASCII differ in SQLite's NOCASE, and so they do here.
        conn.execute("INSERT INTO emrsim.people (id, email, code) VALUES (4, 'ÄNN@x.org', 'd')")
        conn.execute("INSERT INTO emrsim.people (id, email, code) VALUES (5, 'änn@x.org', 'e')")
        conn.rollback()

    # A plan that drops the NOCASE is refused, naming the column.
    raw = yaml.safe_load(text)
    for column in raw["tables"][0]["columns"]:
        column.pop("collation", None)
    reader = open_readonly(path)
    try:
        with pytest.raises(SourceError, match=r"collation NOCASE of people.email"):
            check_plan_matches_source(reader, parse_plan(raw, plan_path), path)
    finally:
        reader.close()


def _django_like(path: Path) -> None:
    """Django's SQLite DDL for a model with a PositiveIntegerField, a choices-like CHECK, a
    named table constraint, and a CHECK that calls json_valid (which PostgreSQL has not)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE "shop_item" (
            "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
            "stock" integer unsigned NOT NULL CHECK ("stock" >= 0),
            "status" varchar(9) NOT NULL CHECK ("status" IN ('draft', 'live')),
            "price" decimal NOT NULL,
            "attrs" text NOT NULL CHECK ((JSON_VALID("attrs") OR "attrs" IS NULL)),
            CONSTRAINT "price_positive" CHECK ("price" > 0 AND length("status") < 10)
        );
        INSERT INTO shop_item (stock, status, price, attrs) VALUES
            (3, 'live', 9.5, '{}'), (0, 'draft', 1, '[]');
        """
    )
    conn.close()


def test_check_constraints_are_translated_kept_and_refuse_on_both_sides(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil
    import sqlite3

    import pytest

    path = tmp_path / "django.sqlite3"
    _django_like(path)
    plan = drafted(path, tmp_path)
    checks = {rule.sqlite: rule.postgres for rule in plan.table("shop_item").checks}
    assert checks == {
        '"stock" >= 0': '"stock" >= 0',
        "\"status\" IN ('draft', 'live')": "\"status\" IN ('draft', 'live')",
        '"price" > 0 AND LENGTH("status") < 10': '"price" > 0 AND LENGTH("status") < 10',
    }
    # json_valid is SQLite's: named under skip, with why.
    [left] = [s for s in plan.skip if s.kind == "check"]
    assert "JSON_VALID" in left.table and "not translated" in left.reason

    assert Migration(plan, path, pg_url, tmp_path / "work").run_job().success
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy)
    with psycopg.connect(pg_url) as conn:
        for bad in ("stock = -1", "status = 'gone'", "price = 0"):
            with pytest.raises(sqlite3.IntegrityError):
                lite.execute(f"UPDATE shop_item SET {bad} WHERE id = 1")  # noqa: S608
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"UPDATE emrsim.shop_item SET {bad} WHERE id = 1")  # noqa: S608
            conn.rollback()
    lite.close()


def test_a_row_that_breaks_a_rule_stops_the_load_naming_it(tmp_path: Path, pg_url: str) -> None:
    """SQLite checks a rule only as rows are written (and not at all with
    ignore_check_constraints): a row against it is refused by the load, by its key."""
    import sqlite3

    from emrsim_assets_tests.harness import step_failures

    path = tmp_path / "django.sqlite3"
    _django_like(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(draft_plan(path), encoding="utf-8")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("UPDATE shop_item SET stock = -5 WHERE id = 2")
    conn.commit()
    conn.close()
    result = Migration(load_plan(plan_path), path, pg_url, tmp_path / "work").run_job()
    assert not result.success
    said = " ".join(step_failures(result))
    assert "shop_item: rows break the app's rule shop_item_check_" in said
    assert '(CHECK ("stock" >= 0)): id=2' in said


def _unique_references(path: Path) -> None:
    """Dagster's run storage: run_tags.run_id references runs.run_id, a unique column that is not
    the key, ON DELETE CASCADE; and the app's sessions.sps_scenario_id, which references
    scenarios.scenario_id with nothing declared, every value resolving."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id VARCHAR(255) UNIQUE);
        CREATE TABLE run_tags (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id VARCHAR(255) REFERENCES runs (run_id) ON DELETE CASCADE,
            key TEXT
        );
        CREATE TABLE scenarios (id INTEGER PRIMARY KEY, scenario_id TEXT NOT NULL UNIQUE);
        CREATE TABLE sessions (id TEXT PRIMARY KEY, sps_scenario_id TEXT);
        """
    )
    conn.executemany("INSERT INTO runs (run_id) VALUES (?)", [(f"r{i:04d}",) for i in range(20)])
    conn.executemany(
        "INSERT INTO run_tags (run_id, key) VALUES (?, ?)",
        [(f"r{i % 20:04d}", "k") for i in range(50)],
    )
    conn.executemany(
        "INSERT INTO scenarios VALUES (?, ?)", [(i, f"sc-{i:03d}") for i in range(1, 6)]
    )
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?)", [(f"s{i}", f"sc-{1 + i % 5:03d}") for i in range(30)]
    )
    conn.commit()
    conn.close()


def test_references_to_a_unique_column_that_is_not_the_key_are_kept_with_their_actions(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "runs.db"
    _unique_references(path)
    plan = drafted(path, tmp_path)
    tag = plan.table("run_tags").column("run_id")
    assert (tag.references, tag.references_column, tag.on_delete) == ("runs", "run_id", "cascade")
    assert tag.enforce == "constraint"
    session = plan.table("sessions").column("sps_scenario_id")
    assert (session.references, session.references_column) == ("scenarios", "scenario_id")
    assert any(ix.columns == ("sps_scenario_id",) for ix in plan.table("sessions").indexes)

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM emrsim.runs WHERE run_id = 'r0003'")
        left = conn.execute(
            "SELECT count(*) FROM emrsim.run_tags WHERE run_id = 'r0003'"
        ).fetchone()
        assert left == (0,)  # ON DELETE CASCADE, as in SQLite
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO emrsim.run_tags (run_id, key) VALUES ('nope', 'k')")


def test_only_a_large_keyed_table_is_drafted_by_month_and_a_keyless_one_still_loads_if_planned(
    tmp_path: Path, pg_url: str
) -> None:
    """The draft partitions no small or keyless table (it says why); a person may still plan a
    keyless table by month, and it loads and proves equal."""
    import sqlite3

    import yaml

    from emrsim_assets.draft import PARTITION_MIN_ROWS
    from emrsim_assets_tests.oracle import source_rows, target_rows

    path = tmp_path / "audit.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE audit_log (at TEXT NOT NULL, what TEXT)")
    conn.executemany(
        "INSERT INTO audit_log VALUES (?, ?)",
        [(f"2024-{1 + i % 3:02d}-1{i % 9} 10:00:00", f"e{i % 4}") for i in range(300)],
    )
    conn.commit()
    conn.close()
    text = draft_plan(path)
    assert load_plan_text(text, tmp_path).partitioned_table is None
    assert f"fewer than {PARTITION_MIN_ROWS:,}" in text
    raw = yaml.safe_load(text)
    raw["tables"][0]["partition_by_month"] = "at"
    raw["partition_start"] = "2024-01-01"
    plan_path = tmp_path / "by_month.yaml"
    plan_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    plan = load_plan(plan_path)
    assert plan.partitioned_table is not None and not plan.partitioned_table.primary_key
    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    assert result.success
    with psycopg.connect(pg_url) as conn:
        table = plan.table("audit_log")
        assert target_rows(conn, table) == source_rows(path, table)


def load_plan_text(text: str, tmp_path: Path) -> Plan:
    path = tmp_path / "drafted.yaml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


def test_an_empty_tables_time_defaults_are_kept(tmp_path: Path) -> None:
    """Dagster's event index on a fresh instance: no row yet, DATETIME columns that default to
    the moment of the insert (CURRENT_TIMESTAMP, and Django's strftime form)."""
    import sqlite3

    path = tmp_path / "index.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE event_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "timestamp DATETIME DEFAULT CURRENT_TIMESTAMP, "
        "created DATETIME NOT NULL DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')), "
        "dagster_event_type TEXT)"
    )
    conn.commit()
    conn.close()
    plan = load_plan_text(draft_plan(path), tmp_path)
    table = plan.table("event_logs")
    assert table.column("timestamp").convert == "timestamp"
    assert table.column("timestamp").default == "now()"
    assert table.column("created").default == "now()"


class _Accounts(DeclarativeBase):
    pass


class Account(_Accounts):
    """Unique only among live rows (a partial index), unique without case (an index on an
    expression), and an index sqlglot cannot write for PostgreSQL, through SQLAlchemy."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(80))
    handle: Mapped[str] = mapped_column(sa.String(40))
    deleted: Mapped[bool] = mapped_column(sa.Boolean)
    __table_args__ = (
        sa.Index("uq_live_email", "email", unique=True, sqlite_where=sa.text("deleted = 0")),
        sa.Index("uq_handle_lower", sa.text("lower(handle)"), unique=True),
        sa.Index("ix_handle_tail", sa.text("substr(handle, -2, 2) COLLATE NOCASE")),
    )


def test_partial_and_expression_unique_indexes_refuse_the_same_rows_on_both_sides(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil
    import sqlite3

    path = tmp_path / "accounts.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    _Accounts.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            [
                Account(id=1, email="a@x.org", handle="Ann", deleted=False),
                Account(id=2, email="a@x.org", handle="ann2", deleted=True),
                Account(id=3, email="b@x.org", handle="Bob", deleted=False),
            ]
        )
        session.commit()
    engine.dispose()
    plan = drafted(path, tmp_path)
    indexes = {ix.name: ix for ix in plan.table("accounts").indexes}
    live = indexes["uq_live_email"]
    assert live.unique and live.columns == ("email",) and live.where == 'CAST("deleted" AS INT) = 0'
    lowered = indexes["uq_handle_lower"]
    assert lowered.unique and lowered.expressions == ('LOWER("handle")',)
    [left] = [s for s in plan.skip if s.kind == "index"]
    assert left.table == "ix_handle_tail" and "COLLATE" in left.reason

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    assert result.success
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy)
    insert = "INSERT INTO {}accounts (id, email, handle, deleted) VALUES ({}, '{}', '{}', {})"
    with psycopg.connect(pg_url) as conn:
        refused = [(4, "a@x.org", "zed", 0), (6, "c@x.org", "ANN", 0)]
        accepted = [(5, "a@x.org", "zed2", 1)]
        for row in refused:
            with pytest.raises(sqlite3.IntegrityError):
                lite.execute(insert.format("", *row))
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute(insert.format("emrsim.", *row[:3], bool(row[3])))
            conn.rollback()
        for row in accepted:
            lite.execute(insert.format("", *row))
            conn.execute(insert.format("emrsim.", *row[:3], bool(row[3])))
        conn.rollback()
    lite.close()


def _schema_verdict(result: Any, table: str) -> Any:
    [evaluation] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "schema_matches_source" and e.asset_key.to_user_string() == table
    ]
    return evaluation


def test_schema_matches_source_counts_every_object_and_names_what_a_plan_loses(
    tmp_path: Path, pg_url: str
) -> None:
    """The drafted plan carries every object of a SQLAlchemy schema (or skips it with a reason),
    as PostgreSQL's catalog shows; a plan edited to lose a NOT NULL, a default and a partial
    unique index fails the check, naming each one, and cutover does not happen."""
    import yaml

    from emrsim_assets.plan import parse_plan

    path = tmp_path / "accounts.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    _Accounts.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE accounts ADD COLUMN plan TEXT NOT NULL DEFAULT 'free'"))
        conn.execute(
            sa.text(
                "INSERT INTO accounts VALUES (1, 'a@x.org', 'Ann', 0, 'pro'), (2, 'b', 'B', 1, 'free')"
            )
        )
    engine.dispose()
    text = draft_plan(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(text, encoding="utf-8")
    result = Migration(load_plan(plan_path), path, pg_url, tmp_path / "good").run_job()
    assert result.success
    verdict = _schema_verdict(result, "accounts")
    assert verdict.passed, verdict.description
    numbers = {k: v.value for k, v in verdict.metadata.items()}
    # 5 columns, 5 NOT NULLs (SQLAlchemy declares every Mapped[...] NOT NULL), 1 default, the
    # key, 3 indexes: 15 objects; the index with a COLLATE in its key is skipped with a reason.
    assert numbers["source_objects"] == 15
    assert numbers["in_postgresql"] == 14 and numbers["skipped_by_plan"] == 1
    assert numbers["missing"] == 0

    raw = yaml.safe_load(text)
    [table] = raw["tables"]
    for column in table["columns"]:
        if column["name"] == "handle":
            column["nullable"] = True
        column.pop("default", None)
    table["indexes"] = [ix for ix in table["indexes"] if ix["name"] != "uq_live_email"]
    lossy = parse_plan(raw, plan_path)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'emrsim%'"
        ).fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    result = Migration(lossy, path, pg_url, tmp_path / "lossy").run_job()
    assert not result.success
    verdict = _schema_verdict(result, "accounts")
    assert not verdict.passed
    assert "NOT NULL of accounts.handle" in verdict.description
    assert "DEFAULT 'free' of accounts.plan" in verdict.description
    assert "UNIQUE index uq_live_email on accounts: not in the plan" in verdict.description
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('emrsim.accounts')").fetchone() == (None,)


class _Clinics(DeclarativeBase):
    pass


class Room(_Clinics):
    __tablename__ = "room"
    clinic_id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(8), primary_key=True)


class Visit(_Clinics):
    """A composite reference with its ON DELETE CASCADE, as SQLAlchemy writes it."""

    __tablename__ = "visit"
    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column()
    room_code: Mapped[str] = mapped_column(sa.String(8))
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["clinic_id", "room_code"], ["room.clinic_id", "room.code"], ondelete="CASCADE"
        ),
    )


def test_composite_and_deferred_references_are_kept_with_their_actions_on_both_sides(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil
    import sqlite3

    path = tmp_path / "clinic.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    _Clinics.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Room(clinic_id=1, code="A"), Room(clinic_id=1, code="B")])
        session.add_all(
            [Visit(id=1, clinic_id=1, room_code="A"), Visit(id=2, clinic_id=1, room_code="B")]
        )
        session.commit()
    engine.dispose()
    # Django's form: every reference DEFERRABLE INITIALLY DEFERRED, checked at commit.
    lite = sqlite3.connect(path)
    lite.executescript(
        """
        CREATE TABLE "note" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
            "visit_id" bigint NOT NULL REFERENCES "visit" ("id") DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO note (visit_id) VALUES (1), (2);
        """
    )
    lite.close()
    plan = drafted(path, tmp_path)
    [reference] = plan.table("visit").references
    assert (reference.columns, reference.references) == (("clinic_id", "room_code"), "room")
    assert reference.referenced_columns == ("clinic_id", "code")
    assert reference.on_delete == "cascade" and reference.enforce == "constraint"
    assert plan.table("note").column("visit_id").deferred

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert f"fk_{reference.name}_resolves" in checks

    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy, isolation_level=None)
    lite.execute("PRAGMA foreign_keys = ON")
    with psycopg.connect(pg_url) as conn:
        # A visit to a room that does not exist: refused on both sides.
        with pytest.raises(sqlite3.IntegrityError):
            lite.execute("INSERT INTO visit VALUES (9, 1, 'Z')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO emrsim.visit VALUES (9, 1, 'Z')")
        conn.rollback()
        # Deleting a room deletes its visits (and their notes wait for the commit) on both.
        lite.execute("BEGIN")
        lite.execute("DELETE FROM note WHERE visit_id = 1")
        lite.execute("DELETE FROM room WHERE code = 'A'")
        assert lite.execute("SELECT count(*) FROM visit").fetchone() == (1,)
        lite.execute("ROLLBACK")
        conn.execute("DELETE FROM emrsim.note WHERE visit_id = 1")
        conn.execute("DELETE FROM emrsim.room WHERE code = 'A'")
        assert conn.execute("SELECT count(*) FROM emrsim.visit").fetchone() == (1,)
        conn.rollback()
        # A note written before its visit, in one transaction: deferred to the commit on both.
        lite.execute("BEGIN")
        lite.execute("INSERT INTO note (id, visit_id) VALUES (7, 5)")
        lite.execute("INSERT INTO visit VALUES (5, 1, 'B')")
        lite.execute("COMMIT")
        conn.execute("INSERT INTO emrsim.note (id, visit_id) VALUES (7, 5)")
        conn.execute("INSERT INTO emrsim.visit VALUES (5, 1, 'B')")
        conn.commit()
        # And refused at the commit when the parent never comes.
        lite.execute("BEGIN")
        lite.execute("INSERT INTO note (id, visit_id) VALUES (8, 6)")
        with pytest.raises(sqlite3.IntegrityError):
            lite.execute("COMMIT")
        lite.execute("ROLLBACK")
        conn.execute("INSERT INTO emrsim.note (id, visit_id) VALUES (8, 6)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.commit()
    lite.close()


def _shop_by_sqlite_utils(path: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(path)
    db["Users"].insert_all(
        [
            {
                "Id": i,
                "Email": f"u{i}@x.org",
                "Active": i % 3 != 0,
                "Joined": f"2024-0{1 + i % 9}-02",
            }
            for i in range(1, 31)
        ],
        pk="Id",
    )
    db["orders"].insert_all(
        [{"id": i, "user_id": 1 + i % 30, "total": i * 1.25} for i in range(1, 201)],
        pk="id",
        foreign_keys=[("user_id", "Users", "Id")],
    )
    db.create_view("active_users", "SELECT Id, Email FROM Users WHERE Active = 1")
    db.create_view(
        "spend",
        "SELECT u.Email, count(*) AS n, sum(o.total) AS total, max(u.Joined) AS joined "
        "FROM Users u JOIN orders o ON o.user_id = u.Id GROUP BY u.Email",
    )
    db.create_view("recent", "SELECT * FROM Users WHERE date(Joined) > '2024-03-01'")
    db.close()


def test_views_are_recreated_and_proven_to_give_sqlites_rows(tmp_path: Path, pg_url: str) -> None:
    import sqlite3

    import yaml

    from emrsim_assets.plan import parse_plan

    path = tmp_path / "shop.db"
    _shop_by_sqlite_utils(path)
    text = draft_plan(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(plan_path)
    assert [v.name for v in plan.views] == ["active_users", "spend"]
    [left] = [s for s in plan.skip if s.table == "recent"]
    assert "DATE" in left.reason and "not recreated" in left.reason

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    assert result.success
    [cutover] = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path == ["cutover"]
    ]
    proven = cutover.materialization.metadata["views"].value
    assert proven["active_users"]["rows"] == 20 and proven["spend"]["rows"] == 30
    lite = sqlite3.connect(path)
    with psycopg.connect(pg_url) as conn:
        pg = conn.execute("SELECT * FROM emrsim.spend ORDER BY 1").fetchall()
        sq = lite.execute("SELECT * FROM spend ORDER BY 1").fetchall()
        assert [(e, n, float(t)) for e, n, t, _ in pg] == [(e, n, t) for e, n, t, _ in sq]
    lite.close()

    # A view whose PostgreSQL SELECT was edited to give other rows stops the cutover, named.
    raw = yaml.safe_load(text)
    raw["views"][0]["postgres"] = raw["views"][0]["postgres"].replace("= 1", "= 0")
    edited = parse_plan(raw, plan_path)
    result = Migration(edited, path, pg_url, tmp_path / "edited").run_job()
    assert not result.success
    assert "view active_users gives 10 rows in PostgreSQL and 20 in SQLite" in failure_sentence(
        result
    )


def test_a_django_apps_rules_arrive_and_refuse_the_same_writes_on_both_sides(
    tmp_path: Path, pg_url: str
) -> None:
    """Django's ORM: a CHECK, a partial unique constraint on a boolean (`WHERE "active"`), a
    unique constraint on Lower(email), a UUIDField, db_default=Now(), a DEFERRABLE INITIALLY
    DEFERRED reference and a DESC index. Every object is carried or skipped with its reason
    (json_valid), and a write each rule refuses is refused by SQLite and PostgreSQL alike."""
    import shutil
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "hospital.sqlite3"
    script = Path(__file__).with_name("django_app.py")
    subprocess.run([sys.executable, str(script), str(path)], check=True)
    plan = drafted(path, tmp_path)
    clinic = plan.table("hospital_clinic")
    assert clinic.column("code").convert == "uuid_hex"
    assert clinic.column("opened").default == "now()"
    assert plan.table("hospital_patient").column("clinic_id").deferred
    assert [s.kind for s in plan.skip] == ["check"]  # json_valid: SQLite's own

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    proven = {
        e.asset_key.to_user_string(): e.metadata["source_objects"].value
        for e in result.get_asset_check_evaluations()
        if e.check_name == "schema_matches_source"
    }
    assert proven == {"hospital_clinic": 21, "hospital_patient": 15}
    # Behaviour probes: each NOT NULL, plain UNIQUE and one-column CHECK broken by a write that
    # both sides refuse (SQLite on a scratch copy, PostgreSQL in a rolled-back transaction).
    [probed] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "schema_matches_source" and e.asset_key.path == ["hospital_clinic"]
    ]
    results = probed.metadata["probe_results"].value
    assert probed.metadata["probes"].value == len(results) == 10
    assert probed.metadata["probes_that_differ"].value == 0
    beds = "CHECK hospital_clinic_check_1: beds set to 1000000000"
    assert f"{beds}: SQLite refused, PostgreSQL refused" in results, "\n".join(results)
    assert any(r.startswith("NOT NULL of hospital_clinic.email") for r in results)
    assert any(r.startswith("UNIQUE sqlite_autoindex_hospital_clinic_1") for r in results)

    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy)
    columns = "(name, email, active, code, beds)"
    refused = [
        ("'Clinic 1'", "'new@x.org'", 1, "'a' || hex(randomblob(15))", 5),  # live name taken
        ("'Other'", "'C1@X.ORG'", 1, "'b' || hex(randomblob(15))", 5),  # email, any case
        ("'Other'", "'o@x.org'", 1, "'c' || hex(randomblob(15))", 501),  # CHECK
    ]
    with psycopg.connect(pg_url) as conn:
        for name, email, active, _, beds in refused:
            with pytest.raises(sqlite3.IntegrityError):
                lite.execute(
                    f"INSERT INTO hospital_clinic {columns} "  # noqa: S608
                    f"VALUES ({name}, {email}, {active}, lower(hex(randomblob(16))), {beds})"
                )
            with pytest.raises(psycopg.errors.IntegrityError):
                conn.execute(
                    f"INSERT INTO emrsim.hospital_clinic {columns} "  # noqa: S608
                    f"VALUES ({name}, {email}, {bool(active)}, gen_random_uuid(), {beds})"
                )
            conn.rollback()
        # A closed clinic may share a live one's name, on both sides; its opening time is the
        # insert's moment on both.
        lite.execute(
            f"INSERT INTO hospital_clinic {columns} "  # noqa: S608
            "VALUES ('Clinic 1', 'z@x.org', 0, lower(hex(randomblob(16))), 1)"
        )
        conn.execute(
            f"INSERT INTO emrsim.hospital_clinic {columns} "  # noqa: S608
            "VALUES ('Clinic 1', 'z@x.org', false, gen_random_uuid(), 1)"
        )
        opened = conn.execute(
            "SELECT now() - opened FROM emrsim.hospital_clinic WHERE email = 'z@x.org'"
        ).fetchone()
        assert opened is not None and opened[0].total_seconds() == 0
        conn.rollback()
    lite.close()


def _searchable(path: Path) -> None:
    """A standalone FTS5 table written by peewee, and an external-content one (with its sync
    triggers) that sqlite-utils puts over a plain table."""
    import sqlite_utils
    from peewee import SqliteDatabase
    from playhouse.sqlite_ext import FTS5Model, SearchField

    db = SqliteDatabase(str(path))

    class Note(FTS5Model):  # type: ignore[misc]
        title = SearchField()
        body = SearchField()

        class Meta:
            database = db

    db.create_tables([Note])
    words = ["chest pain", "fever", "shortness of breath", "chest tightness", "rash"]
    Note.insert_many(
        [{"title": f"case {i}", "body": f"{words[i % 5]} for {i} days"} for i in range(40)]
    ).execute()
    db.close()
    utils = sqlite_utils.Database(path)
    utils["articles"].insert_all(
        [{"id": i, "title": f"On {words[i % 5]}", "body": f"Text {i}"} for i in range(25)],
        pk="id",
    )
    utils["articles"].enable_fts(["title", "body"], create_triggers=True)
    utils.close()


def test_full_text_search_arrives_as_a_tsvector_that_finds_the_same_rows(
    tmp_path: Path, pg_url: str
) -> None:
    import sqlite3

    path = tmp_path / "search.db"
    _searchable(path)
    plan = drafted(path, tmp_path)
    note, articles = plan.table("note"), plan.table("articles")
    assert note.search is not None and note.search.columns == ("title", "body")
    assert articles.search is not None and articles.search.source == "articles_fts"
    skipped = {s.table: s.reason for s in plan.skip}
    assert "its search is articles's search column" in skipped["articles_fts"]
    sync = [s for s in plan.skip if s.kind == "trigger"]
    assert sync and all("not needed in PostgreSQL" in s.reason for s in sync)

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    lite = sqlite3.connect(path)
    with psycopg.connect(pg_url) as conn:
        for term in ("chest", "fever", "breath"):
            sqlite_notes = lite.execute(
                "SELECT count(*) FROM note WHERE note MATCH ?", (term,)
            ).fetchone()
            pg_notes = conn.execute(
                "SELECT count(*) FROM emrsim.note WHERE search @@ "
                "websearch_to_tsquery('simple', %s)",
                (term,),
            ).fetchone()
            assert sqlite_notes == pg_notes and pg_notes is not None and pg_notes[0] > 0
            sqlite_articles = lite.execute(
                "SELECT count(*) FROM articles_fts WHERE articles_fts MATCH ?", (term,)
            ).fetchone()
            pg_articles = conn.execute(
                "SELECT count(*) FROM emrsim.articles WHERE search @@ "
                "websearch_to_tsquery('simple', %s)",
                (term,),
            ).fetchone()
            assert sqlite_articles == pg_articles
        # A new row is searchable at once: the tsvector is computed by PostgreSQL.
        conn.execute("INSERT INTO emrsim.articles (id, title, body) VALUES (99, 'Sepsis', 'x')")
        found = conn.execute(
            "SELECT id FROM emrsim.articles WHERE search @@ websearch_to_tsquery('simple', 'sepsis')"
        ).fetchall()
        assert found == [(99,)]
        conn.rollback()
        plan_uses_gin = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'emrsim' AND indexdef LIKE '%gin%'"
        ).fetchone()
        assert plan_uses_gin == (2,)
    lite.close()


def _with_triggers(path: Path) -> None:
    """An app's hand-written triggers: touching updated_at, two guards, and an audit insert
    (not translated: listed with its SQL)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
            stock INTEGER NOT NULL DEFAULT 0,
            updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);
        CREATE TABLE log (id INTEGER PRIMARY KEY, item_id INTEGER, at TEXT);
        CREATE TRIGGER items_touch AFTER UPDATE ON items FOR EACH ROW
            WHEN NEW.updated_at IS OLD.updated_at
            BEGIN UPDATE items SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;
        CREATE TRIGGER items_no_negative BEFORE INSERT ON items
            BEGIN SELECT RAISE(ABORT, 'stock must not be negative') WHERE NEW.stock < 0; END;
        CREATE TRIGGER items_slow_stock BEFORE UPDATE OF stock ON items BEGIN
            SELECT CASE WHEN NEW.stock > OLD.stock + 100
                THEN RAISE(ABORT, 'stock grows by 100 at most') END; END;
        CREATE TRIGGER items_log AFTER INSERT ON items
            BEGIN INSERT INTO log (item_id, at) VALUES (NEW.id, CURRENT_TIMESTAMP); END;
        CREATE TRIGGER items_twice AFTER DELETE ON items
            BEGIN DELETE FROM log WHERE item_id = OLD.id; DELETE FROM log WHERE at IS NULL; END;
        INSERT INTO items (name, stock, updated_at) VALUES
            ('a', 1, '2024-01-01 10:00:00'), ('b', 2, '2024-01-02 10:00:00');
        """
    )
    conn.close()


def test_triggers_of_common_forms_are_written_in_plpgsql_and_behave_the_same(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil
    import sqlite3

    path = tmp_path / "items.db"
    _with_triggers(path)
    plan = drafted(path, tmp_path)
    forms = {t.name: t.form for t in plan.table("items").triggers}
    assert forms == {
        "items_touch": "touch",
        "items_no_negative": "guard",
        "items_slow_stock": "guard",
        "items_log": "audit",
    }
    [other] = [s for s in plan.skip if s.kind == "trigger"]
    assert other.table == "items_twice" and "2 statements" in other.reason

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    [cutover] = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path == ["cutover"]
    ]
    said = cutover.materialization.metadata["triggers"].value
    assert "items_touch: an update set updated_at to now()" in said

    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    lite = sqlite3.connect(copy)
    with psycopg.connect(pg_url) as conn:
        for statement, message in (
            ("INSERT INTO {}items (name, stock) VALUES ('c', -5)", "stock must not be negative"),
            ("UPDATE {}items SET stock = stock + 500 WHERE id = 1", "stock grows by 100 at most"),
        ):
            with pytest.raises(sqlite3.IntegrityError, match=message):
                lite.execute(statement.format(""))
            with pytest.raises(psycopg.errors.IntegrityError, match=message):
                conn.execute(statement.format("emrsim."))
            conn.rollback()
        # An insert is logged, on both sides.
        lite.execute("INSERT INTO items (id, name, stock) VALUES (7, 'g', 3)")
        conn.execute("INSERT INTO emrsim.items (id, name, stock) VALUES (7, 'g', 3)")
        assert lite.execute("SELECT item_id FROM log WHERE item_id = 7").fetchall() == [(7,)]
        logged = conn.execute("SELECT item_id, at = now() FROM emrsim.log WHERE item_id = 7")
        assert logged.fetchall() == [(7, True)]
        conn.rollback()
        # An update that leaves updated_at alone sets it to the moment, on both sides.
        lite.execute("UPDATE items SET name = 'a2' WHERE id = 1")
        touched = lite.execute("SELECT updated_at FROM items WHERE id = 1").fetchone()
        assert touched is not None and touched[0] > "2025"
        row = conn.execute(
            "UPDATE emrsim.items SET name = 'a2' WHERE id = 1 RETURNING updated_at = now()"
        ).fetchone()
        assert row == (True,)
        # One that sets it keeps the app's value, on both.
        lite.execute("UPDATE items SET updated_at = '2030-01-01 00:00:00' WHERE id = 2")
        assert lite.execute("SELECT updated_at FROM items WHERE id = 2").fetchone() == (
            "2030-01-01 00:00:00",
        )
        kept = conn.execute(
            "UPDATE emrsim.items SET updated_at = '2030-01-01 00:00:00+00' WHERE id = 2 "
            "RETURNING updated_at"
        ).fetchone()
        assert kept is not None and kept[0].year == 2030
        conn.rollback()
    lite.close()


class _Orders(DeclarativeBase):
    pass


class Line(_Orders):
    """Generated columns as SQLAlchemy's Computed writes them: stored and virtual, one that
    sqlglot writes for PostgreSQL and one it cannot (json_extract)."""

    __tablename__ = "line"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    qty: Mapped[int] = mapped_column()
    price: Mapped[int] = mapped_column()
    meta: Mapped[str] = mapped_column(sa.Text)
    total: Mapped[int] = mapped_column(sa.Computed("qty * price", persisted=True))
    label: Mapped[str] = mapped_column(sa.Computed("lower(name) || '#' || id"))
    colour: Mapped[str] = mapped_column(sa.Computed("json_extract(meta, '$.colour')"))


def test_generated_columns_are_computed_by_postgresql_after_proving_sqlites_values(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "orders.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    _Orders.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO line (id, name, qty, price, meta) VALUES (:i, :n, :q, :p, :m)"),
            [
                {"i": i, "n": f"Item {i}", "q": i % 4, "p": 10 + i, "m": '{"colour": "red"}'}
                for i in range(1, 31)
            ],
        )
    engine.dispose()
    plan = drafted(path, tmp_path)
    plan_path = tmp_path / "plan.yaml"
    line = plan.table("line")
    assert line.column("total").generated == '"qty" * "price"'
    assert line.column("label").generated is not None
    [lost] = [s for s in plan.skip if s.column == "colour"]
    assert "generated column not kept" in lost.reason

    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    with psycopg.connect(pg_url) as conn:
        generated = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'emrsim.line'::regclass "
            "AND attgenerated = 's' ORDER BY attname"
        ).fetchall()
        assert generated == [("label",), ("total",)]
        row = conn.execute(
            "INSERT INTO emrsim.line (id, name, qty, price, meta_) VALUES (99, 'New', 3, 7, '{}') "
            "RETURNING total, label"
        ).fetchone()
        assert row == (21, "new#99")
        conn.rollback()

    # A plan whose expression gives other values stops the load, naming rows and values.
    import yaml

    from emrsim_assets.plan import parse_plan

    raw = yaml.safe_load(plan_path.read_text())
    for column in raw["tables"][0]["columns"]:
        if column["name"] == "total":
            column["generated"] = '"qty" + "price"'
    result = Migration(parse_plan(raw, plan_path), path, pg_url, tmp_path / "w2").run_job()
    assert not result.success
    said = failure_sentence(result)
    assert "line.total: the generated expression" in said and "SQLite 11, PostgreSQL 12" in said


def test_a_rule_on_a_function_of_the_apps_own_is_named_and_probing_says_why_it_cannot(
    tmp_path: Path, pg_url: str
) -> None:
    """A CHECK that calls a function the app registers on its connections: SQLite cannot run a
    write on that table without it. The rule is listed under skip; the probes say why they
    cannot run; the check passes on the catalog."""
    import sqlite3

    path = tmp_path / "own.db"
    conn = sqlite3.connect(path)
    conn.create_function("is_even", 1, lambda n: n % 2 == 0)
    conn.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (is_even(n)));"
        "INSERT INTO t VALUES (1, 2), (2, 4);"
    )
    conn.close()
    plan = drafted(path, tmp_path)
    [rule] = [s for s in plan.skip if s.kind == "check"]
    assert "IS_EVEN" in rule.reason.upper()
    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    assert result.success
    verdict = _schema_verdict(result, "t")
    assert verdict.passed, verdict.description
    said = verdict.metadata["not_probed"].value
    assert any("refused by SQLite" in s and "is_even" in s for s in said), said
