"""The asset graph users and reviewers rely on: keys, deps following FKs, partitions, checks."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from emrsim_assets.defs.build import build_defs
from emrsim_assets.plan import load_plan


@pytest.fixture
def defs(monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """The bundled plan's definitions, built in an environment without the caller's settings
    (a source, a plan or a first month of theirs would change the graph)."""
    for name in list(os.environ):
        if name.startswith(("EMRSIM_", "DB_")):
            monkeypatch.delenv(name)
    return build_defs(load_plan())


def test_asset_graph_follows_the_plan(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "source_snapshot",
        "users",
        "patients",
        "conversations",
        "messages",
        "patient_records",
        "user_sessions",
        "cutover",
        "app_workload",
        "backup",
        "base_backup",
    }

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("users") == {"source_snapshot"}
    assert parents("conversations") == {"source_snapshot", "users", "patients"}
    assert parents("messages") == {"source_snapshot", "conversations"}
    after = {"app_workload", "backup", "base_backup"}
    assert parents("cutover") == keys - {"source_snapshot", "cutover"} - after
    assert all(parents(name) == {"cutover"} for name in after)
    messages = graph.get(dg.AssetKey("messages"))
    assert isinstance(messages.partitions_def, dg.MonthlyPartitionsDefinition)
    assert messages.partitions_def.get_first_partition_key() == "2023-01-01"


def test_every_table_has_blocking_count_content_and_fk_checks(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert checks == {
        "users:row_count_matches_source",
        "patients:row_count_matches_source",
        "patients:fk_created_by_resolves",
        "conversations:row_count_matches_source",
        "conversations:fk_user_id_resolves",
        "conversations:fk_patient_id_resolves",
        "messages:row_count_matches_source",
        "messages:fk_conversation_id_resolves",
        "messages:every_source_month_loaded",
        "messages:key_unique_across_months",
        "patient_records:row_count_matches_source",
        "patient_records:fk_patient_id_resolves",
        "user_sessions:row_count_matches_source",
        "user_sessions:fk_user_id_resolves",
        "app_workload:app_gets_same_answers",
        "backup:restore_is_identical",
        "base_backup:restores_to_a_moment",
        "app_workload:live_database_is_healthy",
        "app_workload:postgres_meets_or_exceeds_sqlite",
        *(
            f"{table}:{check}"
            for check in ("content_matches_source", "values_look_alike", "schema_matches_source")
            for table in (
                "users",
                "patients",
                "conversations",
                "messages",
                "patient_records",
                "user_sessions",
            )
        ),
    }
    for key in graph.asset_check_keys:
        if key.asset_key.to_user_string() not in ("app_workload", "backup", "base_backup"):
            # (after cutover: nothing left to block)
            assert graph.get_check_spec(key).blocking, key


def test_jobs_and_schedule_exist(defs: dg.Definitions) -> None:
    for name in (
        "migrate",
        "load_tables",
        "prove_after_cutover",
        "backup_live",
        "base_backup_live",
        "health_check",
        "rollback",
        "create_next_month_partition",
    ):
        assert defs.resolve_job_def(name).name == name
    assert defs.resolve_schedule_def("monthly_partition_schedule").cron_schedule == "0 3 20 * *"
    assert defs.resolve_schedule_def("daily_backup").cron_schedule == "0 2 * * *"
    assert defs.resolve_schedule_def("weekly_base_backup").cron_schedule == "0 3 * * 0"
    assert defs.resolve_schedule_def("health_every_5_minutes").cron_schedule == "*/5 * * * *"


def test_every_private_dagster_name_we_use_is_still_there() -> None:
    """Dagster's private modules are reached through one adapter only: an upgrade that moves a
    name fails here, by name, and no other module of ours imports dagster._core."""
    import importlib
    import re
    from pathlib import Path

    from emrsim_assets.defs import dagster_internals

    missing = [name for name in dagster_internals.__all__ if not hasattr(dagster_internals, name)]
    assert not missing, f"Dagster moved: {missing}"
    package = Path(importlib.import_module("emrsim_assets").__file__ or "").parent
    elsewhere = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "dagster_internals.py"
        and re.search(r"^\s*(from|import) dagster\._", path.read_text(), re.M)
    ]
    assert not elsewhere, elsewhere
