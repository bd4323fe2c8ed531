"""The threaded executor: ready steps run side by side, and everything Dagster decides between
steps (dependencies, a failed blocking check skipping what follows, a failed step failing the
run) is decided as in process."""

from __future__ import annotations

import itertools
import threading
import time

import dagster as dg
import pytest

from emrsim_assets.defs.threads import execute_in_threads


def _job(spans: dict[str, tuple[float, float]], check_passes: bool = True) -> dg.JobDefinition:
    """Three independent assets that each take 0.3 s, a blocking check on one of them, and an
    asset downstream of the checked one."""
    seen = threading.Lock()

    def slow(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def _slow() -> None:
            started = time.monotonic()
            time.sleep(0.3)
            with seen:
                spans[name] = (started, time.monotonic())

        return _slow

    @dg.asset_check(asset="a", blocking=True)
    def a_is_right() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=check_passes)

    @dg.asset(deps=["a"])
    def after_a() -> None:
        spans["after_a"] = (time.monotonic(), time.monotonic())

    defs = dg.Definitions(
        assets=[slow("a"), slow("b"), slow("c"), after_a],
        asset_checks=[a_is_right],
        jobs=[dg.define_asset_job("all", selection=dg.AssetSelection.all())],
    )
    return defs.resolve_job_def("all")


def test_ready_steps_run_side_by_side_and_dependencies_hold() -> None:
    spans: dict[str, tuple[float, float]] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_in_threads(_job(spans), instance, {}, {})
    assert result.success
    started = sorted(spans[k][0] for k in "abc")
    ended = sorted(spans[k][1] for k in "abc")
    # All three were running at once: the last started before the first ended.
    assert started[-1] < ended[0], spans
    # A dependent step starts only after what it depends on (and its blocking check).
    assert spans["after_a"][0] >= spans["a"][1]


def test_one_step_at_a_time_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMRSIM_STEPS", "1")
    spans: dict[str, tuple[float, float]] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_in_threads(_job(spans), instance, {}, {}).success
    ordered = sorted(spans[k] for k in "abc")
    assert all(one[1] <= two[0] for one, two in itertools.pairwise(ordered)), spans


def _outcomes(result: dg.ExecuteInProcessResult) -> dict[str | None, list[str]]:
    """Per step, the kinds of step events it had, in order."""
    outcomes: dict[str | None, list[str]] = {}
    for event in result.all_events:
        if event.is_step_event:
            outcomes.setdefault(event.step_key, []).append(event.event_type_value)
    return outcomes


def test_a_failed_blocking_check_stops_what_follows_as_in_process() -> None:
    spans: dict[str, tuple[float, float]] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_in_threads(_job(spans, check_passes=False), instance, {}, {})
    assert not result.success
    assert "after_a" not in spans
    assert {"a", "b", "c"} <= spans.keys()
    with dg.DagsterInstance.ephemeral() as instance:
        in_process = _job({}, check_passes=False).execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert _outcomes(result) == _outcomes(in_process)


def test_a_failing_step_fails_the_run_and_the_others_finish() -> None:
    finished: list[str] = []

    @dg.asset
    def breaks() -> None:
        raise ValueError("this step fails")

    @dg.asset
    def works() -> None:
        time.sleep(0.2)
        finished.append("works")

    job = dg.Definitions(
        assets=[breaks, works],
        jobs=[dg.define_asset_job("all", selection=dg.AssetSelection.all())],
    ).resolve_job_def("all")
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_in_threads(job, instance, {}, {})
    assert not result.success
    assert finished == ["works"]
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["breaks"]
    assert "this step fails" in str(failures[0].step_failure_data.error)


def test_a_run_freezes_what_was_alive_before_it() -> None:
    import gc

    seen: list[int] = []

    @dg.asset
    def counted() -> None:
        seen.append(gc.get_freeze_count())

    defs = dg.Definitions(assets=[counted], jobs=[dg.define_asset_job("one", selection=[counted])])
    before = gc.get_freeze_count()  # earlier runs in this process froze theirs
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_in_threads(defs.resolve_job_def("one"), instance, {}, {})
    assert result.success
    # This run's definitions and instance joined them: full collections skip them.
    assert seen and seen[0] > before + 100
