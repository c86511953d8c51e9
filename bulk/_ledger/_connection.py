"""Connections to the ledger file: WAL, busy handling, and the one writer task.

SQLite has one writer: ``LedgerCore`` owns the write connection and runs every
write command, one at a time, in a worker thread (short ``BEGIN IMMEDIATE``
transactions); reads use separate read-only connections, each query in one read
transaction (one snapshot). Other processes (``bulk admin``, a second ledger in a
test) are serialised by SQLite's own lock, waited for up to ``BUSY_SECONDS``.
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import trio
from sqlite_utils import Database

from .._util import open_owned_nursery
from ._schema import migrations
from ._secrets import SecretBox

__all__ = ["BUSY_SECONDS", "LedgerCore", "connect", "immediate"]

T = TypeVar("T")

# How long a connection waits for another one's lock.
BUSY_SECONDS: Final = 10
_READERS: Final = 4


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the ledger file in autocommit mode (transactions are explicit).

    Args:
        path: The database file.
        readonly: A read-only connection (``mode=ro``): it can never write, even by
            mistake, and never takes the write lock.
    """
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        _use_wal(conn)
        # NORMAL in WAL mode is durable against process crashes (kill -9); only a
        # power loss can lose the last transactions, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.row_factory = sqlite3.Row
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (once per file; it persists).

    The switch needs the file to itself, and SQLite may answer "database is locked"
    at once, without its busy handler, while another process opens the same new
    file: so it is retried here for as long as the busy timeout would wait.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so a check and the
    write that depends on it cannot interleave with another process's writer."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def _capture_outcome(
    fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection
) -> tuple[bool, Any]:
    try:
        return True, fn(conn)
    except Exception as exc:  # handed back to the caller's task, re-raised there
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return False, exc


def _read_tx(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    # One read transaction: every query in ``fn`` sees the same snapshot.
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


Command = tuple[Callable[[sqlite3.Connection], Any], Any]


class LedgerCore:
    """The ledger's connections and its writer task; ``Ledger`` adds the operations.

    Args:
        path: The database file (created with its schema if missing).
        clock: Unix time source (tests pass a fake one).
        box: Encrypts the jobs' cookie and header values (``SecretBox``).
    """

    def __init__(self, path: str, clock: Callable[[], float], box: SecretBox) -> None:
        self.path = path
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self._box = box
        self._send: trio.MemorySendChannel[Command]
        self._readers: list[sqlite3.Connection] = []
        self._reader_sem = trio.Semaphore(_READERS)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        secrets: SecretBox | None = None,
    ) -> AsyncIterator[Self]:
        """Open (and migrate) the ledger and run its writer task for the context's life.

        Args:
            path: The database file (created with its schema if missing).
            clock: Unix time source (tests pass a fake one).
            secrets: The key that seals the jobs' cookie and header values. Without
                one, a key for this process only: a job created with cookies or
                headers then cannot resume after a restart (it fails with
                ``SECRETS_UNAVAILABLE``).

        Resource handling: the writer finishes the commands already sent, then all
        connections close when the context exits.
        """
        ledger = cls(os.fspath(path), clock, secrets or SecretBox.ephemeral())
        writer = await trio.to_thread.run_sync(ledger._open_writer)
        send, recv = trio.open_memory_channel[Command](math.inf)
        ledger._send = send
        try:
            async with open_owned_nursery() as nursery:
                nursery.start_soon(ledger._writer, writer, recv)
                try:
                    yield ledger
                finally:
                    await send.aclose()
        finally:
            writer.close()
            for conn in ledger._readers:
                conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        db = Database(conn)
        # Under the write lock: two processes opening a new file at once would
        # otherwise both see no schema and both create it (sqlite-utils runs each
        # migration as a savepoint inside this transaction, and ``apply`` looks
        # again for pending ones once the lock is held). An up-to-date file is
        # opened without taking the lock.
        try:
            if migrations.pending(db):
                with immediate(conn):
                    migrations.apply(db)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _writer(
        self, conn: sqlite3.Connection, recv: trio.MemoryReceiveChannel[Command]
    ) -> None:
        # The one task that writes. Commands run one at a time in a worker thread;
        # shielded, so a command that was sent is carried out even if the ledger's
        # owner is being cancelled (the caller may not hear the answer, but the
        # database never holds half of it).
        async with recv:
            async for fn, reply in recv:
                with trio.CancelScope(shield=True):
                    outcome = await trio.to_thread.run_sync(_capture_outcome, fn, conn)
                reply.append(outcome)
                reply[0].set()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        event = trio.Event()
        reply: list[Any] = [event]
        await self._send.send((fn, reply))
        await event.wait()
        ok, value = reply[1]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._reader_sem:
            conn = self._readers.pop() if self._readers else None
            if conn is None:
                conn = await trio.to_thread.run_sync(
                    functools.partial(connect, self.path, readonly=True)
                )
            try:
                return await trio.to_thread.run_sync(_read_tx, fn, conn)
            finally:
                self._readers.append(conn)
