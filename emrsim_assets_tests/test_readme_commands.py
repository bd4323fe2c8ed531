"""The README's commands, run as a user runs them: a fresh shell, no activated venv, from the repo."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from emrsim_assets import postgres
from emrsim_assets.sample import write_sample
from emrsim_assets_tests.user_shell import (
    REPO,
    assert_private,
    assert_private_files,
    free_port,
    graphql,
    postmaster,
    shell,
    start_server,
    stop_embedded,
    stop_server,
    user_env,
    wait_for_ui,
)


def test_make_dev_serves_the_asset_graph_and_make_stop_really_stops_the_server(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    port = free_port()
    env = user_env(work)
    log = tmp_path / "make-dev.log"
    dev = start_server(["bash", "-c", f"make dev DEV_PORT={port}"], env, log)
    try:
        wait_for_ui(port, dev, 180, log)
        # The code location loaded: every table of the plan is an asset in the UI.
        deadline = time.monotonic() + 60
        keys: set[str] = set()
        while time.monotonic() < deadline and "messages" not in keys:
            answer = graphql(port, "{ assetNodes { assetKey { path } } }")
            nodes = answer.get("data", {}).get("assetNodes", [])  # type: ignore[union-attr]
            keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
            time.sleep(1)
        assert {"source_snapshot", "users", "messages", "cutover"} <= keys, keys
        # How to migrate everything from the UI, and the job it names is there.
        printed = log.read_text()
        assert "Migrate everything: Jobs -> start_migration -> Launchpad" in printed, printed
        answer = graphql(
            port,
            '{ pipelineOrError(params: {pipelineName: "start_migration", '
            'repositoryName: "__repository__", repositoryLocationName: '
            '"emrsim_assets.definitions"}) { __typename } }',
        )
        assert answer["data"]["pipelineOrError"]["__typename"] == "Pipeline", answer  # type: ignore[index]
    finally:
        stop_server(dev)

    pgdata = work / "pgdata"
    server = postmaster(pgdata)
    assert server is not None and server.is_running(), "make dev's PostgreSQL should outlive it"
    # make dev was killed: the handle list still names its dead process. stop must not trust it.
    assert json.loads((pgdata / ".handle_pids.json").read_text())
    stopped = shell("make stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped." in stopped.stdout
    server.wait(30)
    assert not server.is_running()
    again = shell("make stop", env)
    assert again.returncode == 0 and "was not running" in again.stdout

    cleaned = shell("make clean", env)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not work.exists()


def test_make_clean_stops_a_running_server_before_deleting_its_data(tmp_path: Path) -> None:
    from emrsim_assets import postgres

    work = tmp_path / "work"
    postgres.embedded_url(work, postgres.EMBEDDED_DATABASE)
    server = postmaster(work / "pgdata")
    assert server is not None and server.is_running()
    cleaned = shell("make clean", user_env(work))
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    server.wait(30)
    assert not work.exists()


def test_make_demo_migrates_the_sample_and_cuts_over(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = user_env(work)
    try:
        demo = shell("make demo DEMO_MESSAGES=3000", env, timeout=600)
        out = demo.stdout + demo.stderr
        assert demo.returncode == 0, out[-4000:]
        assert "cutover: done" in out
        assert (work / "demo.sqlite").exists()
        # A short view for people: progress and a report that says how to connect.
        assert "DEBUG" not in out and "Traceback" not in out
        assert len(out.splitlines()) < 60, out
        connect = next(line for line in out.splitlines() if "connect:" in line)
        psql = connect.split("connect:", 1)[1].split()
        counted = subprocess.run(
            [*psql, "-Atc", "SELECT count(*) FROM emrsim.messages"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert counted.stdout.strip() == "3000", counted.stderr
        role = subprocess.run(
            [
                *psql,
                "-Atc",
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert role.stdout.strip() == "emrsim|f", role.stderr
        assert "make stop" in out
        assert "━" not in out, "no progress bar into a pipe"
        assert_private_files(work)

        # At a terminal, the lines that say how far they are carry a bar.
        main, child = pty.openpty()
        at_terminal = subprocess.Popen(
            ["bash", "-c", "make demo DEMO_MESSAGES=3000"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=child,
        )
        os.close(child)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            seen += chunk
        os.close(main)
        assert at_terminal.wait(300) == 0, seen.decode(errors="replace")[-3000:]
        # rich's bar, full at the end: its escape codes taken out, the text is what a person sees.
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
        assert re.search(r"messages\s+━+ 3000/3000 rows", text), text[-3000:]
    finally:
        shell("make stop", env)


def test_migrate_and_materialize_commands_from_the_readme(tmp_path: Path, pg_url: str) -> None:
    """`emrsim-migrate migrate`, its dry run, `dagster asset materialize` of one table and one
    month, and `emrsim-migrate rollback`, each as the README writes it."""
    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=800, seed=5)
    env = user_env(
        tmp_path / "work",
        EMRSIM_SQLITE_PATH=str(sqlite),
        EMRSIM_PG_URL=pg_url,
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    dry = shell(".venv/bin/emrsim-migrate migrate --job load_tables", env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: all checks passed" in dry.stdout

    one = shell(
        ".venv/bin/dagster asset materialize -m emrsim_assets.definitions --select users", env
    )
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-4000:]
    month = shell(
        ".venv/bin/dagster asset materialize -m emrsim_assets.definitions --select messages "
        "--partition 2024-03-01",
        env,
    )
    assert month.returncode == 0, month.stdout[-2000:] + month.stderr[-4000:]

    full = shell(".venv/bin/emrsim-migrate migrate", env)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "cutover: done" in full.stdout
    # The terminal report reads as a report: no Python dict, list or None in it.
    said = full.stdout + full.stderr
    assert "Snapshot " in said and " tables, " in said and "taken and checked in" in said, said
    assert "Cutover done: 6 tables," in said and "are live in schema emrsim" in said, said
    assert "the app: DB_HOST=" in said and "DB_NAME=" in said, said
    for line in said.splitlines():
        if line.strip().startswith(("Snapshot", "Cutover done", "users:", "patients:")):
            assert "{" not in line and "None" not in line and "[" not in line, line
    proved = shell(
        ".venv/bin/dagster asset materialize -m emrsim_assets.definitions --select app_workload",
        env,
        timeout=600,
    )
    assert proved.returncode == 0, proved.stdout[-2000:] + proved.stderr[-4000:]
    report = (tmp_path / "work" / "reports" / "workload.md").read_text()
    assert "| conversation_messages | read |" in report, report
    backed_up = shell(
        ".venv/bin/dagster asset materialize -m emrsim_assets.definitions --select backup", env
    )
    assert backed_up.returncode == 0, backed_up.stdout[-2000:] + backed_up.stderr[-4000:]
    assert list((tmp_path / "work" / "backups").glob("emrsim-*.dump"))
    back = shell(".venv/bin/emrsim-migrate rollback", env)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "the app goes back to its SQLite file" in back.stdout
    assert {p.name for p in (tmp_path / "work").iterdir()} >= {"snapshot", "logs", "backups"}
    assert_private(tmp_path / "work")


def test_prepare_then_cutover_commands_from_the_readme(tmp_path: Path, pg_url: str) -> None:
    """`emrsim-migrate prepare` while the app runs, again to catch up, then `cutover` with the
    plan's freeze and unfreeze commands, as the README writes them."""
    import sqlite3

    import yaml

    from emrsim_assets.plan import default_plan_path

    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=800, seed=5)
    raw = yaml.safe_load(default_plan_path().read_text())
    raw["freeze"] = ["touch", str(tmp_path / "frozen")]
    raw["unfreeze"] = ["touch", str(tmp_path / "unfrozen")]
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = user_env(
        tmp_path / "work",
        EMRSIM_SQLITE_PATH=str(sqlite),
        EMRSIM_PG_URL=pg_url,
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        EMRSIM_PLAN=str(plan),
    )
    first = shell(".venv/bin/emrsim-migrate prepare", env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "prepared: staging holds this snapshot" in first.stdout
    assert "catch-up" not in first.stdout

    with sqlite3.connect(sqlite) as conn:
        conn.execute("UPDATE users SET name = 'Renamed' WHERE id = 1")
        conn.execute("DELETE FROM messages WHERE id = (SELECT max(id) FROM messages)")
    conn.close()
    again = shell(".venv/bin/emrsim-migrate prepare", env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "catch-up: 2 rows changed since the last snapshot" in again.stdout, again.stdout
    assert "carried over unchanged" in again.stdout
    assert not (tmp_path / "frozen").exists()

    cut = shell(".venv/bin/emrsim-migrate cutover", env)
    assert cut.returncode == 0, cut.stdout + cut.stderr
    assert (tmp_path / "frozen").exists() and (tmp_path / "unfrozen").exists()
    assert "catch-up: 0 rows changed" in cut.stdout, cut.stdout
    assert "no prepare has run" not in cut.stdout
    assert "cutover: done" in cut.stdout
    assert "write freeze: " in cut.stdout and "from the freeze command to the publish" in cut.stdout


def test_replica_recovery_and_stop_commands_from_the_readme(tmp_path: Path) -> None:
    """On the embedded server: migrate, `emrsim-migrate replica`, the workload reading from
    both servers with the same answers, a proven base backup, `emrsim-migrate restore` to a
    moment before an accidental delete, and `emrsim-migrate stop` stopping the copy, then the
    replica with the primary."""
    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=700, seed=9)
    work = tmp_path / "work"
    env = user_env(work, EMRSIM_SQLITE_PATH=str(sqlite), DAGSTER_HOME=str(tmp_path / "dh"))
    try:
        migrated = shell(".venv/bin/emrsim-migrate migrate", env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        started = shell(".venv/bin/emrsim-migrate replica", env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Read replica running" in started.stdout and "replay lag" in started.stdout
        proved = shell(
            ".venv/bin/dagster asset materialize -m emrsim_assets.definitions "
            "--select app_workload",
            env,
            timeout=600,
        )
        assert proved.returncode == 0, proved.stdout[-2000:] + proved.stderr[-4000:]
        report = (work / "reports" / "workload.md").read_text()
        assert "reads spread over primary and replica" in report, report
        backed_up = shell(
            ".venv/bin/dagster asset materialize -m emrsim_assets.definitions --select base_backup",
            env,
        )
        assert backed_up.returncode == 0, backed_up.stdout[-2000:] + backed_up.stderr[-4000:]
        assert list((work / "base_backups").glob("base-*")) and (work / "wal_archive").is_dir()
        # An accidental delete after a moment, and a copy from before it.
        live = postgres.embedded_url(work, postgres.EMBEDDED_DATABASE)
        moment = datetime.now(UTC)
        time.sleep(0.5)
        with psycopg.connect(live, autocommit=True) as conn:
            row = conn.execute("SELECT min(token) FROM emrsim.user_sessions").fetchone()
            token = row[0] if row else None
            conn.execute("DELETE FROM emrsim.user_sessions WHERE token = %s", (token,))
        copy = tmp_path / "restored"
        restored = shell(
            f".venv/bin/emrsim-migrate restore --to {moment.isoformat()} --into {copy}", env
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        url = restored.stdout.split("connect: ", 1)[1].splitlines()[0]
        with psycopg.connect(url) as conn:
            found = conn.execute(
                "SELECT count(*) FROM emrsim.user_sessions WHERE token = %s", (token,)
            ).fetchone()
        assert found == (1,)
        stopped_copy = shell(f".venv/bin/emrsim-migrate stop --copy {copy}", env)
        assert "stopped" in stopped_copy.stdout, stopped_copy.stdout + stopped_copy.stderr
    finally:
        stopped = shell(".venv/bin/emrsim-migrate stop", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Read replica" in stopped.stdout and "stopped" in stopped.stdout
    assert postmaster(work / "replica") is None and postmaster(work / "pgdata") is None


def test_draft_a_plan_for_the_app_schema_and_migrate_with_it(tmp_path: Path, pg_url: str) -> None:
    """The README's 'Migrating your own database': sample --schema app, plan, migrate --plan."""
    env = user_env(tmp_path / "work", EMRSIM_PG_URL=pg_url, DAGSTER_HOME=str(tmp_path / "dh"))
    sqlite, plan = tmp_path / "app.sqlite", tmp_path / "plan.yaml"
    made = shell(f".venv/bin/emrsim-migrate sample --schema app --out {sqlite} --messages 900", env)
    assert made.returncode == 0, made.stdout + made.stderr
    drafted = shell(f".venv/bin/emrsim-migrate plan --sqlite {sqlite} --out {plan}", env)
    assert drafted.returncode == 0, drafted.stdout + drafted.stderr
    assert "name: turns" in plan.read_text()
    migrated = shell(f".venv/bin/emrsim-migrate migrate --sqlite {sqlite} --plan {plan}", env)
    out = migrated.stdout + migrated.stderr
    assert migrated.returncode == 0, out[-3000:]
    assert "cutover: done" in out and "turns" in out
    assert "WARNED turns:fk_session_id_resolves" in out
    # What the app does not get is said at the end, as the plan says it.
    assert "left behind" in out


def test_without_a_plan_the_ui_definitions_show_the_users_own_tables(tmp_path: Path) -> None:
    """make dev with EMRSIM_SQLITE_PATH: the code location drafts a plan for that database."""
    sqlite = tmp_path / "app.sqlite"
    from emrsim_assets.sample_app import write_app_sample

    write_app_sample(sqlite, turns=300)
    env = user_env(tmp_path / "work", EMRSIM_SQLITE_PATH=str(sqlite))
    listed = shell(".venv/bin/dagster asset list -m emrsim_assets.definitions", env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assets = set(listed.stdout.split())
    assert {"personas", "scenarios", "sessions", "turns", "cutover"} <= assets, listed.stdout
    assert "messages" not in assets
    assert list((tmp_path / "work" / "plans").glob("app-*.yaml"))


def _launch(port: int, job: str) -> str:
    """Launch a job as the UI's launchpad does: the same mutation, with the job's own tags."""
    selector = {
        "repositoryLocationName": "emrsim_assets.definitions",
        "repositoryName": "__repository__",
        "pipelineName": job,
    }
    answer = graphql(
        port,
        "query($s: PipelineSelector!) { pipelineOrError(params: $s) "
        "{ ... on Pipeline { tags { key value } } } }",
        {"s": selector},
    )
    tags = answer["data"]["pipelineOrError"]["tags"]  # type: ignore[index]
    launched = graphql(
        port,
        "mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) "
        "{ __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
        {"p": {"selector": selector, "executionMetadata": {"tags": tags}}},
    )
    result = launched["data"]["launchPipelineExecution"]  # type: ignore[index]
    assert "run" in result, result
    return str(result["run"]["runId"])


def test_a_ui_run_cut_off_by_a_server_restart_is_marked_failed_not_left_started(
    tmp_path: Path,
) -> None:
    """make dev killed mid-run (a reboot, a closed terminal): the run's worker dies with it, and
    nobody is left to report it. Dagster's run monitoring cannot see a dead worker of the default
    run launcher; the abandoned_runs_marked_failed sensor of the next make dev does."""
    import dagster as dg

    from emrsim_assets.defs.runs import WORKER_TAG

    sqlite = tmp_path / "app.sqlite"
    write_sample(sqlite, messages=150_000, seed=3)
    work = tmp_path / "work"
    env = user_env(work, EMRSIM_SQLITE_PATH=str(sqlite))
    command = [str(REPO / ".venv" / "bin" / "emrsim-migrate"), "dev", "--port"]
    port = free_port()
    dev = start_server([*command, str(port)], env, tmp_path / "dev.log")
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    try:
        wait_for_ui(port, dev, 180, tmp_path / "dev.log")
        with dg.DagsterInstance.get() as instance:
            run_id = _launch(port, "load_tables")
            deadline = time.monotonic() + 120
            tag = None
            while tag is None and time.monotonic() < deadline:
                run = instance.get_run_by_id(run_id)
                assert run is not None and not run.is_finished, "the run ended before the kill"
                tag = run.tags.get(WORKER_TAG)
                time.sleep(0.2)
            assert tag is not None, "the run never recorded its worker process"
            worker = psutil.Process(int(tag.rsplit(":", 2)[1]))
            os.killpg(dev.pid, signal.SIGKILL)  # webserver, daemon, code server, run worker
            dev.wait(10)
            worker.wait(10)
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.STARTED, run

            port = free_port()
            dev = start_server([*command, str(port)], env, tmp_path / "dev-again.log")
            wait_for_ui(port, dev, 180, tmp_path / "dev-again.log")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not run.is_finished:
                time.sleep(1)
                run = instance.get_run_by_id(run_id)
                assert run is not None
            assert run.status == dg.DagsterRunStatus.FAILURE, run.status
            failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
            assert "The process running it ended before the run did" in str(failure.message)
    finally:
        os.environ.pop("DAGSTER_HOME", None)
        stop_server(dev)
        stop_embedded(env)


def test_the_ui_against_cli_benchmark_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """`.venv/bin/python bench/ui_vs_cli.py`, smaller: one warm-up pair and one counted."""
    env = user_env(tmp_path / "unused")
    result = shell(
        ".venv/bin/python bench/ui_vs_cli.py --messages 2000 --repeat 1", env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [x for x in result.stdout.splitlines() if x.startswith("2,000 messages, 1 pairs")]
    assert len(summaries) == 1, result.stdout
    summary = summaries[0]
    assert "UI median" in summary and "CLI median" in summary, summary
    ratio = float(summary.split("ratio ")[1].split(";")[0])
    assert ratio > 0, summary


def test_make_bench_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """`make bench` at a size that takes seconds, its results away from the committed ones."""
    work, out = tmp_path / "bench-work", tmp_path / "bench-out"
    env = user_env(tmp_path / "unused", BENCH_WORK=str(work), BENCH_OUT=str(out))
    try:
        result = shell('make bench BENCH_SIZES="2000" BENCH_REPEAT=1', env, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        table = (out / "bench.md").read_text()
        assert "| 2,000 | emrsim-migrate migrate |" in table, table
        assert "| 2,000 | messages load" in table, table
        # The peer routes and the floor the issue compares with, each timed (PyPI is reachable
        # wherever the tests run: a skipped route would say so in its row instead).
        for route in ("DuckDB +", "Sling +", "server-only floor, 1 COPY stream |"):
            row = next((x for x in table.splitlines() if f"| 2,000 | {route}" in x), None)
            assert row is not None and "skipped" not in row, table
        floor = next(x for x in table.splitlines() if "2 COPY streams" in x)
        assert float(floor.split("|")[3]) > 0, floor
        assert (out / "bench.png").stat().st_size > 0
        assert json.loads((out / "bench.json").read_text())["results"]
    finally:
        server = postmaster(work / "pgdata")
        if server is not None:
            shell(f"{REPO}/.venv/bin/emrsim-migrate stop", {**env, "EMRSIM_WORK_DIR": str(work)})


def test_make_check_runs_the_fast_tier_as_the_readme_shows(tmp_path: Path) -> None:
    """`make check`: lint, types and every test outside the full tier, in a fresh shell."""
    # Its own base temp dir: a second pytest session would otherwise prune this one's (pytest
    # keeps the newest three), the embedded server's data directory with them.
    env = user_env(tmp_path / "work", PYTEST_ADDOPTS=f"--basetemp={tmp_path / 'pytest'}")
    done = shell("make check", env, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "passed" in out and "deselected" in out, out[-2000:]
    assert "mypy" in out and "ruff" in out
