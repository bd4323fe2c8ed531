"""Source values to target values: one vectorized Polars expression per conversion kind."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import polars as pl

from emrsim_assets.errors import ConversionError
from emrsim_assets.plan import Column, Plan, Table

# Legacy ids become UUIDs (version 8, "custom") laid out as
#   PPPPPPPP-PPPP-8PPP-8III-IIIIIIIIIIII
# P: 15 hex digits of sha256("emrsim:<table>"), I: the legacy id as 15 zero-padded decimal digits.
# Deterministic (reruns and foreign keys agree with no lookup table) and reversible
# (emrsim_migration.legacy_id(uuid) reads the id back), as pure string operations.
MAX_LEGACY_ID = 10**15 - 1
# Epoch values beyond year 9999 are errors, not timestamps.
_MAX_EPOCH_MS = 253_402_300_799_999


def uuid_prefix(table: str) -> str:
    digest = hashlib.sha256(f"emrsim:{table}".encode()).hexdigest()
    return f"{digest[0:8]}-{digest[8:12]}-8{digest[12:15]}-8"


def legacy_uuid(table: str, legacy_id: int) -> str:
    """The UUID a legacy id becomes (the scalar twin of the vectorized expression)."""
    digits = f"{legacy_id:015d}"
    return f"{uuid_prefix(table)}{digits[:3]}-{digits[3:]}"


def legacy_id_of(value: str) -> int:
    return int(value.replace("-", "")[17:])


def json_ok(column: str) -> str:
    """Name of the helper column carrying SQLite's json_valid() verdict for `column`."""
    return f"__json_ok_{column}"


