"""Random hostile files (soup.py): whatever a file holds arrives equal, or the run stops with
one sentence naming table, column and row. Never the quiet middle, and never the proof finding
what the load let through."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from emrsim_assets.snapshot import sha256_file
from emrsim_assets_tests.conftest import Migration
from emrsim_assets_tests.harness import drafted
from emrsim_assets_tests.oracle import source_rows, target_rows
from emrsim_assets_tests.soup import poisoned, write_soup

# What a refused value's sentence starts with: our error, then table.column: row id N.
_NAMED = re.compile(r"^(SourceError|ConversionError): [a-z0-9_]+\.[a-z0-9_]+: row id \d+")


SEEDS = range(48)


@pytest.fixture(autouse=True)
def months_for_small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The soups are small: their drafts partition their largest keyed table all the same, so
    that the months' paths (short months, long names) are exercised by random files too."""
    from emrsim_assets import draft

    monkeypatch.setattr(draft, "PARTITION_MIN_ROWS", 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_soup_arrives_equal_or_stops_naming_the_value(
    seed: int, tmp_path: Path, pg_url: str
) -> None:
    sqlite = write_soup(tmp_path / "soup.sqlite", seed)
    before = sha256_file(sqlite)
    plan = drafted(sqlite, tmp_path)  # a draft never fails on what a file holds
    result = Migration(plan, sqlite, pg_url, tmp_path / "work").run_job("migrate")
    assert sha256_file(sqlite) == before

    failed_checks = [
        e
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    # A time value that converts but stands out (the epoch 1 among 2024's) stops the run by
    # design, naming its row: a stop, not something the load let through.
    outliers = [e for e in failed_checks if e.check_name == "values_look_alike"]
    for evaluation in outliers:
        assert re.search(r"row id \d+", str(evaluation.description)), evaluation.description
    failed_checks = [e for e in failed_checks if e not in outliers]
    # Orphans of a reference the plan only reports (the draft's choice where it found some)
    # warn, naming them; nothing else warns.
    warned = [
        e
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.WARN
    ]
    for evaluation in warned:
        assert "enforce: report" in str(evaluation.description), evaluation.description
    # The proof finds nothing the load let through: a value that would arrive changed stops
    # the load, naming it.
    assert not failed_checks, [(e.asset_key, e.check_name, e.description) for e in failed_checks]
    # Every value PostgreSQL can hold gets a plan that carries it: only a poisoned soup (a NUL
    # byte or invalid UTF-8 in text) or a blocking outlier may stop.
    if not poisoned(seed) and not outliers:
        assert result.success, [
            str(e.step_failure_data.error) for e in result.get_step_failure_events()
        ]
    # Every table that loaded arrives equal, whether or not another stopped the run: live after
    # a cutover, in staging where the run stopped before it.
    stopped = {e.step_key for e in result.get_step_failure_events()}
    loaded = {
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if e.asset_key
    }
    schema = "emrsim" if result.success else "emrsim_staging"
    compared = [t for t in plan.tables if t.name in loaded and t.name not in stopped]
    assert compared or not result.success
    with psycopg.connect(pg_url) as conn:
        for table in compared:
            assert target_rows(conn, table, schema) == source_rows(sqlite, table), table.name
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if (
            outliers
            and data.error is not None
            and data.error.cls_name == "DagsterAssetCheckFailedError"
        ):
            continue  # the step a blocking outlier check stopped
        assert data.user_failure_data is not None, (event.step_key, data.error)
        sentence = str(data.user_failure_data.description)
        assert _NAMED.match(sentence), sentence
        assert "\n" not in sentence.strip(), sentence


def test_the_seeds_hold_what_they_are_for(tmp_path: Path) -> None:
    """Poisoned and clean soups, and drafts that take each path the bugs were found on."""
    assert {poisoned(seed) for seed in SEEDS} == {True, False}
    seen: set[str] = set()
    for seed in SEEDS:
        plan = drafted(write_soup(tmp_path / f"{seed}.sqlite", seed), tmp_path)
        for table in plan.tables:
            kinds = {c.convert for c in table.columns}
            seen |= {f"convert {kind}" for kind in kinds}
            seen |= {"any_class" for c in table.columns if c.any_class}
            seen |= {"reported reference" for c in table.columns if c.enforce == "report"}
            if table.partition_by_month:
                seen.add("months")
                seen |= {"months of a 53-character table"} if len(table.name) == 53 else set()
    wanted = {
        "any_class",
        "reported reference",
        "months",
        "months of a 53-character table",
        *(f"convert {kind}" for kind in ("text", "blob", "integer", "real", "timestamp")),
        *(f"convert {kind}" for kind in ("json", "uuid")),
    }
    assert wanted <= seen, wanted - seen
