"""Drafting, planting values and running a migration the way the tests need it: one place,
shared by the test modules (none imports another's helpers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg

from emrsim_assets.draft import draft_plan
from emrsim_assets.plan import Plan, load_plan
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.shapes import write_shape


def drafted(sqlite: Path, tmp_path: Path) -> Plan:
    text = draft_plan(sqlite)
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


def run_sentences(sqlite: Path, tmp_path: Path, pg_url: str, plan_path: Path | None = None) -> str:
    """Migrate; return every failure sentence (steps and ERROR checks) of the run."""
    plan = load_plan(plan_path) if plan_path else drafted(sqlite, tmp_path)
    result = Migration(plan, sqlite, pg_url, tmp_path / "work").run_job("migrate")
    sentences = step_failures(result)
    sentences += [
        str(e.description)
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert "cutover" not in {
        e.event_specific_data.materialization.asset_key.to_user_string()  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }, "a run with a bad value must not cut over"
    return "\n".join(sentences)


def planted(shape: str, statements: list[str], tmp_path: Path, pg_url: str) -> str:
    """A shape, its plan drafted before `statements` plant values in it, then migrated: every
    failure sentence of the run."""
    sqlite = write_shape(shape, tmp_path / f"{shape}.sqlite")
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(draft_plan(sqlite), encoding="utf-8")
    execute(sqlite, *statements)
    sentences = run_sentences(sqlite, tmp_path, pg_url, plan_path)
    load_plan(plan_path)  # the plan itself stays valid
    return sentences


def execute(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def step_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        str(e.step_failure_data.user_failure_data.description)
        for e in result.get_step_failure_events()
        if e.step_failure_data.user_failure_data
    ]


def add_orphan_message(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(
            "INSERT INTO messages (conversation_id, sender, message, metadata, created_at) "
            "VALUES (987654, 'user', 'orphaned', NULL, '2024-05-05 10:00:00')"
        )
        conn.commit()
        return int(cursor.lastrowid or 0)
    finally:
        conn.close()
