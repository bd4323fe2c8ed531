"""Files that hold the user's data are the user's alone (0700 directories, 0600 files)."""

from __future__ import annotations

import os
from pathlib import Path

# Everything this tool writes under its work dir holds the app's data or names it: snapshots,
# manifests, logs that quote refused values, dumps, reports.
PRIVATE_UMASK = 0o077


def keep_private() -> None:
    """From now on, this process (and every process it starts: Dagster's webserver, daemon and
    run workers, pg_dump) creates files only its user can read, whatever the shell's umask."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (made so if it was not)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_work_dir(path: Path) -> Path:
    """The work dir: 0700, or 0711 when this process is root. As root, the embedded server runs
    as a system user of its own, which must pass through the work dir to its data directory and
    its WAL archive (both its own, 0700): it may enter, but nobody else may list or read."""
    mode = 0o711 if os.geteuid() == 0 else 0o700
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)
    return path


def private_file(path: Path) -> Path:
    """`path` created empty (or truncated) with mode 0600 before anything is written to it: a
    file is never readable by others, not even for the moment before a chmod."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    path.chmod(0o600)
    return path


def write_private(path: Path, text: str) -> None:
    private_file(path).write_text(text, encoding="utf-8")
