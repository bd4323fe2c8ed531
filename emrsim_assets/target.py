"""The PostgreSQL side: staging tables from the plan, and COPY loads that replace them atomically."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pgpq
import polars as pl
import psycopg
import pyarrow as pa
from pgpq import encoders
from pgpq import schema as pgpq_schema

if TYPE_CHECKING:
    from pgpq._pgpq import EncoderBuilder
from psycopg import sql

from emrsim_assets.batch import ROWID
from emrsim_assets.convert import QUARANTINE_SCHEMA, Converted
from emrsim_assets.errors import ConversionError, TargetError
from emrsim_assets.kinds import kind_of
from emrsim_assets.plan import Column, Index, Table
from emrsim_assets.plan.model import TEXT_TYPE
from emrsim_assets.plan.names import MAX_NAME, fit
from emrsim_assets.progress import Progress, Report, log_progress
from emrsim_assets.rules import composed
from emrsim_assets.schemas import MIGRATION, STAGING, UNPARTITIONED, Conn
from emrsim_assets.times import next_month

log = logging.getLogger(__name__)


_MIGRATION_DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(MIGRATION)),
    # One row per loaded table or month: which snapshot it came from, and how many rows.
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.loads (
            table_name text NOT NULL,
            partition_key text NOT NULL,
            snapshot_sha256 text NOT NULL,
            source_rows bigint NOT NULL,
            loaded_rows bigint NOT NULL,
            quarantined_rows bigint NOT NULL,
            seconds double precision NOT NULL,
            loaded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, partition_key))"""
    ).format(sql.Identifier(MIGRATION)),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.quarantine (
            table_name text NOT NULL,
            partition_key text NOT NULL,
            row_id bigint NOT NULL,
            column_name text NOT NULL,
            reason text NOT NULL,
            value text,
            snapshot_sha256 text NOT NULL,
            quarantined_at timestamptz NOT NULL DEFAULT now())"""
    ).format(sql.Identifier(MIGRATION)),
    # The source side of content_matches_source, summed by the load that read it (content.py).
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.content_digest (
            table_name text NOT NULL,
            partition_key text NOT NULL,
            snapshot_sha256 text NOT NULL,
            plan_fingerprint text NOT NULL,
            source_rows bigint NOT NULL,
            sums bytea NOT NULL,
            PRIMARY KEY (table_name, partition_key))"""
    ).format(sql.Identifier(MIGRATION)),
    # Pass one of values_look_alike, summed by the load that read the rows (anomalies.py).
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.time_profile (
            table_name text NOT NULL,
            partition_key text NOT NULL,
            snapshot_sha256 text NOT NULL,
            plan_fingerprint text NOT NULL,
            counts jsonb NOT NULL,
            PRIMARY KEY (table_name, partition_key))"""
    ).format(sql.Identifier(MIGRATION)),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.cutovers (
            id bigserial PRIMARY KEY,
            action text NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            snapshot_sha256 text,
            backup_schema text,
            row_counts jsonb NOT NULL DEFAULT '{{}}')"""
    ).format(sql.Identifier(MIGRATION)),
    # Trace any migrated row back to SQLite: SELECT emrsim_migration.legacy_id(id) FROM emrsim.users.
    sql.SQL(
        """CREATE OR REPLACE FUNCTION {}.legacy_id(u uuid) RETURNS bigint
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $$ SELECT CASE WHEN substr(h, 17, 1) = '8' THEN substr(h, 18)::bigint
                        ELSE ('x' || substr(h, 16, 1) || substr(h, 18))::bit(64)::bigint END
                 FROM (SELECT replace(u::text, '-', '') AS h) AS hex $$"""
    ).format(sql.Identifier(MIGRATION)),
]


def ensure_migration_schema(conn: Conn) -> None:
    with conn.transaction():
        # Serialize concurrent first runs: CREATE ... IF NOT EXISTS is not race-free.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('emrsim_migration.ddl'))")
        for statement in _MIGRATION_DDL:
            conn.execute(statement)


def partition_name(table: Table, month: date) -> str:
    return f"{table.name}_y{month.year:04d}m{month.month:02d}"


