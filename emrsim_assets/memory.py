"""Keep the process's memory flat while batches stream through: allocator settings, set once."""

import ctypes
import ctypes.util
import os
import sys

# glibc grows its mmap threshold after a large buffer is freed, so the next multi-MB buffers
# (Arrow arrays from the SQLite driver, encoded COPY data) come from the heap, where freed
# memory fragments and stays resident. A fixed 1 MiB threshold sends them to mmap, returned to
# the system on free: the 10 M-message load peaked at 391 MB instead of 466 MB, at equal speed.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 20


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 (glibc only: musl has no mallopt)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def bound_allocators() -> None:
    # Polars' allocator (jemalloc) keeps freed pages for reuse, by default for 10 s, and never
    # purges some of them. Returning them at once (0 ms) kept the peak flattest, but every batch
    # then took fresh pages from the kernel: 2.4 M page faults and 8 to 9 s of system CPU in a
    # 2 M-message migrate. A second's grace lets the next batch reuse them: 1 M faults, 4 CPU-s
    # less, a median of 28.1 s instead of 29.9 s (10 M: 114 to 119 s instead of 139 to 155 s),
    # for 10 to 35 MB more peak. Read when Polars loads; a value the user set wins.
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (between months of a load)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
