"""content_matches_source: every target value, read back into its source form, equals the
snapshot's value, storage class included.

Each value becomes a token on both sides: its SQLite storage class and its text, `i:42`,
`t:hello`, `b:48656C6C6F`, `null`. The target side is read back into the form the source had:
a bytea into hex and a boolean into 0/1 by PostgreSQL, a legacy_id uuid into its integer by
Polars. The only differences that are not differences are NORMALIZATIONS (also in docs/operations.md);
JSON on the source side is printed by PostgreSQL's own jsonb (JsonPrinter). A row's tokens hash to 64 bits;
per table (per month for the partitioned table) the rows are compared as count and sum of
hashes in 1,024 buckets by key. Only buckets that differ are read again, to name the rows: at
most 20, source and target side by side.

Memory is two batches on the source side (one read ahead), one on the target side; no row is
held beyond its batch except in the differing buckets.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import adbc_driver_postgresql.dbapi as adbc_pg
import numpy as np
import polars as pl
from psycopg import sql

from emrsim_assets import kinds, legacy_ids, times
from emrsim_assets.batch import ROWID, class_digit
from emrsim_assets.deep import deep
from emrsim_assets.plan import Column, Plan, Table
from emrsim_assets.schemas import MIGRATION, STAGING, UNPARTITIONED, Conn
from emrsim_assets.snapshot import Manifest
from emrsim_assets.source import BATCH_BYTES, read_batches
from emrsim_assets.times import next_month

T = TypeVar("T")
BUCKETS = 1024
DIFFERENCES_SHOWN = 20
_SEED = 0x5EED
_CLASS_LETTER = ("i", "r", "t", "b", "n")  # SQLite's integer, real, text, blob, null

# What the check does not count as a difference, from the kinds' own words (kinds.py).
NORMALIZATIONS = kinds.normalizations()


@dataclass(frozen=True)
class Difference:
    key: str
    column: str
    source: str
    target: str


@dataclass
class Sums:
    count: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def empty(cls) -> Sums:
        return cls(*(np.zeros(BUCKETS, dtype=np.uint64) for _ in range(3)))

    def add(self, hashed: pl.DataFrame) -> None:
        grouped = hashed.group_by("bucket").agg(
            pl.len().cast(pl.UInt64).alias("n"),
            (pl.col("hash") % (1 << 32)).sum().alias("lo"),
            (pl.col("hash") // (1 << 32)).sum().alias("hi"),
        )
        index = grouped["bucket"].to_numpy()
        with np.errstate(over="ignore"):  # sums compare modulo 2^64
            np.add.at(self.count, index, grouped["n"].to_numpy().astype(np.uint64))
            np.add.at(self.low, index, grouped["lo"].to_numpy().astype(np.uint64))
            np.add.at(self.high, index, grouped["hi"].to_numpy().astype(np.uint64))

    def differing(self, other: Sums) -> list[int]:
        same = (self.count == other.count) & (self.low == other.low) & (self.high == other.high)
        return [int(i) for i in np.flatnonzero(~same)]


@dataclass
class Digest:
    """The source side of the proof, summed while the load reads the snapshot (the same rows,
    read once): per bucket, count and hash sums of the source tokens of every row loaded
    (quarantined rows are not). Saved in the load's transaction, beside what it loaded, for
    the snapshot and the plan's definition of the table it was made with."""

    sums: Sums = field(default_factory=Sums.empty)
    rows: int = 0

    def add(self, hashed: pl.DataFrame) -> None:
        self.sums.add(hashed.select("bucket", "hash"))
        self.rows += hashed.height

    def save(
        self, conn: Conn, table: Table, partition_key: str, snapshot_sha: str, plan: Plan
    ) -> None:
        packed = np.concatenate([self.sums.count, self.sums.low, self.sums.high]).astype("<u8")
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.content_digest VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (table_name, partition_key) DO UPDATE SET "
                "snapshot_sha256 = EXCLUDED.snapshot_sha256, plan_fingerprint = "
                "EXCLUDED.plan_fingerprint, source_rows = EXCLUDED.source_rows, "
                "sums = EXCLUDED.sums"
            ).format(sql.Identifier(MIGRATION)),
            (
                table.name,
                partition_key,
                snapshot_sha,
                fingerprint(table, plan),
                self.rows,
                packed.tobytes(),
            ),
        )

    @classmethod
    def stored(
        cls, conn: Conn, table: Table, partition_key: str, snapshot_sha: str, plan: Plan
    ) -> Digest | None:
        """The load's digest of this table or month, if it was made from this snapshot with
        this plan's definition of the table."""
        row = conn.execute(
            sql.SQL(
                "SELECT source_rows, sums FROM {}.content_digest WHERE table_name = %s AND "
                "partition_key = %s AND snapshot_sha256 = %s AND plan_fingerprint = %s"
            ).format(sql.Identifier(MIGRATION)),
            (table.name, partition_key, snapshot_sha, fingerprint(table, plan)),
        ).fetchone()
        if row is None:
            return None
        raw = row[1]
        assert isinstance(raw, bytes | memoryview)
        packed = np.frombuffer(bytes(raw), dtype="<u8").astype(np.uint64)
        if packed.size != 3 * BUCKETS:
            return None
        count, low, high = (packed[i * BUCKETS : (i + 1) * BUCKETS].copy() for i in range(3))
        return cls(Sums(count, low, high), int(str(row[0])))


