"""An executor that runs a run's ready steps side by side, in threads of the run's process.

Dagster's own executors run steps one after another (in process) or each in a process of its
own (multiprocess: a Python start-up, imports and definitions per step, and a process's memory
each). A migration's steps wait on SQLite, PostgreSQL and Polars, all of which release the GIL,
so threads overlap them: the small tables load and are checked while the messages months load,
and the checks of a table run beside each other. On 2 M messages that takes a `migrate` from
one step at a time to both cores busy (the numbers are in docs/benchmarks.md).

It is Dagster's in-process loop (dagster._core.execution.plan.execute_plan), with the steps'
event streams run in threads and merged here: every event still goes through ActiveExecution in
this thread, so dependencies, blocking checks (a failed one skips what depends on it), retries
and hooks behave as in process. Dagster has no threaded executor of its own (issue #4041).
"""

from __future__ import annotations

import contextvars
import gc
import os
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any

import dagster as dg

from emrsim_assets.defs.dagster_internals import (
    DagsterEvent,
    EngineEventData,
    ExecuteRunWithPlanIterable,
    ExecutionPlan,
    Executor,
    InMemoryJob,
    InstanceConcurrencyContext,
    PlanExecutionContext,
    PlanExecutionContextManager,
    PlanOrchestrationContext,
    RetryMode,
    StepDependencyConfig,
    StepExecutionContext,
    core_execute_in_process,
    create_compute_log_file_key,
    dagster_event_sequence_for_step,
    merge_run_tags,
    trigger_hook,
)
from emrsim_assets.settings import settings

# Steps at once: the messages load (its own 3 workers) beside two small steps keeps 2 cores
# busy without a third table's batches in memory.
DEFAULT_STEPS = 3


class ThreadedExecutor(Executor):
    def __init__(self, max_concurrent: int) -> None:
        self._max_concurrent = max(1, max_concurrent)

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return StepDependencyConfig.default()

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in threads, {self._max_concurrent} at once (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=partial(_steps_in_threads, max_concurrent=self._max_concurrent),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            )
        )


@dg.executor(
    name="threads",
    config_schema={"max_concurrent": dg.Field(int, default_value=DEFAULT_STEPS)},
)
def threaded_executor(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
    configured = os.environ.get("EMRSIM_STEPS")  # set: it wins over the job's config
    steps = settings().steps if configured else init_context.executor_config["max_concurrent"]
    return ThreadedExecutor(int(str(steps)))


def _steps_in_threads(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    instance_concurrency_context: InstanceConcurrencyContext | None = None,
    *,
    max_concurrent: int,
) -> Iterator[DagsterEvent]:
    """inner_plan_execution_iterator, with up to `max_concurrent` steps running at once."""
    # Everything alive now (Dagster's modules, the definitions, the instance) lives as long as
    # the run. Frozen, the cyclic collector no longer walks it on each full collection that the
    # batches' short-lived objects set off: 3.7 % of the client's CPU in a 2 M-message migrate
    # before, 1.9 % after (perf). Objects that die later are freed as ever.
    gc.collect()
    gc.freeze()
    compute_logs = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with ExitStack() as stack:
        concurrency = stack.enter_context(
            InstanceConcurrencyContext(job_context.instance, job_context.dagster_run)
        )
        active = stack.enter_context(
            execution_plan.start(
                retry_mode=job_context.retry_mode,
                instance_concurrency_context=concurrency,
                step_dependency_config=job_context.step_dependency_config,
            )
        )
        log_key = compute_logs.build_log_key_for_run(
            job_context.run_id,
            create_compute_log_file_key(),  # type: ignore[no-untyped-call]
        )
        log_context = stack.enter_context(compute_logs.capture_logs(log_key))
        yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)

        events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        running: dict[str, tuple[StepExecutionContext, list[DagsterEvent]]] = {}
        failure: BaseException | None = None
        while running or (failure is None and not active.is_complete):
            if failure is None and not active.is_complete:
                steps = active.get_steps_to_execute(limit=max_concurrent - len(running))
                yield from active.concurrency_event_iterator(job_context)
                for step in steps:
                    step_context = job_context.for_step(step, active.get_known_state())
                    running[step.key] = (step_context, [])
                    _start(step.key, step_context, events)
                if not running:
                    active.sleep_til_ready()
                    continue
            try:
                key, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                continue
            step_context, seen = running[key]
            if kind == "event":
                seen.append(payload)
                yield payload
                active.handle_event(payload)
            elif kind == "error":
                # A fault of the machinery, not of the step (those are events): no new steps;
                # the running ones finish, then it is raised as in process.
                failure = failure or payload
            else:
                del running[key]
                if failure is None:
                    active.verify_complete(job_context, key)
                    for event in active.plan_events_iterator(job_context):
                        seen.append(event)
                        yield event
                    yield from trigger_hook(step_context, seen)
        if failure is not None:
            raise failure


def _start(key: str, step_context: StepExecutionContext, events: queue.Queue[Any]) -> None:
    def run() -> None:
        try:
            for event in dagster_event_sequence_for_step(step_context):
                events.put((key, "event", event))
        except BaseException:
            events.put((key, "error", sys.exc_info()[1]))
        finally:
            events.put((key, "done", None))

    # The step sees the context variables of the run (a copy: contexts are per thread).
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name=f"step {key}", daemon=True).start()


def execute_in_threads(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    run_config: dict[str, Any],
    tags: dict[str, str],
) -> Any:
    """job.execute_in_process, with its steps in threads: execute_in_process always swaps the
    job's executor for the one-step-at-a-time one, so this does what it does with ours."""
    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={}).with_executor_def(
        threaded_executor
    )
    return core_execute_in_process(
        job=InMemoryJob(job_def=ephemeral),
        run_config=run_config,
        instance=instance,
        output_capturing_enabled=True,
        raise_on_error=False,
        run_tags=merge_run_tags(
            job_def=job,
            partition_key=None,
            tags=tags,
            asset_selection=None,
            instance=instance,
            run_config=run_config,
        ),
        asset_selection=frozenset(),
    )
