"""The app's workload on both sides, after cutover: the same answers, and latency and
throughput compared (the migration's success criteria: the app works, as fast or faster).

A workload file names queries, each in SQLite and PostgreSQL SQL. Reads run with the same
parameters on a copy of the snapshot and on the live schema, and their rows are compared after
the normalizations of values both drivers return differently (a timestamp as text or datetime,
JSON as text or dict, a boolean as 0/1 or bool). Writes run in a transaction that is rolled
back on both sides. Then each side runs the weighted mix from 1 and 3 concurrent clients (and
6), each with its own connection: SQLite in its default journal mode, as the app opens it.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import psycopg
import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlglot import exp

from emrsim_assets import indexes, legacy_ids, recovery
from emrsim_assets.errors import PlanError, WorkloadError
from emrsim_assets.indexes import IndexReview
from emrsim_assets.plan import Plan, Table
from emrsim_assets.plan.model import sqlite_fold
from emrsim_assets.private import private_dir, private_file, write_private
from emrsim_assets.schemas import LIVE, MIGRATION
from emrsim_assets.settings import settings

DRAWS = 25  # parameter draws per query, for answers and latency
CLIENTS = (1, 3, 6)
SECONDS_PER_LEVEL = 2.0
ANSWERS_SHOWN = 5


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(_Spec):
    name: str = Field(min_length=1)
    sqlite: str = Field(min_length=1)  # with :name parameters
    # With %(name)s parameters; without it, sqlglot writes it from `sqlite` (see to_postgres).
    postgres: str | None = Field(default=None, min_length=1)
    weight: int = Field(default=1, ge=1)  # its share of the mix
    write: bool = False  # run in a transaction that is rolled back on both sides
    transpiled: bool = False  # its postgres form was written by sqlglot, not by a person

    @property
    def statement(self) -> str:
        """The PostgreSQL form (every loaded workload has one: load_workload writes it)."""
        if self.postgres is None:
            raise PlanError(f"query {self.name} has no postgres form")
        return self.postgres


class Param(_Spec):
    sample: str | None = None  # a query on the snapshot whose rows are drawn from
    values: tuple[Any, ...] = ()  # or a list to draw from
    uuid: str | None = None  # the plan table whose legacy ids this parameter holds
    name: str = ""  # its key under params

    @model_validator(mode="after")
    def _drawn_from_somewhere(self) -> Param:
        if not self.sample and not self.values:
            raise ValueError("needs sample (a query) or values (a list)")
        return self


class Workload(_Spec):
    """A workload file (YAML): the app's queries and where their parameters come from."""

    version: Literal[1]
    queries: tuple[Query, ...] = Field(min_length=1)
    params: dict[str, Param] = {}

    @property
    def parameters(self) -> tuple[Param, ...]:
        return tuple(p.model_copy(update={"name": name}) for name, p in self.params.items())


def default_workload_path() -> Path:
    return Path(str(resources.files("emrsim_assets") / "workloads" / "emrsim_chat.yaml"))


def workload_path(bundled_plan: bool) -> Path:
    """EMRSIM_WORKLOAD, else the bundled workload where the bundled plan is in use."""
    path = settings().workload_path
    if path is not None:
        if not path.is_file():
            raise PlanError(f"EMRSIM_WORKLOAD names {path}, which does not exist.")
        return path
    if not bundled_plan:
        raise PlanError(
            "No workload for this plan: write your app's queries in a workload file (the format "
            "is in docs/operations.md; emrsim_assets/workloads/emrsim_chat.yaml is an example) and set "
            "EMRSIM_WORKLOAD to its path."
        )
    return default_workload_path()


