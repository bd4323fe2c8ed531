"""The plan file's shape, declared: every key a plan may hold, its type and its allowed values
(pydantic models, no unknown key). What the shape cannot say (a reference to a table of the
plan, a key that names a column) load.py checks on top. A shape error is one sentence naming
the table, the column and the key."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from emrsim_assets.errors import PlanError
from emrsim_assets.kinds import NAMES
from emrsim_assets.plan.model import OPCLASSES

Convert = Literal[NAMES]  # type: ignore[valid-type]
OpClass = Literal[OPCLASSES]  # type: ignore[valid-type]
Action = Literal["cascade", "set null", "set default", "restrict", "no action"]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ColumnSpec(_Shape):
    name: str
    source: str | None = None
    convert: Convert
    type: str | None = None
    nullable: StrictBool | None = None
    references: str | None = None
    references_column: str | None = None
    on_delete: Action = "no action"
    on_update: Action = "no action"
    deferred: StrictBool = False
    enforce: Literal["constraint", "report"] = "constraint"
    epoch: Literal["s", "ms", "us"] | None = None
    on_invalid: Literal["fail", "quarantine"] = "fail"
    default: StrictBool | StrictInt | float | str | None = None
    identity: StrictBool = False
    anomalies: Literal["fail", "accept"] = "fail"
    any_class: StrictBool = False
    collation: Literal["nocase"] | None = None
    generated: str | None = None


class IndexSpec(_Shape):
    name: str
    columns: list[str] = []
    expressions: list[str] = []
    where: str | None = None
    unique: StrictBool = False
    method: Literal["btree", "gin"] = "btree"
    opclass: OpClass | None = None
    source: str | None = None


class ReferenceSpec(_Shape):
    name: str
    columns: list[str] = Field(min_length=2)
    references: str
    referenced_columns: list[str] = Field(min_length=2)
    on_delete: Action = "no action"
    on_update: Action = "no action"
    deferred: StrictBool = False
    enforce: Literal["constraint", "report"] = "constraint"


class SearchSpec(_Shape):
    name: str = "search"
    columns: list[str] = Field(min_length=1)
    config: Literal[
        "simple", "english", "french", "german", "spanish", "italian", "portuguese", "dutch"
    ] = "simple"
    source: str | None = None


class TriggerSpec(_Shape):
    name: str
    source: str
    touch: str | None = None  # the timestamp column an update sets to now()
    events: list[Literal["insert", "update", "delete"]] = []  # a guard's events
    of: list[str] = []  # UPDATE OF these columns only
    when: str | None = None
    raise_: str | None = Field(default=None, alias="raise")  # a guard's message
    insert_into: str | None = None  # an audit's table
    columns: list[str] = []
    values: list[str] = []


class CheckSpec(_Shape):
    name: str
    postgres: str = Field(min_length=1)
    sqlite: str | None = None


class TableSpec(_Shape):
    name: str
    source: str | None = None
    primary_key: str | list[str] | None = None
    columns: list[ColumnSpec] = Field(min_length=1)
    indexes: list[IndexSpec] = []
    partition_by_month: str | None = None
    autovacuum: dict[str, Any] = {}
    max_quarantined_rows: StrictInt = Field(default=0, ge=0)
    checks: list[CheckSpec] = []
    references: list[ReferenceSpec] = []
    search: SearchSpec | None = None
    triggers: list[TriggerSpec] = []


class SkipSpec(_Shape):
    table: str | None = None
    trigger: str | None = None
    collation: str | None = None
    check: str | None = None
    index: str | None = None
    default: str | None = None
    reference: str | None = None
    column: str | None = None
    reason: str | None = None


class ViewSpec(_Shape):
    name: str
    source: str | None = None
    postgres: str = Field(min_length=1)


class PlanSpec(_Shape):
    version: Literal[1]
    source_timezone: str = "UTC"
    partition_start: date | None = None
    messages_partition_start: date | None = None  # partition_start's first name
    tables: list[TableSpec] = Field(min_length=1)
    skip: list[SkipSpec] = []
    views: list[ViewSpec] = []
    # Commands `emrsim-migrate cutover` runs around the write freeze (the app's maintenance
    # switch, say): each a program and its arguments, run without a shell.
    freeze: list[str] | None = Field(default=None, min_length=1)
    unfreeze: list[str] | None = Field(default=None, min_length=1)


def validate(raw: Any) -> PlanSpec:
    """`raw` (the YAML as read) checked against the plan's shape, or one sentence naming where
    it is not."""
    try:
        return PlanSpec.model_validate(raw)
    except ValidationError as exc:
        raise PlanError(_sentence(raw, exc)) from None


def _sentence(raw: Any, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = _where(raw, first["loc"])
    if first["type"] == "extra_forbidden":
        # Every unknown key of the same mapping, in one sentence.
        unknown = sorted(
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "extra_forbidden" and e["loc"][:-1] == first["loc"][:-1]
        )
        model = _model_at(first["loc"][:-1])
        return f"{where}: unknown key(s) {unknown}; allowed: {sorted(model.model_fields)}."
    key = str(first["loc"][-1]) if first["loc"] else "plan"
    value = first.get("input")
    if first["type"] == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return f"{where}: {key} {value!r} is not one of {expected}."
    if first["type"] == "missing":
        return f"{where}: '{key}' is missing."
    if first["type"] == "too_short":
        return f"{where}: '{key}' must be a non-empty list."
    return f"{where}: {key} {value!r}: {first['msg'].lower()}."


def _where(raw: Any, loc: tuple[Any, ...]) -> str:
    """The place a location names, as a person reads it: plan table 'users' column 2 (email)."""
    said = "plan"
    node = raw
    index = 0
    while index < len(loc):
        part = loc[index]
        following = loc[index + 1] if index + 1 < len(loc) else None
        if part in ("tables", "columns", "indexes", "references", "skip", "views") and isinstance(
            following, int
        ):
            items = node.get(part) if isinstance(node, dict) else None
            item = items[following] if isinstance(items, list) and following < len(items) else {}
            name = item.get("name") if isinstance(item, dict) else None
            noun = {
                "tables": "table",
                "columns": "column",
                "indexes": "index",
                "references": "reference",
                "skip": "skip",
                "views": "view",
            }
            if part == "tables":
                said = f"plan table {name!r}" if name else f"plan.tables[{following}]"
            elif part in ("skip", "views"):
                said = f"plan.{part}[{following}]"
            else:
                said += f" {noun[part]} {following}" + (f" ({name})" if name else "")
            node = item
            index += 2
            continue
        index += 1
    return said


def _model_at(loc: tuple[Any, ...]) -> type[_Shape]:
    """The model whose mapping a location ends in."""
    names = [part for part in loc if isinstance(part, str)]
    last = names[-1] if names else ""
    models: dict[str, type[_Shape]] = {
        "tables": TableSpec,
        "columns": ColumnSpec,
        "indexes": IndexSpec,
        "references": ReferenceSpec,
        "skip": SkipSpec,
        "views": ViewSpec,
    }
    return models.get(last, PlanSpec)
