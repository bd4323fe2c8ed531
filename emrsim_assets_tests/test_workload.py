"""The app's workload after cutover: the same answers on both sides, latency and throughput."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from emrsim_assets import indexes, workload
from emrsim_assets.errors import PlanError
from emrsim_assets_tests.conftest import Migration, failure_sentence

SELECTION = dg.AssetSelection.assets("app_workload")


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(autouse=True)
def short_throughput_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload, "SECONDS_PER_LEVEL", 0.2)


def test_the_workload_gets_the_same_answers_and_reports_latency_and_throughput(
    migration: Migration,
) -> None:
    assert migration.run_job("migrate").success
    result = migration.materialize(SELECTION)
    assert result.success
    checks = _checks(result)
    same = checks["app_gets_same_answers"]
    assert same.passed, same.description
    assert "postgres_meets_or_exceeds_sqlite" in checks  # a warning either way: timings vary
    [event] = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
    report = str(metadata["report"].value)
    for name in ("conversation_messages", "search_messages", "insert_message", "| 3 |"):
        assert name in report, report
    throughput = metadata["throughput"].value
    assert isinstance(throughput, dict) and throughput["postgres"]["3"] > 0
    assert (migration.work / "reports" / "workload.md").read_text().count("|") > 20


def test_a_different_answer_fails_the_check_naming_the_query(migration: Migration) -> None:
    assert migration.run_job("migrate").success
    with migration.connect() as conn:
        conn.execute("UPDATE emrsim.messages SET sender = 'robot' WHERE sender = 'user'")
    checks = _checks(migration.materialize(SELECTION))
    same = checks["app_gets_same_answers"]
    assert not same.passed
    assert "conversation_messages" in str(same.description), same.description
    assert "'robot'" in str(same.description) and "'user'" in str(same.description)
    assert "search_messages" not in str(same.description)  # ids only: unchanged


def test_before_cutover_the_workload_refuses_in_one_sentence(migration: Migration) -> None:
    assert migration.run_job("load_tables").success
    result = migration.materialize(SELECTION)
    assert not result.success
    assert "the workload runs after cutover" in failure_sentence(result)


def test_workload_files_that_cannot_work_are_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("version: 1\nqueries:\n  - {name: q, postgres: SELECT 1}\n")
    with pytest.raises(PlanError, match=r"queries\[0\] needs name and sqlite"):
        workload.load_workload(bad)
    bad.write_text("version: 1\nqueries:\n  - {name: q, sqlite: SELECT 1}\n")
    with pytest.raises(PlanError, match=r"queries \['q'\] need their postgres form"):
        workload.load_workload(bad)  # with no plan to write it for
    monkeypatch.setenv("EMRSIM_WORKLOAD", str(tmp_path / "missing.yaml"))
    with pytest.raises(PlanError, match=r"missing\.yaml, which does not exist"):
        workload.workload_path(bundled_plan=True)
    monkeypatch.delenv("EMRSIM_WORKLOAD")
    with pytest.raises(PlanError, match="No workload for this plan"):
        workload.workload_path(bundled_plan=False)
    assert workload.workload_path(bundled_plan=True) == workload.default_workload_path()


def test_values_both_drivers_return_differently_compare_equal() -> None:
    from datetime import UTC, datetime

    assert workload.normalize("2023-01-16T08:18:37.541Z") == workload.normalize(
        datetime(2023, 1, 16, 8, 18, 37, 541000, tzinfo=UTC)
    )
    assert workload.normalize('{"b": 1, "a": [true]}') == workload.normalize({"a": [True], "b": 1})
    assert workload.normalize(True) == workload.normalize(1)
    assert workload.normalize("2023-01-16 08:18:37") != workload.normalize("2023-01-16 08:18:38")


def test_the_health_check_watches_the_live_database(migration: Migration) -> None:
    from emrsim_assets import health

    assert migration.run_job("migrate").success
    check = dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("app_workload"), "live_database_is_healthy")
    )
    [evaluation] = migration.materialize(check).get_asset_check_evaluations()
    assert evaluation.passed, evaluation.description
    assert str(evaluation.description).startswith("Healthy: connect ")
    assert evaluation.metadata["baseline_p95_ms"].value == "(no workload run yet)"
    assert int(evaluation.metadata["max_connections"].value) > 0  # type: ignore[arg-type]

    # A baseline the key query cannot meet, and a server that does not answer.
    slow = health.health(migration.pg_url, "SELECT pg_sleep(0.06)", {}, baseline_ms=1.0)
    assert slow.problems and "the key query took" in slow.problems[0]
    gone = health.health("postgresql://nobody@127.0.0.1:1/none", "SELECT 1", {}, None)
    assert gone.problems[0].startswith("cannot connect")


def test_the_app_schema_workload_gets_the_same_answers(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workloads/app.yaml on `sample --schema app`, migrated with its drafted plan (which now
    indexes turns.session_id: the workload's most frequent lookup)."""
    from emrsim_assets.draft import draft_plan
    from emrsim_assets.plan import load_plan
    from emrsim_assets_tests.shapes import write_shape

    sqlite = write_shape("app_schema", tmp_path / "app.sqlite")
    (tmp_path / "plan.yaml").write_text(draft_plan(sqlite), encoding="utf-8")
    plan = load_plan(tmp_path / "plan.yaml")
    assert "idx_turns_session_id" in {i.name for i in plan.table("turns").indexes}
    monkeypatch.setenv("EMRSIM_WORKLOAD", str(workload.default_workload_path().parent / "app.yaml"))
    migration = Migration(plan, sqlite, pg_url, tmp_path / "work")
    assert migration.run_job("migrate").success
    checks = _checks(migration.materialize(SELECTION))
    assert checks["app_gets_same_answers"].passed, checks["app_gets_same_answers"].description
    assert checks["live_database_is_healthy"].passed


