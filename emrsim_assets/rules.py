"""The database's rules, read from SQLite's schema and written for PostgreSQL: CHECK constraints,
through sqlglot's syntax trees (SQLite in, PostgreSQL out), never by string work of our own.

A rule's expression is SQL by nature. It reaches PostgreSQL only as sqlglot writes it from a
tree that has been checked: column references to the table's own columns, literals, operators
and a short list of functions. Anything else (a subquery, another table, an unknown function)
is refused by name, and the draft lists such a rule under skip instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from psycopg import sql
from sqlglot import exp

from emrsim_assets.errors import PlanError

# The functions a CHECK may call (SQLite's, as sqlglot names them after reading; PostgreSQL
# has each): anything else stops the rule, named.
_FUNCTIONS = {
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
_NODES = (
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
            if target in booleans:
                node.replace(exp.cast(node.copy(), exp.DataType.build("int")))
        elif isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary):
            if type(node).__name__ not in _FUNCTIONS:
                raise PlanError(f"it calls {node.sql('sqlite')}, which is not translated here")
        elif not isinstance(node, _NODES):
            raise PlanError(f"it holds {type(node).__name__}, which a CHECK here may not")
    return rule.sql("postgres")


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


def _fold(name: str) -> str:
    return name.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))
