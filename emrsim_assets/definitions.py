"""The one place that wires assets, checks, jobs, schedules and resources into `defs`."""

from emrsim_assets.defs.build import build_defs, default_resource, month_partitions
from emrsim_assets.which_plan import resolve_plan

__all__ = ["build_defs", "default_resource", "defs", "month_partitions"]

defs = build_defs(resolve_plan())