def fingerprint(table: Table, plan: Plan) -> str:
    """What the source tokens of `table` depend on: its definition and the plan's time zone."""
    return hashlib.sha256(
        f"{table!r}|{plan.source_timezone}|{BUCKETS}|{_SEED}".encode()
    ).hexdigest()


def source_hashes(
    frame: pl.DataFrame, table: Table, plan: Plan, printer: JsonPrinter
) -> pl.DataFrame:
    """Row id, bucket and hash of each source row of a batch read with storage classes: the
    load's share of the proof (its JSON printed as jsonb first)."""
    json_columns = [c.name for c in table.columns if c.convert == "json"]
    if json_columns:
        position = {c.name: i for i, c in enumerate(table.columns)}
        frame = printer.print_columns(frame, json_columns, position)
    return _hashed(source_tokens(frame, table, plan), table).select(ROWID, "bucket", "hash")


@dataclass(frozen=True)
class Comparison:
    rows: int
    target_rows: int
    differences: list[Difference]
    differing_buckets: int


def _reference_kind(column: Column) -> str:
    """The source form a column compares in: a ref holds the legacy id of the key it points
    at, a storage class is text."""
    return kinds.kind_of(column).family


# --- the source side ---------------------------------------------------------------------------


def _json_number(text: str) -> str:
    """A JSON number as PostgreSQL's numeric prints it (1e2 -> 100, 1.50 -> 1.50, -0 -> 0),
    between two NULs: encoded as a string, its quotes are taken off afterwards (jsonb cannot
    hold a NUL, so no real string looks like this)."""
    try:
        number = Decimal(text)
        printed = format(number, "f")
        if number.is_zero():
            printed = printed.lstrip("-")
    except InvalidOperation:
        printed = text
    return f"\u0000{printed}\u0000"


_NUMBER = re.compile(r'"\\u0000(.*?)\\u0000"')


class _DuplicateKey(ValueError):
    pass


