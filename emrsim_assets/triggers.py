"""The app's triggers, written again in PL/pgSQL from the plan's forms (never from SQLite's
text): `touch` sets a timestamp column to now() on update, `guard` refuses a write with the
app's message when a condition over NEW and OLD holds. Created at cutover, in its transaction;
a touch trigger is proven there by an update that must set its column to the moment.
"""

from __future__ import annotations

from psycopg import sql

from emrsim_assets.errors import GateClosedError
from emrsim_assets.plan import Table
from emrsim_assets.plan.model import Trigger
from emrsim_assets.plan.names import MAX_NAME, fit
from emrsim_assets.rules import composed_condition
from emrsim_assets.schemas import LIVE, Conn


def create(conn: Conn, schema: str, table: Table, trigger: Trigger) -> None:
    function = sql.Identifier(schema, fit(f"{table.name}_{trigger.name}_fn", MAX_NAME))
    body = _body(table, trigger).as_string(conn)
    conn.execute(
        sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function, sql.Literal(body)
        )
    )
    events: list[sql.Composable] = []
    for event in trigger.events:
        if event == "update" and trigger.of:
            events.append(
                sql.SQL("UPDATE OF {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in trigger.of)
                )
            )
        else:
            events.append(_EVENTS[event])
    timing = sql.SQL("AFTER" if trigger.form == "audit" else "BEFORE")
    conn.execute(
        sql.SQL("CREATE TRIGGER {} {} {} ON {}.{} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(trigger.name),
            timing,
            sql.SQL(" OR ").join(events),
            sql.Identifier(schema),
            sql.Identifier(table.name),
            function,
        )
    )


_EVENTS = {
    "insert": sql.SQL("INSERT"),
    "update": sql.SQL("UPDATE"),
    "delete": sql.SQL("DELETE"),
}


def _body(table: Table, trigger: Trigger) -> sql.Composable:
    columns = {c.name for c in table.columns}
    condition = (
        composed_condition(trigger.when, columns) if trigger.when is not None else sql.SQL("true")
    )
    if trigger.form == "audit":
        # The table is named in its live schema: the function runs after cutover, when
        # staging has become the live schema (a function's body is resolved when it runs).
        return sql.SQL(
            "BEGIN IF {} THEN INSERT INTO {}.{} ({}) VALUES ({}); END IF; RETURN NULL; END"
        ).format(
            condition,
            sql.Identifier(LIVE),
            sql.Identifier(str(trigger.into)),
            sql.SQL(", ").join(sql.Identifier(c) for c in trigger.columns),
            sql.SQL(", ").join(composed_condition(v, columns, values=True) for v in trigger.values),
        )
    if trigger.form == "touch":
        return sql.SQL("BEGIN IF {} THEN NEW.{} := now(); END IF; RETURN NEW; END").format(
            condition, sql.Identifier(str(trigger.column))
        )
    return sql.SQL(
        "BEGIN IF {} THEN RAISE EXCEPTION USING MESSAGE = {}, "
        "ERRCODE = 'integrity_constraint_violation'; END IF; "
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END"
    ).format(condition, sql.Literal(trigger.message or ""))


def prove_touch(conn: Conn, schema: str, table: Table, trigger: Trigger) -> str:
    """An update of one row that leaves its values as they are must still set the touched
    column to the moment (the transaction's now()). Rolled back."""
    column = sql.Identifier(str(trigger.column))
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            sql.SQL(
                "UPDATE {} SET {} = {} WHERE ctid = (SELECT ctid FROM {} LIMIT 1) "
                "RETURNING {} = now()"
            ).format(target, column, column, target, column)
        ).fetchone()
    touched = row[0] if row else None
    if touched is None:
        return f"{trigger.name}: no row to probe with"
    if not touched and trigger.when is None:
        raise GateClosedError(
            f"Cutover refused: trigger {trigger.name} on {table.name} did not set "
            f"{trigger.column} on an update; fix it in the plan, or list it under skip."
        )
    return f"{trigger.name}: an update set {trigger.column} to now()" + (
        "" if touched else " only where its WHEN held (not on this row)"
    )
