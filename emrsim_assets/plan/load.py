"""Read a plan from YAML and validate it; every error names the offending key."""

from __future__ import annotations

import math
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from emrsim_assets.errors import PlanError
from emrsim_assets.kinds import KINDS
from emrsim_assets.plan import schema
from emrsim_assets.plan.model import (
    AUTOVACUUM_PARAMETERS,
    SKIP_KINDS,
    TEXT_TYPE,
    Column,
    Index,
    Plan,
    Reference,
    Rule,
    Search,
    Skip,
    Table,
    Trigger,
    View,
)
from emrsim_assets.plan.names import (
    MAX_NAME,
    MAX_TABLE_NAME,
    PIPELINE_PREFIX,
    RESERVED,
    TARGET_NAME,
)
from emrsim_assets.rules import checked, trigger_condition, view_query

_INDEX_METHODS = ("btree", "gin")


def default_plan_path() -> Path:
    return Path(str(resources.files("emrsim_assets") / "plans" / "emrsim_chat.yaml"))


def load_plan(path: Path | None = None) -> Plan:
    """Read and validate a plan; every error names the offending key."""
    path = path or default_plan_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"Plan file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"Plan file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"Plan file {path} must be a mapping with a 'tables' list.")
    return parse_plan(raw, path)


def parse_plan(raw: dict[str, Any], path: Path) -> Plan:
    """The plan in `raw`: its shape checked by its declaration (schema.py), then what a shape
    cannot say, here: names, keys, references and partitioning that fit together."""
    schema.validate(raw)
    tz_name = str(raw.get("source_timezone", "UTC"))
    try:
        timezone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"plan.source_timezone {tz_name!r} is not a known time zone.") from None
    start_raw = raw.get("partition_start", raw.get("messages_partition_start", "2023-01-01"))
    try:
        start = date.fromisoformat(str(start_raw))
    except ValueError:
        raise PlanError(f"plan.partition_start {start_raw!r} is not a date (YYYY-MM-01).") from None
    if start.day != 1:
        raise PlanError(f"plan.partition_start {start} must be the first of a month.")
    tables_raw = raw["tables"]
    tables = tuple(_parse_table(t, i) for i, t in enumerate(tables_raw))
    skip_raw = raw.get("skip") or []
    skips = tuple(_parse_skip(s, i) for i, s in enumerate(skip_raw))
    views = tuple(_parse_view(v, i, tables) for i, v in enumerate(raw.get("views") or []))
    plan = Plan(
        tables=tables,
        source_timezone=timezone,
        partition_start=start,
        path=path,
        skip=skips,
        views=views,
        freeze=tuple(raw.get("freeze") or ()),
        unfreeze=tuple(raw.get("unfreeze") or ()),
    )
    _check_references(plan)
    plan.load_order()
    return plan


def _parse_view(raw: Any, index: int, tables: tuple[Table, ...]) -> View:
    name = _target_name(raw.get("name"), f"plan.views[{index}].name", MAX_TABLE_NAME)
    where = f"plan view {name!r}"
    if any(t.name == name for t in tables):
        raise PlanError(f"{where}: a table of the plan has that name.")
    try:
        body = view_query(str(raw["postgres"]), tables, dialect="postgres")
    except PlanError as exc:
        raise PlanError(f"{where}: its postgres SELECT is not kept: {exc}.") from None
    return View(
        name=name, source=_source_name(raw.get("source", name), f"{where}.source"), postgres=body
    )


def _parse_skip(raw: Any, index: int) -> Skip:
    where = f"plan.skip[{index}]"
    kind = next((k for k in SKIP_KINDS[1:] if k in raw), "table")
    allowed = {kind, "column", "reason"} if kind in ("table", "default") else {kind, "reason"}
    if kind == "default" and raw.get("column") is None:
        raise PlanError(f"{where}: a default's skip names its table and its column.")
    _only_keys(raw, allowed, where)
    name = _source_name(raw.get(kind), f"{where}.{kind}")
    column = raw.get("column")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        what = "the data" if kind == "table" else f"the {kind}"
        raise PlanError(f"{where} ({name}): 'reason' must say why {what} is left behind.")
    return Skip(
        table=name,
        column=None if column is None else _source_name(column, f"{where}.column"),
        reason=reason.strip(),
        kind=kind,
    )