def _jsonb_order(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """jsonb's object: keys by length then bytes, each once (a duplicate is reported: jsonb
    keeps only the last value, so the first would be lost in silence)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    if len(found) < 2:
        return found
    # For ASCII keys, characters are bytes; UTF-8 orders as code points do.
    order = sorted(found, key=_ascii_order if all(k.isascii() for k in found) else _byte_order)
    return {k: found[k] for k in order}


def _ascii_order(key: str) -> tuple[int, str]:
    return len(key), key


def _byte_order(key: str) -> tuple[int, str]:
    return len(key.encode()), key


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


def canonical_json(text: str | None) -> str | None:
    """Source JSON text as PostgreSQL prints the jsonb made of it (key order, spacing, numbers),
    so it compares with the target's text with no parsing there. A duplicate key or invalid JSON
    stays visible (it cannot equal what jsonb holds)."""
    if text is None:
        return None

    def printed() -> str:
        value = json.loads(text, object_pairs_hook=_jsonb_order, parse_float=_json_number)
        out = _ENCODER.encode(value)
        out.encode("utf-8")  # a lone surrogate (\ud800) is no UTF-8, and no jsonb
        return _NUMBER.sub(r"\1", out) if "\\u0000" in out else out

    try:
        try:
            return printed()
        except RecursionError:
            return deep(printed)  # nested past Python's recursion limit: jsonb takes it
    except _DuplicateKey as exc:
        return f"duplicate key {exc.args[0]!r}: {text}"
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return f"not comparable JSON: {text}"


def _decimal_text(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return format(Decimal(text.strip()).normalize(), "f")
    except InvalidOperation:
        return text


def _normalize(kind: str, token: pl.Expr, name: str) -> pl.Expr:
    """The normalizations of `kind`, on tokens (JSON: the source side only; the target's
    jsonb text is already in the form canonical_json prints)."""
    if kind == "real":
        number = token.str.strip_prefix("r:").cast(pl.Float64, strict=False)
        return (
            pl.when(token.str.starts_with("r:") & number.is_not_null())
            .then(pl.lit("r:") + number.cast(pl.String))
            .otherwise(token)
        )
    if kind == "numeric":
        return _mapped(token, "n:", _decimal_text)
    return token.alias(name)  # JSON: printed before the tokens are made (JsonPrinter)


def _mapped(token: pl.Expr, prefix: str, function: Callable[[str], str | None]) -> pl.Expr:
    """Tokens of this prefix with their value passed through `function` (in Python: the
    normalizations no Polars expression does)."""
    value = token.str.strip_prefix(prefix).map_elements(function, return_dtype=pl.String)
    return pl.when(token.str.starts_with(prefix)).then(pl.lit(prefix) + value).otherwise(token)


def source_tokens(frame: pl.DataFrame, table: Table, plan: Plan) -> pl.DataFrame:
    """One token per column from a batch read with storage classes (source.read_batches), its
    JSON already printed as jsonb (JsonPrinter)."""
    exprs = []
    position = {c.name: i for i, c in enumerate(table.columns)}
    # Text timestamps through the load's fast path for SQLite's common format (3 times faster).
    stamped = {
        f"__ts_{c.name}": times.parsed_timestamps(frame, c, plan).dt.epoch("us")
        for c in table.columns
        if c.convert == "timestamp"
    }
    if stamped:
        frame = frame.with_columns(**stamped)
    for column in table.columns:
        digit = class_digit(position[column.name])
        letter = digit.replace_strict(dict(enumerate(_CLASS_LETTER)), return_dtype=pl.String)
        value = pl.col(column.name)
        raw = pl.when(digit == 4).then(pl.lit("null")).otherwise(letter + ":" + value)
        kind = _reference_kind(column)
        if kind in ("real", "numeric"):
            # Numbers the source wrote as INTEGER or REAL compare by value.
            tag = "r:" if kind == "real" else "n:"
            number = pl.when(digit.is_in([0, 1])).then(pl.lit(tag) + value).otherwise(raw)
            if kind == "numeric":
                number = (
                    pl.when(digit == 2)
                    .then(pl.lit("n:") + value)
                    .when(digit == 1)
                    .then(pl.lit("n:") + kinds.shortest_real(value))
                    .otherwise(number)
                )
            exprs.append(_normalize(kind, number, column.name).alias(column.name))
        elif kind == "timestamp":
            # Epochs: numbers, or text that is a plain decimal number (what a number prints
            # as); ' +7 ' is not. Text timestamps: text only.
            allowed = (
                digit.is_in([0, 1]) | ((digit == 2) & value.str.contains(r"^-?\d+(\.\d+)?$"))
                if column.epoch
                else digit == 2
            )
            stamps = pl.col(f"__ts_{column.name}")
            exprs.append(
                pl.when(allowed & stamps.is_not_null())
                .then(pl.lit("ts:") + stamps.cast(pl.String))
                .otherwise(raw)
                .alias(column.name)
            )
        elif kind == "boolean":
            exprs.append(raw.alias(column.name))
        elif column.any_class:
            # The plan keeps every class as text (or bytes): the value compares, not its class.
            tag = "t:" if kind == "text" else "b:"
            kept = pl.when(digit == 4).then(pl.lit("null")).otherwise(pl.lit(tag) + value)
            exprs.append(kept.alias(column.name))
        else:
            exprs.append(_normalize(kind, raw, column.name).alias(column.name))
    return frame.select(pl.col(ROWID), *exprs)


# JSON string literals (escapes included): what is left without them holds one colon per object
# member, so a source text with more members than its jsonb has a duplicate key.
_STRING_LITERAL = r'(?s)"(?:[^"\\]|\\.)*"'


def _members(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(_STRING_LITERAL, "").str.count_matches(":", literal=True)


class JsonPrinter:
    """Source JSON printed as jsonb by PostgreSQL's own parser, a batch at a time (binary COPY
    in, Arrow out): the definition of what jsonb holds, and 5 to 10 times faster than printing
    it in Python. A duplicate key, which jsonb drops in silence, is found by counting members
    on both sides (vectorized); only those values, and any batch the server refuses, are
    printed by canonical_json, which names the key."""

    def __init__(self, url: str | None) -> None:
        self._conn: Any = None
        if url is None:
            return
        try:
            self._conn = adbc_pg.connect(url)
            self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE emrsim_json (r bigint, t text)")
        except adbc_pg.Error:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> JsonPrinter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def print_columns(
        self, frame: pl.DataFrame, names: list[str], position: dict[str, int]
    ) -> pl.DataFrame:
        """`frame` with the text-class values of JSON columns `names` as jsonb prints them."""
        for name in names:
            digit = class_digit(position[name])
            texts = frame.filter(digit == 2).select(
                pl.col(ROWID).alias("r"), pl.col(name).alias("t")
            )
            if texts.is_empty():
                continue
            printed = self._printed(texts)
            frame = (
                frame.join(printed, left_on=ROWID, right_on="r", how="left")
                .with_columns(pl.coalesce("__printed", name).alias(name))
                .drop("__printed")
            )
        return frame

    def _printed(self, texts: pl.DataFrame) -> pl.DataFrame:
        printed = self._by_server(texts)
        if printed is None:
            return texts.select(
                "r",
                pl.col("t").map_elements(canonical_json, return_dtype=pl.String).alias("__printed"),
            )
        # A source with more object members than its jsonb: a key appeared twice. Counted only
        # where a cheaper sign allows it: fewer colons after printing, or escapes (\u003a).
        checked = texts.join(printed, on="r", how="left")
        raw, out = pl.col("t"), pl.col("__printed")
        maybe = (
            out.str.count_matches(":", literal=True) < raw.str.count_matches(":", literal=True)
        ) | raw.str.contains("\\", literal=True)
        lost = checked.filter(maybe).filter(_members(raw) != _members(out))
        if not lost.is_empty():
            named = lost.select(
                "r",
                pl.col("t").map_elements(canonical_json, return_dtype=pl.String).alias("__fixed"),
            )
            checked = checked.join(named, on="r", how="left").with_columns(
                pl.coalesce("__fixed", "__printed").alias("__printed")
            )
        return checked.select("r", "__printed")

    def _by_server(self, texts: pl.DataFrame) -> pl.DataFrame | None:
        if self._conn is None:
            return None
        try:
            with self._conn.cursor() as cur:
                cur.execute("TRUNCATE emrsim_json")
                cur.adbc_ingest("emrsim_json", texts.to_arrow(), mode="append", temporary=True)
                cur.execute("SELECT r, t::jsonb::text AS __printed FROM emrsim_json")
                frame = pl.from_arrow(cur.fetch_arrow_table())
        except adbc_pg.Error:
            return None  # a value jsonb refuses: this batch in Python, which says which
        assert isinstance(frame, pl.DataFrame)
        return frame


# --- the target side ---------------------------------------------------------------------------


# Kinds read back raw, their tokens made in Polars: the server's text output of uuid and
# timestamptz (and a concatenation per value) cost it more than the rest of the read.
def _target_expression(column: Column) -> sql.Composable:
    """The column read back into its source form, as a token (never NULL: 'null'), or as it
    is for the kinds whose tokens target_tokens makes (read_back None)."""
    name = sql.Identifier(column.name)
    read_back = kinds.KINDS[_reference_kind(column)].read_back
    if read_back is None:
        return name
    return sql.SQL("coalesce({}, 'null') AS {}").format(read_back(name), name)


def _target_query(table: Table, month: date | None) -> sql.Composable:
    """The target's tokens: the whole table, or one month of the partitioned one."""
    columns = sql.SQL(", ").join(_target_expression(c) for c in table.columns)
    where: sql.Composable = sql.SQL("")
    if month is not None and table.partition_by_month is not None:
        part = sql.Identifier(table.partition_by_month)
        where = sql.SQL(" WHERE {} >= {} AND {} < {}").format(
            part, sql.Literal(month), part, sql.Literal(next_month(month))
        )
    return sql.SQL("SELECT {} FROM {}.{}{}").format(
        columns, sql.Identifier(STAGING), sql.Identifier(table.name), where
    )


