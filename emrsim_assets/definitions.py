"""The one place that wires assets, checks, jobs, schedules and resources into `defs`.

Lazy: importing this module reads nothing. Dagster calls `defs` when it loads the code location
(the webserver, the daemon, each run); only then is the plan chosen, which may read the SQLite
file (and draft a plan for it, once per schema)."""

import dagster as dg

from emrsim_assets.defs.build import build_defs, default_resource, month_partitions
from emrsim_assets.which_plan import resolve_plan

__all__ = ["build_defs", "default_resource", "defs", "month_partitions"]


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(resolve_plan())