def test_the_index_review_names_big_sequential_scans_and_the_index_for_each(
    archiving: tuple[str, Path],
) -> None:
    url, _ = archiving
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA emrsim")
        conn.execute("CREATE TABLE emrsim.notes (id bigint PRIMARY KEY, author text, body text)")
        conn.execute(
            "INSERT INTO emrsim.notes SELECT g, 'a' || (g % 100), 'note ' || g "
            "FROM generate_series(1, 20000) g"
        )
        conn.execute("ANALYZE emrsim.notes")
        # Two months of 8,000 rows: each small, the table big.
        conn.execute(
            "CREATE TABLE emrsim.events (id bigint, at date, body text, PRIMARY KEY (id, at)) "
            "PARTITION BY RANGE (at)"
        )
        for month, bounds in (
            ("y2024m01", "('2024-01-01') TO ('2024-02-01')"),
            ("y2024m02", "('2024-02-01') TO ('2024-03-01')"),
            ("y2024m03", "('2024-03-01') TO ('2024-04-01')"),
        ):
            conn.execute(
                f"CREATE TABLE emrsim.events_{month} PARTITION OF emrsim.events FOR VALUES FROM {bounds}"
            )
        conn.execute(
            "INSERT INTO emrsim.events SELECT g, date '2024-01-01' + (g % 59), 'event ' || g "
            "FROM generate_series(1, 16000) g"
        )
        conn.execute("ANALYZE emrsim.events")
        for i in range(3):
            conn.execute(
                "SELECT id FROM emrsim.events WHERE body ILIKE %s ORDER BY id LIMIT 5", (f"%{i}9%",)
            )
            # Only the empty month is read in full: nothing to index.
            conn.execute(
                "SELECT id FROM emrsim.events WHERE body = %s AND at >= %s",
                (f"event {i}", date(2024, 3, 1)),
            )
            conn.execute("SELECT id FROM emrsim.notes WHERE author = %s", (f"a{i}",))
            conn.execute("SELECT id FROM emrsim.notes WHERE body ILIKE %s", (f"%{i}7%",))
            conn.execute("SELECT body FROM emrsim.notes WHERE id = %s", (i,))
    reviewed = indexes.review(url, "emrsim")
    assert "CREATE INDEX ON emrsim.notes (author)" in reviewed.suggestions, reviewed
    assert (
        "CREATE INDEX ON emrsim.notes USING gin (body gin_trgm_ops) (pg_trgm)"
        in reviewed.suggestions
    ), reviewed
    assert (
        "CREATE INDEX ON emrsim.events USING gin (body gin_trgm_ops) (pg_trgm)"
        in reviewed.suggestions
    ), reviewed
    assert "CREATE INDEX ON emrsim.events (body)" not in reviewed.suggestions, reviewed
    by_key = [s for s in reviewed.statements if "WHERE id =" in s.query]
    assert by_key and not by_key[0].suggestions and not by_key[0].seq_scans
    assert "notes (20,000 rows, sequential scan)" in reviewed.markdown()


def test_without_pg_stat_statements_loaded_the_review_says_so(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
    if row and "pg_stat_statements" in str(row[0]):
        pytest.skip("this server loads pg_stat_statements")
    reviewed = indexes.review(pg_url, "emrsim")
    assert reviewed.note.startswith("No index review: pg_stat_statements is not available")
    assert not reviewed.statements


def test_a_workload_of_sqlite_queries_only_is_transpiled_and_proven(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's queries in SQLite SQL only: sqlglot writes each for PostgreSQL (names of the
    plan, ILIKE for LIKE, NULLs ordered as SQLite orders them) and the proof is the same as for
    hand-written ones. A query it cannot write well fails, naming the query and the SQL."""
    import yaml

    from emrsim_assets.draft import draft_plan
    from emrsim_assets.plan import load_plan
    from emrsim_assets_tests.shapes import write_shape

    sqlite = write_shape("app_schema", tmp_path / "app.sqlite")
    (tmp_path / "plan.yaml").write_text(draft_plan(sqlite), encoding="utf-8")
    plan = load_plan(tmp_path / "plan.yaml")
    raw = yaml.safe_load((workload.default_workload_path().parent / "app.yaml").read_text())
    for query in raw["queries"]:
        del query["postgres"]
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    loaded = workload.load_workload(path, plan)
    assert all(q.transpiled for q in loaded.queries)
    search = next(q for q in loaded.queries if q.name == "search_turns")
    assert search.statement == (
        'SELECT "id" FROM "emrsim"."turns" WHERE "text" ILIKE \'%%\' || %(term)s || \'%%\' '
        'ORDER BY "id" NULLS FIRST LIMIT 50'
    )
    with pytest.raises(PlanError, match="need their postgres form"):
        workload.load_workload(path)

    monkeypatch.setenv("EMRSIM_WORKLOAD", str(path))
    migration = Migration(plan, sqlite, pg_url, tmp_path / "work")
    assert migration.run_job("migrate").success
    checks = _checks(migration.materialize(SELECTION))
    assert checks["app_gets_same_answers"].passed, checks["app_gets_same_answers"].description

    # substr() on a column PostgreSQL holds as timestamptz: sqlglot writes SUBSTRING, which
    # PostgreSQL refuses; the run names the query and shows the SQL to write by hand.
    raw["queries"].append(
        {"name": "days", "sqlite": "SELECT substr(created_at, 1, 10) FROM turns LIMIT 3"}
    )
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = migration.materialize(SELECTION)
    assert not result.success
    said = failure_sentence(result)
    assert "Workload query days failed on PostgreSQL" in said and "by hand" in said
