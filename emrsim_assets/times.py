"""Time: SQLite's text and epoch timestamps parsed as the plan reads them, and the months they
fall in (the partitioned table's periods)."""

from __future__ import annotations

from datetime import date

import polars as pl

from emrsim_assets.batch import ColumnLike, PlanLike, TableLike

# Epoch values beyond year 9999 are errors, not timestamps.
_MAX_EPOCH_MS = 253_402_300_799_999


def _localize(naive: pl.Expr, plan: PlanLike) -> pl.Expr:
    return naive.dt.replace_time_zone(
        str(plan.source_timezone.key), ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


_EPOCH_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}
_EPOCH_NUMBER = r"^\s*(-?\d+)(?:\.(\d*))?\s*$"


def epoch_micros(expr: pl.Expr, unit: str) -> pl.Expr:
    """Epoch text in `unit` (whole or fractional: '1700000000.25') to integer microseconds,
    exactly (decimal digits, never a float); null where not a number, finer than a
    microsecond, or beyond year 9999."""
    scale = 1_000_000 // _EPOCH_PER_SECOND[unit]
    digits = len(str(scale)) - 1  # fraction digits that still fit in microseconds
    whole = expr.str.extract(_EPOCH_NUMBER, 1).str.to_integer(strict=False)
    fraction = expr.str.extract(_EPOCH_NUMBER, 2).fill_null("")
    kept = fraction.str.slice(0, digits).str.pad_end(digits, "0") if digits else pl.lit("0")
    exact = fraction.str.slice(digits).str.replace_all("0", "").str.len_chars() == 0
    part = kept.str.to_integer(strict=False) if digits else pl.lit(0, pl.Int64)
    sign = pl.when(expr.str.strip_chars().str.starts_with("-")).then(-1).otherwise(1)
    limit = _MAX_EPOCH_MS * 1000
    # Bounded before multiplying: integer overflow would wrap around in silence (and so would
    # abs() of -2^63, which is why this is a range, not a magnitude).
    fits = exact & whole.is_between(-(limit // scale), limit // scale)
    return pl.when(fits).then(whole * scale + sign * part).otherwise(None)


def timestamp_expr(expr: pl.Expr, column: ColumnLike, plan: PlanLike) -> pl.Expr:
    """Text (CURRENT_TIMESTAMP or ISO-8601) or epoch numbers to UTC datetimes; null if unparseable."""
    if column.epoch:
        return pl.from_epoch(epoch_micros(expr, column.epoch), time_unit="us").dt.replace_time_zone(
            "UTC"
        )
    text = (
        expr.str.strip_chars().str.replace("T", " ", literal=True).str.replace(r"[zZ]$", "+00:00")
    )
    # PostgreSQL keeps microseconds: a digit past the sixth that is not 0 would be cut off
    # (Polars truncates, PostgreSQL's own input rounds). Such a value does not convert.
    finer = text.str.extract(r":\d\d\.\d{6}(\d+)", 1).str.contains("[1-9]").fill_null(False)
    with_offset = text.str.to_datetime(
        "%Y-%m-%d %H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
    )
    naive = pl.coalesce(
        text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )
    return pl.when(finer).then(None).otherwise(pl.coalesce(with_offset, _localize(naive, plan)))


# SQLite's CURRENT_TIMESTAMP format: most values have it, and Polars parses it on a fast path.
_COMMON_TIMESTAMP = "%Y-%m-%d %H:%M:%S"


def timestamps(values: pl.Series, column: ColumnLike, plan: PlanLike) -> pl.Series:
    """`timestamp_expr` over a Series: the common format is tried on every row first, and the
    general parser runs only on the rows it left (several times faster on typical data)."""
    frame = values.to_frame("v")
    if column.epoch:
        return (
            frame.select(timestamp_expr(pl.col("v"), column, plan)).to_series().alias(values.name)
        )
    common = pl.col("v").str.to_datetime(_COMMON_TIMESTAMP, strict=False, time_unit="us")
    parsed = frame.select(_localize(common, plan)).to_series()
    left = parsed.is_null() & values.is_not_null()
    if left.any():
        index = left.arg_true()
        rest = frame[index].select(timestamp_expr(pl.col("v"), column, plan)).to_series()
        parsed = parsed.scatter(index, rest)
    return parsed.alias(values.name)


PARSED = "__parsed_"  # + a column's name: its timestamps, parsed once per batch


def with_parsed_times(frame: pl.DataFrame, table: TableLike, plan: PlanLike) -> pl.DataFrame:
    """`frame` with each timestamp column parsed once, beside it as PARSED + its name: the
    month filter, both proofs and the conversion of a batch read it instead of parsing again
    (each parse of 2 M messages' text costs about 1 CPU-s)."""
    return frame.with_columns(
        timestamps(frame.get_column(c.name), c, plan).alias(PARSED + c.name)
        for c in table.columns
        if c.convert == "timestamp"
    )


def parsed_timestamps(frame: pl.DataFrame, column: ColumnLike, plan: PlanLike) -> pl.Series:
    """`column`'s timestamps: parsed already (with_parsed_times), or now."""
    if PARSED + column.name in frame.columns:
        return frame.get_column(PARSED + column.name).alias(column.name)
    return timestamps(frame.get_column(column.name), column, plan)


def month_start(stamps: pl.Series) -> pl.Series:
    """The first day of each timestamp's month: the partition the row belongs to."""
    return stamps.dt.truncate("1mo").dt.date()


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)