def _column_defs(table: Table, loading: bool = False) -> sql.Composed:
    """Column definitions. `loading`: the COPY's own table, where a numeric column is text until
    the data is in (binary COPY has no encoder for numeric; PostgreSQL's input parses it once)."""
    defs = []
    for column in table.columns:
        pg_type = "text" if loading and kind_of(column).loads_as_text else column.pg_type
        parts = [sql.Identifier(column.name), type_sql(pg_type)]
        if column.identity:
            parts.append(sql.SQL("GENERATED BY DEFAULT AS IDENTITY"))
        if not column.nullable:
            parts.append(sql.SQL("NOT NULL"))
        default = column_default(column)
        if default is not None:
            parts.append(sql.SQL("DEFAULT {}").format(default))
        defs.append(sql.SQL(" ").join(parts))
    if table.search is not None:
        # The search SQLite's FTS table gave: computed by PostgreSQL from the row, never loaded.
        document = sql.SQL(" || ' ' || ").join(
            sql.SQL("coalesce({}, '')").format(sql.Identifier(c)) for c in table.search.columns
        )
        defs.append(
            sql.SQL(
                "{} tsvector GENERATED ALWAYS AS (to_tsvector({}::regconfig, {})) STORED"
            ).format(sql.Identifier(table.search.name), sql.Literal(table.search.config), document)
        )
    return sql.SQL(", ").join(defs)


# Every PostgreSQL type, index method and operator class a plan can name, as SQL: none comes
# from a plan's text (test_plan_and_convert proves these cover the plan's vocabulary).
TYPES = {
    "uuid": sql.SQL("uuid"),
    "timestamptz": sql.SQL("timestamptz"),
    "date": sql.SQL("date"),
    "jsonb": sql.SQL("jsonb"),
    "boolean": sql.SQL("boolean"),
    "bigint": sql.SQL("bigint"),
    "double precision": sql.SQL("double precision"),
    "numeric": sql.SQL("numeric"),
    "bytea": sql.SQL("bytea"),
    "text": sql.SQL("text"),
}
METHODS = {"btree": sql.SQL("btree"), "gin": sql.SQL("gin")}
OPERATOR_CLASSES = {
    "jsonb_ops": sql.SQL("jsonb_ops"),
    "jsonb_path_ops": sql.SQL("jsonb_path_ops"),
    "text_pattern_ops": sql.SQL("text_pattern_ops"),
    "varchar_pattern_ops": sql.SQL("varchar_pattern_ops"),
    "gin_trgm_ops": sql.SQL("gin_trgm_ops"),
}


def type_sql(pg_type: str) -> sql.Composable:
    """`pg_type` (one of the plan's types, or varchar(n)) as SQL."""
    match = TEXT_TYPE.match(pg_type)
    if match and match.group(2):
        return sql.SQL("varchar({})").format(sql.Literal(int(match.group(2))))
    return TYPES[pg_type]


def column_default(column: Column) -> sql.Composable | None:
    """What the app gets when it inserts without the column: the source's default, and a new
    random uuid for a key that was an AUTOINCREMENT id (the plan's gen_random_uuid())."""
    if column.default == "now()":
        return sql.SQL("now()")
    if column.default is not None:
        return sql.SQL("{}::{}").format(sql.Literal(column.default), type_sql(column.pg_type))
    if column.convert == "legacy_id":
        return sql.SQL("gen_random_uuid()")
    return None


def _numeric_types(conn: Conn, table: Table, target: sql.Composable) -> None:
    """The loading table's numeric columns, text during COPY, become numeric (one rewrite)."""
    numeric = [c for c in table.columns if kind_of(c).loads_as_text]
    if not numeric:
        return
    try:
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                target,
                sql.SQL(", ").join(
                    sql.SQL("ALTER COLUMN {} TYPE numeric USING {}::numeric").format(
                        sql.Identifier(c.name), sql.Identifier(c.name)
                    )
                    for c in numeric
                ),
            )
        )
    except psycopg.errors.DataError as exc:
        raise ConversionError(
            f"{table.name}: PostgreSQL refused a numeric value: {exc.diag.message_primary}."
        ) from None


def primary_key_columns(table: Table) -> list[str]:
    # A partitioned table's primary key must contain the partition column.
    keys = list(table.primary_key)
    if keys and table.partition_by_month and table.partition_by_month not in keys:
        keys.append(table.partition_by_month)
    return keys