def _parse_table(raw: Any, index: int) -> Table:
    where = f"plan.tables[{index}]"
    name = _target_name(raw.get("name"), f"{where}.name", MAX_TABLE_NAME)
    if name in RESERVED:
        raise PlanError(
            f"{where}.name: {name!r} is reserved by Dagster or this pipeline; name the table "
            f"{name}_ (keeping source: {raw.get('source', name)!r})."
        )
    where = f"plan table {name!r}"
    columns_raw = raw["columns"]
    keys_raw = raw.get("primary_key")
    keys: tuple[str, ...] = (
        () if keys_raw is None else (keys_raw,) if isinstance(keys_raw, str) else tuple(keys_raw)
    )
    columns = tuple(
        _parse_column(c, f"{where} column {i}", keys) for i, c in enumerate(columns_raw)
    )
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise PlanError(f"{where}: column names repeat: {names}.")
    for kinds in (
        [c for c in columns if c.convert != "storage_class"],
        [c for c in columns if c.convert == "storage_class"],
    ):
        sources = [c.source for c in kinds]
        if len(set(sources)) != len(sources):
            raise PlanError(f"{where}: source columns repeat: {sources}.")
    for key in keys:
        if key not in names:
            raise PlanError(f"{where}: primary_key {key!r} is not one of its columns.")
    if len(set(keys)) != len(keys):
        raise PlanError(f"{where}: primary_key repeats a column: {list(keys)}.")
    for column in columns:
        if column.convert == "legacy_id" and keys != (column.name,):
            raise PlanError(
                f"{where}: convert legacy_id is for a single-column primary key only "
                f"(column {column.name!r})."
            )
        if column.identity and (keys != (column.name,) or column.convert != "integer"):
            raise PlanError(
                f"{where}: identity is for a single-column integer primary key only "
                f"(column {column.name!r})."
            )
    partition_column = raw.get("partition_by_month")
    if partition_column is not None:
        if partition_column not in names:
            raise PlanError(f"{where}: partition_by_month {partition_column!r} is not a column.")
        column = columns[names.index(partition_column)]
        if column.convert != "timestamp" or column.nullable:
            raise PlanError(
                f"{where}: partition_by_month needs a NOT NULL timestamp column, "
                f"and {partition_column!r} is not one."
            )
    if partition_column and any(c.collation for c in columns if c.name in keys):
        raise PlanError(
            f"{where}: a NOCASE key is not kept on a table partitioned by month (its unique "
            "index on lower() cannot span the months); do not partition this table."
        )
    if partition_column and any(c.identity for c in columns):
        raise PlanError(
            f"{where}: identity keys are not kept on a table partitioned by month; turn the key "
            "into a legacy_id uuid, or do not partition this table."
        )
    indexes = tuple(
        _parse_index(ix, f"{where} index {i}", names)
        for i, ix in enumerate(raw.get("indexes") or [])
    )
    for ix in indexes:
        if partition_column and ix.unique and not ix.plain:
            raise PlanError(
                f"{where} index {ix.name!r}: a unique index on expressions or with a where is "
                "not kept on a table partitioned by month (PostgreSQL cannot check it across "
                "the months); list it under skip, or do not partition this table."
            )
        if partition_column and ix.unique and partition_column not in ix.columns:
            raise PlanError(
                f"{where} index {ix.name!r}: PostgreSQL cannot keep a unique index on a table "
                f"partitioned by month unless it includes {partition_column!r}. Add that column "
                "to the index (unique per instant), or do not partition this table."
            )
    autovacuum = _parse_autovacuum(raw.get("autovacuum") or {}, where)
    rules = tuple(
        Rule(
            name=_target_name(check.get("name"), f"{where} check {i}.name", MAX_NAME),
            postgres=checked(str(check["postgres"]), set(names), f"{where} check {i}"),
            sqlite=str(check.get("sqlite") or ""),
        )
        for i, check in enumerate(raw.get("checks") or [])
    )
    if rules and partition_column:
        raise PlanError(
            f"{where}: checks on a table partitioned by month are not kept yet; list them under "
            "skip, or do not partition this table."
        )
    references = tuple(
        _parse_reference(r, f"{where} reference {i}", names)
        for i, r in enumerate(raw.get("references") or [])
    )
    for column in columns:
        if column.generated is None:
            continue
        if column.name in keys or column.identity or column.default is not None:
            raise PlanError(
                f"{where} column {column.name!r}: a generated column is no key, identity or "
                "default."
            )
        if column.convert not in ("text", "integer", "real") or partition_column:
            raise PlanError(
                f"{where} column {column.name!r}: generated is kept for text, integer and real "
                "columns of a table not partitioned by month."
            )
        others = {c.name for c in columns if c.name != column.name}
        checked(column.generated, others, f"{where} column {column.name!r} generated")
    search = _parse_search(raw.get("search"), where, columns, partition_column)
    triggers = tuple(
        _parse_trigger(t, f"{where} trigger {i}", columns)
        for i, t in enumerate(raw.get("triggers") or [])
    )
    allowed = int(raw.get("max_quarantined_rows", 0))
    return Table(
        name=name,
        source=_source_name(raw.get("source", name), f"{where}.source"),
        primary_key=keys,
        columns=columns,
        indexes=indexes,
        partition_by_month=partition_column,
        autovacuum=autovacuum,
        max_quarantined_rows=allowed,
        checks=rules,
        references=references,
        search=search,
        triggers=triggers,
    )


