"""Commands run as a person runs them: a fresh shell, no activated venv, from the repo, with
the umask people have; and the servers such commands start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
# The person's PATH without the venv (as a fresh shell has it: their Python, never an activated
# venv), and the system directories a login shell adds (useradd, for the embedded server).
_VENV_BIN = str(REPO / ".venv" / "bin")
USER_PATH = ":".join(
    [p for p in os.environ.get("PATH", "").split(":") if p and p != _VENV_BIN]
    + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
)


def user_env(work: Path, **extra: str) -> dict[str, str]:
    """What a person's fresh shell has, plus the variables the README tells them to set."""
    env = {"PATH": USER_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env["EMRSIM_WORK_DIR"] = str(work)
    env.update(extra)
    return env


def shell(
    command: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    # A person's usual umask (022): what the tool writes must be private all the same.
    return subprocess.run(
        ["bash", "-c", f"umask 022; {command}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postmaster(pgdata: Path) -> psutil.Process | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    try:
        return psutil.Process(int(pid_file.read_text().split()[0]))
    except psutil.NoSuchProcess:
        return None


def graphql(port: int, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started by start_server and everything it started (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def assert_private(work: Path) -> None:
    """Nobody but the user reads what the tool wrote (the embedded server's own directories are
    its own, 0700 by PostgreSQL): files 0600, directories 0700 (the work dir 0711 as root, so
    the server's system user can reach its data)."""
    open_to_others = []
    for path in [work, *work.rglob("*")]:
        if path.is_symlink() or path.is_socket():
            continue
        mode = path.stat().st_mode & 0o777
        allowed = 0o711 if path == work and os.geteuid() == 0 else 0o700 if path.is_dir() else 0o600
        if mode & ~allowed:
            open_to_others.append(f"{path.relative_to(work)} {mode:o}")
    assert not open_to_others, open_to_others


def assert_private_files(work: Path) -> None:
    """Beside an embedded server run as root (whose package opens the directories above its data
    to all): the files the tool wrote are 0600 and the work dir lists nothing to others."""
    assert os.stat(work).st_mode & 0o066 == 0
    written = [work / "demo.sqlite", *(work / "snapshot").iterdir(), *(work / "logs").iterdir()]
    assert all(p.stat().st_mode & 0o077 == 0 for p in written), [
        f"{p} {p.stat().st_mode & 0o777:o}" for p in written
    ]


def stop_embedded(env: dict[str, str]) -> None:
    subprocess.run([str(REPO / ".venv" / "bin" / "emrsim-migrate"), "stop"], env=env, check=False)


def start_server(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A long-running server whose output goes to a file: a pipe nobody reads fills up, and
    then every process writing to it (Dagster's run workers too) blocks."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_ui(port: int, process: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = log.read_text(errors="replace")
            pytest.fail(f"the UI server exited with {process.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the UI did not answer on port {port} within {seconds:.0f} s")