def _primary_key(table: Table) -> sql.Composable:
    keys = primary_key_columns(table)
    if not keys:
        return sql.SQL("")
    return sql.SQL(", PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in keys))


def ensure_staging_schema(conn: Conn) -> None:
    """The staging schema, created once. The lock that makes a first creation race-free lasts
    until the caller's transaction ends (a whole table's load): taken only when the schema is
    missing, so that loads of different tables do not wait for each other."""
    if schema_exists(conn, STAGING):
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('emrsim_staging.ddl'))")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STAGING)))


def plan_fingerprint(table: Table) -> str:
    """Identifies the plan's definition of a table: months loaded under another one can't attach."""
    shape = (
        table.columns,
        table.primary_key,
        table.indexes,
        table.partition_by_month,
        table.search,
    )
    return "emrsim-plan:" + hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


def ensure_partitioned_parent(conn: Conn, table: Table, schema: str = STAGING) -> None:
    """The partitioned table and its indexes: a month attached later brings its own copies.

    A staging table left by another plan (not partitioned, or other columns) is dropped with
    its months and their ledger entries: they are reloaded under this plan."""
    fingerprint = plan_fingerprint(table)
    row = conn.execute(
        "SELECT c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table.name),
    ).fetchone()
    if row is not None and row == ("p", fingerprint):
        return
    if row is not None:
        conn.execute(
            sql.SQL("DROP TABLE {}.{} CASCADE").format(
                sql.Identifier(schema), sql.Identifier(table.name)
            )
        )
    forget_loads(conn, table.name)
    conn.execute(
        sql.SQL("CREATE TABLE {}.{} ({}{}) PARTITION BY RANGE ({})").format(
            sql.Identifier(schema),
            sql.Identifier(table.name),
            _column_defs(table),
            _primary_key(table),
            sql.Identifier(str(table.partition_by_month)),
        )
    )
    for index in table.indexes:
        conn.execute(_create_index(schema, table, table.name, index.name, index))
    conn.execute(
        sql.SQL("COMMENT ON TABLE {}.{} IS {}").format(
            sql.Identifier(schema), sql.Identifier(table.name), sql.Literal(fingerprint)
        )
    )


def forget_loads(conn: Conn, table: str, keep: str | None = None) -> None:
    """Drop the ledger, quarantine, digest and profile entries of `table` (but those of partition key `keep`):
    what an earlier plan loaded is no longer there to check."""
    for ledger in ("loads", "quarantine", "content_digest", "time_profile"):
        conn.execute(
            sql.SQL(
                "DELETE FROM {}.{} WHERE table_name = %s AND partition_key IS DISTINCT FROM %s"
            ).format(sql.Identifier(MIGRATION), sql.Identifier(ledger)),
            (table, keep),
        )


def key_part(table: Table, column: str, unique: bool) -> sql.Composable:
    """A column as a unique index compares it: as written, or, for a NOCASE column, its ASCII
    letters in lower case (lower() under the C collation folds ASCII only, as SQLite's NOCASE
    does; an ICU collation would fold every script, and the embedded server has no ICU)."""
    name = sql.Identifier(column)
    if unique and table.column(column).collation == "nocase":
        return sql.SQL('(lower({} COLLATE "C"))').format(name)
    return name


def nocase_key(table: Table, keys: list[str]) -> bool:
    return any(table.column(k).collation == "nocase" for k in keys)


def _create_index(
    schema: str, table: Table, table_name: str, name: str, index: Index
) -> sql.Composed:
    columns = {c.name for c in table.columns}
    opclass = OPERATOR_CLASSES[index.opclass] if index.opclass else sql.SQL("")
    keys = [
        sql.SQL("{} {}").format(key_part(table, c, index.unique), opclass) for c in index.columns
    ] + [
        sql.SQL("({}) {}").format(composed(f"index {index.name}", e, columns), opclass)
        for e in index.expressions
    ]
    predicate = (
        sql.SQL(" WHERE {}").format(composed(f"index {index.name}", index.where, columns))
        if index.where is not None
        else sql.SQL("")
    )
    return sql.SQL("CREATE {}INDEX {} ON {}.{} USING {} ({}){}").format(
        sql.SQL("UNIQUE " if index.unique else ""),
        sql.Identifier(name),
        sql.Identifier(schema),
        sql.Identifier(table_name),
        METHODS[index.method],
        sql.SQL(", ").join(keys),
        predicate,
    )