def _parse_trigger(raw: Any, where: str, columns: tuple[Column, ...]) -> Trigger:
    name = _target_name(raw.get("name"), f"{where}.name", MAX_NAME)
    where = f"{where} ({name})"
    names = {c.name: c.name for c in columns}
    when = raw.get("when")
    if when is not None:
        try:
            when = trigger_condition(str(when), names)
        except PlanError as exc:
            raise PlanError(f"{where}: when {raw.get('when')!r}: {exc}.") from None
    of = tuple(str(c) for c in raw.get("of") or [])
    if any(c not in names for c in of):
        raise PlanError(f"{where}: of {list(of)} must be columns of the table.")
    touch, message, into = raw.get("touch"), raw.get("raise"), raw.get("insert_into")
    if [touch, message, into].count(None) != 2:
        raise PlanError(
            f"{where}: give it one of touch (a column), raise (a message) or insert_into (a "
            "table, with columns and values)."
        )
    if into is not None:
        events = tuple(str(e) for e in raw.get("events") or [])
        values = tuple(str(v) for v in raw.get("values") or [])
        written = tuple(str(c) for c in raw.get("columns") or [])
        if not events or not written or len(values) != len(written):
            raise PlanError(f"{where}: an audit names its events, columns and as many values.")
        try:
            values = tuple(trigger_condition(v, names, values=True) for v in values)
        except PlanError as exc:
            raise PlanError(f"{where}: values: {exc}.") from None
        return Trigger(
            name,
            str(raw["source"]),
            "audit",
            events,
            of,
            None,
            when,
            None,
            str(into),
            written,
            values,
        )
    if touch is not None:
        column = next((c for c in columns if c.name == touch), None)
        if column is None or column.convert != "timestamp":
            raise PlanError(f"{where}: touch {touch!r} must be a timestamp column of the table.")
        return Trigger(name, str(raw["source"]), "touch", ("update",), of, touch, when)
    events = tuple(str(e) for e in raw.get("events") or [])
    if not events:
        raise PlanError(f"{where}: a guard names its events (events: [insert, update, delete]).")
    return Trigger(name, str(raw["source"]), "guard", events, of, None, when, str(message))


def _parse_search(
    raw: Any, where: str, columns: tuple[Column, ...], partitioned: str | None
) -> Search | None:
    if raw is None:
        return None
    name = _target_name(raw.get("name", "search"), f"{where} search.name", MAX_NAME)
    kinds = {c.name: c.convert for c in columns}
    if name in kinds:
        raise PlanError(f"{where}: search column {name!r} is also a column of the table.")
    chosen = tuple(str(c) for c in raw["columns"])
    wrong = [c for c in chosen if kinds.get(c) != "text"]
    if wrong:
        raise PlanError(f"{where}: search reads text columns of the table, and {wrong} are not.")
    if partitioned:
        raise PlanError(f"{where}: search is not kept on a table partitioned by month.")
    return Search(name, chosen, str(raw.get("config", "simple")), raw.get("source"))


