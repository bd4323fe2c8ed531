"""Source values to target values, a batch at a time: each column through its kind's vectorized
conversion (kinds.py), every value of a class its kind does not keep refused, and each refused
value either named or quarantined."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from emrsim_assets.batch import ROWID, STORAGE_CLASSES, class_column, class_digit, key_label
from emrsim_assets.errors import ConversionError
from emrsim_assets.kinds import classes_kept, kind_of
from emrsim_assets.plan import Column, Plan, Table


def column_values(frame: pl.DataFrame, column: Column, table: Table, plan: Plan) -> pl.Series:
    """`column`'s target values for a batch (null where a value does not convert)."""
    return kind_of(column).convert(frame, column, table, plan).value


# A value of a storage class its column's kind does not keep would arrive changed in kind (the
# integer 5 as the text '5'), which content_matches_source finds only after the load. The load
# refuses it at once instead, naming the row, or quarantines it. `any_class: true` on a text or
# blob column takes every class as its text or bytes.
def _stored_otherwise(
    frame: pl.DataFrame, column: Column, table: Table
) -> list[tuple[pl.Series, str]]:
    """Rows whose value SQLite stored in a class this column's kind does not keep, per class,
    and why; none where every class is kept (or the batch was read without its classes)."""
    position = next(i for i, c in enumerate(table.columns) if c is column)
    if column.any_class or class_column(position) not in frame.columns:
        return []
    kind = column.convert
    kept = classes_kept(column)
    digit = frame.select(class_digit(position)).to_series()
    wrong = ~digit.is_in([*kept, 4])
    if not wrong.any():
        return []
    takes = " or ".join(STORAGE_CLASSES[d].upper() for d in kept)
    article = "an" if kind == "integer" else "a"
    remedy = ""
    if kind in ("text", "blob"):
        what = "text" if kind == "text" else "bytes"
        remedy = f"; any_class: true on this column keeps every value as its {what}, not its class"
    return [
        (
            digit == found,
            f"is stored by SQLite as {STORAGE_CLASSES[found].upper()}, where {article} {kind} "
            f"column takes {takes}: it would arrive changed in kind{remedy}",
        )
        for found in sorted(digit.filter(wrong).unique().to_list())
    ]


@dataclass(frozen=True)
class Converted:
    rows: pl.DataFrame  # target columns in plan order (ids as 16 UUID bytes), then the row id
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
    null_reason = "is NULL, but the target column is NOT NULL"
    values: list[pl.Series] = []
    problems: list[pl.DataFrame] = []
    dropped = pl.repeat(False, frame.height, eager=True)
    for column in table.columns:
        converted = kind_of(column).convert(frame, column, table, plan)
        values.append(converted.value)
        checks = [(converted.invalid, converted.reason)]
        checks.extend(_stored_otherwise(frame, column, table))
        if not column.nullable:
            checks.append((frame.get_column(column.name).is_null(), null_reason))
        for mask, reason in checks:
            if not mask.any():
                continue
            hit = frame.filter(mask).select(
                pl.col(ROWID).alias("row_id"),
                pl.lit(column.name).alias("column_name"),
                pl.lit(reason).alias("reason"),
                # As evidence, readable and storable: PostgreSQL text holds no NUL byte.
                pl.col(column.name)
                .str.slice(0, 200)
                .str.replace_all("\x00", "\\u0000", literal=True)
                .alias("value"),
            )
            if column.on_invalid == "fail" or column.name in table.primary_key:
                raise _conversion_error(table, column, hit, frame)
            problems.append(hit)
            dropped = dropped | mask
    rows = pl.DataFrame([*values, frame.get_column(ROWID)])
    if not problems:
        return Converted(rows, pl.DataFrame(schema=QUARANTINE_SCHEMA), frame.height)
    return Converted(rows.filter(~dropped), pl.concat(problems), frame.height)


def _conversion_error(
    table: Table, column: Column, hit: pl.DataFrame, frame: pl.DataFrame
) -> ConversionError:
    first = hit.row(0, named=True)
    row = frame.filter(pl.col(ROWID) == first["row_id"]).row(0, named=True)
    where = key_label(table, row)
    value = first["value"]
    shown = "NULL" if value is None else repr(value if len(value) <= 80 else value[:80] + "...")
    more = ""
    if hit.height > 1:
        ids = ", ".join(str(i) for i in hit["row_id"].head(5).to_list())
        more = f" {hit.height} rows of this batch fail the same way (row ids {ids}...)."
    return ConversionError(
        f"{table.name}.{column.name}: row id {first['row_id']}{where}: value {shown} {first['reason']}."
        f"{more} Fix the source rows"
        + (
            " (a key column cannot quarantine)."
            if column.name in table.primary_key
            else ", or set on_invalid: quarantine on this column in the plan."
        )
    )
