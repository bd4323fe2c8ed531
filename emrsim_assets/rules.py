"""The database's rules, read from SQLite's schema and written for PostgreSQL: CHECK constraints,
through sqlglot's syntax trees (SQLite in, PostgreSQL out), never by string work of our own.

A rule's expression is SQL by nature. It reaches PostgreSQL only as sqlglot writes it from a
tree that has been checked: column references to the table's own columns, literals, operators
and a short list of functions. Anything else (a subquery, another table, an unknown function)
is refused by name, and the draft lists such a rule under skip instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlglot
from psycopg import sql
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify

from emrsim_assets.errors import PlanError


class ColumnLike(Protocol):
    """What a view's translation reads of a column: the plan's Column, or a drafted one."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def convert(self) -> str: ...


class TableLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def columns(self) -> Sequence[ColumnLike]: ...


# The functions a CHECK may call (SQLite's, as sqlglot names them after reading; PostgreSQL
# has each): anything else stops the rule, named.
FUNCTIONS = {
    "Length",
    "Lower",
    "Upper",
    "Trim",
    "Abs",
    "Coalesce",
    "Substring",
    "Round",
    "Least",
    "Greatest",
    "Cast",
    "TryCast",
}
# The other nodes a rule may hold: columns, literals, operators, conditions.
NODES = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Tuple,
    exp.Binary,  # comparisons, AND, OR, arithmetic, LIKE, IS, concatenation
    exp.Unary,  # NOT, negation
    exp.In,
    exp.Between,
    exp.Case,
    exp.If,
    exp.DataType,
)

AGGREGATES = {"Count", "Sum", "Avg", "Min", "Max"}
QUERY_NODES = (
    exp.Select,
    exp.From,
    exp.Join,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.Alias,
    exp.TableAlias,
    exp.Table,
    exp.Star,
    exp.Subquery,
    exp.Union,
    exp.Distinct,
)


def checks_of(
    ddl: str, columns: Mapping[str, str], booleans: frozenset[str] = frozenset()
) -> tuple[list[tuple[str, str]], list[str]]:
    """The CHECK constraints of a CREATE TABLE: (SQLite text, PostgreSQL text) for each one that
    translates, with the source column names renamed by `columns` (source -> target); and the
    SQLite text of each one that does not, with why. `booleans`: target columns PostgreSQL
    holds as boolean, which a rule reads as SQLite stores them (0 and 1)."""
    tree = sqlglot.parse_one(ddl, read="sqlite")
    translated: list[tuple[str, str]] = []
    refused: list[str] = []
    for found in tree.find_all(exp.CheckColumnConstraint):
        rule = found.this
        source = rule.sql("sqlite")
        try:
            translated.append((source, postgres_rule(rule, columns, booleans)))
        except PlanError as exc:
            refused.append(f"CHECK ({source}): {exc}")
    return translated, refused


def index_of(
    ddl: str, columns: Mapping[str, str], booleans: frozenset[str] = frozenset()
) -> tuple[list[str], list[str], str | None]:
    """A CREATE INDEX read by sqlglot and written for PostgreSQL: its plain column keys (renamed
    by `columns`), its expression keys and its partial-index predicate, each checked as a rule
    is. A key's order (DESC) and a COLLATE are not carried: PostgreSQL's btree reads both ways,
    and a collation in a key is refused by name."""
    try:
        tree = sqlglot.parse_one(ddl, read="sqlite")
    except sqlglot.errors.ParseError as exc:
        raise PlanError(f"sqlglot does not read it ({exc})") from None
    params = tree.this.args.get("params") if isinstance(tree.this, exp.Index) else None
    if params is None:
        raise PlanError("it is not a CREATE INDEX sqlglot reads")
    folded = {_fold(k): v for k, v in columns.items()}
    plain: list[str] = []
    expressions: list[str] = []
    for ordered in params.args.get("columns") or []:
        key = ordered.this if isinstance(ordered, exp.Ordered) else ordered
        if isinstance(key, exp.Column) and not key.table and _fold(key.name) in folded:
            plain.append(folded[_fold(key.name)])
        else:
            expressions.append(postgres_rule(key, columns, booleans))
    where = params.args.get("where")
    predicate = postgres_rule(where.this, columns, booleans) if where is not None else None
    return plain, expressions, predicate


