"""values_look_alike: time values that convert, and would be wrong without a word.

A round trip cannot see these: an epoch in seconds inside a milliseconds column converts to a
1970 instant and reads back as the same number. So the check makes two passes over the
snapshot's timestamp and date columns (and the key): one for what is usual (the most common
number of digits of an epoch, the years), one for the values that are not:
  - an epoch with 3 or more digits more or fewer than the column's usual count (1,000 times
    off: seconds in a milliseconds column), or negative (before 1970);
  - a year outside 1 to 9999 (a wide spread of years is no anomaly: a facilities table may
    hold dates from 1850 to today);
  - a naive local time that is ambiguous (it happens twice when clocks go back) or does not
    exist (skipped when they go forward) in the plan's source_timezone.
Each is named by table, column, row and key. A column whose plan says `anomalies: accept` keeps
them in the check's metadata without failing it.

Pass one is a Profile: counts, which add up over any split of the rows. The load sums it from
the rows it reads anyway (as it sums content.Digest) and saves it beside what it loaded; the
check then reads the snapshot only for pass two, when there is something to name. Without a
profile of every row for this snapshot and plan, the check makes pass one itself.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from psycopg import sql

from emrsim_assets import kinds, times
from emrsim_assets.batch import ROWID
from emrsim_assets.content import fingerprint
from emrsim_assets.plan import Column, Plan, Table
from emrsim_assets.schemas import MIGRATION, UNPARTITIONED, Conn
from emrsim_assets.snapshot import Manifest
from emrsim_assets.source import read_batches

ANOMALIES_SHOWN = 20
DIGITS_OFF = 3
YEARS = (1, 9999)  # what a calendar date can be: a year outside is a typo or a unit gone wrong


@dataclass(frozen=True)
class Anomaly:
    column: str
    row_id: int
    key: str
    value: str
    reason: str


def time_columns(table: Table) -> list[Column]:
    return [c for c in table.columns if kinds.kind_of(c).time]


def _naive_text(value: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(naive datetime or null, whether the text carries its own offset)."""
    text = value.str.strip_chars().str.replace("T", " ", literal=True)
    has_offset = text.str.contains(r"([zZ]|[+-]\d\d:?\d\d)$")
    # Every naive form the load takes (times.timestamp_expr), the date alone included: its
    # midnight may happen twice (America/Havana's clocks go back at 01:00 to 00:00).
    naive = pl.coalesce(
        text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d %H:%M", strict=False, time_unit="us"),
        text.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )
    return naive, has_offset


_FIXED = {"UTC", "UCT", "GMT", "Zulu", "Universal", "Greenwich"}


def _fixed_offset(zone: str) -> bool:
    """A zone whose clocks never change (UTC and its aliases, Etc/GMT+n)."""
    name = zone.removeprefix("Etc/")
    return name in _FIXED or name.startswith(("GMT+", "GMT-"))


def _measures(frame: pl.DataFrame, column: Column, plan: Plan) -> pl.DataFrame:
    """Per row: digits of an epoch's whole part (or null), the year (or null), and flags."""
    value = pl.col(column.name)
    if column.convert == "date":
        year = value.str.strip_chars().str.slice(0, 10).str.to_date(strict=False).dt.year()
        return frame.select(
            pl.col(ROWID),
            value.alias("value"),
            pl.lit(None, pl.Int64).alias("digits"),
            pl.lit(False).alias("negative"),
            year.cast(pl.Int64).alias("year"),
            pl.lit(False).alias("ambiguous"),
            pl.lit(False).alias("missing_hour"),
        )
    stamps = times.parsed_timestamps(frame, column, plan)
    if column.epoch:
        whole = value.str.extract(r"^\s*-?(\d+)", 1)
        digits = whole.str.len_chars().cast(pl.Int64)
        negative = value.str.strip_chars().str.starts_with("-")
        ambiguous = missing = pl.lit(False)
    elif _fixed_offset(str(plan.source_timezone.key)):
        # No clock change in this zone: no local time is ambiguous or missing (and parsing the
        # text again for it was most of this check's cost).
        digits = pl.lit(None, pl.Int64)
        negative = ambiguous = missing = pl.lit(False)
    else:
        digits = pl.lit(None, pl.Int64)
        negative = pl.lit(False)
        zone = str(plan.source_timezone.key)
        naive, has_offset = _naive_text(value)
        earliest = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
        latest = naive.dt.replace_time_zone(zone, ambiguous="latest", non_existent="null")
        local = ~has_offset & naive.is_not_null()
        ambiguous = local & earliest.is_not_null() & (earliest != latest)
        missing = local & earliest.is_null()
    return frame.with_columns(stamps.alias("__stamp")).select(
        pl.col(ROWID),
        value.alias("value"),
        digits.alias("digits"),
        negative.fill_null(False).alias("negative"),
        pl.col("__stamp").dt.year().cast(pl.Int64).alias("year"),
        ambiguous.fill_null(False).alias("ambiguous"),
        missing.fill_null(False).alias("missing_hour"),
    )


