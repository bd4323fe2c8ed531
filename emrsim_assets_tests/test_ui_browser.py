"""The Dagster UI in a real browser (Debian's chromium, driven by Playwright): launch the whole
migration as a newcomer finds it (Jobs -> start_migration -> Launchpad -> Launch Run), rerun a
table after cutover (nothing turns red), a dry run from the launchpad, then reload one table and
watch its children's FK checks re-run. Screenshots of each step land in EMRSIM_SCREENSHOTS when
it is set."""

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
        with dg.DagsterInstance.get() as instance:
            yield {
                "url": f"http://127.0.0.1:{port}",
                "instance": instance,
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


class Clicks:
    """Every click of a route, counted, with a screenshot after each when asked for."""

    def __init__(self, page: Any, name: str) -> None:
        self.page, self.name, self.count = page, name, 0
        folder = os.environ.get("EMRSIM_SCREENSHOTS")
        self.folder = Path(folder) if folder else None

    def click(self, locator: Any) -> None:
        locator.click()
        self.count += 1
        self.shot(f"click{self.count}")

    def shot(self, label: str) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.folder / f"{self.name}-{label}.png"))


def _launch_everything(page: Any, url: str, instance: dg.DagsterInstance) -> tuple[str, int]:
    """A fresh UI, no printed link: Jobs -> start_migration -> Launchpad -> Launch Run. Its
    success makes the sensor launch migrate over every month. Returns that run, and the clicks."""
    clicks = Clicks(page, "launch")
    page.goto(url)
    page.get_by_role("link", name="Jobs").first.wait_for(timeout=60_000)
    _dismiss(page)
    clicks.shot("start")
    clicks.click(page.get_by_role("link", name="Jobs").first)
    clicks.click(page.get_by_role("link", name="start_migration").first)
    clicks.click(page.get_by_role("tab", name="Launchpad").first)
    launch = page.get_by_role("button", name="Launch Run")
    launch.wait_for(timeout=60_000)
    assert page.get_by_text("Are you sure").count() == 0
    clicks.click(launch)
    page.wait_for_url("**/runs/*", timeout=60_000)
    assert page.get_by_text("This job is partitioned").count() == 0, "no partition warning"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="migrate"))
        if runs:
            assert len(runs) == 1, [r.run_id for r in runs]
            assert runs[0].tags.get("emrsim/started_by")
            clicks.shot("migrate-run")
            return runs[0].run_id, clicks.count
        time.sleep(1)
    pytest.fail("start_migration did not start the migrate run within 120 s")


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
            months = month_partitions(
                load_plan(default_plan_path()), ui["sqlite"]
            ).get_partition_keys()
            run_id, clicks = _launch_everything(page, ui["url"], instance)
            assert clicks == 4, clicks
            _wait_for_run(instance, run_id)
            run = instance.get_run_by_id(run_id)
            assert run is not None
            for asset in ("source_snapshot", "users", "messages", "cutover"):
                event = instance.get_latest_materialization_event(dg.AssetKey(asset))
                assert event is not None and event.run_id == run_id, asset
            assert run.tags["dagster/asset_partition_range_start"] == months[0]
            assert run.tags["dagster/asset_partition_range_end"] == months[-1]
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

            # After cutover, Materialize on users changes nothing, and nothing turns red.
            shots = Clicks(page, "rerun-after-cutover")
            before_rerun = instance.get_latest_materialization_event(dg.AssetKey("users"))
            page.goto(f"{ui['url']}/assets/users")
            shots.click(page.locator("button", has_text="Materialize").first)
            page.get_by_text("Launched run").first.wait_for(timeout=30_000)
            deadline = time.monotonic() + 180
            refused = None
            while refused is None and time.monotonic() < deadline:
                runs = instance.get_runs(limit=1)
                if runs and runs[0].run_id != run_id and runs[0].is_finished:
                    refused = runs[0]
                time.sleep(1)
            assert refused is not None and refused.status == dg.DagsterRunStatus.SUCCESS
            assert any(
                "Not reloaded" in (e.message or "") for e in instance.all_logs(refused.run_id)
            )
            after_rerun = instance.get_latest_materialization_event(dg.AssetKey("users"))
            assert before_rerun and after_rerun and after_rerun.timestamp == before_rerun.timestamp
            page.goto(f"{ui['url']}/assets/users?view=checks")
            page.get_by_text("row_count_matches_source").first.wait_for(timeout=30_000)
            time.sleep(2)
            shots.shot("checks")
            body = page.inner_text("body")
            assert "Execution failed" not in body and "Failed" not in body, body[:2000]
            page.goto(f"{ui['url']}/assets/users")
            page.get_by_text("Latest materialization").first.wait_for(timeout=30_000)
            time.sleep(2)
            shots.shot("asset")
            assert "Failed" not in page.inner_text("body")

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