def deferred_references(ddl: str) -> set[tuple[str, ...]]:
    """The referencing columns (folded) of each foreign key a CREATE TABLE declares DEFERRABLE
    INITIALLY DEFERRED: checked when the transaction commits, not at each statement (Django
    declares every reference so, and inserts a child before its parent)."""
    try:
        tree = sqlglot.parse_one(ddl, read="sqlite")
    except sqlglot.errors.ParseError:
        return set()
    found: set[tuple[str, ...]] = set()
    for reference in tree.find_all(exp.Reference):
        options = " ".join(str(o).upper() for o in reference.args.get("options") or [])
        if "INITIALLY DEFERRED" not in options:
            continue
        owner = reference.parent
        if isinstance(owner, exp.ForeignKey):
            found.add(tuple(_fold(e.name) for e in owner.expressions))
        else:
            column = reference.find_ancestor(exp.ColumnDef)
            if column is not None:
                found.add((_fold(column.name),))
    return found


def generated_of(ddl: str, columns: Mapping[str, str]) -> dict[str, str]:
    """Each generated column of a CREATE TABLE (folded source name) -> its expression written
    for PostgreSQL, or PlanError text for one that does not translate (as "!why")."""
    try:
        tree = sqlglot.parse_one(ddl, read="sqlite")
    except sqlglot.errors.ParseError:
        return {}
    found: dict[str, str] = {}
    for column in tree.find_all(exp.ColumnDef):
        for constraint in column.constraints:
            if isinstance(constraint.kind, exp.ComputedColumnConstraint):
                try:
                    found[_fold(column.name)] = postgres_rule(constraint.kind.this, columns)
                except PlanError as exc:
                    found[_fold(column.name)] = f"!{exc}"
    return found


def check_texts(ddl: str) -> list[str]:
    """Each CHECK constraint of a CREATE TABLE, as sqlglot writes it back in SQLite's dialect
    (the form a plan's `sqlite:` and a check skip name it by)."""
    try:
        tree = sqlglot.parse_one(ddl, read="sqlite")
    except sqlglot.errors.ParseError:
        return []
    return [found.this.sql("sqlite") for found in tree.find_all(exp.CheckColumnConstraint)]


def postgres_rule(
    rule: exp.Expr, columns: Mapping[str, str], booleans: frozenset[str] = frozenset()
) -> str:
    """`rule` written for PostgreSQL, its columns renamed by `columns` (keys compare as SQLite
    compares names), after checking every node. A column in `booleans` is read as an integer,
    as SQLite holds it: `deleted = 0` means in PostgreSQL what it meant in SQLite."""
    folded = {_fold(k): v for k, v in columns.items()}
    rule = rule.copy()
    for node in list(rule.walk()):
        if isinstance(node, exp.Column):
            target = folded.get(_fold(node.name))
            if target is None or node.table:
                raise PlanError(f"it names {node.sql('sqlite')}, which is no column of its table")
            node.set("this", exp.to_identifier(target, quoted=True))
            if target in booleans and _compared(node):
                node.replace(exp.cast(node.copy(), exp.DataType.build("int")))
        elif isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary):
            if type(node).__name__ not in FUNCTIONS:
                raise PlanError(f"it calls {node.sql('sqlite')}, which is not translated here")
        elif not isinstance(node, NODES):
            raise PlanError(f"it holds {type(node).__name__}, which a CHECK here may not")
    return rule.sql("postgres")


def _compared(node: exp.Expr) -> bool:
    """Whether a column is compared or computed with (`deleted = 0`, `flag + 1`, `IN (0, 1)`),
    where PostgreSQL's boolean must read as SQLite's 0 and 1; alone (`WHERE "active"`, a
    projection, NOT) it stays a boolean."""
    parent = node.parent
    if isinstance(parent, exp.Paren):
        parent = parent.parent
    return isinstance(parent, exp.Binary | exp.In | exp.Between) and not isinstance(
        parent, exp.Connector
    )


def checked(text: str, columns: set[str], where: str) -> str:
    """A plan's PostgreSQL rule, read again and checked: columns of its table only, and the
    nodes above. Returns sqlglot's writing of it (what goes to PostgreSQL)."""
    try:
        rule = sqlglot.parse_one(text, read="postgres")
    except sqlglot.errors.ParseError as exc:
        raise PlanError(
            f"{where}: {text!r} is not an expression PostgreSQL reads ({exc})."
        ) from None
    if isinstance(rule, exp.Select | exp.Command) or rule.find(exp.Select, exp.Subquery):
        raise PlanError(f"{where}: {text!r} must be one expression over the table's columns.")
    try:
        return postgres_rule(rule, {c: c for c in columns})
    except PlanError as exc:
        raise PlanError(f"{where}: {text!r}: {exc}.") from None