def load_workload(path: Path, plan: Plan | None = None) -> Workload:
    """The workload file, checked against its declaration; an error is one sentence naming the
    query or parameter and the key. A query with no `postgres` form gets the one sqlglot writes
    from its SQLite SQL for `plan`'s tables (and the proof then shows it gives the same rows)."""
    workload = _read_workload(path)
    missing = [q.name for q in workload.queries if q.postgres is None]
    if not missing:
        return workload
    if plan is None:
        raise PlanError(f"{path}: queries {missing} need their postgres form.")
    queries = []
    for query in workload.queries:
        if query.postgres is None:
            try:
                written = to_postgres(query.sqlite, plan)
            except PlanError as exc:
                raise PlanError(
                    f"{path}: query {query.name}: sqlglot cannot write it for PostgreSQL ({exc}); "
                    "write its postgres form by hand."
                ) from None
            query = query.model_copy(update={"postgres": written, "transpiled": True})
        queries.append(query)
    return workload.model_copy(update={"queries": tuple(queries)})


def to_postgres(sqlite_sql: str, plan: Plan, schema: str = LIVE) -> str:
    """The app's SQLite query as PostgreSQL runs it on the migrated tables, written by sqlglot:
    tables in `schema` under the plan's names, columns under theirs, :name parameters as
    %(name)s, LIKE as ILIKE (SQLite's LIKE ignores ASCII case), NULLs ordered first as SQLite
    orders them, and a key the plan turned into a uuid read back as its integer."""
    try:
        tree = sqlglot.parse_one(sqlite_sql, read="sqlite")
    except sqlglot.errors.ParseError as exc:
        raise PlanError(str(exc).splitlines()[0]) from None
    tables = {sqlite_fold(table.source): table for table in plan.tables}
    aliases: dict[str, Table] = {}  # each name a column may be qualified by
    bare: set[str] = set()  # qualifiers that are a table's own name (renamed with it)
    for found in tree.find_all(exp.Table):
        table = tables.get(sqlite_fold(found.name))
        if table is None:
            raise PlanError(f"it reads {found.name}, which is not a table of the plan")
        aliases[sqlite_fold(found.alias_or_name)] = table
        if not found.alias:
            bare.add(sqlite_fold(found.name))
        found.set("this", exp.to_identifier(table.name, quoted=True))
        found.set("db", exp.to_identifier(schema, quoted=True))
    for node in list(tree.find_all(exp.Column)):
        qualifier = sqlite_fold(node.table) if node.table else None
        owners = [aliases[qualifier]] if qualifier in aliases else list(aliases.values())
        distinct = {id(t): t for t in owners}.values()
        found_columns = [
            c
            for t in distinct
            for c in t.columns
            if sqlite_fold(c.source) == sqlite_fold(node.name) and c.convert != "storage_class"
        ]
        if not found_columns:
            continue  # an alias of the query's own
        if len(found_columns) > 1:
            raise PlanError(f"its column {node.name} is in several of its tables: qualify it")
        column = found_columns[0]
        node.set("this", exp.to_identifier(column.name, quoted=True))
        if qualifier in bare:
            node.set("table", exp.to_identifier(aliases[qualifier].name, quoted=True))
        if column.convert in ("legacy_id", "ref") and isinstance(node.parent, exp.Select):
            node.replace(exp.Anonymous(this=f"{MIGRATION}.legacy_id", expressions=[node.copy()]))
    for insert in tree.find_all(exp.Insert):
        target = insert.this
        if isinstance(target, exp.Schema) and isinstance(target.this, exp.Table):
            table = next(t for t in plan.tables if t.name == target.this.name)
            for identifier in target.expressions:
                written = next(
                    (
                        c
                        for c in table.columns
                        if sqlite_fold(c.source) == sqlite_fold(identifier.name)
                    ),
                    None,
                )
                if written is None:
                    raise PlanError(f"it writes {identifier.name}, which {table.name} has not")
                identifier.replace(exp.to_identifier(written.name, quoted=True))
    for like in list(tree.find_all(exp.Like)):
        like.replace(exp.ILike(this=like.this, expression=like.expression))
    for literal in tree.find_all(exp.Literal):
        if literal.is_string:
            literal.set("this", literal.this.replace("%", "%%"))
    return tree.sql("postgres")


