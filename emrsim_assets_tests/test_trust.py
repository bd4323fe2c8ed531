"""A SQLite file is data, never code: names and SQL text from it reach the plan only as values,
and a plan reaches PostgreSQL only through quoted identifiers and literals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from emrsim_assets.draft import draft_plan
from emrsim_assets.errors import PlanError
from emrsim_assets.plan import load_plan
from emrsim_assets.plan.load import parse_plan

# Each breaks out of a comment line or a flow mapping where YAML is written by hand.
BREAKOUTS = [
    "i\n    autovacuum: {autovacuum_enabled: 1}",
    "i\r    autovacuum: {x: 1}",
    "i\x85    autovacuum: {x: 1}",
    "i\u2028    autovacuum: {x: 1}",
    "i\u2029- name: pwned",
    "# not a comment: {",
    "col\nx",
    "a: b",
    "'quoted'",
    '"double"',
    "- dash",
    "---",
    "...",
    "{flow}",
    "[list]",
    "&anchor *alias !tag |",
    "trailing space ",
    "tab\tinside",
]


def _hostile(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER, "col\nx" TEXT)')
    conn.execute("INSERT INTO t VALUES (1, 5, 'a'), (2, 6, 'b')")
    for i, name in enumerate(BREAKOUTS):
        # Partial indexes: the draft names each in a note on its table.
        conn.execute(f"CREATE INDEX {quote_name(name)} ON t(x) WHERE x > {i}")
        conn.execute(f"CREATE VIEW {quote_name('v_' + name)} AS SELECT x FROM t")  # noqa: S608
        text = "'" + name.replace("'", "''") + "'"
        conn.execute(
            f"CREATE TRIGGER {quote_name('tr_' + name)} AFTER INSERT ON t BEGIN SELECT {text}; END"
        )
    conn.commit()
    conn.close()


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_names_from_the_file_reach_the_draft_only_as_data(tmp_path: Path) -> None:
    source = tmp_path / "evil.sqlite"
    _hostile(source)
    text = draft_plan(source)
    raw = yaml.safe_load(text)
    plan = parse_plan(raw, tmp_path / "plan.yaml")
    (table,) = plan.tables
    assert dict(table.autovacuum) == {}
    assert [c.source for c in table.columns] == ["id", "x", "col\nx"]
    # Every name arrives whole, as a value, where the draft puts one.
    skipped = {s.table for s in plan.skip}
    # Views are recreated (their SQLite names kept as `source`), partial indexes translated
    # (their SQLite names kept as `source`), triggers listed under skip.
    assert {f"v_{n}" for n in BREAKOUTS} <= {v.source for v in plan.views}
    assert set(BREAKOUTS) <= {ix.source for ix in table.indexes}
    assert {f"tr_{n}" for n in BREAKOUTS} <= skipped
    # What sqlglot wrote for PostgreSQL holds the table's columns only, quoted: no name from
    # the file became SQL of its own.
    assert all(v.postgres == 'SELECT "t"."x" AS "x" FROM "t" AS "t"' for v in plan.views)
    # A comment is one line, whatever the name holds.
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            assert yaml.safe_load(line) is None


def test_a_plan_key_nobody_defined_is_refused_naming_it(tmp_path: Path) -> None:
    raw = yaml.safe_load(draft_plan(_small(tmp_path)))
    raw["tables"][0]["columns"][0]["pwned"] = 1
    with pytest.raises(PlanError, match=r"unknown key\(s\) \['pwned'\]"):
        parse_plan(raw, tmp_path / "plan.yaml")


@pytest.mark.parametrize(
    ("autovacuum", "refusal"),
    [
        ({"autovacuum_enabled = false); DROP TABLE x; --": 1}, "not a PostgreSQL per-table"),
        ({"autovacuum_x": 1}, "not a PostgreSQL per-table"),
        ({"fillfactor": 50}, "not a PostgreSQL per-table"),
        ({"autovacuum_vacuum_threshold": "1); DROP TABLE x; --"}, "takes a int"),
        ({"autovacuum_vacuum_threshold": True}, "takes a int"),
        ({"autovacuum_enabled": 1}, "takes a bool"),
        ({"autovacuum_vacuum_scale_factor": "0.1"}, "takes a float"),
    ],
)
def test_autovacuum_takes_only_postgresqls_parameters_with_values_of_their_type(
    tmp_path: Path, autovacuum: dict[str, object], refusal: str
) -> None:
    raw = yaml.safe_load(draft_plan(_small(tmp_path)))
    raw["tables"][0]["autovacuum"] = autovacuum
    with pytest.raises(PlanError, match=refusal):
        parse_plan(raw, tmp_path / "plan.yaml")


def test_the_bundled_plans_autovacuum_settings_are_typed() -> None:
    settings = {t.name: dict(t.autovacuum) for t in load_plan().tables if t.autovacuum}
    assert settings
    for values in settings.values():
        assert all(isinstance(v, int | float | bool) for v in values.values())


def _small(tmp_path: Path) -> Path:
    path = tmp_path / "small.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    conn.commit()
    conn.close()
    return path


def test_every_type_method_and_operator_class_a_plan_names_has_its_sql() -> None:
    from emrsim_assets.kinds import KINDS
    from emrsim_assets.plan.load import _INDEX_METHODS
    from emrsim_assets.plan.model import OPCLASSES
    from emrsim_assets.target import METHODS, OPERATOR_CLASSES, TYPES

    assert set(TYPES) == {k.pg_type for k in KINDS.values()}
    assert set(METHODS) == set(_INDEX_METHODS)
    assert set(OPERATOR_CLASSES) == set(OPCLASSES)


def test_the_embedded_server_migrates_as_a_role_that_owns_its_database_and_is_no_superuser(
    archiving: tuple[str, Path],
) -> None:
    import psycopg

    url, _ = archiving
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_user, r.rolsuper, r.rolcreaterole, r.rolreplication, "
            "pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()"
        ).fetchone()
    assert row == ("emrsim", False, False, False, "emrsim")


@pytest.mark.parametrize(
    ("convert", "default"),
    [
        ("timestamp", 0),
        ("timestamp", "yesterday"),
        ("date", "2024-02-30"),
        ("integer", "1"),
        ("integer", 2**63),
        ("boolean", 1),
        ("json", "{not json"),
        ("json", "NaN"),  # Python's json reads it; jsonb does not
        ("json", '"\\ud800"'),  # a lone surrogate
        ("uuid", "ABC"),
        ("real", float("nan")),
        ("text", "a\x00b"),
        ("blob", "00"),
    ],
)
def test_a_default_that_does_not_fit_its_column_is_refused_when_the_plan_loads(
    tmp_path: Path, convert: str, default: object
) -> None:
    raw = yaml.safe_load(draft_plan(_small(tmp_path)))
    raw["tables"][0]["columns"][1].update(convert=convert, default=default)
    with pytest.raises(PlanError, match=r"\(x\): default .* (is not|cannot|is longer)"):
        parse_plan(raw, tmp_path / "plan.yaml")


def test_a_draft_reads_json_nested_deeper_than_python_recurses_as_json(tmp_path: Path) -> None:
    path = tmp_path / "deep.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?)", [(1, "[" * 5000 + "]" * 5000), (2, '{"a": [1]}')]
    )
    conn.commit()
    conn.close()
    raw = yaml.safe_load(draft_plan(path))
    assert {c["name"]: c["convert"] for c in raw["tables"][0]["columns"]}["doc"] == "json"


def test_sqlite_defaults_postgresql_cannot_take_as_written_are_translated_or_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "defaults.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, "
        "stamp TIMESTAMP DEFAULT 0, "
        'label TEXT DEFAULT "0", '
        "made TEXT DEFAULT (STRFTIME('%Y-%m-%d %H:%M:%f','now')), "
        "n INTEGER DEFAULT '7', "
        "flag BOOLEAN DEFAULT 1, "
        "note TEXT DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO t (id, stamp, made) VALUES (1, '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
    )
    conn.commit()
    conn.close()
    text = draft_plan(path)
    plan = parse_plan(yaml.safe_load(text), tmp_path / "plan.yaml")
    defaults = {c.name: c.default for c in plan.tables[0].columns}
    assert defaults == {
        "id": None,
        "stamp": None,  # 0 is no timestamp: not kept, and the draft says so
        "label": "0",
        "made": "now()",
        "n": 7,
        "flag": True,
        "note": "0",
    }
    assert "default 0 not kept: it is not a timestamp value" in text


def test_the_draft_sees_an_integer_past_two_to_the_53_wherever_it_is(tmp_path: Path) -> None:
    """Row 7,000 of 9,000, past every sample: no double holds it, so the column is no real."""
    path = tmp_path / "late.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?)",
        [(i, 9007199254740993 if i == 7000 else i + 0.5) for i in range(1, 9001)],
    )
    conn.commit()
    conn.close()
    plan = parse_plan(yaml.safe_load(draft_plan(path)), tmp_path / "plan.yaml")
    assert plan.tables[0].column("v").convert == "numeric"


def test_names_that_differ_only_in_non_ascii_case_are_two_names_as_in_sqlite(
    tmp_path: Path,
) -> None:
    from emrsim_assets.errors import SourceError
    from emrsim_assets.source import check_plan_matches_source, open_readonly

    path = tmp_path / "umlaut.sqlite"
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "Äpfel" (id INTEGER PRIMARY KEY, "Ä" TEXT, "ä" TEXT)')
    conn.execute('CREATE TABLE "äpfel" (id INTEGER PRIMARY KEY)')
    conn.commit()
    conn.close()
    raw = yaml.safe_load(draft_plan(path))
    assert len(raw["tables"]) == 2
    both = parse_plan(raw, tmp_path / "plan.yaml")
    reader = open_readonly(path)
    try:
        check_plan_matches_source(reader, both, path)
        apfel = next(t for t in raw["tables"] if t.get("source", t["name"]) == "Äpfel")
        apfel["columns"] = [c for c in apfel["columns"] if c.get("source") != "ä"]
        raw["tables"] = [apfel]
        with pytest.raises(SourceError) as refused:
            check_plan_matches_source(reader, parse_plan(raw, tmp_path / "plan.yaml"), path)
    finally:
        reader.close()
    assert "table 'äpfel'" in str(refused.value)
    assert "column Äpfel.ä" in str(refused.value)


def test_the_months_of_the_live_file_include_rows_still_in_its_wal(tmp_path: Path) -> None:
    """The app's file is read as the app sees it (locks and WAL), never as immutable: a month
    whose rows are only in the WAL is found, and a writer is never read mid-change."""
    from emrsim_assets.plan import load_plan as bundled
    from emrsim_assets.sample import write_sample
    from emrsim_assets.snapshot import data_months

    path = tmp_path / "app.sqlite"
    write_sample(path, messages=200, seed=1)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    row = writer.execute("SELECT * FROM messages LIMIT 1").fetchone()
    names = [d[0] for d in writer.execute("SELECT * FROM messages LIMIT 0").description]
    moved = dict(zip(names, row, strict=True))
    moved.update(id=10**6, created_at="2031-07-04 10:00:00")
    marks = ", ".join("?" for _ in names)
    writer.execute(f"INSERT INTO messages VALUES ({marks})", [moved[n] for n in names])  # noqa: S608
    writer.commit()
    try:
        assert (tmp_path / "app.sqlite-wal").stat().st_size > 0
        months = data_months(path, bundled(), tmp_path / "cache")
    finally:
        writer.close()
    assert "2031-07-01" in months


# Any mapping of rowids to months: None is a row no month holds (unplaceable).
_OWNERS = st.lists(st.one_of(st.none(), st.integers(1, 6)), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(owners=_OWNERS)
def test_a_month_is_read_without_a_filter_only_when_no_other_months_row_is_in_its_span(
    owners: list[int | None],
) -> None:
    """A month read by its rowid span alone holds no row of another month and no unplaceable
    row (checked row by row); when the months come in order, every month is. Hypothesis draws
    the mappings and shrinks any failure to the smallest."""
    import polars as pl

    from emrsim_assets.snapshot import _pure_months

    spans: dict[str, tuple[int, int]] = {}
    for rid, month in enumerate(owners):
        if month is not None:
            key = f"2024-{month:02d}-01"
            lo, hi = spans.get(key, (rid, rid))
            spans[key] = (min(lo, rid), max(hi, rid))
    stray = pl.Series([rid for rid, month in enumerate(owners) if month is None], dtype=pl.Int64)
    pure = _pure_months(spans, stray)
    for key in pure:
        lo, hi = spans[key]
        assert all(owners[rid] == int(key[5:7]) for rid in range(lo, hi + 1)), (key, owners)
    placed = [m for m in owners if m is not None]
    if len(placed) == len(owners) and placed == sorted(placed):
        assert pure == sorted(spans)


def test_months_whose_ids_interleave_load_and_prove_equal(
    sample_db: Path, pg_url: str, tmp_path: Path
) -> None:
    """A message re-dated into January from inside March's ids, and every 10th 2024 message
    re-dated a year earlier: every month loads, and every check holds."""
    from emrsim_assets_tests.conftest import Migration

    conn = sqlite3.connect(sample_db)
    conn.execute("UPDATE messages SET created_at = '2023-01-15 10:00:00' WHERE id = 66")
    conn.execute(
        "UPDATE messages SET created_at = '2023' || substr(created_at, 5) "
        "WHERE created_at LIKE '2024%' AND id % 10 = 0 AND substr(created_at, 6, 5) != '02-29'"
    )
    conn.commit()
    conn.close()
    migration = Migration(load_plan(), sample_db, pg_url, tmp_path / "work")
    result = migration.run_job("load_tables")
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    assert len(result.get_asset_check_evaluations()) > 0


@pytest.mark.parametrize(
    "odd", ["0000-01-01 00:00:00", "0001-01-01 00:00:00", "1999-13-01 00:00:00", 10**15, -(2**63)]
)
def test_the_draft_finds_the_first_month_whatever_the_earliest_value_is(
    tmp_path: Path, odd: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """9,000 time-ordered rows and one odd value past the draft's sample: the draft says which
    month comes first, never a traceback (the load names the odd row). The table is small, so
    the threshold for months is lowered for it."""
    from emrsim_assets import draft

    monkeypatch.setattr(draft, "PARTITION_MIN_ROWS", 0)
    path = tmp_path / "events.sqlite"
    conn = sqlite3.connect(path)
    epoch = isinstance(odd, int)
    conn.execute(
        f"CREATE TABLE events (id TEXT PRIMARY KEY, created_at {'INTEGER' if epoch else 'TEXT'} NOT NULL)"
    )
    rows = [
        (f"e{i}", 1_700_000_000 + i * 60 if epoch else f"2024-{1 + i // 1000:02d}-15 10:00:00")
        for i in range(1, 9001)
    ]
    rows[7999] = ("e8000", odd)
    conn.executemany("INSERT INTO events VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    raw = yaml.safe_load(draft_plan(path))
    plan = parse_plan(raw, tmp_path / "plan.yaml")
    if not epoch:  # an epoch column with an odd value fits no unit: integers, not months
        assert plan.partitioned_table is not None
        assert plan.partition_start.year in (1, 1999, 2023, 2024)


def test_integer_keys_all_below_one_cut_over_and_number_the_next_row_as_sqlite_would(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    from emrsim_assets_tests.conftest import Migration

    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER)")
    conn.executemany("INSERT INTO ledger VALUES (?, ?)", [(-5, 1), (-3, 2), (-2, 3)])
    conn.commit()
    conn.close()
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(draft_plan(path), encoding="utf-8")
    result = Migration(load_plan(plan_path), path, pg_url, tmp_path / "work").run_job()
    assert result.success
    with psycopg.connect(pg_url, autocommit=True) as target:
        row = target.execute("INSERT INTO emrsim.ledger (amount) VALUES (4) RETURNING id")
        assert row.fetchone() == (-1,)
    import shutil

    shutil.copyfile(path, tmp_path / "copy.sqlite")  # what SQLite itself does next
    check = sqlite3.connect(tmp_path / "copy.sqlite")
    check.execute("INSERT INTO ledger (amount) VALUES (4)")
    assert check.execute("SELECT max(id) FROM ledger").fetchone() == (-1,)
    check.close()


def _anki_like(path: Path) -> None:
    """Anki declares its own collation, unicase, which it registers on every connection."""
    conn = sqlite3.connect(path)
    conn.create_collation(
        "unicase", lambda a, b: (a.casefold() > b.casefold()) - (a.casefold() < b.casefold())
    )
    conn.executescript(
        """
        CREATE TABLE tags (tag TEXT NOT NULL PRIMARY KEY COLLATE unicase, usn INTEGER NOT NULL)
            WITHOUT ROWID;
        CREATE TABLE decks (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE unicase);
        CREATE UNIQUE INDEX idx_decks_name ON decks (name);
        """
    )
    conn.executemany(
        "INSERT INTO tags VALUES (?, ?)", [(f"Tag{i}-ä", i) for i in range(300)] + [("Äpfel", 1)]
    )
    conn.executemany("INSERT INTO decks VALUES (?, ?)", [(1, "Default"), (2, "spanish")])
    conn.commit()
    conn.close()


def test_a_collation_of_the_apps_own_is_read_with_a_stand_in_and_named_by_the_plan(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    from emrsim_assets.errors import SourceError
    from emrsim_assets.source import check_plan_matches_source, open_readonly
    from emrsim_assets_tests.conftest import Migration

    path = tmp_path / "collection.anki2"
    _anki_like(path)
    text = draft_plan(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(plan_path)
    [skip] = [s for s in plan.skip if s.kind == "collation"]
    assert skip.table == "unicase" and "decks, tags" in skip.reason
    # Batches of 97 rows: the WITHOUT ROWID table is paged through the stand-in.
    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM emrsim.tags").fetchone() == (301,)
    raw = yaml.safe_load(text)
    raw["skip"] = [s for s in raw["skip"] if "collation" not in s]
    reader = open_readonly(path)
    try:
        with pytest.raises(SourceError, match=r"collation 'unicase' \(the app's own\)"):
            check_plan_matches_source(reader, parse_plan(raw, plan_path), path)
    finally:
        reader.close()


def _diskcache_like(path: Path) -> None:
    """diskcache's Cache table: keys of any class, kept apart by UNIQUE(key, raw)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, "
        "store_time REAL, value BLOB, UNIQUE(key, raw))"
    )
    conn.executemany(
        "INSERT INTO Cache (key, raw, store_time, value) VALUES (?, 1, 1.5, ?)",
        [(6, b"a"), ("6", b"b"), (b"6", b"c"), ("seven", b"d"), (7.5, b"e")],
    )
    conn.commit()
    conn.close()


