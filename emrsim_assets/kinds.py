"""The conversion kinds, in one table: for each, the PostgreSQL type it makes, the Arrow type it
is loaded as, the SQLite storage classes it keeps, how it is read from SQLite, its vectorized
Polars conversion, how the content check reads it back, and what the proof does not count as
a difference. A plan's `convert` names one of them; adding a kind is adding one entry here
(pgloader's cast-rule table and dlt's type mapping are the models).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl
import pyarrow as pa
from psycopg import sql

from emrsim_assets.batch import ColumnLike, PlanLike, TableLike, class_column, class_digit, json_ok
from emrsim_assets.deep import deep
from emrsim_assets.legacy_ids import integers, uuid_bytes
from emrsim_assets.times import parsed_timestamps

# SQLite's storage classes as the digits batch.STORAGE_CLASSES orders them.
INTEGER, REAL, TEXT, BLOB = 0, 1, 2, 3


@dataclass(frozen=True)
class Conversion:
    """One column of one batch, converted."""

    value: pl.Series
    invalid: pl.Series  # true where a present source value does not convert
    reason: str  # why, in the words of a refusal ("is not an integer")


Convert = Callable[[pl.DataFrame, ColumnLike, TableLike, PlanLike], Conversion]


@dataclass(frozen=True)
class Kind:
    name: str
    pg_type: str  # the PostgreSQL type (text: or the plan's varchar(n))
    arrow: pa.DataType  # what the batch is encoded as for binary COPY
    keeps: tuple[int, ...]  # the storage classes whose values arrive as the proof compares them
    convert: Convert
    takes: str  # what the source holds (for the plan reference)
    notes: str = ""
    # How SQLite gives the value (a SELECT expression around the quoted source column).
    read: Callable[[str], str] = lambda quoted: f"CAST({quoted} AS TEXT)"
    # The storage class of what `read` gives, where it is not the source value's own.
    read_class: int | None = None
    # How the content check reads the target value back into its source form, as a token: SQL
    # around the column, or None where the token is made in Polars (content.target_tokens).
    read_back: Callable[[sql.Composable], sql.Composable] | None = None
    # The source form the proof compares in: another kind's where this one stores another's.
    compares_as: str = ""
    normalization: str = ""  # what the proof does not count as a difference
    time: bool = False  # a time value: anomalies are looked for, now() is a default
    # Whether a plan's literal `default:` is a value of this kind (None: no default at all).
    takes_default: Callable[[object], bool] | None = None
    loads_as_text: bool = False  # COPYed as text and cast by PostgreSQL (no binary encoder)

    @property
    def family(self) -> str:
        return self.compares_as or self.name


def _over(frame: pl.DataFrame, column: ColumnLike, expr: pl.Expr) -> pl.Series:
    return frame.select(expr.alias(column.name)).to_series()


def _position(table: TableLike, column: ColumnLike) -> int:
    return next(i for i, c in enumerate(table.columns) if c is column)


# --- the conversions, one per kind -------------------------------------------------------------


def _legacy_id(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    raw = frame.get_column(column.name)
    owner = table.name if column.convert == "legacy_id" else str(column.references)
    value = uuid_bytes(raw, owner)
    return Conversion(value, raw.is_not_null() & value.is_null(), "is not an integer id")


def _timestamp(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    value = parsed_timestamps(frame, column, plan)
    what = (
        f"epoch {column.epoch} (within years 1 to 9999, at most to the microsecond)"
        if column.epoch
        else "text timestamp (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][Z|±HH:MM], to the microsecond)"
    )
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & value.is_null(), f"is not a valid {what}")


def _date(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    # Exactly a date: a time or spaces after it would be dropped in silence.
    text = pl.col(column.name)
    value = _over(
        frame,
        column,
        pl.when(text.str.contains(r"^\d{4}-\d{2}-\d{2}$")).then(
            text.str.to_date("%Y-%m-%d", strict=False)
        ),
    )
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & value.is_null(), "is not a date (YYYY-MM-DD)")


# A \uD800-\uDFFF escape that is not half of a pair: SQLite's json_valid() takes it, jsonb
# refuses it, and no UTF-8 string holds it. Escaped backslashes go first (\\ud800 is text).
_SURROGATE = r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"


def lone_surrogate(text: pl.Expr) -> pl.Expr:
    unpaired = text.str.replace_all(r"\\\\", "").str.replace_all(_PAIR, "")
    return text.str.contains(_SURROGATE) & unpaired.str.contains(_SURROGATE)


def jsonb_accepts(text: str) -> bool:
    """Whether PostgreSQL's jsonb takes `text`: JSON without NaN or Infinity, \\u0000 or a lone
    surrogate, nested as deep as it may be."""
    if "\\u0000" in text or _lone_surrogate_text(text):
        return False
    try:
        json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        return _deep_json_ok(text)
    except ValueError:
        return False
    return True


def _lone_surrogate_text(text: str) -> bool:
    """lone_surrogate, for one Python string."""
    unpaired = re.sub(_PAIR, "", text.replace("\\\\", ""))
    return re.search(_SURROGATE, unpaired) is not None


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


def _json(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    # PostgreSQL's jsonb refuses \u0000 and a lone surrogate, which SQLite's json_valid() takes.
    # Validity otherwise: json_valid(), read beside a quarantine column; a failing column
    # leaves it to jsonb input, which names the row.
    raw = frame.get_column(column.name)
    never = raw.str.contains("\\u0000", literal=True).fill_null(False)
    # The full surrogate check (two rewrites of the text) only where an escape of one appears.
    escaped = raw.str.contains(_SURROGATE).fill_null(False)
    if escaped.any():
        index = escaped.arg_true()
        lone = raw.gather(index).to_frame().select(lone_surrogate(pl.col(column.name)))
        never = never | escaped.scatter(index, lone.to_series().fill_null(False))
    bad = never
    if json_ok(column.name) in frame.columns:
        refused = _over(frame, column, pl.col(json_ok(column.name)) != 1).fill_null(False) & ~never
        if refused.any():
            # SQLite's json_valid() stops at 1,000 levels; jsonb takes deeper values. Those it
            # refused are parsed again (the rare rows only), without a depth limit.
            index = refused.arg_true()
            again = [_deep_json_ok(raw[int(i)]) for i in index]
            refused = refused.scatter(index, [not ok for ok in again])
        bad = never | refused
    return Conversion(raw, raw.is_not_null() & bad, "is not valid JSON for jsonb")


def _boolean(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    lowered = pl.col(column.name).str.strip_chars().str.to_lowercase()
    value = _over(
        frame,
        column,
        pl.when(lowered.is_in(["1", "true", "t"]))
        .then(True)
        .when(lowered.is_in(["0", "false", "f"]))
        .then(False),
    )
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & value.is_null(), "is not a boolean (0 or 1)")


def _integer(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    value = _over(frame, column, integers(pl.col(column.name)))
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & value.is_null(), "is not an integer")


def _real(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    value = _over(frame, column, pl.col(column.name).cast(pl.Float64, strict=False))
    present = frame.get_column(column.name).is_not_null()
    # An INTEGER-class value must come back as itself: past 2^53 a double skips integers
    # (1152921504606846977 would arrive as ...976).
    whole = _over(frame, column, integers(pl.col(column.name)))
    inexact = whole.is_not_null() & (value.cast(pl.Int64, strict=False).ne_missing(whole))
    if inexact.any():
        return Conversion(
            value,
            present & (value.is_null() | inexact),
            "is an integer no double holds exactly (it would arrive changed); "
            "convert: integer or numeric keeps it",
        )
    return Conversion(value, present & value.is_null(), "is not a number")


# What PostgreSQL's numeric input takes and returns digit for digit (no Infinity/NaN text).
_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def shortest_real(text: pl.Expr) -> pl.Expr:
    """A REAL's text as the shortest decimal that reads back as the same double: SQLite may
    print 17 digits (4.9406564584124654e-324 for 5e-324); a numeric column keeps the double's
    own decimal, as Python's repr prints it."""
    return text.cast(pl.Float64, strict=False).cast(pl.String)