def ensure_extensions(conn: Conn, table: Table) -> None:
    """pg_trgm, where the plan indexes `table` with gin_trgm_ops (once; one sentence if the
    target's user may not create it)."""
    if not any(i.opclass == "gin_trgm_ops" for i in table.indexes):
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('emrsim_migration.ddl'))")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TargetError(
            f"{table.name}: the plan's gin_trgm_ops index needs the pg_trgm extension, and "
            f"{exc.diag.message_primary}; ask the database's owner to run CREATE EXTENSION "
            "pg_trgm once, or drop the index from the plan."
        ) from None


def _generate(conn: Conn, table: Table, target: sql.Composable) -> None:
    """Generated columns, loaded with SQLite's values: each expression must give the loaded
    value on every row (rows where it does not are named), then the column is made PostgreSQL's
    own GENERATED ALWAYS AS (...) STORED (it moves to the end of the table)."""
    others = {c.name for c in table.columns}
    for column in table.columns:
        if column.generated is None:
            continue
        expression = composed(f"generated {column.name}", column.generated, others - {column.name})
        name = sql.Identifier(column.name)
        differ = conn.execute(
            sql.SQL("SELECT {}, {}, {} FROM {} WHERE {} IS DISTINCT FROM ({}) LIMIT 3").format(
                sql.SQL(", ").join(sql.Identifier(k) for k in table.primary_key)
                if table.primary_key
                else sql.SQL("ctid::text"),
                name,
                expression,
                target,
                name,
                expression,
            )
        ).fetchall()
        if differ:
            shown = "; ".join(
                f"key {r[:-2]}: SQLite {r[-2]!r}, PostgreSQL {r[-1]!r}" for r in differ
            )
            raise ConversionError(
                f"{table.name}.{column.name}: the generated expression {column.generated} "
                f"gives other values than SQLite's ({shown}); write it by hand in the plan, or "
                "drop generated (the column then keeps SQLite's values as data)."
            )
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} DROP COLUMN {}, ADD COLUMN {} {} GENERATED ALWAYS AS ({}) STORED{}"
            ).format(
                target,
                name,
                name,
                type_sql(column.pg_type),
                expression,
                sql.SQL("" if column.nullable else " NOT NULL"),
            )
        )


def _build_keys(conn: Conn, table: Table, name: str, building: str | None = None) -> None:
    """Primary key and indexes of staging table `name`, built after the data is in (far faster
    than row by row). With `building`, they go on that table, named for `name` + `_LOADING`."""
    on = building or name
    target = sql.SQL("{}.{}").format(sql.Identifier(STAGING), sql.Identifier(on))
    try:
        keys = primary_key_columns(table)
        if keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                    target,
                    sql.Identifier(_loading(pkey_name(name)) if building else pkey_name(name)),
                    sql.SQL(", ").join(sql.Identifier(c) for c in keys),
                )
            )
        if keys and nocase_key(table, keys):
            # The key as SQLite compares it: NOCASE letters without case, beside the key.
            nocase = fit(f"{name}_nocase_key", MAX_NAME)
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
                    sql.Identifier(_loading(nocase) if building else nocase),
                    target,
                    sql.SQL(", ").join(key_part(table, c, True) for c in keys),
                )
            )
        for index in table.indexes:
            named = index_name(table, name, index)
            conn.execute(
                _create_index(STAGING, table, on, _loading(named) if building else named, index)
            )
        if table.search is not None:
            searched = fit(f"{name}_{table.search.name}", MAX_NAME)
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} USING gin ({})").format(
                    sql.Identifier(_loading(searched) if building else searched),
                    target,
                    sql.Identifier(table.search.name),
                )
            )
        _add_checks(conn, table, target)
    except psycopg.errors.UniqueViolation as exc:
        constraint = str(exc.diag.constraint_name or "")
        columns = tuple(keys)
        for index in table.indexes:
            if constraint in (
                index_name(table, name, index),
                _loading(index_name(table, name, index)),
            ):
                columns = index.columns
        raise KeyCollision(
            f"{table.name}: two source rows convert to the same unique key "
            f"({exc.diag.message_detail}).",
            columns,
        ) from None