def _target_batches(arrow: Any, query: str) -> Iterator[pl.DataFrame]:
    """`query`'s rows as Arrow record batches (ADBC's PostgreSQL driver reads them with binary
    COPY in C: no Python object per row or value)."""
    with arrow.cursor() as cur:
        # The driver's default, 16 MB a batch, held by both readers at once with its tokens.
        cur.adbc_statement.set_options(
            **{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)}
        )
        cur.execute(query)
        for batch in cur.fetch_record_batch():
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame


def _legacy_id(raw: pl.Expr, table: str) -> pl.Expr:
    """A uuid (16 bytes) back to 'i:<the integer id>', as emrsim_migration.legacy_id() reads it:
    the readable form (variant digit 8, 15 decimal digits) or the 64-bit form (variant 9, hex).
    A uuid outside the table's own prefix becomes 'u:<uuid>', and differs."""
    digits = raw.bin.encode("hex")
    prefix = legacy_ids.uuid_prefix(table).replace("-", "")[:15]
    readable = digits.str.slice(17).str.to_integer(base=10, strict=False)
    wide = (
        (digits.str.slice(15, 1) + digits.str.slice(17))
        .str.to_integer(base=16, dtype=pl.UInt64, strict=False)
        .reinterpret(signed=True)
    )
    variant = digits.str.slice(16, 1)
    value = pl.when(variant == "8").then(readable).when(variant == "9").then(wide)
    ours = (digits.str.slice(0, 15) == prefix) & value.is_not_null()
    spelled = pl.lit("u:") + pl.concat_str(
        [digits.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))],
        separator="-",
    )
    return (
        pl.when(raw.is_null())
        .then(pl.lit("null"))
        .when(ours)
        .then(pl.lit("i:") + value.cast(pl.String))
        .otherwise(spelled)
    )


