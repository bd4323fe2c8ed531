"""Python's json nests only as deep as the recursion limit (1,000) allows; PostgreSQL's jsonb
takes far deeper values (its stack depth limit is about 2 MB of stack). The rare value that
needs it is parsed again here, on a thread with a large stack and a high recursion limit."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_STACK_BYTES = 512 << 20
_LIMIT = 1_000_000
_lock = threading.Lock()


def deep(function: Callable[[], T]) -> T:
    """function() on a thread whose stack and recursion limit allow deep nesting."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    with _lock:  # the stack size and the recursion limit are process-wide settings
        previous_stack = threading.stack_size(_STACK_BYTES)
        previous_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(_LIMIT)
        try:
            worker = threading.Thread(target=run, name="deep-json")
            worker.start()
            worker.join()
        finally:
            threading.stack_size(previous_stack)
            sys.setrecursionlimit(previous_limit)
    if failure:
        raise failure[0]
    return result[0]