def _read_workload(path: Path) -> Workload:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"The workload {path} cannot be read: {exc}.") from None
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = list(error["loc"])
        if (
            loc[:1] == ["queries"]
            and len(loc) >= 2
            and error["type"] in ("missing", "string_too_short")
        ):
            raise PlanError(
                f"{path}: queries[{loc[1]}] needs name and sqlite (postgres too, where sqlglot cannot write it)."
            ) from None
        where = ".".join(str(part) for part in loc) or "the file"
        raise PlanError(
            f"{path}: {where}: {error['msg'].lower().removeprefix('value error, ')}."
        ) from None


# --- values both drivers return differently ----------------------------------------------------


def normalize(value: Any) -> Any:
    """One comparable form: timestamps as UTC 'YYYY-MM-DD HH:MM:SS[.ffffff]', JSON text and
    dicts as sorted JSON, booleans as 0/1, numbers as numbers."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC) if value.tzinfo else value
        return stamp.strftime("%Y-%m-%d %H:%M:%S.%f").removesuffix(".000000")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, str) and _TIMESTAMP.match(value):
        try:  # SQLite's text timestamps, any ISO form; naive ones are UTC, as the plan reads them
            return normalize(datetime.fromisoformat(value.strip()))
        except ValueError:
            return value
    return value


_TIMESTAMP = re.compile(r"^\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")


# --- running -----------------------------------------------------------------------------------


@dataclass
class QueryResult:
    name: str
    write: bool
    sqlite_ms: list[float] = field(default_factory=list)
    postgres_ms: list[float] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    differing_draws: int = 0
    reordered: int = 0  # draws with the same rows in another order

    def percentile(self, side: str, p: float) -> float:
        values = sorted(self.sqlite_ms if side == "sqlite" else self.postgres_ms)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


@dataclass
class WorkloadReport:
    queries: list[QueryResult]
    throughput: dict[str, dict[int, float]]  # side -> clients -> operations per second

    @property
    def differing(self) -> list[QueryResult]:
        return [q for q in self.queries if q.differences]

    @property
    def slower(self) -> list[QueryResult]:
        return [
            q for q in self.queries if q.percentile("postgres", 50) > q.percentile("sqlite", 50)
        ]

    def markdown(self) -> str:
        lines = [
            "| query | kind | SQLite p50 / p95 / p99 ms | PostgreSQL p50 / p95 / p99 ms | "
            "same answers |",
            "|---|---|---:|---:|---|",
        ]
        for q in self.queries:
            lines.append(
                f"| {q.name} | {'write' if q.write else 'read'} | "
                + " / ".join(f"{q.percentile('sqlite', p):.2f}" for p in (50, 95, 99))
                + " | "
                + " / ".join(f"{q.percentile('postgres', p):.2f}" for p in (50, 95, 99))
                + f" | {_answers(q)} |"
            )
        spread = "postgres+replica" in self.throughput
        lines += [
            "",
            "| clients | SQLite ops/s | PostgreSQL ops/s |"
            + (" PostgreSQL, reads spread over primary and replica, ops/s |" if spread else ""),
            "|---:|---:|---:|" + ("---:|" if spread else ""),
        ]
        for clients in CLIENTS:
            lines.append(
                f"| {clients} | {self.throughput['sqlite'].get(clients, 0):,.0f} | "
                f"{self.throughput['postgres'].get(clients, 0):,.0f} |"
                + (
                    f" {self.throughput['postgres+replica'].get(clients, 0):,.0f} |"
                    if spread
                    else ""
                )
            )
        return "\n".join(lines)

    def answers_verdict(self, name: str) -> tuple[bool, str]:
        """app_gets_same_answers: passed, and its sentence."""
        if not self.differing:
            return True, f"Every query of {name} gives the same answers on both sides."
        return False, (
            "Different answers: "
            + "; ".join(
                f"{q.name} ({q.differing_draws} of {DRAWS} draws; first: SQLite "
                f"{q.differences[0]['sqlite']}, PostgreSQL {q.differences[0]['postgres']})"
                for q in self.differing
            )
            + "."
        )

    def speed_verdict(self) -> tuple[bool, str]:
        """postgres_meets_or_exceeds_sqlite: passed, and its sentence."""
        if not self.slower:
            return True, "Every query is at least as fast on PostgreSQL."
        return False, (
            "Slower on PostgreSQL (median ms, SQLite against PostgreSQL): "
            + ", ".join(
                f"{q.name} {q.percentile('sqlite', 50):.2f} against "
                f"{q.percentile('postgres', 50):.2f}"
                for q in self.slower
            )
            + "."
        )

    def figures(self) -> dict[str, Any]:
        """The numbers a run records: the key query's p95 and the throughput per side."""
        first = self.queries[0] if self.queries else None
        return {
            "key_query": first.name if first else "",
            "key_query_p95_ms": round(first.percentile("postgres", 95), 3) if first else 0.0,
            "throughput": {
                side: {str(k): round(v, 1) for k, v in by.items()}
                for side, by in self.throughput.items()
            },
        }


