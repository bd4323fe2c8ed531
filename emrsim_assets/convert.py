"""Source values to target values: one vectorized Polars expression per conversion kind."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from emrsim_assets.batch import (
    ROWID,
    STORAGE_CLASSES,
    class_column,
    class_digit,
    json_ok,
    key_label,
)
from emrsim_assets.deep import deep
from emrsim_assets.errors import ConversionError
from emrsim_assets.plan import Column, Plan, Table

# Legacy ids become UUIDs (version 8, "custom") laid out as
#   PPPPPPPP-PPPP-8PPP-8III-IIIIIIIIIIII
# P: 15 hex digits of sha256("emrsim:<table>"), I: the legacy id as 15 zero-padded decimal digits
# (ids 0 to 10^15-1: readable in the UUID). Any other 64-bit id (negative, or larger) takes the
# other RFC 9562 variant digit, 9, and its 64 bits as hex: the top 4 in the last P digit, the
# other 60 in the 15 I digits:
#   PPPPPPPP-PPPP-8PPH-9HHH-HHHHHHHHHHHH
# Deterministic (reruns and foreign keys agree with no lookup table) and reversible
# (emrsim_migration.legacy_id(uuid) reads the id back) for every SQLite integer.
MAX_LEGACY_ID = 10**15 - 1
_LOW_60 = (1 << 60) - 1
# Epoch values beyond year 9999 are errors, not timestamps.
_MAX_EPOCH_MS = 253_402_300_799_999


def uuid_prefix(table: str) -> str:
    digest = hashlib.sha256(f"emrsim:{table}".encode()).hexdigest()
    return f"{digest[0:8]}-{digest[8:12]}-8{digest[12:15]}-8"


def legacy_uuid(table: str, legacy_id: int) -> str:
    """The UUID a legacy id becomes (the scalar twin of the vectorized expression)."""
    if 0 <= legacy_id <= MAX_LEGACY_ID:
        digits = f"{legacy_id:015d}"
        return f"{uuid_prefix(table)}{digits[:3]}-{digits[3:]}"
    bits = legacy_id & ((1 << 64) - 1)
    prefix = uuid_prefix(table)  # "PPPPPPPP-PPPP-8PPP-8"
    low = f"{bits & _LOW_60:015x}"
    return f"{prefix[:17]}{bits >> 60:x}-9{low[:3]}-{low[3:]}"


def legacy_id_of(value: str) -> int:
    digits = value.replace("-", "")
    if digits[16] == "8":
        return int(digits[17:])
    bits = int(digits[15] + digits[17:], 16)
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def _integer(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().str.to_integer(strict=False)


def uuid_bytes(ids: pl.Series, table: str) -> pl.Series:
    """Integer ids (as text) to the 16 bytes of their UUID; null where not a valid id.

    Integer arithmetic, not text: the last 8 bytes are the variant nibble and the id's 15
    decimal digits as nibbles, computed 15 divisions at a time over the whole batch (3 times
    faster than building hex text and decoding it). Binary COPY sends these bytes as they are:
    PostgreSQL parses no UUID text."""
    number = ids.to_frame().select(_integer(pl.col(ids.name))).to_series()
    valid = number.is_not_null()
    readable = ((number >= 0) & (number <= MAX_LEGACY_ID)).fill_null(False).to_numpy()
    raw = number.fill_null(0).to_numpy().astype(np.int64)
    digits = np.where(readable, raw, 0).astype(np.uint64)
    low = np.full(len(digits), _UUID_VARIANT, np.uint64)
    for place in range(15):
        digits, digit = np.divmod(digits, np.uint64(10))
        low |= digit << np.uint64(4 * place)
    out = np.empty((len(low), 16), np.uint8)
    prefix = np.frombuffer(bytes.fromhex(uuid_prefix(table).replace("-", "")[:16]), np.uint8)
    out[:, :8] = prefix
    # Ids outside 0..10^15-1: variant digit 9, the id's 64 bits as hex (see legacy_uuid).
    other = ~readable
    if other.any():
        bits = raw[other].view(np.uint64)
        low[other] = (np.uint64(0x9) << np.uint64(60)) | (bits & np.uint64(_LOW_60))
        out[other, 7] = (prefix[7] & 0xF0) | (bits >> np.uint64(60)).astype(np.uint8)
    out[:, 8:] = low.astype(">u8").view(np.uint8).reshape(-1, 8)
    mask = pa.array(valid.to_numpy(), pa.bool_())
    array = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(low), [mask.buffers()[1], pa.py_buffer(out)]
    )
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)
    return series.alias(ids.name)


# The 17th hex digit of every legacy UUID: the RFC 9562 variant, as the top nibble of the low half.
_UUID_VARIANT = 0x8 << 60


# What PostgreSQL's numeric input takes and returns digit for digit (no Infinity/NaN text).
_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# Only the canonical form converts: uuid output is lower-case with dashes, so any other spelling
# would come back changed.
_CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


# A \uD800-\uDFFF escape that is not half of a pair: SQLite's json_valid() takes it, jsonb
# refuses it, and no UTF-8 string holds it. Escaped backslashes go first (\\ud800 is text).
_SURROGATE = r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"


def _lone_surrogate(text: pl.Expr) -> pl.Expr:
    unpaired = text.str.replace_all(r"\\\\", "").str.replace_all(_PAIR, "")
    return text.str.contains(_SURROGATE) & unpaired.str.contains(_SURROGATE)


def _deep_json_ok(text: str | None) -> bool:
    if text is None or "\\u0000" in text:
        return False

    def parse() -> object:
        return json.loads(text, parse_constant=_no_constant)

    try:
        deep(parse)
    except ValueError:
        return False
    return True


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _localize(naive: pl.Expr, plan: Plan) -> pl.Expr:
    return naive.dt.replace_time_zone(
        str(plan.source_timezone.key), ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


_EPOCH_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}
_EPOCH_NUMBER = r"^\s*(-?\d+)(?:\.(\d*))?\s*$"


def shortest_real(text: pl.Expr) -> pl.Expr:
    """A REAL's text as the shortest decimal that reads back as the same double: SQLite may
    print 17 digits (4.9406564584124654e-324 for 5e-324); a numeric column keeps the double's
    own decimal, as Python's repr prints it."""
    return text.cast(pl.Float64, strict=False).cast(pl.String)


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