def composed(name: str, postgres: str, columns: set[str]) -> sql.Composable:
    """The one place a rule becomes SQL for PostgreSQL: read again and checked where it is used
    (a plan could have been changed since it loaded), then as sqlglot writes the tree."""
    return sql.SQL(checked(postgres, columns, f"check {name}"))


def composed_condition(text: str, columns: set[str], values: bool = False) -> sql.Composable:
    """A trigger's condition (or an audit's value) as it reaches PostgreSQL: read again and
    checked where it is used, as `composed` does for a CHECK."""
    return sql.SQL(trigger_condition(text, {c: c for c in columns}, values=values))


def composed_view(text: str, tables: Sequence[TableLike], schema: str) -> sql.Composable:
    """A view's SELECT as it reaches PostgreSQL, its tables read from `schema`: read again and
    checked where it is used, then as sqlglot writes the tree."""
    body = sqlglot.parse_one(view_query(text, tables, dialect="postgres"), read="postgres")
    for table in body.find_all(exp.Table):
        table.set("db", exp.to_identifier(schema, quoted=True))
    return sql.SQL(body.sql("postgres"))


def _fold(name: str) -> str:
    return name.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def view_query(select_sql: str, tables: Sequence[TableLike], dialect: str = "sqlite") -> str:
    """A view's SELECT, read in `dialect`, with the plan's tables and columns for the source's
    (names compare without case), written for PostgreSQL after checking every node. Refused
    with one sentence (PlanError) naming what stops it."""
    try:
        tree = sqlglot.parse_one(select_sql, read=dialect)
    except sqlglot.errors.ParseError as exc:
        raise PlanError(f"sqlglot does not read it ({str(exc).splitlines()[0]})") from None
    if isinstance(tree, exp.Create):
        tree = tree.expression
    if not isinstance(tree, exp.Query):
        raise PlanError("it is not a SELECT")
    by_name: dict[str, TableLike] = {}
    for planned in tables:
        by_name[planned.source.lower()] = planned
        by_name[planned.name.lower()] = planned
    schema: dict[str, object] = {}
    for found in tree.find_all(exp.Table):
        read = by_name.get(found.name.lower())
        if read is None or found.args.get("db"):
            raise PlanError(f"it reads {found.sql(dialect)}, which is not a table of the plan")
        schema[found.name] = {
            (c.name if dialect == "postgres" else c.source): "text" for c in read.columns
        }
    try:
        tree = qualify(tree, schema=schema, dialect=dialect, validate_qualify_columns=True)
    except sqlglot.errors.OptimizeError as exc:
        raise PlanError(f"sqlglot cannot resolve its columns ({exc})") from None
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does what the app's LIKE did.
        for like in list(tree.find_all(exp.Like)):
            like.replace(exp.ILike(this=like.this, expression=like.expression))
    aliases: dict[str, TableLike] = {}
    for found in tree.find_all(exp.Table):
        read = by_name[found.name.lower()]
        alias = found.alias_or_name
        if aliases.setdefault(alias, read) is not read:
            raise PlanError(f"it names two tables {alias}")
        found.set("this", exp.to_identifier(read.name, quoted=True))
    for node in list(tree.walk()):
        if isinstance(node, exp.Column):
            owner = aliases.get(node.table)
            if owner is None:
                continue  # a column of a subquery, by its alias
            column = next(
                (
                    c
                    for c in owner.columns
                    if node.name.lower() in (c.source.lower(), c.name.lower())
                    and c.convert != "storage_class"
                ),
                None,
            )
            if column is None:
                raise PlanError(f"it reads {node.sql(dialect)}, which the plan does not migrate")
            node.set("this", exp.to_identifier(column.name, quoted=True))
            if dialect == "sqlite" and column.convert == "boolean" and _compared(node):
                # Compared or computed with, it is read as SQLite holds it (0 and 1).
                node.replace(exp.cast(node.copy(), exp.DataType.build("int")))
        elif isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary):
            if type(node).__name__ not in FUNCTIONS | AGGREGATES:
                raise PlanError(f"it calls {node.sql(dialect)}, which is not translated here")
        elif not isinstance(node, NODES + QUERY_NODES):
            raise PlanError(f"it holds {type(node).__name__}, which a view here may not")
    return tree.sql("postgres")