@dataclass
class Profile:
    """Pass one over some rows: per time column, how many digits its epochs have and which
    years its values fall in, and how many of its values are flagged (negative, ambiguous or
    missing local time)."""

    digits: dict[str, Counter[int]] = field(default_factory=dict)
    years: dict[str, Counter[int]] = field(default_factory=dict)
    flagged: Counter[str] = field(default_factory=Counter)
    rows: int = 0

    def add(self, frame: pl.DataFrame, table: Table, plan: Plan) -> None:
        for column in time_columns(table):
            measured = _measures(frame, column, plan)
            for name, counters in (("digits", self.digits), ("year", self.years)):
                counter = counters.setdefault(column.name, Counter())
                for value, count in measured[name].drop_nulls().value_counts().iter_rows():
                    counter[int(value)] += int(count)
            flags = pl.col("negative") | pl.col("ambiguous") | pl.col("missing_hour")
            self.flagged[column.name] += int(measured.select(flags.sum()).item())
        self.rows += frame.height

    def merge(self, other: Profile) -> None:
        for mine, theirs in ((self.digits, other.digits), (self.years, other.years)):
            for name, counter in theirs.items():
                mine.setdefault(name, Counter()).update(counter)
        self.flagged.update(other.flagged)
        self.rows += other.rows

    def save(
        self, conn: Conn, table: Table, partition_key: str, snapshot_sha: str, plan: Plan
    ) -> None:
        """Beside the load, in its transaction, for the snapshot and the plan it was made with."""
        counts = {
            "digits": {n: dict(c) for n, c in self.digits.items()},  # JSON makes keys text
            "years": {n: dict(c) for n, c in self.years.items()},
            "flagged": dict(self.flagged),
            "rows": self.rows,
        }
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.time_profile VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (table_name, partition_key) DO UPDATE SET "
                "snapshot_sha256 = EXCLUDED.snapshot_sha256, "
                "plan_fingerprint = EXCLUDED.plan_fingerprint, counts = EXCLUDED.counts"
            ).format(sql.Identifier(MIGRATION)),
            (table.name, partition_key, snapshot_sha, fingerprint(table, plan), json.dumps(counts)),
        )

    @classmethod
    def stored(cls, conn: Conn, table: Table, manifest: Manifest, plan: Plan) -> Profile | None:
        """The loads' profiles summed, if they cover every row of the snapshot's table (every
        month with rows, and no row outside the months) for this snapshot and plan."""
        if table.partition_by_month:
            if manifest.unplaceable_count:
                return None
            keys = [m for m, n in manifest.month_counts.items() if n]
        else:
            keys = [UNPARTITIONED]
        found = conn.execute(
            sql.SQL(
                "SELECT counts FROM {}.time_profile WHERE table_name = %s AND "
                "partition_key = ANY(%s) AND snapshot_sha256 = %s AND plan_fingerprint = %s"
            ).format(sql.Identifier(MIGRATION)),
            (table.name, keys, manifest.sha256, fingerprint(table, plan)),
        ).fetchall()
        if len(found) != len(keys):
            return None

        def by_number(columns: dict[str, dict[str, int]]) -> dict[str, Counter[int]]:
            return {n: Counter({int(k): v for k, v in c.items()}) for n, c in columns.items()}

        total = cls()
        for (counts,) in found:
            assert isinstance(counts, dict)
            total.merge(
                cls(
                    by_number(counts["digits"]),
                    by_number(counts["years"]),
                    Counter(counts["flagged"]),
                    int(counts["rows"]),
                )
            )
        return total if total.rows == manifest.row_counts.get(table.name) else None