def timestamp_expr(expr: pl.Expr, column: Column, plan: Plan) -> pl.Expr:
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


def timestamps(values: pl.Series, column: Column, plan: Plan) -> pl.Series:
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


def with_parsed_times(frame: pl.DataFrame, table: Table, plan: Plan) -> pl.DataFrame:
    """`frame` with each timestamp column parsed once, beside it as PARSED + its name: the
    month filter, both proofs and the conversion of a batch read it instead of parsing again
    (each parse of 2 M messages' text costs about 1 CPU-s)."""
    return frame.with_columns(
        timestamps(frame.get_column(c.name), c, plan).alias(PARSED + c.name)
        for c in table.columns
        if c.convert == "timestamp"
    )


def parsed_timestamps(frame: pl.DataFrame, column: Column, plan: Plan) -> pl.Series:
    """`column`'s timestamps: parsed already (with_parsed_times), or now."""
    if PARSED + column.name in frame.columns:
        return frame.get_column(PARSED + column.name).alias(column.name)
    return timestamps(frame.get_column(column.name), column, plan)


def month_start(stamps: pl.Series) -> pl.Series:
    """The first day of each timestamp's month: the partition the row belongs to."""
    return stamps.dt.truncate("1mo").dt.date()


def column_values(frame: pl.DataFrame, column: Column, table: Table, plan: Plan) -> pl.Series:
    """`column`'s target values for a batch (null where a value does not convert)."""
    return _convert_column(frame, column, table, plan).value


@dataclass(frozen=True)
class _Column:
    value: pl.Series
    invalid: pl.Series  # true where a present source value does not convert
    reason: str


