"""The migration plan: which tables move, how each column converts, and what PostgreSQL gets."""

from emrsim_assets.kinds import NAMES as CONVERSIONS
from emrsim_assets.plan.load import default_plan_path, load_plan, parse_plan
from emrsim_assets.plan.model import Column, Index, Plan, Reference, Skip, Table

__all__ = [
    "CONVERSIONS",
    "Column",
    "Index",
    "Plan",
    "Reference",
    "Skip",
    "Table",
    "default_plan_path",
    "load_plan",
    "parse_plan",
]