@dataclass(frozen=True)
class WorkloadProof:
    """One run of the app's workload after cutover: its report, the index review of the live
    schema, and the read replica's lag (if one runs)."""

    path: Path
    report: WorkloadReport
    review: IndexReview
    lag: dict[str, tuple[float, int]]
    saved: Path  # the report as markdown, under the work dir

    def replica_lag(self) -> dict[str, dict[str, float]]:
        return {name: {"seconds": s, "bytes": b} for name, (s, b) in self.lag.items()}


def prove(
    path: Path, snapshot: Path, work: Path, url: str, schema: str, plan: Plan | None = None
) -> WorkloadProof:
    """The workload at `path` on a copy of the snapshot and on `schema`, read on the replica
    too when one runs; the slowest statements reviewed; the report saved (private)."""
    workload = load_workload(path, plan)
    dbname = str(psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "postgres")
    replica = recovery.running_replica(work, dbname)
    if replica is not None:
        recovery.wait_replayed(url, replica)
    report = run_workload(workload, snapshot, work / "workload", url, replica_url=replica)
    lag = recovery.replica_lag(url) if replica is not None else {}
    review = indexes.review(url, schema)
    saved = private_dir(work / "reports") / "workload.md"
    write_private(
        saved,
        f"# The app's workload ({path.name})\n\n{report.markdown()}\n\n{review.markdown()}\n",
    )
    return WorkloadProof(path, report, review, lag, saved)


def _answers(q: QueryResult) -> str:
    if q.write:
        return "rows affected equal" if not q.differences else "no"
    if q.differences:
        return f"no: {q.differing_draws} of {DRAWS} draws"
    if q.reordered:
        return f"yes (another order in {q.reordered} of {DRAWS} draws)"
    return "yes"


def _draws(workload: Workload, sqlite: sqlite3.Connection, seed: int) -> list[dict[str, Any]]:
    """DRAWS parameter sets (source values), the same for both sides."""
    rng = random.Random(seed)
    pools: dict[str, list[Any]] = {}
    for param in workload.parameters:
        if param.sample:
            pools[param.name] = [row[0] for row in sqlite.execute(param.sample).fetchall()]
        else:
            pools[param.name] = list(param.values)
        if not pools[param.name]:
            raise PlanError(f"Workload parameter {param.name} drew no values from the snapshot.")
    return [{name: rng.choice(pool) for name, pool in pools.items()} for _ in range(DRAWS)]