def _convert_column(frame: pl.DataFrame, column: Column, table: Table, plan: Plan) -> _Column:
    raw = frame.get_column(column.name)
    present = raw.is_not_null()

    def over(expr: pl.Expr) -> pl.Series:
        return frame.select(expr.alias(column.name)).to_series()

    kind = column.convert
    if kind in ("legacy_id", "ref"):
        target = table.name if kind == "legacy_id" else str(column.references)
        value = uuid_bytes(raw, target)
        reason = "is not an integer id"
        return _Column(value, present & value.is_null(), reason)
    if kind == "timestamp":
        value = parsed_timestamps(frame, column, plan)
        what = (
            f"epoch {column.epoch} (within years 1 to 9999, at most to the microsecond)"
            if column.epoch
            else "text timestamp (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][Z|±HH:MM], to the microsecond)"
        )
        return _Column(value, present & value.is_null(), f"is not a valid {what}")
    if kind == "date":
        # Exactly a date: a time or spaces after it would be dropped in silence.
        text = pl.col(column.name)
        value = over(
            pl.when(text.str.contains(r"^\d{4}-\d{2}-\d{2}$")).then(
                text.str.to_date("%Y-%m-%d", strict=False)
            )
        )
        return _Column(value, present & value.is_null(), "is not a date (YYYY-MM-DD)")
    if kind == "json":
        # PostgreSQL's jsonb refuses \u0000 and a lone surrogate, which SQLite's json_valid()
        # takes. Validity otherwise: json_valid(), read beside a quarantine column; a failing
        # column leaves it to jsonb input, which names the row.
        never = over(
            pl.col(column.name).str.contains("\\u0000", literal=True)
            | _lone_surrogate(pl.col(column.name))
        ).fill_null(False)
        bad = never
        if json_ok(column.name) in frame.columns:
            refused = over(pl.col(json_ok(column.name)) != 1).fill_null(False) & ~never
            if refused.any():
                # SQLite's json_valid() stops at 1,000 levels; jsonb takes deeper values. Those
                # it refused are parsed again (the rare rows only), without a depth limit.
                index = refused.arg_true()
                again = [_deep_json_ok(raw[int(i)]) for i in index]
                refused = refused.scatter(index, [not ok for ok in again])
            bad = never | refused
        return _Column(raw, present & bad, "is not valid JSON for jsonb")
    if kind == "boolean":
        lowered = pl.col(column.name).str.strip_chars().str.to_lowercase()
        value = over(
            pl.when(lowered.is_in(["1", "true", "t"]))
            .then(True)
            .when(lowered.is_in(["0", "false", "f"]))
            .then(False)
        )
        return _Column(value, present & value.is_null(), "is not a boolean (0 or 1)")
    if kind == "integer":
        value = over(_integer(pl.col(column.name)))
        return _Column(value, present & value.is_null(), "is not an integer")
    if kind == "real":
        value = over(pl.col(column.name).cast(pl.Float64, strict=False))
        # An INTEGER-class value must come back as itself: past 2^53 a double skips integers
        # (1152921504606846977 would arrive as ...976).
        whole = over(_integer(pl.col(column.name)))
        inexact = whole.is_not_null() & (value.cast(pl.Int64, strict=False).ne_missing(whole))
        if inexact.any():
            return _Column(
                value,
                present & (value.is_null() | inexact),
                "is an integer no double holds exactly (it would arrive changed); "
                "convert: integer or numeric keeps it",
            )
        return _Column(value, present & value.is_null(), "is not a number")
    if kind == "numeric":
        text = pl.col(column.name).str.strip_chars()
        position = next(i for i, c in enumerate(table.columns) if c is column)
        if class_column(position) in frame.columns:
            text = pl.when(class_digit(position) == 1).then(shortest_real(text)).otherwise(text)
        ok = over(text.str.contains(_DECIMAL))
        return _Column(over(text), present & ~ok.fill_null(False), "is not a decimal number")
    if kind == "blob":
        value = over(pl.col(column.name).str.decode("hex", strict=False))
        return _Column(value, present & value.is_null(), "is not a blob")
    if kind == "uuid":
        ok = over(pl.col(column.name).str.contains(_CANONICAL_UUID))
        value = over(
            pl.when(ok).then(
                pl.col(column.name).str.replace_all("-", "", literal=True).str.decode("hex")
            )
        )
        return _Column(value, present & ~ok.fill_null(False), "is not a canonical lower-case UUID")
    # text
    bad = raw.str.contains("\x00", literal=True)
    reason = "contains a NUL byte, which PostgreSQL text cannot hold"
    if column.max_length is not None:
        bad = bad | (raw.str.len_chars() > column.max_length)
        reason = f"contains a NUL byte or is longer than {column.max_length} characters"
    return _Column(raw, bad.fill_null(False), reason)


# The storage classes (digits of batch.STORAGE_CLASSES) whose values each kind keeps with what
# the proof compares: a value of another class would arrive changed in kind (the integer 5 as
# the text '5'), which content_matches_source finds only after the load. The load refuses it at
# once instead, naming the row, or quarantines it. `any_class: true` on a text or blob column
# takes every class as its text or bytes.
_CLASSES_KEPT: dict[str, tuple[int, ...]] = {
    "legacy_id": (0,),
    "ref": (0,),
    "integer": (0,),
    "boolean": (0,),
    "real": (0, 1),
    "numeric": (0, 1, 2),
    "blob": (3,),
}


def _stored_otherwise(
    frame: pl.DataFrame, column: Column, table: Table
) -> list[tuple[pl.Series, str]]:
    """Rows whose value SQLite stored in a class this column's kind does not keep, per class,
    and why; none where every class is kept (or the batch was read without its classes)."""
    position = next(i for i, c in enumerate(table.columns) if c is column)
    if column.any_class or class_column(position) not in frame.columns:
        return []
    kind = column.convert
    if kind == "timestamp":
        kept: tuple[int, ...] = (0, 1, 2) if column.epoch else (2,)
    else:
        kept = _CLASSES_KEPT.get(kind, (2,))
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
        converted = _convert_column(frame, column, table, plan)
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
