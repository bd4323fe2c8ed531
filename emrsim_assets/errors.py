"""The one exception family: messages written for the person running the migration."""


class MigrationError(Exception):
    """A failure a user can act on; its message names what failed and what to do."""


class PlanError(MigrationError):
    """The migration plan is missing, malformed or inconsistent."""


class SourceError(MigrationError):
    """The SQLite source is missing, unreadable or not a database."""


class TargetError(MigrationError):
    """PostgreSQL is unreachable, misconfigured or refused an operation."""


class ConversionError(MigrationError):
    """A source value does not fit its target type."""


class GateClosedError(MigrationError):
    """Cutover refused: a check failed, is missing or is stale."""


class WorkloadError(MigrationError):
    """A query of the app's workload failed on one side."""


def connection_lost(cause: str) -> str:
    """The sentence for a step whose PostgreSQL connection went away (the step's Failure and the
    CLI's report say the same)."""
    return (
        f"TargetError: the connection to PostgreSQL was lost mid-step ({cause}). Nothing "
        "half-done is kept (each table and month loads in one transaction): once the server is "
        "back, run again."
    )