def _parse_reference(raw: Any, where: str, columns: list[str]) -> Reference:
    name = _target_name(raw.get("name"), f"{where}.name", MAX_NAME)
    own = tuple(str(c) for c in raw["columns"])
    theirs = tuple(str(c) for c in raw["referenced_columns"])
    if any(c not in columns for c in own) or len(set(own)) != len(own):
        raise PlanError(f"{where} ({name}): columns {list(own)} must be distinct columns of it.")
    if len(theirs) != len(own):
        raise PlanError(
            f"{where} ({name}): {len(own)} columns point at {len(theirs)} referenced columns."
        )
    return Reference(
        name=name,
        columns=own,
        references=_target_name(raw.get("references"), f"{where}.references", MAX_TABLE_NAME),
        referenced_columns=theirs,
        on_delete=str(raw.get("on_delete", "no action")),
        on_update=str(raw.get("on_update", "no action")),
        deferred=bool(raw.get("deferred", False)),
        enforce=str(raw.get("enforce", "constraint")),
    )


def _parse_autovacuum(raw: Any, where: str) -> dict[str, int | float | bool]:
    """PostgreSQL's own per-table autovacuum parameters only, each with a value of its type."""
    parsed: dict[str, int | float | bool] = {}
    for key, value in raw.items():
        kind = AUTOVACUUM_PARAMETERS.get(key) if isinstance(key, str) else None
        if kind is None:
            raise PlanError(
                f"{where}: autovacuum {key!r} is not a PostgreSQL per-table autovacuum "
                f"parameter; allowed: {', '.join(AUTOVACUUM_PARAMETERS)}."
            )
        fits = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, int) and not isinstance(value, bool)
        )
        if not fits:
            raise PlanError(f"{where}: autovacuum {key} takes a {kind.__name__}, not {value!r}.")
        parsed[key] = value
    return parsed


def _parse_column(raw: Any, where: str, keys: tuple[str, ...]) -> Column:
    name = _target_name(raw.get("name"), f"{where}.name", MAX_NAME)
    if name.startswith(PIPELINE_PREFIX):
        raise PlanError(
            f"{where}.name: {name!r} starts with {PIPELINE_PREFIX!r}, which this pipeline keeps "
            "for its own columns (row ids, storage classes, parsed times); name the column "
            "otherwise (the SQLite name goes in 'source')."
        )
    where = f"{where} ({name})"
    convert = str(raw["convert"])
    if convert == "text":
        pg_type = str(raw.get("type", "text")).lower().replace(" ", "")
        if not TEXT_TYPE.match(pg_type):
            raise PlanError(f"{where}: type {raw.get('type')!r} must be text or varchar(n).")
    else:
        fixed = KINDS[convert].pg_type
        if "type" in raw and str(raw["type"]).lower() != fixed:
            raise PlanError(f"{where}: convert {convert} always gives {fixed}.")
        pg_type = fixed
    references = raw.get("references")
    if convert == "ref" and references is None:
        raise PlanError(f"{where}: convert ref needs 'references' (the table it points at).")
    on_delete = str(raw.get("on_delete", "no action"))
    on_update = str(raw.get("on_update", "no action"))
    enforce = str(raw.get("enforce", "constraint"))
    epoch = raw.get("epoch")
    if epoch is not None and convert != "timestamp":
        raise PlanError(f"{where}: epoch is for a timestamp column.")
    on_invalid = str(raw.get("on_invalid", "fail"))
    if on_invalid == "quarantine" and name in keys:
        raise PlanError(
            f"{where}: a primary-key column cannot quarantine: a row whose key does not convert "
            "stops the load (fix it in the source)."
        )
    nullable = bool(raw.get("nullable", name not in keys))
    if name in keys and nullable:
        raise PlanError(f"{where}: a primary-key column cannot be nullable.")
    default = raw.get("default")
    if default is not None:
        problem = default_problem(default, convert, pg_type)
        if problem:
            raise PlanError(f"{where}: default {default!r} {problem}.")
    identity = bool(raw.get("identity", False))
    anomalies = str(raw.get("anomalies", "fail"))
    if anomalies == "accept" and not KINDS[convert].time:
        raise PlanError(f"{where}: anomalies applies to timestamp and date columns.")
    any_class = bool(raw.get("any_class", False))
    collation = raw.get("collation")
    if collation is not None and convert != "text":
        raise PlanError(f"{where}: collation {collation} applies to text columns.")
    if any_class and convert not in ("text", "blob"):
        raise PlanError(
            f"{where}: any_class applies to text and blob columns (a value of any storage class "
            "kept as its text or bytes)."
        )
    return Column(
        name=name,
        convert=convert,
        source=_source_name(raw.get("source", name), f"{where}.source"),
        pg_type=pg_type,
        nullable=nullable,
        references=None
        if references is None
        else _target_name(references, f"{where}.references", MAX_TABLE_NAME),
        on_delete=on_delete,
        on_update=on_update,
        deferred=bool(raw.get("deferred", False)),
        enforce=enforce,
        epoch=epoch,
        on_invalid=on_invalid,
        default=default,
        identity=identity,
        anomalies=anomalies,
        any_class=any_class,
        generated=None if raw.get("generated") is None else str(raw["generated"]),
        collation=collation,
        references_column=None
        if raw.get("references_column") is None
        else _target_name(raw["references_column"], f"{where}.references_column", MAX_NAME),
    )