def _add_checks(conn: Conn, table: Table, target: sql.Composable) -> None:
    """The app's CHECK constraints, on the loaded rows: PostgreSQL validates every row as it adds
    each one, so a row that breaks a rule stops the load, named by its key."""
    columns = {c.name for c in table.columns}
    for rule in table.checks:
        expression = composed(rule.name, rule.postgres, columns)
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(
                        target, sql.Identifier(rule.name), expression
                    )
                )
        except psycopg.errors.CheckViolation:
            keys = list(table.primary_key) or [c.name for c in table.columns[:2]]
            rows = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE NOT ({}) LIMIT 3").format(
                    sql.SQL(", ").join(sql.Identifier(k) for k in keys), target, expression
                )
            ).fetchall()
            shown = "; ".join(
                ", ".join(f"{k}={v!r}" for k, v in zip(keys, row, strict=True)) for row in rows
            )
            raise ConversionError(
                f"{table.name}: rows break the app's rule {rule.name} "
                f"(CHECK ({rule.sqlite or rule.postgres})): {shown}. SQLite does not check a rule "
                "added after the rows; fix them in the source, or list the rule under skip."
            ) from None


class KeyCollision(ConversionError):
    """Rows distinct in SQLite that meet in a unique key of PostgreSQL: `columns` say which key
    (the load names the rows and values, see pipeline.named_collisions)."""

    def __init__(self, message: str, columns: tuple[str, ...]) -> None:
        super().__init__(message)
        self.columns = columns


def index_name(table: Table, pg_table: str, index: Index) -> str:
    # A month's copy of a plan index is named after the month's table (one name per schema).
    return index.name if pg_table == table.name else fit(f"{pg_table}_{index.name}", MAX_NAME)


def pkey_name(pg_table: str) -> str:
    """PostgreSQL's own name for a key, kept within 63 bytes without meeting its table's name
    (a 63-byte partition's `<name>_pkey` would be cut back to the partition's own name)."""
    return fit(f"{pg_table}_pkey", MAX_NAME)


def _loading(name: str) -> str:
    """The name of a month's table or index while it loads, within 63 bytes and apart from
    `name` (PostgreSQL would cut a longer one back, to `name` itself at 63)."""
    return fit(f"{name}{_LOADING}", MAX_NAME - 1)  # 62: its array type "_<name>" stays whole


def create_month_partition(conn: Conn, table: Table, month: date, schema: str = STAGING) -> str:
    name = partition_name(table, month)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} PARTITION OF {}.{} FOR VALUES FROM ({}) TO ({})"
        ).format(
            sql.Identifier(schema),
            sql.Identifier(name),
            sql.Identifier(schema),
            sql.Identifier(table.name),
            *_bounds(month),
        )
    )
    return name


@dataclass(frozen=True)
class LoadStats:
    table: str
    partition_key: str
    source_rows: int
    loaded_rows: int
    quarantined_rows: int
    seconds: float
    copy_bytes: int
    pg_table: str

    @property
    def rows_per_second(self) -> float:
        return self.source_rows / self.seconds if self.seconds > 0 else 0.0


Loaded = Callable[["Conn", str], None]  # (the load's connection, partition key)


def load_table(
    conn: Conn,
    table: Table,
    batches: Iterable[Converted],
    snapshot_sha: str,
    progress: Report = log_progress,
    expected_rows: int | None = None,
    on_loaded: Loaded | None = None,
) -> LoadStats:
    """Replace the staging table with `batches`, in one transaction: a crash keeps the old one.
    `on_loaded` runs in that transaction once every batch is in (the content digest)."""
    ensure_migration_schema(conn)
    ensure_extensions(conn, table)
    started = time.perf_counter()
    with conn.transaction():
        ensure_staging_schema(conn)
        target = sql.SQL("{}.{}").format(sql.Identifier(STAGING), sql.Identifier(table.name))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(target))
        forget_loads(conn, table.name, keep=UNPARTITIONED)
        conn.execute(
            sql.SQL("CREATE TABLE {} ({})").format(target, _column_defs(table, loading=True))
        )
        counts = _copy(
            conn, table, target, batches, snapshot_sha, UNPARTITIONED, progress, expected_rows
        )
        _numeric_types(conn, table, target)
        _generate(conn, table, target)
        _build_keys(conn, table, table.name)
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        if on_loaded is not None:
            on_loaded(conn, UNPARTITIONED)
        stats = _record(conn, table, UNPARTITIONED, snapshot_sha, counts, started, table.name)
    return stats


