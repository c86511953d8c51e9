"""Small trio helpers shared by the modules that own background tasks."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

__all__ = ["LockHeld", "hold_lock", "open_owned_nursery", "single_error"]


@asynccontextmanager
async def open_owned_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for a context manager that yields while its tasks run.

    trio wraps every exception leaving a nursery in an ExceptionGroup; when the
    context manager's *user* raises (say ``InsufficientCredits``) that wrapping would
    leak an implementation detail to them. A lone exception is re-raised as itself;
    real multi-failures stay grouped.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise


def single_error(exc: BaseException) -> BaseException:
    """The one exception that matters inside (nested) exception groups.

    Preference: KeyboardInterrupt (the user asked to stop), then the first bulk
    error, then the first leaf. Used at the outermost boundary (the CLI) to turn
    trio's groups back into one clear line.
    """
    from ._exceptions import BulkError

    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(exc)
    for kind in (KeyboardInterrupt, BulkError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


class LockHeld(Exception):
    """Another process holds the lock."""


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock file (flock) for the life of the block.

    The OS drops it when the process dies, even by SIGKILL, so a crashed run never
    leaves a stale lock behind.

    Raises:
        LockHeld: Another live process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(str(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