def _numeric(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    text = pl.col(column.name).str.strip_chars()
    position = _position(table, column)
    if class_column(position) in frame.columns:
        text = pl.when(class_digit(position) == REAL).then(shortest_real(text)).otherwise(text)
    ok = _over(frame, column, text.str.contains(_DECIMAL))
    present = frame.get_column(column.name).is_not_null()
    return Conversion(
        _over(frame, column, text), present & ~ok.fill_null(False), "is not a decimal number"
    )


def _blob(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    value = _over(frame, column, pl.col(column.name).str.decode("hex", strict=False))
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & value.is_null(), "is not a blob")


# Only the canonical form converts: uuid output is lower-case with dashes, so any other spelling
# would come back changed.
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _uuid(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    ok = _over(frame, column, pl.col(column.name).str.contains(CANONICAL_UUID))
    value = _over(
        frame,
        column,
        pl.when(ok).then(
            pl.col(column.name).str.replace_all("-", "", literal=True).str.decode("hex")
        ),
    )
    present = frame.get_column(column.name).is_not_null()
    return Conversion(value, present & ~ok.fill_null(False), "is not a canonical lower-case UUID")


_HEX_UUID = r"^[0-9a-f]{32}$"


def _uuid_hex(
    frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike
) -> Conversion:
    ok = _over(frame, column, pl.col(column.name).str.contains(_HEX_UUID))
    value = _over(frame, column, pl.when(ok).then(pl.col(column.name).str.decode("hex")))
    present = frame.get_column(column.name).is_not_null()
    return Conversion(
        value, present & ~ok.fill_null(False), "is not 32 lower-case hex digits (a UUID)"
    )


def _text(frame: pl.DataFrame, column: ColumnLike, table: TableLike, plan: PlanLike) -> Conversion:
    raw = frame.get_column(column.name)
    bad = raw.str.contains("\x00", literal=True)
    reason = "contains a NUL byte, which PostgreSQL text cannot hold"
    if column.max_length is not None:
        bad = bad | (raw.str.len_chars() > column.max_length)
        reason = f"contains a NUL byte or is longer than {column.max_length} characters"
    return Conversion(raw, bad.fill_null(False), reason)


# --- literal defaults a plan may give -------------------------------------------------------------


def _is_text(value: object) -> bool:
    return isinstance(value, str) and "\x00" not in value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bigint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_decimal(value: object) -> bool:
    return _is_number(value) or (isinstance(value, str) and bool(re.match(_DECIMAL, value)))


def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(re.match(CANONICAL_UUID, value))


def _is_hex_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(re.match(_HEX_UUID, value))


def _is_json(value: object) -> bool:
    return isinstance(value, str) and jsonb_accepts(value)


_DATE_TEXT = r"^\d{4}-\d{2}-\d{2}$"
_TIMESTAMP_TEXT = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?$"


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or not re.match(_DATE_TEXT, value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or not re.match(_TIMESTAMP_TEXT, value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return False
    return True


# --- the table ---------------------------------------------------------------------------------


def _token(prefix: str, form: str) -> Callable[[sql.Composable], sql.Composable]:
    return lambda name: sql.SQL(f"'{prefix}:' || {form}").format(name)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "text",
            "text",
            pa.string_view(),
            (TEXT,),
            _text,
            takes_default=_is_text,
            takes="text",
            notes="length (`type: varchar(n)`) and NUL bytes checked",
            read_back=None,
        ),
        Kind(
            "integer",
            "bigint",
            pa.int64(),
            (INTEGER,),
            _integer,
            takes_default=_is_bigint,
            takes="integer",
            notes="`identity: true` on an integer key: the app's next insert gets max + 1 (not "
            "on a partitioned table)",
            read_back=_token("i", "{}::text"),
        ),
        Kind(
            "real",
            "double precision",
            pa.float64(),
            (INTEGER, REAL),
            _real,
            takes_default=_is_number,
            takes="REAL (or INTEGER)",
            notes="SQLite's text of a REAL round-trips; an integer no double holds is refused",
            read_back=_token("r", "{}::text"),
            normalization="an INTEGER-class value in a real column equals the same double",
        ),
        Kind(
            "numeric",
            "numeric",
            pa.string_view(),
            (INTEGER, REAL, TEXT),
            _numeric,
            takes_default=_is_decimal,
            takes="NUMERIC/DECIMAL",
            notes="integers past 2^53 and decimals exactly; a REAL as its shortest decimal",
            read_back=_token("n", "{}::text"),
            normalization="numbers equal as decimals (1.50 = 1.5, 1e2 = 100)",
            loads_as_text=True,
        ),
        Kind(
            "blob",
            "bytea",
            pa.binary(),
            (BLOB,),
            _blob,
            takes="BLOB",
            notes="read as hex: every byte, NULs and non-UTF-8 included",
            read=lambda quoted: f"iif({quoted} IS NULL, NULL, hex({quoted}))",
            read_back=_token("b", "upper(encode({}, 'hex'))"),
        ),
        Kind(
            "uuid",
            "uuid",
            pa.binary(16),
            (TEXT,),
            _uuid,
            takes_default=_is_uuid,
            takes="canonical UUID text",
            notes="lower-case with dashes only: any other spelling would come back changed",
            read_back=_token("t", "{}::text"),
        ),
        Kind(
            "uuid_hex",
            "uuid",
            pa.binary(16),
            (TEXT,),
            _uuid_hex,
            takes_default=_is_hex_uuid,
            takes="32 lower-case hex digits (Django's and SQLAlchemy's UUIDs)",
            notes="read back without dashes, so the app's own spelling returns",
            read_back=_token("t", "replace({}::text, '-', '')"),
        ),
        Kind(
            "legacy_id",
            "uuid",
            pa.binary(16),
            (INTEGER,),
            _legacy_id,
            takes="integer key",
            notes="deterministic, reversible (`emrsim_migration.legacy_id(u)`) for every 64-bit "
            "id (0 to 10^15-1 readable as decimal digits in the UUID); default "
            "`gen_random_uuid()` for new rows",
            read_back=None,
        ),
        Kind(
            "ref",
            "uuid",
            pa.binary(16),
            (INTEGER,),
            _legacy_id,
            takes="integer reference",
            notes="the `legacy_id` uuid of the row it references",
            compares_as="legacy_id",
        ),
        Kind(
            "timestamp",
            "timestamptz",
            pa.timestamp("us", tz="UTC"),
            (TEXT,),  # epochs: INTEGER, REAL or TEXT (see classes_kept)
            _timestamp,
            takes_default=_is_timestamp,
            takes="text, or `epoch: s \\| ms \\| us`",
            notes="`YYYY-MM-DD HH:MM[:SS[.ffffff]]`, `T`, `Z`, `±HH:MM`, at most to the "
            "microsecond; epochs whole or fractional, exactly",
            read_back=None,
            normalization="text forms of the same instant are equal (as the plan's "
            "source_timezone reads naive text); epochs compare as instants in the plan's unit",
            time=True,
        ),
        Kind(
            "date",
            "date",
            pa.date32(),
            (TEXT,),
            _date,
            takes_default=_is_date,
            takes="`YYYY-MM-DD`",
            read_back=_token("t", "to_char({}, 'YYYY-MM-DD')"),
            time=True,
        ),
        Kind(
            "json",
            "jsonb",
            pa.string_view(),  # Polars' own string layout: handed over without a copy
            (TEXT,),
            _json,
            takes_default=_is_json,
            takes="JSON text",
            notes="PostgreSQL's jsonb input judges validity",
            read_back=_token("t", "{}::text"),
            normalization="object key order, whitespace and number spelling (1e2 = 100 = "
            "100.0) do not count; a duplicate key does (jsonb keeps the last value only)",
        ),
        Kind(
            "boolean",
            "boolean",
            pa.bool_(),
            (INTEGER,),
            _boolean,
            takes_default=lambda value: isinstance(value, bool),
            takes="0/1",
            read_back=_token("i", "{}::int::text"),
            normalization="0 and 1 are false and true",
        ),
        Kind(
            "storage_class",
            "text",
            pa.string_view(),
            (TEXT,),
            _text,
            takes="any column (its `source`)",
            notes="SQLite's `typeof()`: beside an `any_class` column in a key, keeps `6`, "
            "`'6'` and `x'36'` three keys",
            read=lambda quoted: f"typeof({quoted})",
            read_class=TEXT,
            compares_as="text",
        ),
    )
}
NAMES = tuple(KINDS)
ANY_CLASS = "in a text or blob column with any_class: true, a value of another storage class "
ANY_CLASS += "equals its text as SQLite prints it (as bytes, in a blob column)"


def kind_of(column: ColumnLike) -> Kind:
    return KINDS[column.convert]


def classes_kept(column: ColumnLike) -> tuple[int, ...]:
    """The storage classes this column takes: its kind's, an epoch's numbers too, or every one
    where the plan says any_class."""
    if column.any_class:
        return (INTEGER, REAL, TEXT, BLOB)
    if column.convert == "timestamp" and column.epoch:
        return (INTEGER, REAL, TEXT)
    return kind_of(column).keeps


def normalizations() -> dict[str, str]:
    """What the content check does not count as a difference, per kind (and any_class)."""
    found = {k.name: k.normalization for k in KINDS.values() if k.normalization}
    return {**found, "any_class": ANY_CLASS}


def markdown_table() -> str:
    """The plan reference's table of kinds, made from this registry."""
    lines = ["| `convert` | source | PostgreSQL | notes |", "|---|---|---|---|"]
    for kind in KINDS.values():
        pg = "`text` or `type: varchar(n)`" if kind.name == "text" else f"`{kind.pg_type}`"
        lines.append(f"| `{kind.name}` | {kind.takes} | {pg} | {kind.notes} |")
    return "\n".join(lines) + "\n"