def target_tokens(frame: pl.DataFrame, table: Table, plan: Plan) -> pl.DataFrame:
    # JSON needs nothing here: the source side is printed as PostgreSQL prints jsonb.
    def read_back(column: Column) -> pl.Expr:
        kind = _reference_kind(column)
        value = pl.col(column.name)
        if kind == "legacy_id":
            owner = table.name if column.convert == "legacy_id" else str(column.references)
            return _legacy_id(value, owner)
        if kind == "timestamp":
            return (pl.lit("ts:") + value.dt.epoch("us").cast(pl.String)).fill_null("null")
        if kind == "text":
            return (pl.lit("t:") + value).fill_null("null")
        if kind == "json":
            return value
        return _normalize(kind, value, column.name)

    return frame.select(read_back(c).alias(c.name) for c in table.columns)


# --- comparing ---------------------------------------------------------------------------------


def _hashed(tokens: pl.DataFrame, table: Table) -> pl.DataFrame:
    """A 64-bit hash per row, and the row's bucket by the hash of its key (a struct's hash
    combines its fields' hashes in order: no value can pass for two others)."""
    names = [c.name for c in table.columns]
    key = list(table.primary_key) or names
    return tokens.with_columns(
        pl.struct(key).hash(_SEED).alias("__key"),
        pl.struct(names).hash(_SEED).alias("hash"),
    ).with_columns((pl.col("__key") % BUCKETS).cast(pl.Int64).alias("bucket"))


