"""Small trio helpers shared by the modules that own background tasks.

``contained`` is how every background loop (the job runner, the sweeper, webhook
delivery, schedules later) keeps one item's failure to that item: the item is
logged (type and code only: messages may carry URLs, cookies or tokens) and marked
failed by its owner, and the loop goes on. Cancellation always passes through.
"""

from __future__ import annotations

import fcntl
import logging
import os
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from ._exceptions import BulkError, LockHeld

__all__ = [
    "Contained",
    "LockHeld",
    "contained",
    "describe_error",
    "hold_lock",
    "open_owned_nursery",
    "receive_batch",
    "single_error",
]

T = TypeVar("T")


async def receive_batch(recv: trio.MemoryReceiveChannel[T], limit: int | None = None) -> list[T]:
    """One item (waiting for it), then whatever else is already buffered.

    Consumers of a fast producer (discovery feeding URLs) take everything that has
    arrived at each wake-up: one checkpoint and one write per batch, not per item.

    Args:
        recv: The channel to read.
        limit: At most this many items (None: no bound).

    Returns:
        A non-empty batch; an empty list once the channel has ended (and every later
        call returns one too).
    """
    try:
        batch = [await recv.receive()]
    except trio.EndOfChannel:
        return []
    while limit is None or len(batch) < limit:
        try:
            batch.append(recv.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


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


def describe_error(exc: BaseException) -> str:
    """A log-safe description of an exception: its code or type, and where it was
    raised (file:line), never its message (which may hold a URL, cookie or token)."""
    leaf = single_error(exc)
    what = leaf.code if isinstance(leaf, BulkError) else type(leaf).__name__
    frames = traceback.extract_tb(leaf.__traceback__)
    if frames and not isinstance(leaf, BulkError):
        last = frames[-1]
        return f"{what} at {os.path.basename(last.filename)}:{last.lineno}"
    return what


@attrs.define
class Contained:
    """What ``contained`` caught: ``error`` is None when the body ended normally."""

    error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def code(self) -> str:
        """The error's stable code (``INTERNAL_ERROR`` for anything not a BulkError)."""
        return self.error.code if isinstance(self.error, BulkError) else "INTERNAL_ERROR"


@contextmanager
def contained(log: logging.Logger, what: str, *args: object) -> Iterator[Contained]:
    """Run one item of a background loop; a failure ends the item, never the loop.

    Every ``Exception`` (exception groups of them included) is caught, logged as
    ``describe_error`` gives it and handed back in the ``Contained`` for the owner
    to mark the item failed. Cancellation, KeyboardInterrupt and groups holding
    them pass through: stopping is never contained.

    Args:
        log: Where the failure is logged (warning level).
        what: What the item is, %-style with ``args`` (ids, not URLs or secrets).

    Example::

        with contained(log, "webhook delivery %d", delivery.id) as outcome:
            await send(delivery)
        if outcome.failed:
            await ledger.end_delivery(delivery.id, delivered=False, error=outcome.code)
    """
    outcome = Contained()
    try:
        yield outcome
    except Exception as exc:
        outcome.error = exc
        log.warning("%s failed: %s", what % args if args else what, describe_error(exc))


@contextmanager
def hold_lock(path: Path, *, remove: bool = False, held: str | None = None) -> Iterator[None]:
    """An exclusive, non-blocking lock file (flock) for the life of the block.

    The OS drops it when the process dies, even by SIGKILL, so a crashed run never
    leaves a stale lock behind.

    Args:
        path: The lock file (created if missing).
        remove: Delete the file when the block ends (while still holding the lock).
            Safe against a process that opened the file just before: after locking,
            the path must still name the file that was locked, else the lock is
            taken again on the new file.
        held: The ``LockHeld`` message when another process holds it (what it
            means to the user: "another bulk archive is writing OUT").

    Raises:
        LockHeld: Another live process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(held or f"another process holds {path}") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # The holder removed the file after we opened it: ours is a dead inode.
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        os.close(fd)