def test_keys_distinct_only_by_storage_class_stay_distinct_and_a_plan_without_the_class_names_them(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    from emrsim_assets_tests.conftest import Migration, failure_sentence

    path = tmp_path / "cache.db"
    _diskcache_like(path)
    text = draft_plan(path)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(plan_path)
    [index] = [ix for ix in plan.tables[0].indexes if ix.unique]
    assert index.columns == ("key", "key_class", "raw")
    result = Migration(plan, path, pg_url, tmp_path / "work").run_job()
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and not failed, failed
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT key, key_class FROM emrsim.cache ORDER BY rowid").fetchall()
    assert [(bytes(k), c) for k, c in rows[:3]] == [
        (b"6", "integer"),
        (b"6", "text"),
        (b"6", "blob"),
    ]

    raw = yaml.safe_load(text)
    table = raw["tables"][0]
    table["columns"] = [c for c in table["columns"] if c["convert"] != "storage_class"]
    for ix in table["indexes"]:
        ix["columns"] = [c for c in ix["columns"] if c != "key_class"]
    plan_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    again = Migration(load_plan(plan_path), path, pg_url, tmp_path / "again").run_job()
    sentence = failure_sentence(again)
    assert "rows distinct in SQLite become one key (key, raw)" in sentence
    assert "key convert: blob with any_class: true" in sentence
    assert "row id 1: '36' INTEGER, '1' INTEGER; row id 2: '36' TEXT" in sentence
    assert "convert: storage_class" in sentence


def test_the_plan_reference_lists_every_kind_as_the_registry_defines_it() -> None:
    from emrsim_assets import kinds
    from emrsim_assets_tests.user_shell import REPO

    assert kinds.markdown_table() in (REPO / "docs" / "plan.md").read_text()
    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in kinds.NAMES)


def test_a_plan_written_with_the_first_name_of_partition_start_still_loads(tmp_path: Path) -> None:
    raw = yaml.safe_load(draft_plan(_small(tmp_path)))
    raw["messages_partition_start"] = "2024-02-01"
    assert str(parse_plan(raw, tmp_path / "plan.yaml").partition_start) == "2024-02-01"
