"""Cutover's own look at the instance: every check passed, and none is older than its data."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from emrsim_assets.defs.dagster_internals import AssetCheckExecutionRecordStatus


def _latest_materialization(instance: dg.DagsterInstance, asset: str) -> float | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.timestamp if event else None


def gate_problems(
    instance: dg.DagsterInstance, check_specs: Sequence[tuple[dg.AssetCheckKey, Sequence[str]]]
) -> list[str]:
    """Names of checks that are failed, missing or stale. `check_specs` pairs each check with the
    assets whose data it reads (an FK check reads its parent too)."""
    problems = []
    for key, reads in check_specs:
        label = f"{key.asset_key.to_user_string()}:{key.name}"
        record = instance.get_latest_asset_check_evaluation_record(key)
        if (
            record is None
            or record.event is None
            or record.status
            not in (
                AssetCheckExecutionRecordStatus.SUCCEEDED,
                AssetCheckExecutionRecordStatus.FAILED,
            )
        ):
            problems.append(f"{label} has not been evaluated")
            continue
        evaluation = (
            record.event.dagster_event.event_specific_data if record.event.dagster_event else None
        )
        passed = getattr(evaluation, "passed", False)
        severity = getattr(evaluation, "severity", dg.AssetCheckSeverity.ERROR)
        if not passed and severity == dg.AssetCheckSeverity.ERROR:
            problems.append(f"{label} failed")
            continue
        checked_at = record.event.timestamp
        for asset in reads:
            materialized = _latest_materialization(instance, asset)
            if materialized is not None and materialized > checked_at:
                problems.append(f"{label} is stale ({asset} was materialized after it ran)")
                break
    return problems
