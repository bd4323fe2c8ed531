"""Runs whose process died (killed, crashed, the machine restarted) are marked failed, not left
STARTED for ever. Dagster's run monitoring cannot see a dead worker of the default run launcher
(it supports no worker health check), so every run records the process that executes it, and a
sweep fails those whose process is gone: at each CLI start and by a sensor the daemon ticks."""

from __future__ import annotations

import socket
from typing import Any

import dagster as dg
import psutil

WORKER_TAG = "emrsim/worker"
_IN_FLIGHT = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]


def this_worker() -> str:
    """host:pid:start time, so that a pid the system gives to another process later is not
    mistaken for the worker."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.2f}"


def worker_alive(tag: str) -> bool | None:
    """True or False for a worker on this host; None where the tag names another host (it
    cannot be seen from here) or cannot be read."""
    try:
        host, pid, started = tag.rsplit(":", 2)
        if host != socket.gethostname():
            return None
        process = psutil.Process(int(pid))
        return abs(process.create_time() - float(started)) < 0.05
    except psutil.NoSuchProcess:
        return False
    except (ValueError, psutil.Error):
        return None


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-flight run whose worker on this host is gone; return their ids."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT)):
        tag = run.tags.get(WORKER_TAG)
        if tag and worker_alive(tag) is False:
            instance.report_run_failed(
                run,
                "The process running it ended before the run did (killed, crashed, or the "
                "machine restarted). Nothing half-done is kept: run it again.",
            )
            failed.append(run.run_id)
    return failed


def record_worker(instance: Any, run_id: str | None) -> None:
    """Tag the run with this process, once (the CLI tags its runs when it creates them)."""
    if instance is None or not run_id:
        return
    run = instance.get_run_by_id(run_id)
    if run is not None and WORKER_TAG not in run.tags:
        instance.add_run_tags(run_id, {WORKER_TAG: this_worker()})


@dg.sensor(
    name="abandoned_runs_marked_failed",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed any run whose process died (killed, crashed, server restarted).",
)
def abandoned_runs_marked_failed(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_abandoned_runs(context.instance)
    return dg.SkipReason(f"Marked failed: {', '.join(failed)}." if failed else "No abandoned run.")