def compare(
    source: Callable[[], Iterator[pl.DataFrame]],
    target: Callable[[], Iterator[pl.DataFrame]],
    table: Table,
    loaded: Digest | None = None,
) -> Comparison:
    """Aggregates first; on a difference, the differing buckets read again and diffed by key.
    With `loaded` (the source side as the load summed it), only the target is read first."""
    sums = {"source": Sums.empty(), "target": Sums.empty()}
    counted = {"source": 0, "target": 0}

    def add_up(side: str, batches: Callable[[], Iterator[pl.DataFrame]]) -> None:
        for tokens in batches():
            hashed = _hashed(tokens, table)
            sums[side].add(hashed.select("bucket", "hash"))
            counted[side] += hashed.height

    if loaded is not None:
        sums["source"], counted["source"] = loaded.sums, loaded.rows
        add_up("target", target)
    else:
        # Both sides at once: SQLite and PostgreSQL reads and Polars release the GIL.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="content") as pool:
            for future in [
                pool.submit(add_up, "source", source),
                pool.submit(add_up, "target", target),
            ]:
                future.result()
    buckets = sums["source"].differing(sums["target"])
    if not buckets:
        return Comparison(counted["source"], counted["target"], [], 0)
    if loaded is not None:
        # A difference is always confirmed against the snapshot itself: the digest only
        # spares the second read when everything agrees.
        return compare(source, target, table)
    wanted = buckets[:64]
    kept: dict[str, list[pl.DataFrame]] = {"source": [], "target": []}
    for side, batches in (("source", source), ("target", target)):
        for tokens in batches():
            hashed = _hashed(tokens, table)
            kept[side].append(hashed.filter(pl.col("bucket").is_in(wanted)))
    return Comparison(
        counted["source"],
        counted["target"],
        _differences(pl.concat(kept["source"]), pl.concat(kept["target"]), table),
        len(buckets),
    )


def _differences(source: pl.DataFrame, target: pl.DataFrame, table: Table) -> list[Difference]:
    names = [c.name for c in table.columns]
    # Rows as a multiset: the n-th copy of a row matches the n-th copy on the other side, so
    # a table without a key that lost one of three equal rows shows that one.
    copy = pl.int_range(pl.len()).over("hash").alias("__copy")
    source, target = source.with_columns(copy), target.with_columns(copy)
    only_source = source.join(target.select("hash", "__copy"), on=["hash", "__copy"], how="anti")
    only_target = target.join(source.select("hash", "__copy"), on=["hash", "__copy"], how="anti")
    found: list[Difference] = []
    if not table.primary_key:
        # No key to pair rows by: each side's rows with no equal on the other, the source's by
        # row id, with their values.
        def values(row: dict[str, Any]) -> str:
            return ", ".join(f"{name}={row[name]}" for name in names)

        for row in only_source.head(DIFFERENCES_SHOWN).iter_rows(named=True):
            key = f"row id {row.get(ROWID, '?')}"
            found.append(Difference(key, "(row)", values(row), "no equal row"))
        for row in only_target.head(DIFFERENCES_SHOWN).iter_rows(named=True):
            found.append(Difference("a target row", "(row)", "no equal row", values(row)))
        return found[:DIFFERENCES_SHOWN]
    paired = only_source.join(only_target, on="__key", how="full", suffix="__t", coalesce=True)
    for row in paired.head(DIFFERENCES_SHOWN * 2).iter_rows(named=True):
        key = _key_text(row, table)
        if row.get("hash") is None:
            found.append(Difference(key, "(row)", "absent", "present in the target only"))
        elif row.get("hash__t") is None:
            found.append(Difference(key, "(row)", "present in the source", "absent"))
        else:
            for name in names:
                if row[name] != row[f"{name}__t"]:
                    found.append(Difference(key, name, row[name], row[f"{name}__t"]))
        if len(found) >= DIFFERENCES_SHOWN:
            break
    return found[:DIFFERENCES_SHOWN]


