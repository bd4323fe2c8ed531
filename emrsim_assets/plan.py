"""The migration plan: which tables move, how each column converts, and what PostgreSQL gets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from emrsim_assets.errors import PlanError

CONVERSIONS = ("legacy_id", "ref", "timestamp", "date", "json", "boolean", "text", "integer")
_FIXED_TYPES = {
    "legacy_id": "uuid",
    "ref": "uuid",
    "timestamp": "timestamptz",
    "date": "date",
    "json": "jsonb",
    "boolean": "boolean",
    "integer": "bigint",
}
_TEXT_TYPE = re.compile(r"^(text|varchar\((\d+)\))$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ON_DELETE = ("cascade", "set null", "restrict", "no action")
_INDEX_METHODS = ("btree", "gin")
# Operator classes a plan may name (one per index, applied to each of its columns).
_OPCLASSES = ("jsonb_ops", "jsonb_path_ops", "text_pattern_ops", "varchar_pattern_ops")


@dataclass(frozen=True)
class Column:
    name: str
    convert: str
    source: str
    pg_type: str
    nullable: bool = True
    references: str | None = None
    on_delete: str = "no action"
    epoch: str | None = None  # "ms" or "s" for numeric timestamps
    on_invalid: str = "fail"

    @property
    def max_length(self) -> int | None:
        match = _TEXT_TYPE.match(self.pg_type)
        return int(match.group(2)) if match and match.group(2) else None


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    method: str = "btree"
    opclass: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    source: str
    primary_key: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    partition_by_month: str | None = None
    autovacuum: Mapping[str, int] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def foreign_keys(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.references is not None)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.references for c in self.foreign_keys if c.references))

    @property
    def keyed_by_legacy_id(self) -> bool:
        return self.column(self.primary_key).convert == "legacy_id"


@dataclass(frozen=True)
class Plan:
    tables: tuple[Table, ...]
    source_timezone: ZoneInfo
    messages_partition_start: date
    path: Path

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise PlanError(f"The plan has no table {name!r}; it has {', '.join(self.table_names)}.")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    @property
    def partitioned_table(self) -> Table | None:
        return next((t for t in self.tables if t.partition_by_month), None)

    def load_order(self) -> tuple[Table, ...]:
        """Parents before children, so FK checks see their parents loaded."""
        done: list[str] = []
        pending = list(self.tables)
        while pending:
            ready = [t for t in pending if all(p in done or p == t.name for p in t.parents)]
            if not ready:
                names = ", ".join(t.name for t in pending)
                raise PlanError(f"The plan's foreign keys form a cycle among: {names}.")
            for table in ready:
                done.append(table.name)
                pending.remove(table)
        return tuple(self.table(name) for name in done)


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
    return _parse_plan(raw, path)


def _parse_plan(raw: dict[str, Any], path: Path) -> Plan:
    _only_keys(raw, {"version", "source_timezone", "messages_partition_start", "tables"}, "plan")
    if raw.get("version") != 1:
        raise PlanError(f"plan.version must be 1 (got {raw.get('version')!r}).")
    tz_name = str(raw.get("source_timezone", "UTC"))
    try:
        timezone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(f"plan.source_timezone {tz_name!r} is not a known time zone.") from None
    start_raw = raw.get("messages_partition_start", "2023-01-01")
    try:
        start = date.fromisoformat(str(start_raw))
    except ValueError:
        raise PlanError(
            f"plan.messages_partition_start {start_raw!r} is not a date (YYYY-MM-01)."
        ) from None
    if start.day != 1:
        raise PlanError(f"plan.messages_partition_start {start} must be the first of a month.")
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, list) or not tables_raw:
        raise PlanError("plan.tables must be a non-empty list.")
    tables = tuple(_parse_table(t, i) for i, t in enumerate(tables_raw))
    plan = Plan(tables=tables, source_timezone=timezone, messages_partition_start=start, path=path)
    _check_references(plan)
    plan.load_order()
    return plan


def _parse_table(raw: Any, index: int) -> Table:
    where = f"plan.tables[{index}]"
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a mapping.")
    _only_keys(
        raw,
        {"name", "source", "primary_key", "columns", "indexes", "partition_by_month", "autovacuum"},
        where,
    )
    name = _name(raw.get("name"), f"{where}.name")
    where = f"plan table {name!r}"
    columns_raw = raw.get("columns")
    if not isinstance(columns_raw, list) or not columns_raw:
        raise PlanError(f"{where}: 'columns' must be a non-empty list.")
    columns = tuple(_parse_column(c, f"{where} column {i}") for i, c in enumerate(columns_raw))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise PlanError(f"{where}: column names repeat: {names}.")
    primary_key = raw.get("primary_key")
    if primary_key not in names:
        raise PlanError(f"{where}: primary_key {primary_key!r} is not one of its columns.")
    partition_column = raw.get("partition_by_month")
    if partition_column is not None:
        if partition_column not in names:
            raise PlanError(f"{where}: partition_by_month {partition_column!r} is not a column.")
        column = columns[names.index(partition_column)]
        if column.convert != "timestamp" or column.nullable or column.epoch:
            raise PlanError(
                f"{where}: partition_by_month needs a NOT NULL text timestamp column, "
                f"and {partition_column!r} is not one."
            )
    indexes = tuple(
        _parse_index(ix, f"{where} index {i}", names)
        for i, ix in enumerate(raw.get("indexes") or [])
    )
    autovacuum = raw.get("autovacuum") or {}
    if not isinstance(autovacuum, dict) or not all(
        isinstance(k, str) and k.startswith("autovacuum_") and isinstance(v, int)
        for k, v in autovacuum.items()
    ):
        raise PlanError(f"{where}: autovacuum must map autovacuum_* settings to integers.")
    return Table(
        name=name,
        source=_name(raw.get("source", name), f"{where}.source"),
        primary_key=str(primary_key),
        columns=columns,
        indexes=indexes,
        partition_by_month=partition_column,
        autovacuum=autovacuum,
    )


def _parse_column(raw: Any, where: str) -> Column:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a mapping.")
    _only_keys(
        raw,
        {
            "name",
            "source",
            "convert",
            "type",
            "nullable",
            "references",
            "on_delete",
            "epoch",
            "on_invalid",
        },
        where,
    )
    name = _name(raw.get("name"), f"{where}.name")
    where = f"{where} ({name})"
    convert = raw.get("convert")
    if convert not in CONVERSIONS:
        raise PlanError(f"{where}: convert {convert!r} is not one of {', '.join(CONVERSIONS)}.")
    if convert == "text":
        pg_type = str(raw.get("type", "text")).lower().replace(" ", "")
        if not _TEXT_TYPE.match(pg_type):
            raise PlanError(f"{where}: type {raw.get('type')!r} must be text or varchar(n).")
    else:
        if "type" in raw and str(raw["type"]).lower() != _FIXED_TYPES[convert]:
            raise PlanError(f"{where}: convert {convert} always gives {_FIXED_TYPES[convert]}.")
        pg_type = _FIXED_TYPES[convert]
    references = raw.get("references")
    if (convert == "ref") != (references is not None):
        raise PlanError(f"{where}: 'references' goes with convert: ref, and only with it.")
    on_delete = str(raw.get("on_delete", "no action")).lower()
    if on_delete not in _ON_DELETE:
        raise PlanError(f"{where}: on_delete {on_delete!r} is not one of {_ON_DELETE}.")
    epoch = raw.get("epoch")
    if epoch is not None and (convert != "timestamp" or epoch not in ("ms", "s")):
        raise PlanError(f"{where}: epoch must be 'ms' or 's' on a timestamp column.")
    on_invalid = raw.get("on_invalid", "fail")
    if on_invalid not in ("fail", "quarantine"):
        raise PlanError(f"{where}: on_invalid must be 'fail' or 'quarantine'.")
    nullable = raw.get("nullable", convert != "legacy_id")
    if not isinstance(nullable, bool):
        raise PlanError(f"{where}: nullable must be true or false.")
    return Column(
        name=name,
        convert=convert,
        source=_name(raw.get("source", name), f"{where}.source"),
        pg_type=pg_type,
        nullable=nullable,
        references=None if references is None else _name(references, f"{where}.references"),
        on_delete=on_delete,
        epoch=epoch,
        on_invalid=on_invalid,
    )


def _parse_index(raw: Any, where: str, columns: list[str]) -> Index:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a mapping.")
    _only_keys(raw, {"name", "columns", "unique", "method", "opclass"}, where)
    cols = raw.get("columns")
    if not isinstance(cols, list) or not cols or any(c not in columns for c in cols):
        raise PlanError(f"{where}: columns {cols!r} must be a list of the table's columns.")
    method = raw.get("method", "btree")
    if method not in _INDEX_METHODS:
        raise PlanError(f"{where}: method {method!r} is not one of {_INDEX_METHODS}.")
    opclass = raw.get("opclass")
    if opclass is not None and opclass not in _OPCLASSES:
        raise PlanError(f"{where}: opclass {opclass!r} is not one of {_OPCLASSES}.")
    return Index(
        name=_name(raw.get("name"), f"{where}.name"),
        columns=tuple(cols),
        unique=bool(raw.get("unique", False)),
        method=method,
        opclass=opclass,
    )


def _check_references(plan: Plan) -> None:
    names = set(plan.table_names)
    if len(names) != len(plan.tables):
        raise PlanError(f"plan.tables repeats a table name: {list(plan.table_names)}.")
    partitioned = [t.name for t in plan.tables if t.partition_by_month]
    if len(partitioned) > 1:
        raise PlanError(f"Only one table can be partitioned by month; the plan has {partitioned}.")
    for table in plan.tables:
        for column in table.foreign_keys:
            if column.references not in names:
                raise PlanError(
                    f"plan table {table.name!r} column {column.name!r} references "
                    f"{column.references!r}, which is not in the plan."
                )
            parent = plan.table(str(column.references))
            if not parent.keyed_by_legacy_id:
                raise PlanError(
                    f"plan table {table.name!r} column {column.name!r}: convert ref needs "
                    f"{parent.name!r} keyed by a legacy_id column."
                )
        for column in table.columns:
            if column.convert == "legacy_id" and column.name != table.primary_key:
                raise PlanError(
                    f"plan table {table.name!r}: legacy_id is for the primary key only "
                    f"(column {column.name!r})."
                )


def _only_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PlanError(f"{where}: {value!r} is not a valid lower-case SQL name.")
    return value
