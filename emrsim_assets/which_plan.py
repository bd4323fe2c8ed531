"""Which plan a run uses: the user's, the bundled one when the source has its schema, else a draft."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from emrsim_assets.draft import draft_plan
from emrsim_assets.errors import SourceError
from emrsim_assets.plan.load import default_plan_path, load_plan
from emrsim_assets.plan.model import Plan
from emrsim_assets.private import private_dir, write_private
from emrsim_assets.settings import Settings


def resolve_plan_path(env: Mapping[str, str] = os.environ) -> Path:
    """EMRSIM_PLAN if set; else the bundled EMRsim-chat plan if it covers the source exactly;
    else a draft of the source, written once per source schema under the work dir."""
    given = Settings.from_env(env)
    if given.plan_path is not None:
        return given.plan_path
    bundled = default_plan_path()
    if given.sqlite_path is None:
        return bundled
    from emrsim_assets.source import check_plan_matches_source, open_readonly, schema_digest

    source = given.sqlite_path
    conn = open_readonly(source)
    try:
        try:
            check_plan_matches_source(conn, load_plan(bundled), source)
            return bundled
        except SourceError:
            digest = schema_digest(conn)
    finally:
        conn.close()
    work = given.work_dir
    drafted = work / "plans" / f"{source.stem}-{digest[:12]}.yaml"
    if not drafted.exists():
        private_dir(drafted.parent)
        partial = drafted.with_suffix(".partial")
        write_private(partial, draft_plan(source))
        partial.replace(drafted)
    return drafted


def resolve_plan(env: Mapping[str, str] = os.environ) -> Plan:
    return load_plan(resolve_plan_path(env))