def prepare_partitioned(conn: Conn, table: Table) -> None:
    """Schemas and the partitioned parent, once, before months load in parallel."""
    ensure_migration_schema(conn)
    ensure_extensions(conn, table)
    with conn.transaction():
        ensure_staging_schema(conn)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('emrsim_staging.parent'))")
        ensure_partitioned_parent(conn, table)


def load_month(
    conn: Conn,
    table: Table,
    month: date,
    batches: Iterable[Converted],
    snapshot_sha: str,
    progress: Report = log_progress,
    expected_rows: int | None = None,
    on_loaded: Loaded | None = None,
) -> LoadStats:
    """Replace exactly one month of a partitioned table, in one transaction.

    The month is loaded and indexed as a table of its own, then swapped in for the old partition
    and attached. Only that last step locks the parent, for milliseconds, so months load in
    parallel."""
    started = time.perf_counter()
    key = month.isoformat()
    name = partition_name(table, month)
    fresh = _loading(name)
    staging = sql.Identifier(STAGING)
    with conn.transaction():
        # Two loads of the same month (two runs) take turns; different months do not wait.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{STAGING}.{name}",))
        target = sql.SQL("{}.{}").format(staging, sql.Identifier(fresh))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}) {}").format(
                target, _column_defs(table, loading=True), _storage_options(table)
            )
        )
        counts = _copy(conn, table, target, batches, snapshot_sha, key, progress, expected_rows)
        _numeric_types(conn, table, target)
        _build_keys(conn, table, name, building=fresh)
        # Statistics now, while the month is in cache and in parallel with other months; they
        # stay with the table through ATTACH and cutover's schema rename.
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        # A CHECK that implies the partition bound lets ATTACH skip its validating scan.
        low, high = _bounds(month)
        column = sql.Identifier(str(table.partition_by_month))
        bound = sql.Identifier(fit(f"{fresh}_bound", MAX_NAME))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                target, bound, column, low, column, high
            )
        )
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(staging, sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, sql.Identifier(name)))
        renames = [pkey_name(name)] if primary_key_columns(table) else []  # none without a key
        renames += [index_name(table, name, i) for i in table.indexes]
        for index in renames:
            conn.execute(
                sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                    staging, sql.Identifier(_loading(index)), sql.Identifier(index)
                )
            )
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} ATTACH PARTITION {}.{} FOR VALUES FROM ({}) TO ({})").format(
                staging, sql.Identifier(table.name), staging, sql.Identifier(name), low, high
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                staging, sql.Identifier(name), bound
            )
        )
        if on_loaded is not None:
            on_loaded(conn, key)
        stats = _record(conn, table, key, snapshot_sha, counts, started, name)
    return stats


_LOADING = "__loading"
_ENCODE_ROWS = 8192


def _bounds(month: date) -> tuple[sql.Literal, sql.Literal]:
    return (
        sql.Literal(f"{month.isoformat()} 00:00:00+00"),
        sql.Literal(f"{next_month(month).isoformat()} 00:00:00+00"),
    )


def storage_parameters(table: Table) -> sql.Composable:
    """The plan's autovacuum settings as `name = 'value', ...`: names from the plan's list of
    PostgreSQL parameters, quoted as identifiers; values as string literals (what a storage
    parameter takes, whatever its type)."""
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(_parameter_text(v)))
        for k, v in table.autovacuum.items()
    )