def draw_one(workload: Workload, snapshot: Path, seed: int | None = None) -> dict[str, Any]:
    """One parameter set for PostgreSQL, drawn from the snapshot (opened read-only)."""
    lite = sqlite3.connect(f"{snapshot.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _for_postgres(workload, _draws(workload, lite, seed or time.time_ns())[0])
    finally:
        lite.close()


def _for_postgres(workload: Workload, params: dict[str, Any]) -> dict[str, Any]:
    mapped = dict(params)
    for param in workload.parameters:
        if param.uuid and mapped.get(param.name) is not None:
            mapped[param.name] = legacy_ids.legacy_uuid(param.uuid, int(mapped[param.name]))
    return mapped


def _timed(run: Callable[[], list[tuple[Any, ...]]]) -> tuple[float, list[tuple[Any, ...]]]:
    started = time.perf_counter()
    rows = run()
    return (time.perf_counter() - started) * 1000, rows


class _Spread:
    """A client's connections to the primary and to a read replica: writes go to the primary,
    reads to either, in turn."""

    def __init__(self, primary_url: str, replica_url: str) -> None:
        self.primary = psycopg.connect(primary_url)
        self.replica = psycopg.connect(replica_url)
        self.turn = 0

    def run(self, query: Query, params: dict[str, Any]) -> tuple[float, list[tuple[Any, ...]]]:
        self.turn += 1
        conn = self.primary if query.write or self.turn % 2 else self.replica
        return _postgres_once(conn, query, params)

    def close(self) -> None:
        self.primary.close()
        self.replica.close()


def run_workload(
    workload: Workload,
    snapshot: Path,
    scratch: Path,
    pg_url: str,
    seed: int = 7,
    replica_url: str | None = None,
) -> WorkloadReport:
    """Answers and latency, then throughput. The snapshot itself is never opened for writing:
    the app's side runs on a copy in `scratch`. With a read replica, every read also runs there
    (its answers compared with SQLite's too), and a third throughput series spreads the reads
    over primary and replica."""
    private_dir(scratch)
    copy = private_file(scratch / "app.sqlite")
    shutil.copyfile(snapshot, copy)
    lite = _sqlite_connect(copy)
    results = []
    try:
        draws = _draws(workload, lite, seed)
        with (
            psycopg.connect(pg_url) as pg,
            contextlib.nullcontext(None)
            if replica_url is None
            else psycopg.connect(replica_url) as replica,
        ):
            for query in workload.queries:
                result = QueryResult(query.name, query.write)
                for params in draws:
                    try:
                        lite_ms, lite_rows = _sqlite_once(lite, query, params)
                    except sqlite3.Error as exc:
                        raise WorkloadError(
                            f"Workload query {query.name} failed on SQLite: {exc}."
                        ) from None
                    try:
                        pg_ms, pg_rows = _postgres_once(pg, query, _for_postgres(workload, params))
                    except psycopg.Error as exc:
                        message = exc.diag.message_primary or str(exc).splitlines()[0]
                        said = (
                            f" (its PostgreSQL form, written by sqlglot: {query.statement}; "
                            "write a postgres form for it by hand)"
                            if query.transpiled
                            else ""
                        )
                        raise WorkloadError(
                            f"Workload query {query.name} failed on PostgreSQL: {message}{said}."
                        ) from None
                    result.sqlite_ms.append(lite_ms)
                    result.postgres_ms.append(pg_ms)
                    _compare(result, params, lite_rows, pg_rows)
                    if replica is not None and not query.write:
                        _, replica_rows = _postgres_once(
                            replica, query, _for_postgres(workload, params)
                        )
                        _compare(result, params, lite_rows, replica_rows, side="replica")
                results.append(result)
        throughput = {
            "sqlite": {
                c: _throughput(draws, workload, c, lambda: _sqlite_connect(copy), _sqlite_once)
                for c in CLIENTS
            },
            "postgres": {
                c: _throughput(
                    draws,
                    workload,
                    c,
                    lambda: psycopg.connect(pg_url),
                    lambda conn, q, p: _postgres_once(conn, q, _for_postgres(workload, p)),
                )
                for c in CLIENTS
            },
        }
        if replica_url is not None:
            throughput["postgres+replica"] = {
                c: _throughput(
                    draws,
                    workload,
                    c,
                    lambda: _Spread(pg_url, replica_url),
                    lambda spread, q, p: spread.run(q, _for_postgres(workload, p)),
                )
                for c in CLIENTS
            }
    finally:
        lite.close()
    return WorkloadReport(results, throughput)


def _sqlite_once(
    lite: sqlite3.Connection, query: Query, params: dict[str, Any]
) -> tuple[float, list[tuple[Any, ...]]]:
    if not query.write:
        return _timed(lambda: lite.execute(query.sqlite, params).fetchall())
    # IMMEDIATE: concurrent clients queue for the write lock instead of failing to upgrade.
    lite.execute("BEGIN IMMEDIATE")
    try:
        return _timed(lambda: [(lite.execute(query.sqlite, params).rowcount,)])
    finally:
        lite.execute("ROLLBACK")


def _postgres_once(
    pg: psycopg.Connection[Any], query: Query, params: dict[str, Any]
) -> tuple[float, list[tuple[Any, ...]]]:
    try:
        if query.write:
            ms, rows = _timed(lambda: [(pg.execute(query.statement, params).rowcount,)])
        else:
            ms, rows = _timed(lambda: pg.execute(query.statement, params).fetchall())
    finally:
        pg.rollback()
    return ms, rows


def _compare(
    result: QueryResult,
    params: dict[str, Any],
    lite_rows: list[tuple[Any, ...]],
    pg_rows: list[tuple[Any, ...]],
    side: str = "postgres",
) -> None:
    left = [tuple(normalize(v) for v in row) for row in lite_rows]
    right = [tuple(normalize(v) for v in row) for row in pg_rows]
    if left == right:
        return
    if sorted(left, key=repr) == sorted(right, key=repr):
        # The same rows in another order: SQLite sorts timestamps stored as text of mixed
        # forms ('2023-01-16T08:18:37Z' after '2023-01-16 08:31:55') as text, PostgreSQL by
        # instant. Reported, not a failure.
        result.reordered += 1
        return
    if len(result.differences) >= ANSWERS_SHOWN:
        result.differing_draws += 1
        return
    result.differing_draws += 1
    first = next(
        (i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
        min(len(left), len(right)),
    )
    result.differences.append(
        {
            "side": side,
            "params": {k: str(v) for k, v in params.items()},
            "sqlite_rows": len(left),
            "postgres_rows": len(right),
            "row": first,
            "sqlite": repr(left[first])[:300] if first < len(left) else "(no row)",
            "postgres": repr(right[first])[:300] if first < len(right) else "(no row)",
        }
    )


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    """As the app opens it; autocommit, so writes take their own BEGIN and ROLLBACK."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)


def _throughput(
    draws: list[dict[str, Any]],
    workload: Workload,
    clients: int,
    connect: Callable[[], Any],
    once: Callable[[Any, Query, dict[str, Any]], object],
) -> float:
    """Operations per second of the weighted mix, `clients` threads for SECONDS_PER_LEVEL, each
    over its own connection (closed after), running queries as the answers pass does."""
    mix = [q for q in workload.queries for _ in range(max(q.weight, 0))]
    done = [0] * clients
    connections = [connect() for _ in range(clients)]
    stop = time.perf_counter() + SECONDS_PER_LEVEL

    def client(i: int) -> None:
        rng = random.Random(i)
        while time.perf_counter() < stop:
            once(connections[i], rng.choice(mix), rng.choice(draws))
            done[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for connection in connections:
            connection.close()
    return sum(done) / (time.perf_counter() - started)