def _integer(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.to_integer(strict=False)


def uuid_expr(expr: pl.Expr, table: str) -> pl.Expr:
    digits = _integer(expr).cast(pl.String).str.zfill(15)
    return pl.concat_str(
        pl.lit(uuid_prefix(table)), digits.str.slice(0, 3), pl.lit("-"), digits.str.slice(3, 12)
    )


def timestamp_expr(expr: pl.Expr, column: Column, plan: Plan) -> pl.Expr:
    """Text (CURRENT_TIMESTAMP or ISO-8601) or epoch numbers to UTC datetimes; null if unparseable."""
    if column.epoch:
        value = _integer(expr)
        value = (
            pl.when(
                value.abs() <= (_MAX_EPOCH_MS if column.epoch == "ms" else _MAX_EPOCH_MS // 1000)
            )
            .then(value)
            .otherwise(None)
        )
        unit: Literal["ms", "s"] = "ms" if column.epoch == "ms" else "s"
        return (
            pl.from_epoch(value, time_unit=unit).dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        )
    text = (
        expr.str.strip_chars().str.replace("T", " ", literal=True).str.replace(r"[zZ]$", "+00:00")
    )
    with_offset = text.str.to_datetime(
        "%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    naive = pl.coalesce(
        text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )
    local = naive.dt.replace_time_zone(
        str(plan.source_timezone.key), ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")
    return pl.coalesce(with_offset, local)


def month_key(timestamp: pl.Expr) -> pl.Expr:
    """The Dagster partition key ("2024-03-01") of a UTC timestamp."""
    return timestamp.dt.truncate("1mo").dt.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class _Rule:
    value: pl.Expr
    invalid: pl.Expr  # true where a present source value does not convert
    reason: str


def _rule(column: Column, table: Table, plan: Plan) -> _Rule:
    raw = pl.col(column.name)
    present = raw.is_not_null()
    kind = column.convert
    if kind in ("legacy_id", "ref"):
        number = _integer(raw)
        target = table.name if kind == "legacy_id" else str(column.references)
        bad = present & (number.is_null() | (number < 0) | (number > MAX_LEGACY_ID))
        return _Rule(uuid_expr(raw, target), bad, f"is not an integer id from 0 to {MAX_LEGACY_ID}")
    if kind == "timestamp":
        value = timestamp_expr(raw, column, plan)
        what = f"epoch {column.epoch}" if column.epoch else "text timestamp"
        return _Rule(value, present & value.is_null(), f"is not a valid {what}")
    if kind == "date":
        value = raw.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        return _Rule(value, present & value.is_null(), "is not a date (YYYY-MM-DD)")
    if kind == "json":
        # json_valid() ran in SQLite during extraction; PostgreSQL's jsonb also refuses \u0000.
        bad = present & (
            (pl.col(json_ok(column.name)) != 1) | raw.str.contains("\\u0000", literal=True)
        )
        return _Rule(raw, bad, "is not valid JSON for jsonb")
    if kind == "boolean":
        lowered = raw.str.strip_chars().str.to_lowercase()
        value = (
            pl.when(lowered.is_in(["1", "true", "t"]))
            .then(True)
            .when(lowered.is_in(["0", "false", "f"]))
            .then(False)
        )
        return _Rule(value, present & value.is_null(), "is not a boolean (0 or 1)")
    if kind == "integer":
        value = _integer(raw)
        return _Rule(value, present & value.is_null(), "is not an integer")
    # text
    bad = present & raw.str.contains("\x00", literal=True)
    reason = "contains a NUL byte, which PostgreSQL text cannot hold"
    if column.max_length is not None:
        bad = bad | (present & (raw.str.len_chars() > column.max_length))
        reason = f"contains a NUL byte or is longer than {column.max_length} characters"
    return _Rule(raw, bad, reason)


@dataclass(frozen=True)
class Converted:
    rows: pl.DataFrame  # target columns, in plan order, ready for COPY
    quarantined: pl.DataFrame  # row_id, column_name, reason, value
    source_rows: int


QUARANTINE_SCHEMA = {
    "row_id": pl.Int64,
    "column_name": pl.String,
    "reason": pl.String,
    "value": pl.String,
}


def convert_frame(frame: pl.DataFrame, table: Table, plan: Plan) -> Converted:
    """Convert one batch; raise on the first invalid value unless its column quarantines."""
    from emrsim_assets.source import ROWID

    rules = {c.name: _rule(c, table, plan) for c in table.columns}
    null_reason = "is NULL, but the target column is NOT NULL"
    flags = frame.select(
        pl.col(ROWID),
        *[r.invalid.fill_null(False).alias(f"bad:{n}") for n, r in rules.items()],
        *[
            pl.col(c.name).is_null().alias(f"null:{c.name}")
            for c in table.columns
            if not c.nullable
        ],
    )
    problems: list[pl.DataFrame] = []
    for column in table.columns:
        for prefix, reason in (("bad", rules[column.name].reason), ("null", null_reason)):
            flag = f"{prefix}:{column.name}"
            if flag not in flags.columns or not flags[flag].any():
                continue
            hit = frame.filter(flags[flag]).select(
                pl.col(ROWID).alias("row_id"),
                pl.lit(column.name).alias("column_name"),
                pl.lit(reason).alias("reason"),
                pl.col(column.name).str.slice(0, 200).alias("value"),
            )
            if column.on_invalid == "fail":
                raise _conversion_error(table, column, hit)
            problems.append(hit)
    quarantined = pl.concat(problems) if problems else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    kept = frame
    if problems:
        kept = frame.filter(~pl.col(ROWID).is_in(quarantined["row_id"].implode()))
    rows = kept.select(*[rules[c.name].value.alias(c.name) for c in table.columns], pl.col(ROWID))
    return Converted(rows=rows, quarantined=quarantined, source_rows=frame.height)


def _conversion_error(table: Table, column: Column, hit: pl.DataFrame) -> ConversionError:
    first = hit.row(0, named=True)
    value = first["value"]
    shown = "NULL" if value is None else repr(value if len(value) <= 80 else value[:80] + "...")
    more = ""
    if hit.height > 1:
        ids = ", ".join(str(i) for i in hit["row_id"].head(5).to_list())
        more = f" {hit.height} rows of this batch fail the same way (row ids {ids}...)."
    return ConversionError(
        f"{table.name}.{column.name}: row id {first['row_id']}: value {shown} {first['reason']}."
        f"{more} Fix the source rows, or set on_invalid: quarantine on this column in the plan."
    )