def default_problem(default: Any, convert: str, pg_type: str) -> str | None:
    """Why `default` cannot be the default of a `convert` column (None: it can). Checked when
    the plan loads, so that PostgreSQL never refuses it in the middle of a load."""
    finite = not isinstance(default, float) or math.isfinite(default)
    if not isinstance(default, str | int | float | bool) or not finite:
        return "is not now() or a finite literal value"
    kind = KINDS[convert]
    if default == "now()":
        return None if kind.time else "is for timestamp and date columns"
    if kind.takes_default is None:
        return f"cannot be given to a {convert} column (its values come from the source)"
    if not kind.takes_default(default):
        return f"is not a {convert} value"
    match = TEXT_TYPE.match(pg_type)
    if isinstance(default, str) and match and match.group(2) and len(default) > int(match.group(2)):
        return f"is longer than {pg_type}"
    return None


def _parse_index(raw: Any, where: str, columns: list[str]) -> Index:
    cols = raw.get("columns") or []
    if any(c not in columns for c in cols):
        raise PlanError(f"{where}: columns {cols!r} must be a list of the table's columns.")
    expressions = tuple(
        checked(str(e), set(columns), f"{where} expression {i}")
        for i, e in enumerate(raw.get("expressions") or [])
    )
    if not cols and not expressions:
        raise PlanError(f"{where}: give it columns, expressions or both.")
    predicate = raw.get("where")
    if predicate is not None:
        predicate = checked(str(predicate), set(columns), f"{where} where")
    method = str(raw.get("method", "btree"))
    opclass = raw.get("opclass")
    if opclass in ("gin_trgm_ops", "jsonb_ops", "jsonb_path_ops") and method != "gin":
        raise PlanError(f"{where}: opclass {opclass} needs method: gin.")
    return Index(
        name=_target_name(raw.get("name"), f"{where}.name", MAX_NAME),
        columns=tuple(cols),
        unique=bool(raw.get("unique", False)),
        method=method,
        opclass=opclass,
        expressions=expressions,
        where=predicate,
        source=None if raw.get("source") is None else str(raw["source"]),
    )


