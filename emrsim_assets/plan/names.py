"""Target names: lower snake_case PostgreSQL identifiers that Dagster accepts as asset names."""

from __future__ import annotations

import hashlib
import keyword
import re

# Names Dagster refuses for assets and checks (dagster._core.definitions.utils.DISALLOWED_NAMES,
# which a test compares with this set), and the pipeline's own assets.
RESERVED = frozenset(
    {
        "context",
        "conf",
        "config",
        "meta",
        "arg_dict",
        "dict",
        "input_arg_dict",
        "output_arg_dict",
        "int",
        "str",
        "float",
        "bool",
        "input",
        "output",
        "type",
        *keyword.kwlist,
        "source_snapshot",
        "cutover",
    }
)
TARGET_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# The pipeline's own columns beside a batch's (batch.ROWID, storage classes, parsed times):
# no plan column may start so (drafted names never do: snake_case strips leading _).
PIPELINE_PREFIX = "__"
# PostgreSQL keeps 63 bytes of a name; a month's partition adds "_y2024m03" (9) to its table's,
# and each table's array type is "_" + its name: at 63 bytes, two months' array types would be
# cut to the same name, and months that load in parallel collide on it. So 62, less the month.
MAX_NAME = 63
MAX_TABLE_NAME = MAX_NAME - 1 - len("_y2024m03")


def snake_case(name: str) -> str:
    """`AlbumId` -> `album_id`, `HTTPCode` -> `http_code`, `Order Details` -> `order_details`."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", spaced)
    cleaned = re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")
    if not cleaned:
        cleaned = "col"
    if cleaned[0].isdigit():
        cleaned = f"_{cleaned}"
    return cleaned


def fit(name: str, limit: int) -> str:
    """Shorten to `limit` characters, keeping names that differ only at the end apart."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}_{digest}"


def target_name(source: str, taken: set[str], limit: int = MAX_NAME) -> str:
    """The PostgreSQL name for a SQLite name: snake_case, not reserved, unique among `taken`."""
    name = snake_case(source)
    if name in RESERVED:
        name = f"{name}_"
    name = fit(name, limit)
    candidate, n = name, 2
    while candidate in taken:
        candidate = fit(f"{name}_{n}", limit)
        n += 1
    taken.add(candidate)
    return candidate
