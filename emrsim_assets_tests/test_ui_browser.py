"""The Dagster UI in a real browser (Debian's chromium, driven by Playwright): launch the whole
migration from the link `make dev` prints (Materialize all, every month preselected), a dry run
from the launchpad, then reload one table and watch its children's FK checks re-run."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from emrsim_assets.defs.build import month_partitions
from emrsim_assets.plan import load_plan
from emrsim_assets.plan.load import default_plan_path
from emrsim_assets.sample import write_sample
from emrsim_assets_tests.user_shell import (
    REPO,
    free_port,
    start_server,
    stop_embedded,
    stop_server,
    user_env,
    wait_for_ui,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on this machine (apt-get install chromium; .ci/run installs it)",
)
# As root, in a closed network: no sandbox, and no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`make dev`'s server (webserver and daemon, storage in the embedded PostgreSQL)."""
    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=1_500, seed=9)
    work = tmp_path / "work"
    port = free_port()
    env = user_env(work, EMRSIM_SQLITE_PATH=str(sqlite))
    log = tmp_path / "dev.log"
    server = start_server(
        [str(REPO / ".venv" / "bin" / "emrsim-migrate"), "dev", "--port", str(port)], env, log
    )
    try:
        wait_for_ui(port, server, 180, log)
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")  # to read the instance below
        link = next(
            line.split("open ", 1)[1].strip()
            for line in log.read_text().splitlines()
            if line.startswith("Migrate everything: open ")
        )
        with dg.DagsterInstance.get() as instance:
            yield {
                "url": f"http://127.0.0.1:{port}",
                "instance": instance,
                "link": link,
                "sqlite": sqlite,
            }
    finally:
        os.environ.pop("DAGSTER_HOME", None)
        stop_server(server)
        stop_embedded(env)


def _dismiss(page: Any) -> None:
    """The 'Join the Dagster community' dialog shows a moment after the first page load."""
    from playwright.sync_api import TimeoutError as Timeout

    try:
        page.get_by_role("button", name="Skip").click(timeout=8_000)
    except Timeout:
        pass


def _launch_job(page: Any, url: str, job: str) -> str:
    """Jobs -> job -> Open launchpad -> Materialize (every month, as the job's tags say)."""
    page.goto(f"{url}/locations/emrsim_assets.definitions/jobs/{job}")
    page.get_by_role("button", name="Materialize all").wait_for(timeout=60_000)
    _dismiss(page)
    page.locator("button:right-of(:text('Materialize all'))").first.click()
    page.get_by_text("Open launchpad").click()
    # The job's tags: every month as one partition range.
    page.get_by_text("asset_partition_range_start").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Materialize").last.click()
    confirm = page.get_by_role("button", name="Confirm")
    if confirm.count() or confirm.is_visible(timeout=5_000):
        confirm.click()
    page.wait_for_url("**/runs/*", timeout=60_000)
    return str(page.url.rsplit("/runs/", 1)[1].split("?")[0])


def _launch_everything(page: Any, link: str, instance: dg.DagsterInstance, months: int) -> str:
    """The link `make dev` prints -> Materialize all (every month preselected) -> Launch
    backfill: one run of every asset over every month."""
    page.goto(link)
    page.get_by_role("button", name="Materialize all").wait_for(timeout=60_000)
    _dismiss(page)
    page.get_by_role("button", name="Materialize all").click()
    page.get_by_text(f"{months} partitions selected").wait_for(timeout=30_000)
    page.get_by_role("button", name="Launch backfill").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        backfills = instance.get_backfills(limit=1)
        if backfills:
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/backfill": backfills[0].backfill_id})
            )
            if runs:
                assert len(runs) == 1, [r.run_id for r in runs]
                return runs[0].run_id
        time.sleep(1)
    pytest.fail("no run started for the backfill within 60 s")


def _wait_for_run(instance: dg.DagsterInstance, run_id: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
            return
        time.sleep(1)
    run = instance.get_run_by_id(run_id)
    pytest.fail(
        f"run {run_id} did not finish within {seconds:.0f} s: {run.status if run else 'no run'}"
    )


def _check_record(instance: dg.DagsterInstance, asset: str, name: str) -> Any:
    return instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey(asset), name)
    )


def test_launch_the_whole_migration_from_the_ui_then_reload_a_parent(ui: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    instance: dg.DagsterInstance = ui["instance"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            months = len(
                month_partitions(load_plan(default_plan_path()), ui["sqlite"]).get_partition_keys()
            )
            run_id = _launch_everything(page, ui["link"], instance, months)
            _wait_for_run(instance, run_id)
            run = instance.get_run_by_id(run_id)
            assert run is not None and {k.to_user_string() for k in run.asset_selection or []} >= {
                "source_snapshot",
                "users",
                "messages",
                "cutover",
            }
            page.goto(f"{ui['url']}/runs/{run_id}")
            page.get_by_text("Success").first.wait_for(timeout=30_000)

            # Every table shows its checks passed, and cutover materialized.
            for check in ("row_count_matches_source", "fk_created_by_resolves"):
                record = _check_record(instance, "patients", check)
                assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, check
            page.goto(f"{ui['url']}/assets/patients?view=checks")
            page.get_by_text("fk_created_by_resolves").first.wait_for(timeout=30_000)
            assert "Passed" in page.inner_text("body")
            assert instance.get_latest_materialization_event(dg.AssetKey("cutover"))

            # A dry run makes a staging schema again; then reload users alone from its page.
            _wait_for_run(instance, _launch_job(page, ui["url"], "load_tables"))
            before = _check_record(instance, "patients", "fk_created_by_resolves")
            # Let the sensor tick once (every 15 s) after the dry run's own FK checks: a check
            # run and a parent's reload seen in the same tick count as handled (Dagster's
            # since_last_handled), as a person's reload minutes later never is.
            time.sleep(25)
            page.goto(f"{ui['url']}/assets/users")
            page.locator("button", has_text="Materialize").first.click()
            page.get_by_text("Launched run").first.wait_for(timeout=30_000)
            # A new run process (imports, the instance) and the load: seconds on a quiet
            # machine, over a minute once on a busy one.
            deadline = time.monotonic() + 180
            users = None
            while users is None and time.monotonic() < deadline:
                event = instance.get_latest_materialization_event(dg.AssetKey("users"))
                if event is not None and event.timestamp > before.event.timestamp:
                    users = event
                time.sleep(1)
            assert users is not None, "the reload of users did not materialize"

            # The children's FK check leaves its old pass: the daemon runs it again.
            deadline = time.monotonic() + 120
            after = before
            while time.monotonic() < deadline:
                after = _check_record(instance, "patients", "fk_created_by_resolves")
                if after.event is not None and after.event.timestamp > users.timestamp:
                    break
                time.sleep(2)
            assert after.event is not None and after.event.timestamp > users.timestamp, (
                "patients:fk_created_by_resolves was not evaluated again after users reloaded"
            )
            assert after.run_id != before.run_id
        finally:
            browser.close()
