"""The one door to Dagster's private modules (dagster._core): everything this project takes from
them, by name. A Dagster upgrade that moves one fails here, at import, and in
test_definitions' test of this module, not somewhere in the middle of a run.

What needs them: the threaded executor (defs/threads.py: Dagster's in-process loop with steps in
threads), the gate (reading check evaluation records), the progress logger (a record's Dagster
metadata) and the jobs (an unresolved asset job's selection).
"""

from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags
from dagster._core.execution.plan.execute_plan import (
    _trigger_hook as trigger_hook,
)
from dagster._core.execution.plan.execute_plan import dagster_event_sequence_for_step
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

__all__ = [
    "AssetCheckExecutionRecordStatus",
    "DagsterEvent",
    "EngineEventData",
    "ExecuteRunWithPlanIterable",
    "ExecutionPlan",
    "Executor",
    "InMemoryJob",
    "InstanceConcurrencyContext",
    "PlanExecutionContext",
    "PlanExecutionContextManager",
    "PlanOrchestrationContext",
    "RetryMode",
    "StepDependencyConfig",
    "StepExecutionContext",
    "UnresolvedAssetJobDefinition",
    "core_execute_in_process",
    "create_compute_log_file_key",
    "dagster_event_sequence_for_step",
    "get_log_record_metadata",
    "has_log_record_metadata",
    "merge_run_tags",
    "trigger_hook",
]
