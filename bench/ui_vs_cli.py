"""UI-launched runs against CLI runs of the same migration, on one quiet host.

Starts `emrsim-migrate dev` (webserver + daemon, Dagster's storage in the embedded PostgreSQL) on
a sample, then alternates: a run of `migrate` launched through the webserver's GraphQL API (the
same mutation the UI's launchpad sends; the daemon dequeues it), and a CLI run
(`emrsim-migrate migrate`). Prints each run's duration as Dagster recorded it (start to end), the
time from launch to start for the UI runs, and the medians.

    .venv/bin/python bench/ui_vs_cli.py --messages 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""


def _graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"the Dagster webserver did not answer on port {port} within {seconds:.0f} s")


def _finished_run(instance: dg.DagsterInstance, known: set[str]) -> dg.RunRecord:
    """The one `migrate` run that is not in `known`, once its record holds both times: the
    record's end time is written by the run's last event, which may trail the CLI's exit."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = [r for r in instance.get_runs() if r.run_id not in known and r.job_name == "migrate"]
        if len(new) > 1:
            sys.exit(f"expected one new migrate run after the CLI, found {len(new)}")
        if new:
            record = instance.get_run_record_by_id(new[0].run_id)
            if record is not None and record.start_time and record.end_time:
                return record
        time.sleep(0.2)
    sys.exit("the CLI's run has no finished record in Dagster's instance after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="emrsim-ui-bench-"))
    sqlite, work = tmp / "app.sqlite", tmp / "work"
    env = {**os.environ, "EMRSIM_WORK_DIR": str(work), "EMRSIM_SQLITE_PATH": str(sqlite)}
    env.pop("DAGSTER_HOME", None)
    subprocess.run(
        [BIN / "emrsim-migrate", "sample", "--out", sqlite, "--messages", str(args.messages)],
        env=env,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = (tmp / "dev.log").open("wb")
    server = subprocess.Popen(
        [BIN / "emrsim-migrate", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_up(port, 180)
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
        import dagster as dg

        instance = dg.DagsterInstance.get()
        from emrsim_assets.defs.build import build_defs
        from emrsim_assets.plan import load_plan
        from emrsim_assets.which_plan import resolve_plan_path

        os.environ.update(EMRSIM_SQLITE_PATH=str(sqlite), EMRSIM_WORK_DIR=str(work))
        tags = build_defs(load_plan(resolve_plan_path())).resolve_job_def("migrate").tags
        ui: list[float] = []
        queued: list[float] = []
        cli: list[float] = []
        for i in range(args.repeat + 1):  # the first pair warms caches and is not counted
            clicked = time.time()
            answer = _graphql(
                port,
                LAUNCH,
                {
                    "params": {
                        "selector": {
                            "repositoryLocationName": "emrsim_assets.definitions",
                            "repositoryName": "__repository__",
                            "jobName": "migrate",
                        },
                        "mode": "default",
                        "executionMetadata": {
                            "tags": [{"key": k, "value": v} for k, v in tags.items()]
                        },
                    }
                },
            )
            launched = answer["data"]["launchPipelineExecution"]  # type: ignore[index]
            if "run" not in launched:
                sys.exit(f"launch refused: {launched}")
            run_id = launched["run"]["runId"]
            while not (run := instance.get_run_record_by_id(run_id)).dagster_run.is_finished:
                time.sleep(0.2)
            assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS, run.dagster_run.status
            known = {r.run_id for r in instance.get_runs()}
            started = subprocess.run(
                [BIN / "emrsim-migrate", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            assert started.returncode == 0
            cli_record = _finished_run(instance, known)
            if i == 0:
                continue
            ui.append(run.end_time - run.start_time)  # type: ignore[operator]
            queued.append(run.start_time - clicked)  # type: ignore[operator]
            cli.append(cli_record.end_time - cli_record.start_time)  # type: ignore[operator]
            print(
                f"pair {i}: UI run {ui[-1]:.2f} s (launch to start {queued[-1]:.2f} s), "
                f"CLI run {cli[-1]:.2f} s",
                flush=True,
            )
        ratio = statistics.median(ui) / statistics.median(cli)
        print(
            f"{args.messages:,} messages, {args.repeat} pairs: UI median "
            f"{statistics.median(ui):.2f} s ({min(ui):.2f} to {max(ui):.2f}), CLI median "
            f"{statistics.median(cli):.2f} s ({min(cli):.2f} to {max(cli):.2f}), ratio "
            f"{ratio:.2f}; launch to start median {statistics.median(queued):.2f} s "
            f"(max {max(queued):.2f})",
            flush=True,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        subprocess.run([BIN / "emrsim-migrate", "stop"], env=env, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