def _check_references(plan: Plan) -> None:
    names = set(plan.table_names)
    if len(names) != len(plan.tables):
        raise PlanError(f"plan.tables repeats a table name: {list(plan.table_names)}.")
    sources = [t.source for t in plan.tables]
    if len(set(sources)) != len(sources):
        raise PlanError(f"plan.tables reads a source table twice: {sources}.")
    partitioned = [t.name for t in plan.tables if t.partition_by_month]
    if len(partitioned) > 1:
        raise PlanError(f"Only one table can be partitioned by month; the plan has {partitioned}.")
    for table in plan.tables:
        for column in table.foreign_keys:
            where = f"plan table {table.name!r} column {column.name!r}"
            if column.references not in names:
                raise PlanError(
                    f"{where} references {column.references!r}, which is not in the plan."
                )
            parent = plan.table(str(column.references))
            key = plan.referenced(column)
            if key is None:
                raise PlanError(
                    f"{where} references {parent.name!r}, which has no single-column primary key "
                    "to point at."
                    if column.references_column is None
                    else f"{where} references {parent.name}.{column.references_column}, which "
                    "is not one of its columns."
                )
            unique = parent.primary_key == (key.name,) or any(
                ix.unique and ix.plain and ix.columns == (key.name,) for ix in parent.indexes
            )
            if not unique:
                raise PlanError(
                    f"{where} references {parent.name}.{key.name}, which is not unique: give "
                    f"{parent.name} a unique index on it, or point at its key."
                )
            if (key.convert == "legacy_id") != (column.convert == "ref"):
                raise PlanError(
                    f"{where}: a reference to a legacy_id key converts with 'ref', and 'ref' "
                    f"points only at legacy_id keys ({parent.name}.{key.name} is {key.convert})."
                )
            if _type_family(key.pg_type) != _type_family(column.pg_type):
                raise PlanError(
                    f"{where} is {column.pg_type}, but {parent.name}.{key.name} is {key.pg_type}: "
                    "a reference has its key's type."
                )
            if parent.partition_by_month and column.enforce == "constraint":
                raise PlanError(
                    f"{where} references {parent.name!r}, which is partitioned by month: "
                    "PostgreSQL cannot enforce that key, so set enforce: report (a check "
                    "counts orphans)."
                )
        for ref in table.references:
            _check_composite(plan, table, ref)
        for trigger in table.triggers:
            if trigger.into is None:
                continue
            where = f"plan table {table.name!r} trigger {trigger.name!r}"
            if trigger.into not in names:
                raise PlanError(f"{where} writes to {trigger.into!r}, which is not in the plan.")
            into = {c.name for c in plan.table(trigger.into).columns}
            if any(c not in into for c in trigger.columns):
                raise PlanError(
                    f"{where}: columns {list(trigger.columns)} must be columns of {trigger.into}."
                )
    for skip in plan.skip:
        if skip.kind != "table":
            continue
        planned = next((t for t in plan.tables if t.source == skip.table), None)
        if planned is not None and skip.column is None:
            raise PlanError(f"plan.skip names table {skip.table!r}, which the plan also migrates.")
        if planned is not None and any(c.source == skip.column for c in planned.columns):
            raise PlanError(f"plan.skip names column {skip.label!r}, which the plan also migrates.")


def _check_composite(plan: Plan, table: Table, ref: Reference) -> None:
    where = f"plan table {table.name!r} reference {ref.name!r}"
    if ref.references not in plan.table_names:
        raise PlanError(f"{where} points at {ref.references!r}, which is not in the plan.")
    parent = plan.table(ref.references)
    names = {c.name for c in parent.columns}
    if any(c not in names for c in ref.referenced_columns):
        raise PlanError(
            f"{where}: referenced_columns {list(ref.referenced_columns)} must be columns of "
            f"{parent.name}."
        )
    wanted = set(ref.referenced_columns)
    unique = set(parent.primary_key) == wanted or any(
        ix.unique and ix.plain and set(ix.columns) == wanted for ix in parent.indexes
    )
    if not unique:
        raise PlanError(
            f"{where}: {parent.name} ({', '.join(ref.referenced_columns)}) is not its primary "
            "key or a unique index of it; a reference points at a unique key."
        )
    for own, theirs in zip(ref.columns, ref.referenced_columns, strict=True):
        mine, key = table.column(own), parent.column(theirs)
        if _type_family(mine.pg_type) != _type_family(key.pg_type):
            raise PlanError(
                f"{where}: {own} is {mine.pg_type}, but {parent.name}.{theirs} is {key.pg_type}."
            )
    if parent.partition_by_month and ref.enforce == "constraint":
        raise PlanError(
            f"{where} points at {parent.name!r}, which is partitioned by month: set enforce: "
            "report (a check counts orphans)."
        )


def _type_family(pg_type: str) -> str:
    return "text" if TEXT_TYPE.match(pg_type) else pg_type


def _only_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")


def _target_name(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not TARGET_NAME.match(value) or len(value) > limit:
        raise PlanError(
            f"{where}: {value!r} is not a valid target name (lower-case letters, digits and _, "
            f"at most {limit} characters; the SQLite name goes in 'source')."
        )
    return value


def _source_name(value: Any, where: str) -> str:
    # SQLite takes any text as a quoted name, the empty one included ("" is a column).
    if not isinstance(value, str) or "\x00" in value:
        raise PlanError(f"{where}: {value!r} is not a SQLite name.")
    return value