# A trigger's header, read as SQLite wrote it: name, timing, events, table, WHEN, body. Only
# read: what a trigger becomes in PostgreSQL is written from the parts, never from this text.
_NAME = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[^\s(]+)'
_TRIGGER = re.compile(
    rf"^\s*CREATE\s+(?:TEMP(?:ORARY)?\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+"
    r"(?P<timing>BEFORE|AFTER|INSTEAD\s+OF)?\s*"
    r"(?P<event>INSERT|DELETE|UPDATE(?:\s+OF\s+.+?)?)\s+ON\s+"
    rf"{_NAME}\s+(?:FOR\s+EACH\s+ROW\s+)?(?:WHEN\s+(?P<when>.+?)\s+)?"
    r"BEGIN\s+(?P<body>.+?);?\s*END\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class TriggerForm:
    """A SQLite trigger in one of the forms PL/pgSQL is written for: `touch` (an update sets a
    timestamp column to the moment) or `guard` (a write is refused with a message when a
    condition over NEW and OLD holds)."""

    form: str
    events: tuple[str, ...]
    of: tuple[str, ...] = ()  # UPDATE OF these columns only
    column: str | None = None  # touch: the target column
    when: str | None = None  # PostgreSQL condition over NEW."col" / OLD."col"
    message: str | None = None  # guard
    into: str | None = None  # audit: the plan table a row is written to
    columns: tuple[str, ...] = ()  # audit: its columns
    values: tuple[str, ...] = ()  # audit: PostgreSQL expressions over NEW/OLD


def trigger_form(
    ddl: str,
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
    tables: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
) -> TriggerForm:
    """The form of a trigger, its columns renamed by `columns` (source -> target; `kinds`:
    target -> convert; `tables`: each table, by folded source name, as its target name and
    its columns), or PlanError saying why it has none."""
    match = _TRIGGER.match(ddl)
    if match is None:
        raise PlanError("its CREATE TRIGGER is not of a form read here")
    timing = (match.group("timing") or "BEFORE").upper()
    if timing.startswith("INSTEAD"):
        raise PlanError("an INSTEAD OF trigger (on a view) is not translated")
    event = match.group("event").split()[0].lower()
    folded = {_fold(k): v for k, v in columns.items()}
    of_text = re.match(r"UPDATE\s+OF\s+(.+)$", match.group("event"), re.I | re.S)
    of = tuple(
        folded.get(_fold(name.strip().strip('"`[]')), "")
        for name in (of_text.group(1).split(",") if of_text else [])
    )
    if "" in of:
        raise PlanError("its UPDATE OF names a column not migrated")
    try:
        body = sqlglot.parse(match.group("body"), read="sqlite")
    except sqlglot.errors.SqlglotError:
        raise PlanError("sqlglot does not read its body") from None
    statements = [b for b in body if b is not None]
    if len(statements) != 1:
        raise PlanError(f"its body has {len(statements)} statements; one is translated")
    [statement] = statements
    conditions = []
    if match.group("when"):
        conditions.append(sqlglot.parse_one(match.group("when"), read="sqlite"))
    if isinstance(statement, exp.Update):
        form = _touch(statement, event, conditions, columns, kinds)
    elif isinstance(statement, exp.Select):
        form = _guard(statement, event, conditions, columns)
    elif isinstance(statement, exp.Insert):
        form = _audit(statement, event, conditions, columns, tables or {})
    else:
        raise PlanError("its body is not an UPDATE of a timestamp, a RAISE or an INSERT")
    return TriggerForm(
        form.form,
        form.events,
        of,
        form.column,
        form.when,
        form.message,
        form.into,
        form.columns,
        form.values,
    )


def _audit(
    statement: exp.Insert,
    event: str,
    conditions: list[exp.Expr],
    columns: Mapping[str, str],
    tables: Mapping[str, tuple[str, Mapping[str, str]]],
) -> TriggerForm:
    target = statement.this
    values = statement.expression
    if not isinstance(target, exp.Schema) or not isinstance(target.this, exp.Table):
        raise PlanError("its INSERT does not name its columns")
    if not isinstance(values, exp.Values) or len(values.expressions) != 1:
        raise PlanError("its INSERT is not one row of VALUES")
    into = tables.get(_fold(target.this.name))
    if into is None:
        raise PlanError(f"it writes to {target.this.name}, which is not migrated")
    into_columns = {_fold(k): v for k, v in into[1].items()}
    names = [into_columns.get(_fold(i.name)) for i in target.expressions]
    if None in names:
        raise PlanError(f"it writes a column {target.this.name} does not migrate")
    row = values.expressions[0].expressions
    if len(row) != len(names):
        raise PlanError("its INSERT gives as many values as columns, or is not read here")
    written = tuple(trigger_condition(v, columns, read="sqlite", values=True) for v in row)
    return TriggerForm(
        "audit",
        (event,),
        when=_condition(conditions, columns),
        into=into[0],
        columns=tuple(n for n in names if n),
        values=written,
    )


_NOW = (exp.CurrentTimestamp, exp.CurrentDate, exp.TimeToStr, exp.TsOrDsToTimestamp)


def _touch(
    statement: exp.Update,
    event: str,
    conditions: list[exp.Expr],
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
) -> TriggerForm:
    sets = statement.expressions
    if event != "update" or len(sets) != 1 or not isinstance(sets[0], exp.EQ):
        raise PlanError("an UPDATE in a trigger is translated when it sets one column on update")
    target, value = sets[0].this, sets[0].expression
    moment = (isinstance(value, _NOW) and "now" in value.sql("sqlite").lower()) or isinstance(
        value, exp.CurrentTimestamp
    )
    if not isinstance(target, exp.Column) or not moment:
        raise PlanError("it sets a column to something other than the moment (now)")
    folded = {_fold(k): v for k, v in columns.items()}
    column = folded.get(_fold(target.name))
    if column is None or kinds.get(column) != "timestamp":
        raise PlanError(f"it sets {target.name}, which is not a timestamp column here")
    where = statement.args.get("where")
    keys = [c for c in (where.this.find_all(exp.Column) if where is not None else [])]
    if not any(_fold(c.table) == "new" for c in keys):
        raise PlanError("its UPDATE does not find the row by NEW")
    return TriggerForm("touch", ("update",), column=column, when=_condition(conditions, columns))


def _guard(
    statement: exp.Select, event: str, conditions: list[exp.Expr], columns: Mapping[str, str]
) -> TriggerForm:
    projected = statement.expressions
    if len(projected) != 1 or statement.args.get("from"):
        raise PlanError("its SELECT is not one RAISE")
    raised = projected[0]
    if isinstance(raised, exp.Case) and len(raised.args.get("ifs") or []) == 1:
        branch = raised.args["ifs"][0]
        conditions.append(branch.this)
        raised = branch.args.get("true")
    where = statement.args.get("where")
    if where is not None:
        conditions.append(where.this)
    if not (isinstance(raised, exp.Anonymous) and str(raised.this).upper() == "RAISE"):
        raise PlanError("its SELECT is not one RAISE")
    action, *rest = raised.expressions
    if action.name.upper() not in ("ABORT", "FAIL", "ROLLBACK") or len(rest) != 1:
        raise PlanError(f"RAISE({action.name}) is not translated")
    message = rest[0]
    if not isinstance(message, exp.Literal) or not message.is_string:
        raise PlanError("its RAISE message is not a string")
    return TriggerForm(
        "guard", (event,), when=_condition(conditions, columns), message=str(message.this)
    )


def _condition(conditions: list[exp.Expr], columns: Mapping[str, str]) -> str | None:
    if not conditions:
        return None
    combined = exp.and_(*(c.copy() for c in conditions))
    return trigger_condition(combined, columns, read="sqlite")


def trigger_condition(
    condition: exp.Expr | str,
    columns: Mapping[str, str],
    read: str = "postgres",
    values: bool = False,
) -> str:
    """A condition over NEW and OLD rows written for PostgreSQL (NEW."col"), its columns
    renamed by `columns` and every node checked as a CHECK's are."""
    try:
        tree = sqlglot.parse_one(condition, read=read) if isinstance(condition, str) else condition
    except sqlglot.errors.SqlglotError:
        raise PlanError("sqlglot does not read it") from None
    folded = {_fold(k): v for k, v in columns.items()}
    tree = tree.copy()
    for node in list(tree.walk()):
        if isinstance(node, exp.Column):
            row = _fold(node.table)
            target = folded.get(_fold(node.name))
            if row not in ("new", "old") or target is None:
                raise PlanError(f"it names {node.sql('sqlite')}, which is not NEW.col or OLD.col")
            node.set("table", exp.to_identifier(row.upper(), quoted=False))
            node.set("this", exp.to_identifier(target, quoted=True))
        elif isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary):
            allowed = FUNCTIONS | ({"CurrentTimestamp"} if values else set())
            if type(node).__name__ not in allowed:
                raise PlanError(f"it calls {node.sql('sqlite')}, which is not translated here")
        elif not isinstance(node, NODES):
            raise PlanError(f"it holds {type(node).__name__}, which a condition here may not")
    return tree.sql("postgres")