def excerpt(source: str, target: str, width: int = 60) -> tuple[str, str]:
    """Both values around where they first differ (with ... where cut)."""
    same = 0
    for a, b in zip(source, target, strict=False):
        if a != b:
            break
        same += 1
    start = max(0, same - width // 3)

    def cut(text: str) -> str:
        part = text[start : start + width]
        return ("..." if start else "") + part + ("..." if start + width < len(text) else "")

    return cut(source), cut(target)


def _key_text(row: dict[str, Any], table: Table) -> str:
    key = list(table.primary_key)
    if not key:
        return f"row {row.get(ROWID, '?')}"
    parts = []
    for name in key:
        token = row.get(name) or row.get(f"{name}__t") or "null"
        parts.append(f"{name}={token.split(':', 1)[-1] if ':' in token else token}")
    return ", ".join(parts)


# --- the check ---------------------------------------------------------------------------------


def _quarantined_row_ids(conn: Conn, table: Table, partition_key: str) -> list[int]:
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT row_id FROM {}.quarantine WHERE table_name = %s AND partition_key = %s"
        ).format(sql.Identifier(MIGRATION)),
        (table.name, partition_key),
    ).fetchall()
    return [int(str(r[0])) for r in rows if r[0] is not None]


def ahead(batches: Iterator[T]) -> Iterator[T]:
    """`batches`, each made on a thread while the caller works on the one before (SQLite,
    PostgreSQL and Polars release the GIL): at most two in memory. An error is raised here."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: tuple[bool, Any]) -> bool:
        """Hand `item` over, or give up once the consumer has stopped (it may never take it)."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer((True, batch)):
                    return
            offer((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((False, exc))

    worker = threading.Thread(target=produce, name="content-ahead", daemon=True)
    worker.start()
    try:
        while True:
            more, item = slots.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _source_batches(
    manifest: Manifest,
    plan: Plan,
    table: Table,
    month: date | None,
    skip: list[int],
    batch_rows: int,
    printer: JsonPrinter,
) -> Iterator[pl.DataFrame]:
    path = Path(manifest.snapshot_path)
    json_columns = [c.name for c in table.columns if c.convert == "json"]
    position = {c.name: i for i, c in enumerate(table.columns)}
    span = None
    if month is not None:
        span = manifest.month_rowids.get(month.isoformat())
        if span is None:
            return
    for frame in ahead(read_batches(path, table, batch_rows, rowid_range=span, classes=True)):
        if skip:
            frame = frame.filter(~pl.col(ROWID).is_in(skip))
        frame = times.with_parsed_times(frame, table, plan)
        if month is not None and month.isoformat() not in manifest.pure_months:
            column = table.column(str(table.partition_by_month))
            stamps = times.parsed_timestamps(frame, column, plan)
            frame = frame.filter(times.month_start(stamps) == month)
        if json_columns:
            frame = printer.print_columns(frame, json_columns, position)
        yield source_tokens(frame, table, plan)


# Months compared at once, each over its own PostgreSQL connection: the server's COPY out of
# one month (heap, jsonb printed) is slower than the client's hashing of it.
READERS = 2


class _Reader:
    """One reader's connections: ADBC to read the target, and a JSON printer, opened only
    when the snapshot is read too (no digest, or a difference to name)."""

    def __init__(self, url: str, printing: bool) -> None:
        self.arrow = adbc_pg.connect(url)
        self._url = url if printing else None
        self._printer: JsonPrinter | None = None

    def printer(self) -> JsonPrinter:
        if self._printer is None:
            self._printer = JsonPrinter(self._url)
        return self._printer

    def close(self) -> None:
        self.arrow.close()
        if self._printer is not None:
            self._printer.close()


class _Readers:
    """A _Reader per thread of the check's pool, all closed together."""

    def __init__(self, url: str, printing: bool) -> None:
        self._url, self._printing = url, printing
        self._mine = threading.local()
        self._opened: list[_Reader] = []
        self._lock = threading.Lock()

    def get(self) -> _Reader:
        if not hasattr(self._mine, "reader"):
            self._mine.reader = _Reader(self._url, self._printing)
            with self._lock:
                self._opened.append(self._mine.reader)
        reader: _Reader = self._mine.reader
        return reader

    def close(self) -> None:
        for opened in self._opened:
            opened.close()


def content_matches_source(
    conn: Conn,
    url: str,
    plan: Plan,
    table: Table,
    manifest: Manifest,
    months: list[str],
    batch_rows: int,
) -> tuple[bool, str, dict[str, Any]]:
    """The check's verdict: passed, one sentence, metadata (per month when partitioned)."""

    units: list[tuple[str, date | None]]
    if table.partition_by_month:
        with_rows = [m for m in months if manifest.month_counts.get(m, 0) > 0]
        units = [(m, date.fromisoformat(m)) for m in with_rows]
    else:
        units = [(UNPARTITIONED, None)]
    readers = _Readers(url, any(c.convert == "json" for c in table.columns))
    try:
        return _verdict(conn, readers, plan, table, manifest, units, batch_rows)
    finally:
        readers.close()


def _verdict(
    conn: Conn,
    readers: _Readers,
    plan: Plan,
    table: Table,
    manifest: Manifest,
    units: list[tuple[str, date | None]],
    batch_rows: int,
) -> tuple[bool, str, dict[str, Any]]:
    # What each unit needs of the ledger and its query, made here: the readers share no
    # psycopg connection.
    ledger = [
        (
            month,
            _quarantined_row_ids(conn, table, key),
            Digest.stored(conn, table, key, manifest.sha256, plan),
            _target_query(table, month).as_string(conn),
        )
        for key, month in units
    ]

    def one(item: tuple[date | None, list[int], Digest | None, str]) -> Comparison:
        month, skip, loaded, query = item
        reader = readers.get()  # in this pool thread: compare() reads on threads of its own

        def source() -> Iterator[pl.DataFrame]:
            printer = reader.printer()
            return _source_batches(manifest, plan, table, month, skip, batch_rows, printer)

        def target() -> Iterator[pl.DataFrame]:
            return (target_tokens(f, table, plan) for f in _target_batches(reader.arrow, query))

        return compare(source, target, table, loaded)

    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="content") as pool:
        results = list(pool.map(one, ledger))
    compared = 0
    failed: dict[str, dict[str, Any]] = {}
    differences: list[Difference] = []
    per_month: dict[str, int] = {}
    used_digest = sum(loaded is not None for _, _, loaded, _ in ledger)
    for (key, month), result in zip(units, results, strict=True):
        compared += result.rows
        if month is not None:
            per_month[key[:7]] = result.rows
        if result.differing_buckets:
            failed[key[:7] if month is not None else table.name] = {
                "source_rows": result.rows,
                "target_rows": result.target_rows,
            }
            differences.extend(result.differences[: DIFFERENCES_SHOWN - len(differences)])
    metadata: dict[str, Any] = {
        "rows_compared": compared,
        # How the source side was read: summed by the load (same snapshot, same plan), or here.
        "source_side": f"summed during the load ({used_digest} of {len(units)})"
        if used_digest
        else "read from the snapshot",
        "normalizations": {
            k: v
            for k, v in NORMALIZATIONS.items()
            if any(c.convert == k or (k == "any_class" and c.any_class) for c in table.columns)
        },
    }
    if per_month:
        metadata["months"] = per_month
    if not failed:
        return (
            True,
            f"Every value of {compared:,} {table.name} rows equals the snapshot's, read back "
            "into its source form.",
            metadata,
        )
    metadata["differing"] = failed
    metadata["differences"] = [
        {"key": d.key, "column": d.column, "source": d.source[:200], "target": d.target[:200]}
        for d in differences
    ]
    first = differences[0] if differences else None
    where = ""
    if first is not None:
        was, now = excerpt(first.source, first.target)
        where = f"; first: {first.key}, {first.column}: source {was!r}, target {now!r}"

    return (
        False,
        f"{table.name}: values differ from the snapshot in {', '.join(failed)}{where}.",
        metadata,
    )