def _parameter_text(value: float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _storage_options(table: Table) -> sql.Composable:
    if not table.autovacuum:
        return sql.SQL("")
    return sql.SQL("WITH ({})").format(storage_parameters(table))


@dataclass
class _Counts:
    source: int = 0
    loaded: int = 0
    quarantined: int = 0
    copy_bytes: int = 0


def _copy(
    conn: Conn,
    table: Table,
    target: sql.Composable,
    batches: Iterable[Converted],
    snapshot_sha: str,
    partition_key: str,
    progress: Report,
    expected_rows: int | None,
) -> _Counts:
    counts = _Counts()
    quarantined: list[pl.DataFrame] = []  # written after the main COPY: one COPY at a time
    spans: list[tuple[int, Sequence[int]]] = []  # (first line, row ids) of the batches sent
    conn.execute(
        sql.SQL("DELETE FROM {}.quarantine WHERE table_name = %s AND partition_key = %s").format(
            sql.Identifier(MIGRATION)
        ),
        (table.name, partition_key),
    )
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    # FREEZE: the table was created in this transaction, so rows can be written frozen and
    # all-visible; the first scan (index builds, checks) then has no hint bits to set and write.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(target, columns)
    schema = arrow_schema(table)
    encoder = _encoder(table, schema)
    started = time.perf_counter()
    last_report = started
    label = table.name if not partition_key else f"{table.name} {partition_key[:7]}"
    try:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            header = encoder.write_header()
            copy.write(header)
            counts.copy_bytes += len(header)
            for batch in batches:
                rows = batch.rows.drop(ROWID).to_arrow(compat_level=pl.CompatLevel.newest())
                spans.append((counts.loaded + 1, _row_ids(batch.rows[ROWID])))
                # Encoded in slices of a few MB, sent as views: no large buffer is copied, and
                # none grows the allocator's heap past what one slice needs.
                for record_batch in rows.cast(schema).to_batches(max_chunksize=_ENCODE_ROWS):
                    data = encoder.write_batch(record_batch)
                    copy.write(memoryview(data))
                    counts.copy_bytes += len(data)
                counts.source += batch.source_rows
                counts.loaded += batch.rows.height
                if batch.quarantined.height:
                    counts.quarantined += batch.quarantined.height
                    quarantined.append(batch.quarantined)
                del batch, rows  # before the next batch is read, not after
                now = time.perf_counter()
                # Months are reported by the partitioned load as each is done (pipeline.py).
                if now - last_report >= 5 and partition_key == UNPARTITIONED:
                    last_report = now
                    progress(Progress(label, counts.source, expected_rows, now - started))
            # The encoder buffers small batches: what is left goes out here.
            tail = encoder.finish()
            copy.write(tail)
            counts.copy_bytes += len(tail)
    except psycopg.errors.DataError as exc:
        raise _copy_error(table, exc, spans) from None
    except psycopg.errors.IntegrityError as exc:
        raise _copy_error(table, exc, spans) from None
    except psycopg.OperationalError as exc:
        # A value beyond a server limit (class 54: JSON nested past the stack depth, say):
        # named by its row as well. Anything else (a lost connection) is not about a value.
        if not (exc.sqlstate or "").startswith("54"):
            raise
        raise _copy_error(table, exc, spans) from None
    if quarantined:
        _quarantine(conn, table, partition_key, snapshot_sha, pl.concat(quarantined))
    return counts


# Target column types as Arrow types: pgpq encodes each into PostgreSQL's binary COPY format.
def arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, kind_of(c).arrow) for c in table.columns])


def _encoder(table: Table, schema: pa.Schema) -> pgpq.ArrowToPostgresBinaryEncoder:
    builders: dict[str, EncoderBuilder] = {}
    for column in table.columns:
        field = schema.field(column.name)
        if column.convert == "json":
            builders[column.name] = encoders.StringViewEncoderBuilder.new_with_output(
                field, pgpq_schema.Jsonb()
            )
        else:
            builders[column.name] = pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(field)
    return pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(schema, builders)


def _row_ids(column: pl.Series) -> Sequence[int]:
    """A batch's row ids, kept to name the row PostgreSQL refuses, in memory of their own.

    Never the column itself: it is a view into the Arrow batch the driver returned, which stays
    alive, message text and all, while anything references it (135 MB held per 400,000-row
    month). Ids in rowid order without gaps, the usual batch, need no more than a range."""
    if column.is_empty():
        return range(0)
    first, last = int(column[0]), int(column[-1])
    if last - first + 1 == column.len():
        return range(first, last + 1)
    ids = array("q")
    ids.frombytes(column.cast(pl.Int64).to_numpy().tobytes())
    return ids


