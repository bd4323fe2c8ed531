"""The database's rules over the test corpus: every schema object of every file the tests write
(the hostile shapes, and the files Django, SQLAlchemy, peewee and sqlite-utils write), counted as
carried to PostgreSQL, written again by sqlglot, or listed as lost (a plan skip with its reason).

Each file is drafted and migrated as a user would (`plan`, then the migrate job), into its own
database on the server given; the counts are what the blocking check schema_matches_source and
the cutover report, not what the plan says.

    .venv/bin/python bench/rules_corpus.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emrsim_assets.draft import draft_plan  # noqa: E402
from emrsim_assets.plan import Plan, load_plan  # noqa: E402
from emrsim_assets_tests import test_rules  # noqa: E402
from emrsim_assets_tests.conftest import Migration  # noqa: E402
from emrsim_assets_tests.shapes import SHAPES, write_shape  # noqa: E402


def _django(path: Path) -> None:
    script = REPO / "emrsim_assets_tests" / "django_app.py"
    subprocess.run([sys.executable, str(script), str(path)], check=True)


def _sqlalchemy(base: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{path}")
        base.metadata.create_all(engine)  # type: ignore[attr-defined]
        engine.dispose()

    return write


FILES: dict[str, Callable[[Path], None]] = {
    **{f"shape {name}": (lambda p, n=name: write_shape(n, p)) for name in SHAPES},  # type: ignore[misc]
    "Django hospital": _django,
    "SQLAlchemy MLflow-like": test_rules._written_by_sqlalchemy,
    "SQLAlchemy accounts": _sqlalchemy(test_rules._Accounts),
    "SQLAlchemy clinics": _sqlalchemy(test_rules._Clinics),
    "SQLAlchemy NOCASE / RTRIM": _sqlalchemy(test_rules._People),
    "SQLAlchemy Computed": _sqlalchemy(test_rules._Orders),
    "sqlite-utils shop": test_rules._shop_by_sqlite_utils,
    "peewee + sqlite-utils search": test_rules._searchable,
    "hand-written triggers": test_rules._with_triggers,
    "Django-like CHECKs": test_rules._django_like,
}


def translated(plan: Plan) -> Counter[str]:
    """What sqlglot wrote for PostgreSQL in this plan, by kind."""
    found: Counter[str] = Counter()
    for table in plan.tables:
        found["CHECK"] += len(table.checks)
        found["partial or expression index"] += sum(not ix.plain for ix in table.indexes)
        found["trigger (PL/pgSQL)"] += len(table.triggers)
        found["full-text search"] += table.search is not None
        found["generated column"] += sum(c.generated is not None for c in table.columns)
    found["view"] += len(plan.views)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", required=True)
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    rows = []
    for label, write in FILES.items():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            source = work / "app.db"
            write(source)
            (work / "plan.yaml").write_text(draft_plan(source), encoding="utf-8")
            plan = load_plan(work / "plan.yaml")
            name = f"emrsim_corpus_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                url = conninfo.make_conninfo(args.pg_url, dbname=name)
                result = Migration(plan, source, url, work / "work").run_job()
            finally:
                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
            counts: Counter[str] = Counter()
            for evaluation in result.get_asset_check_evaluations():
                if evaluation.check_name != "schema_matches_source":
                    continue
                for key in (
                    "source_objects",
                    "in_postgresql",
                    "references_reported_not_enforced",
                    "skipped_by_plan",
                    "missing",
                    "probes",
                    "probes_refused_on_both_sides",
                ):
                    counts[key] += int(evaluation.metadata[key].value)  # type: ignore[arg-type]
            views = len(plan.views)
            kept = translated(plan)
            counts["views carried"] = views
            counts["sqlglot-written"] = sum(kept.values())
            counts["schema-level skips"] = sum(
                1 for s in plan.skip if "shadow table" not in s.reason
            )
            for skip in plan.skip:
                if "shadow table" not in skip.reason:
                    lost[skip.kind] += 1
            totals.update(counts)
            totals.update({f"written: {k}": v for k, v in kept.items()})
            rows.append((label, result.success, counts))
    print(
        "| file | migrated | source objects | in PostgreSQL | reported refs | skipped "
        "| missing | probes (refused on both) | sqlglot-written | views |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, success, c in rows:
        print(
            f"| {label} | {'yes' if success else 'NO'} | {c['source_objects']} | "
            f"{c['in_postgresql']} | {c['references_reported_not_enforced']} | "
            f"{c['skipped_by_plan']} | {c['missing']} | {c['probes']} "
            f"({c['probes_refused_on_both_sides']}) | {c['sqlglot-written']} | "
            f"{c['views carried']} |"
        )
    print()
    print("Totals:", dict(sorted(totals.items())))
    print("Listed as lost (plan skips, shadow tables aside), by kind:", dict(lost))


if __name__ == "__main__":
    main()
