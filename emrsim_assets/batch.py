"""The vocabulary of a batch of source rows: the row id, the storage class of every value, and
how a row is named by its key. Reader, conversion and proofs all speak it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import polars as pl


class ColumnLike(Protocol):
    """What the batch's code reads of a plan column (plan.model.Column is one)."""

    @property
    def name(self) -> str: ...
    @property
    def convert(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def epoch(self) -> str | None: ...
    @property
    def references(self) -> str | None: ...
    @property
    def any_class(self) -> bool: ...
    @property
    def max_length(self) -> int | None: ...


class TableLike(Protocol):
    """What the batch's code reads of a plan table (plan.model.Table is one)."""

    @property
    def name(self) -> str: ...
    @property
    def columns(self) -> Sequence[ColumnLike]: ...
    @property
    def primary_key(self) -> tuple[str, ...]: ...
    def column(self, name: str) -> ColumnLike: ...


class PlanLike(Protocol):
    """What the batch's code reads of a plan (plan.model.Plan is one)."""

    @property
    def source_timezone(self) -> ZoneInfo: ...


ROWID = "__rowid"  # per row: SQLite's rowid, or its position in key order (WITHOUT ROWID)


def json_ok(column: str) -> str:
    """Name of the helper column carrying SQLite's json_valid() verdict for `column`."""
    return f"__json_ok_{column}"


CLASSES = "__classes"  # per row: the SQLite storage class of every column, as base-5 digits
# In the order of the base-5 digits below (_class_digit_sql), and of every count of storage classes.
STORAGE_CLASSES = ("integer", "real", "text", "blob", "null")
# Base-5 digits per 64-bit integer (5**27 - 1 < 2**63): a wider table's classes take several,
# __classes, __classes_1, ...
CLASS_DIGITS = 27


def class_columns(count: int) -> list[str]:
    """The names of the integers holding the classes of `count` columns."""
    return [class_column(i) for i in range(0, max(count, 1), CLASS_DIGITS)]


def class_column(position: int) -> str:
    chunk = position // CLASS_DIGITS
    return CLASSES if chunk == 0 else f"{CLASSES}_{chunk}"


def class_digit(position: int) -> pl.Expr:
    """The storage class (0 to 4, as STORAGE_CLASSES) of the column at `position`."""
    digit: pl.Expr = (pl.col(class_column(position)) // (5 ** (position % CLASS_DIGITS))) % 5
    return digit


def decode_classes(codes: tuple[int, ...], count: int) -> list[str]:
    names = []
    for position in range(count):
        code = codes[position // CLASS_DIGITS] // 5 ** (position % CLASS_DIGITS)
        names.append(STORAGE_CLASSES[code % 5])
    return names


def key_label(table: TableLike, values: dict[str, Any]) -> str:
    """' (key id='abc')' for a table keyed by columns of its own; '' for one keyed by rowid."""
    keys = [k for k in table.primary_key if table.column(k).convert not in ("legacy_id", "integer")]
    if not keys:
        return ""
    shown = ", ".join(f"{k}={_show(values.get(k))}" for k in keys)
    return f" (key {shown})"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return (
        "NULL"
        if value is None
        else repr(value if len(str(value)) <= 60 else str(value)[:60] + "...")
    )