def _copy_error(
    table: Table, exc: psycopg.Error, spans: list[tuple[int, Sequence[int]]]
) -> ConversionError:
    """Turn PostgreSQL's 'COPY t, line N, column c' into the source row id."""
    context = exc.diag.context or ""
    # COPY's own context line: a type's input function may add one of its own before it
    # ("JSON data, line 1: ..."), whose line is not the row's.
    copy_line = re.search(r"^COPY [^\n]*$", context, re.MULTILINE)
    where = copy_line.group(0) if copy_line else ""
    line_match = re.search(r", line (\d+)", where)
    column_match = re.search(r", column (\w+)", where)
    column = column_match.group(1) if column_match else "?"
    row_id: object = "?"
    if line_match:
        line = int(line_match.group(1))
        for first, ids in reversed(spans):
            if line >= first:
                if line - first < len(ids):
                    row_id = int(ids[line - first])
                break
    return ConversionError(
        f"{table.name}.{column}: row id {row_id}: PostgreSQL refused the value: "
        f"{exc.diag.message_primary}. Fix the source row, or set on_invalid: quarantine on this "
        "column in the plan."
    )


def _quarantine(
    conn: Conn,
    table: Table,
    partition_key: str,
    snapshot_sha: str,
    rows: pl.DataFrame,
) -> None:
    statement = sql.SQL(
        "COPY {}.quarantine (table_name, partition_key, row_id, column_name, reason, value, "
        "snapshot_sha256) FROM STDIN (FORMAT csv)"
    ).format(sql.Identifier(MIGRATION))
    frame = rows.select(
        pl.lit(table.name).alias("table_name"),
        pl.lit(partition_key).alias("partition_key"),
        *QUARANTINE_SCHEMA,
        pl.lit(snapshot_sha).alias("snapshot_sha256"),
    )
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(buffer.getbuffer())


def _record(
    conn: Conn,
    table: Table,
    partition_key: str,
    snapshot_sha: str,
    counts: _Counts,
    started: float,
    pg_table: str,
) -> LoadStats:
    seconds = time.perf_counter() - started
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.loads (table_name, partition_key, snapshot_sha256, source_rows,
                   loaded_rows, quarantined_rows, seconds)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (table_name, partition_key) DO UPDATE SET
                   snapshot_sha256 = EXCLUDED.snapshot_sha256, source_rows = EXCLUDED.source_rows,
                   loaded_rows = EXCLUDED.loaded_rows, quarantined_rows = EXCLUDED.quarantined_rows,
                   seconds = EXCLUDED.seconds, loaded_at = now()"""
        ).format(sql.Identifier(MIGRATION)),
        (
            table.name,
            partition_key,
            snapshot_sha,
            counts.source,
            counts.loaded,
            counts.quarantined,
            seconds,
        ),
    )
    return LoadStats(
        table=table.name,
        partition_key=partition_key,
        source_rows=counts.source,
        loaded_rows=counts.loaded,
        quarantined_rows=counts.quarantined,
        seconds=seconds,
        copy_bytes=counts.copy_bytes,
        pg_table=f"{STAGING}.{pg_table}",
    )


@dataclass(frozen=True)
class Load:
    table: str
    partition_key: str
    snapshot_sha256: str
    source_rows: int
    loaded_rows: int
    quarantined_rows: int


def loads(conn: Conn) -> list[Load]:
    rows = conn.execute(
        sql.SQL(
            "SELECT table_name, partition_key, snapshot_sha256, source_rows, loaded_rows, "
            "quarantined_rows FROM {}.loads ORDER BY 1, 2"
        ).format(sql.Identifier(MIGRATION))
    ).fetchall()
    return [Load(*row) for row in rows]  # type: ignore[arg-type]


def schema_exists(conn: Conn, schema: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        is not None
    )


def table_exists(conn: Conn, schema: str, name: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, name)
        ).fetchone()
        is not None
    )


def iter_months(first: date, last: date) -> Iterator[date]:
    month = first
    while month <= last:
        yield month
        month = next_month(month)