def find_anomalies(
    manifest: Manifest,
    plan: Plan,
    table: Table,
    batch_rows: int,
    profile: Profile | None = None,
) -> tuple[dict[str, list[Anomaly]], dict[str, int]]:
    """Anomalies per column name (at most ANOMALIES_SHOWN each), and how many each column has. With
    `profile` (pass one, summed by the loads), the snapshot is read only to name them."""
    columns = time_columns(table)
    if not columns:
        return {}, {}
    path = Path(manifest.snapshot_path)
    wanted = [c.name for c in columns] + [k for k in table.primary_key]
    if profile is None:
        profile = Profile()
        for frame in read_batches(path, table, batch_rows, columns=wanted):
            profile.add(frame, table, plan)
    digits = {c.name: profile.digits.get(c.name, Counter()) for c in columns}
    years = {c.name: profile.years.get(c.name, Counter()) for c in columns}
    flagged_rows = profile.flagged  # negative, ambiguous or missing: known in pass one
    usual_digits = {n: c.most_common(1)[0][0] for n, c in digits.items() if c}
    found: dict[str, list[Anomaly]] = {c.name: [] for c in columns}
    counted: dict[str, int] = dict.fromkeys(found, 0)
    # The counts of pass one say which columns have anything to name: usually none, and the
    # snapshot is not read again.
    odd = [
        c
        for c in columns
        if flagged_rows[c.name]
        or any(
            abs(d - usual_digits[c.name]) >= DIGITS_OFF
            for d in digits[c.name]
            if c.name in usual_digits
        )
        or any(not YEARS[0] <= y <= YEARS[1] for y in years[c.name])
    ]
    if not odd:
        return {}, counted
    for frame in read_batches(path, table, batch_rows, columns=wanted):
        for column in odd:
            measured = _measures(frame, column, plan)
            reasons = _reasons(column, usual_digits.get(column.name))
            flagged = measured.with_columns(reasons.alias("reason")).filter(
                pl.col("reason").is_not_null()
            )
            counted[column.name] += flagged.height
            room = ANOMALIES_SHOWN - len(found[column.name])
            if flagged.height and room > 0:
                keys = frame.filter(pl.col(ROWID).is_in(flagged[ROWID].to_list()))
                labels = {int(row[ROWID]): _key(table, row) for row in keys.iter_rows(named=True)}
                for row in flagged.head(room).iter_rows(named=True):
                    found[column.name].append(
                        Anomaly(
                            column.name,
                            int(row[ROWID]),
                            labels.get(int(row[ROWID]), ""),
                            str(row["value"]),
                            str(row["reason"]),
                        )
                    )
    return {name: items for name, items in found.items() if counted[name]}, counted


def _reasons(column: Column, usual_digits: int | None) -> pl.Expr:
    reason = (
        pl.when(~pl.col("year").is_between(*YEARS))
        .then(
            pl.lit("year ")
            + pl.col("year").cast(pl.String)
            + pl.lit(f" is outside {YEARS[0]} to {YEARS[1]}")
        )
        .otherwise(pl.lit(None, pl.String))
    )
    if usual_digits is not None:
        reason = (
            pl.when((pl.col("digits") - usual_digits).abs() >= DIGITS_OFF)
            .then(
                pl.col("digits").cast(pl.String)
                + pl.lit(
                    f" digits where the column's epochs ({column.epoch}) have {usual_digits}: "
                    "a unit 1,000 times off?"
                )
            )
            .otherwise(reason)
        )
    return (
        pl.when(pl.col("negative"))
        .then(pl.lit("a negative epoch (before 1970)"))
        .when(pl.col("ambiguous"))
        .then(pl.lit("an ambiguous local time (it happens twice when clocks go back)"))
        .when(pl.col("missing_hour"))
        .then(pl.lit("a local time that does not exist (clocks go forward)"))
        .otherwise(reason)
    )


def _key(table: Table, row: dict[str, Any]) -> str:
    if not table.primary_key:
        return ""
    return ", ".join(f"{k}={row.get(k)}" for k in table.primary_key)


def values_look_alike(
    manifest: Manifest, plan: Plan, table: Table, batch_rows: int, conn: Conn | None = None
) -> tuple[bool, str, dict[str, Any]]:
    """The check's verdict. With `conn`, pass one comes from the loads' profiles if they cover
    every row of this snapshot (Profile.stored)."""
    profile = Profile.stored(conn, table, manifest, plan) if conn is not None else None
    found, counts = find_anomalies(manifest, plan, table, batch_rows, profile)
    metadata: dict[str, Any] = {
        "columns": [c.name for c in time_columns(table)],
        "pass_one": "summed during the load" if profile else "read from the snapshot",
        "anomalies": {name: counts[name] for name in found},
        "examples": [
            {
                "column": a.column,
                "row_id": a.row_id,
                "key": a.key,
                "value": a.value,
                "reason": a.reason,
            }
            for items in found.values()
            for a in items
        ][:ANOMALIES_SHOWN],
    }
    failing = [n for n in found if table.column(n).anomalies != "accept"]
    if not found:
        return True, f"No {table.name} time value stands out from its column.", metadata
    first = found[failing[0] if failing else next(iter(found))][0]
    where = f"row id {first.row_id}" + (f" ({first.key})" if first.key else "")
    sentence = (
        f"{table.name}.{first.column}: {where}: value {first.value!r}: {first.reason}"
        f" ({sum(counts[n] for n in found):,} such value(s) in {', '.join(found)})."
    )
    if not failing:
        return True, "Accepted by the plan (anomalies: accept): " + sentence, metadata
    return (
        False,
        sentence + " Fix the rows, or set anomalies: accept on the column if they are right.",
        metadata,
    )
