"""The ledger: jobs, per-URL rows with leases, and credits, in one SQLite file.

The schema itself enforces the money rules, so no caller can get them wrong:

- ``credit_events`` is append-only (triggers refuse UPDATE/DELETE) and is the only
  thing that moves ``accounts.balance`` (an AFTER INSERT trigger);
  ``balance >= 0`` is a CHECK, so an overdraft aborts the transaction.
- Inserting a ``job_urls`` row of a charged job inserts its ``reserve`` event.
- A ``job_urls`` row moving to ``ok`` inserts its ``use`` event, to ``failed`` its
  ``refund`` event; a row can never leave ``ok``/``failed`` (trigger), and a partial
  unique index allows one ``use``-or-``refund`` per row: exactly once, whatever
  crashes or retries happen.

Writes go through one writer task that owns the write connection (WAL, busy timeout,
short transactions); reads use separate connections in worker threads. Claims are
atomic lease updates; after a crash, ``recover`` returns dead leases to the queue.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, final

import attrs
import trio
from sqlite_utils import Database, Migrations

from ._exceptions import (
    EmailTaken,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidAPIKey,
    JobNotFound,
    KeyLimitReached,
    ValidationError,
)
from ._util import open_owned_nursery

__all__ = [
    "Account",
    "AuditReport",
    "Claim",
    "JobRow",
    "Ledger",
    "NewJob",
    "UrlResult",
    "UrlRow",
    "iso",
]

T = TypeVar("T")

JobStatus = Literal["pending", "processing", "packaging", "completed", "failed", "expired"]
JobKind = Literal["bulk", "shot", "offline"]
TERMINAL_JOB: Final = ("completed", "failed", "expired")
MAX_KEYS_PER_ACCOUNT: Final = 5
KEY_PREFIX: Final = "pix_"
_READERS: Final = 4

migrations = Migrations("bulk-ledger")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            email TEXT UNIQUE,
            plan TEXT NOT NULL DEFAULT 'free',
            balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
            webhook_secret TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX api_keys_account ON api_keys(account_id);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('bulk', 'shot', 'offline')),
            account_id INTEGER REFERENCES accounts(id),
            api_key_id INTEGER REFERENCES api_keys(id),
            site TEXT NOT NULL,
            sitemap_urls TEXT NOT NULL DEFAULT '[]',
            options TEXT NOT NULL DEFAULT '{}',
            root TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'processing', 'packaging', 'completed', 'failed', 'expired')),
            urls_complete INTEGER NOT NULL DEFAULT 1 CHECK (urls_complete IN (0, 1)),
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            expires_at REAL,
            idempotency_key TEXT,
            request_hash TEXT,
            error_code TEXT,
            error_message TEXT,
            zip_path TEXT,
            zip_size INTEGER,
            zip_sha256 TEXT,
            webhook_url TEXT,
            webhook_state TEXT,
            UNIQUE (account_id, idempotency_key)
        );
        CREATE INDEX jobs_status ON jobs(status, kind);
        CREATE INDEX jobs_account ON jobs(account_id, status);
        CREATE TABLE job_urls (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            seq INTEGER NOT NULL CHECK (seq >= 1),
            url TEXT NOT NULL,
            entry TEXT,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'leased', 'ok', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until REAL,
            error_code TEXT,
            error_message TEXT,
            http_status INTEGER,
            final_url TEXT,
            width INTEGER,
            height INTEGER,
            bytes INTEGER,
            sha256 TEXT,
            file TEXT,
            finished_at TEXT,
            PRIMARY KEY (job_id, seq),
            CHECK (state != 'ok' OR (file IS NOT NULL AND sha256 IS NOT NULL)),
            CHECK (state != 'failed' OR error_code IS NOT NULL)
        ) WITHOUT ROWID;
        CREATE INDEX job_urls_work ON job_urls(job_id, state, seq);
        CREATE TABLE credit_events (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            job_id TEXT REFERENCES jobs(id),
            seq INTEGER,
            kind TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'use', 'refund')),
            amount INTEGER NOT NULL CHECK (amount > 0),
            created_at TEXT NOT NULL,
            CHECK ((kind = 'grant') = (job_id IS NULL))
        );
        CREATE UNIQUE INDEX credit_events_once ON credit_events(job_id, seq, kind)
            WHERE job_id IS NOT NULL;
        CREATE UNIQUE INDEX credit_events_settle_once ON credit_events(job_id, seq)
            WHERE kind IN ('use', 'refund');
        CREATE INDEX credit_events_account ON credit_events(account_id, kind);

        CREATE TRIGGER credit_events_append_only_u BEFORE UPDATE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;
        CREATE TRIGGER credit_events_append_only_d BEFORE DELETE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;

        -- A use or refund needs the reservation it settles.
        CREATE TRIGGER credit_events_settles_reservation BEFORE INSERT ON credit_events
        WHEN NEW.kind IN ('use', 'refund') AND NOT EXISTS (
            SELECT 1 FROM credit_events r
            WHERE r.job_id = NEW.job_id AND r.seq = NEW.seq AND r.kind = 'reserve')
        BEGIN SELECT RAISE(ABORT, 'settling a credit that was never reserved'); END;

        CREATE TRIGGER credit_events_balance AFTER INSERT ON credit_events
        BEGIN
            UPDATE accounts SET balance = balance + CASE NEW.kind
                WHEN 'grant' THEN NEW.amount
                WHEN 'reserve' THEN -NEW.amount
                WHEN 'refund' THEN NEW.amount
                ELSE 0 END
            WHERE id = NEW.account_id;
        END;

        CREATE TRIGGER job_urls_reserve AFTER INSERT ON job_urls
        WHEN (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'reserve', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_terminal BEFORE UPDATE OF state ON job_urls
        WHEN OLD.state IN ('ok', 'failed') AND NEW.state != OLD.state
        BEGIN SELECT RAISE(ABORT, 'a finished URL cannot change state'); END;

        CREATE TRIGGER job_urls_use AFTER UPDATE OF state ON job_urls
        WHEN NEW.state = 'ok' AND OLD.state != 'ok'
             AND (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'use', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_refund AFTER UPDATE OF state ON job_urls
        WHEN NEW.state = 'failed' AND OLD.state != 'failed'
             AND (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'refund', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_no_delete BEFORE DELETE ON job_urls
        BEGIN SELECT RAISE(ABORT, 'job_urls rows are kept for the audit'); END;
        """
    )


@migrations()
def m002_lease_fencing_and_strict_settlement(db: Database) -> None:
    db.executescript(
        """
        -- Every claim of a row takes the next lease number; finish and release must
        -- present it. ``attempts`` alone cannot fence: a release gives its attempt
        -- back, so the next claim of the row would carry the released claim's number.
        ALTER TABLE job_urls ADD COLUMN lease_no INTEGER NOT NULL DEFAULT 0;

        -- A use or refund settles the very reservation it names: same account, same
        -- amount (a refund of 1000 for a 1-credit reservation, or to another account,
        -- would mint credits).
        DROP TRIGGER credit_events_settles_reservation;
        CREATE TRIGGER credit_events_settles_reservation BEFORE INSERT ON credit_events
        WHEN NEW.kind IN ('use', 'refund') AND NOT EXISTS (
            SELECT 1 FROM credit_events r
            WHERE r.job_id = NEW.job_id AND r.seq = NEW.seq AND r.kind = 'reserve'
              AND r.account_id = NEW.account_id AND r.amount = NEW.amount)
        BEGIN SELECT RAISE(ABORT, 'settling a credit that was never reserved'); END;

        -- A row is born queued: one inserted ok/failed would keep its reservation
        -- forever, since only the state change to ok/failed settles it.
        CREATE TRIGGER job_urls_born_queued BEFORE INSERT ON job_urls
        WHEN NEW.state != 'queued'
        BEGIN SELECT RAISE(ABORT, 'a URL row starts queued'); END;
        """
    )


@migrations()
def m003_job_discovery_report(db: Database) -> None:
    # What discovery found and cut (``Discovery.to_json``), as JSON; NULL before.
    db.execute("ALTER TABLE jobs ADD COLUMN discovery TEXT")


# Which status a job may move to from each status (``fail_job`` is the other way to
# ``failed``). Terminal states are terminal, except that a completed job expires, and
# an offline run whose ZIP vanished before cleanup may be packaged again.
_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "pending": frozenset({"processing", "failed"}),
    "processing": frozenset({"packaging", "completed", "failed"}),
    "packaging": frozenset({"completed", "failed"}),
    "completed": frozenset({"expired", "packaging"}),
    "failed": frozenset(),
    "expired": frozenset(),
}


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds and ``Z`` (the API's format)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@attrs.frozen(kw_only=True)
class Account:
    id: int
    email: str | None
    plan: str
    balance: int
    webhook_secret: str
    api_key_id: int | None = None
    key_prefix: str | None = None


@attrs.frozen(kw_only=True)
class NewJob:
    """What is needed to create a job; ``urls`` are ``(url, entry)`` in sitemap order."""

    kind: JobKind
    site: str
    urls: Sequence[tuple[str, str | None]]
    account_id: int | None = None
    api_key_id: int | None = None
    sitemap_urls: Sequence[str] = ()
    options: Mapping[str, Any] = attrs.field(factory=dict)
    root: str = ""
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    urls_complete: bool = True
    status: JobStatus = "pending"
    discovery: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class JobRow:
    id: str
    kind: JobKind
    account_id: int | None
    site: str
    sitemap_urls: tuple[str, ...]
    options: Mapping[str, Any]
    root: str
    status: JobStatus
    urls_complete: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: float | None
    error_code: str | None
    error_message: str | None
    zip_path: str | None
    zip_size: int | None
    zip_sha256: str | None
    webhook_url: str | None
    webhook_state: str | None
    total: int = 0
    queued: int = 0
    leased: int = 0
    ok: int = 0
    failed: int = 0
    reserved: int = 0
    used: int = 0
    refunded: int = 0
    replayed: bool = False
    discovery: Mapping[str, Any] | None = None

    @property
    def processed(self) -> int:
        return self.ok + self.failed


@attrs.frozen(kw_only=True)
class UrlRow:
    seq: int
    url: str
    entry: str | None
    state: str
    attempts: int
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    file: str | None = None


@attrs.frozen(kw_only=True)
class Claim:
    """A URL leased to one worker until ``lease_until`` (Unix time).

    ``lease`` is the row's lease number, the fencing token ``finish``/``release``
    check: a claim that was released, or whose lease expired and was taken again,
    can no longer touch the row.
    """

    job_id: str
    seq: int
    url: str
    entry: str | None
    attempt: int
    lease_until: float
    lease: int = 0


@attrs.frozen(kw_only=True)
class UrlResult:
    """How a claimed URL ended: ``ok`` with its image facts, or ``failed`` with a code."""

    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    file: str | None = None


@attrs.frozen(kw_only=True)
class AuditReport:
    ok: bool
    problems: tuple[str, ...]
    jobs: tuple[Mapping[str, Any], ...]
    accounts: tuple[Mapping[str, Any], ...]
    integrity: str


_URL_FIELDS: Final = tuple(attrs.fields_dict(UrlRow))
_JOB_COLUMNS: Final = (
    "id, kind, account_id, site, sitemap_urls, options, root, status, urls_complete, "
    "created_at, started_at, finished_at, expires_at, error_code, error_message, "
    "zip_path, zip_size, zip_sha256, webhook_url, webhook_state, discovery"
)


# How long a connection waits for another one's lock.
_BUSY_SECONDS: Final = 10


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_SECONDS * 1000}")
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
    deadline = time.monotonic() + _BUSY_SECONDS
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
def _immediate(conn: sqlite3.Connection) -> Any:
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


def _job_from_row(
    row: sqlite3.Row, counts: Mapping[str, int], credits: Mapping[str, int]
) -> JobRow:
    return JobRow(
        id=row["id"],
        kind=row["kind"],
        account_id=row["account_id"],
        site=row["site"],
        sitemap_urls=tuple(json.loads(row["sitemap_urls"])),
        options=json.loads(row["options"]),
        root=row["root"],
        status=row["status"],
        urls_complete=bool(row["urls_complete"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        zip_path=row["zip_path"],
        zip_size=row["zip_size"],
        zip_sha256=row["zip_sha256"],
        webhook_url=row["webhook_url"],
        webhook_state=row["webhook_state"],
        discovery=json.loads(row["discovery"]) if row["discovery"] else None,
        total=sum(counts.values()),
        queued=counts.get("queued", 0),
        leased=counts.get("leased", 0),
        ok=counts.get("ok", 0),
        failed=counts.get("failed", 0),
        reserved=credits.get("reserve", 0),
        used=credits.get("use", 0),
        refunded=credits.get("refund", 0),
    )


def _load_job(conn: sqlite3.Connection, job_id: str) -> JobRow | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    counts = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT state, COUNT(*) FROM job_urls WHERE job_id = ? GROUP BY state", (job_id,)
        )
    }
    credits = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT kind, SUM(amount) FROM credit_events WHERE job_id = ? GROUP BY kind",
            (job_id,),
        )
    }
    return _job_from_row(row, counts, credits)


@final
class Ledger:
    """The ledger of one SQLite file. Open it with ``Ledger.open``.

    Args:
        path: The database file (created with its schema if missing).
        clock: Unix time source (tests pass a fake one).
    """

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self._send: trio.MemorySendChannel[tuple[Callable[[sqlite3.Connection], Any], Any]]
        self._readers: list[sqlite3.Connection] = []
        self._reader_sem = trio.Semaphore(_READERS)

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> AsyncIterator[Ledger]:
        """Open (and migrate) the ledger and run its writer task for the context's life.

        Resource handling: the writer finishes the commands already sent, then all
        connections close when the context exits.
        """
        ledger = cls(os.fspath(path), clock)
        writer = await trio.to_thread.run_sync(ledger._open_writer)
        send, recv = trio.open_memory_channel[tuple[Callable[[sqlite3.Connection], Any], Any]](
            math.inf
        )
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
        conn = _connect(self.path)
        db = Database(conn)
        # Under the write lock: two processes opening a new file at once would
        # otherwise both see no schema and both create it (sqlite-utils runs each
        # migration as a savepoint inside this transaction, and ``apply`` looks
        # again for pending ones once the lock is held). An up-to-date file is
        # opened without taking the lock.
        try:
            if migrations.pending(db):
                with _immediate(conn):
                    migrations.apply(db)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _writer(
        self,
        conn: sqlite3.Connection,
        recv: trio.MemoryReceiveChannel[tuple[Callable[[sqlite3.Connection], Any], Any]],
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
                    functools.partial(_connect, self.path, readonly=True)
                )
            try:
                return await trio.to_thread.run_sync(_read_tx, fn, conn)
            finally:
                self._readers.append(conn)

    # ---- accounts and keys -------------------------------------------------------

    async def create_account(
        self, *, credits: int, email: str | None = None, plan: str = "free"
    ) -> tuple[Account, str]:
        """Create an account with ``credits`` granted and its first API key.

        Returns:
            The account and the API key, shown once (only its hash is stored).

        Raises:
            ValidationError: ``credits`` negative.
            EmailTaken: The email is already registered.
        """
        if credits < 0:
            raise ValidationError("credits must be >= 0", field="credits")
        key = KEY_PREFIX + secrets.token_hex(24)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> Account:
            with _immediate(conn):
                if (
                    email is not None
                    and conn.execute("SELECT 1 FROM accounts WHERE email = ?", (email,)).fetchone()
                ):
                    raise EmailTaken("this email is already registered", details={"field": "email"})
                cur = conn.execute(
                    "INSERT INTO accounts (email, plan, webhook_secret, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (email, plan, "whsec_" + secrets.token_hex(24), now),
                )
                account_id = int(cur.lastrowid or 0)
                if credits:
                    _grant(conn, account_id, credits, now)
                key_id = _insert_key(conn, account_id, key, now)
                return _account(conn, account_id, key_id)

        return await self._write(tx), key

    async def create_key(self, account_id: int) -> str:
        """Another API key for the account (at most 5 active).

        Raises:
            KeyLimitReached: The account already has 5 active keys.
        """
        key = KEY_PREFIX + secrets.token_hex(24)
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                (active,) = conn.execute(
                    "SELECT COUNT(*) FROM api_keys WHERE account_id = ? AND active = 1",
                    (account_id,),
                ).fetchone()
                if active >= MAX_KEYS_PER_ACCOUNT:
                    raise KeyLimitReached(
                        f"an account can have at most {MAX_KEYS_PER_ACCOUNT} active API keys"
                    )
                _insert_key(conn, account_id, key, now)

        await self._write(tx)
        return key

    async def revoke_key(self, key: str, *, account_id: int | None = None) -> bool:
        """Deactivate a key (given whole, or by its display prefix with ``account_id``).

        Returns:
            Whether an active key was deactivated.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                if account_id is None:
                    cur = conn.execute(
                        "UPDATE api_keys SET active = 0, revoked_at = ? "
                        "WHERE key_hash = ? AND active = 1",
                        (now, _hash_key(key)),
                    )
                else:
                    cur = conn.execute(
                        "UPDATE api_keys SET active = 0, revoked_at = ? WHERE account_id = ? "
                        "AND active = 1 AND (key_hash = ? OR prefix = ?)",
                        (now, account_id, _hash_key(key), key),
                    )
                return cur.rowcount > 0

        return await self._write(tx)

    async def authenticate(self, key: str) -> Account:
        """The account an active API key belongs to.

        Raises:
            InvalidAPIKey: Unknown or revoked key.
        """
        digest = _hash_key(key)

        def q(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT id, account_id, key_hash FROM api_keys WHERE key_hash = ? AND active = 1",
                (digest,),
            ).fetchone()
            # The lookup is by hash (no timing signal about the key itself); the
            # compare_digest is the belt to that brace.
            if row is None or not hmac.compare_digest(row["key_hash"], digest):
                return None
            return _account(conn, row["account_id"], row["id"])

        account = await self._read(q)
        if account is None:
            raise InvalidAPIKey("the API key is invalid or inactive")
        return account

    async def account(self, account_id: int) -> Account:
        def q(conn: sqlite3.Connection) -> Account:
            return _account(conn, account_id, None)

        return await self._read(q)

    async def account_by_key(self, key: str) -> Account:
        """Like ``authenticate`` but also finds revoked keys (admin use)."""
        digest = _hash_key(key)

        def q(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT id, account_id FROM api_keys WHERE key_hash = ?", (digest,)
            ).fetchone()
            return None if row is None else _account(conn, row["account_id"], row["id"])

        account = await self._read(q)
        if account is None:
            raise InvalidAPIKey("no such API key")
        return account

    async def grant(self, account_id: int, credits: int) -> Account:
        if credits < 1:
            raise ValidationError("credits must be >= 1", field="credits")
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> Account:
            with _immediate(conn):
                _grant(conn, account_id, credits, now)
                return _account(conn, account_id, None)

        return await self._write(tx)

    async def keys(self, account_id: int) -> list[dict[str, Any]]:
        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [
                dict(r)
                for r in conn.execute(
                    "SELECT prefix, active, created_at, revoked_at FROM api_keys "
                    "WHERE account_id = ? ORDER BY id",
                    (account_id,),
                )
            ]

        return await self._read(q)

    # ---- jobs --------------------------------------------------------------------

    async def find_idempotent(self, account_id: int, key: str, request_hash: str) -> JobRow | None:
        """The job an earlier request with this Idempotency-Key created, if any.

        Raises:
            IdempotencyKeyReused: The key was used with a different request body.
        """

        def q(conn: sqlite3.Connection) -> JobRow | None:
            return _idempotent(conn, account_id, key, request_hash)

        return await self._read(q)

    async def create_job(self, new: NewJob) -> JobRow:
        """Create a job and its URL rows, reserving one credit per URL, atomically.

        Returns:
            The job (``replayed=True`` when an identical earlier request made it).

        Raises:
            InsufficientCredits: The account cannot cover every URL; nothing written.
            IdempotencyKeyReused: Same key, different request.
        """
        job_id = str(uuid.uuid4())
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> JobRow:
            with _immediate(conn):
                if new.account_id is not None and new.idempotency_key is not None:
                    earlier = _idempotent(
                        conn, new.account_id, new.idempotency_key, new.request_hash or ""
                    )
                    if earlier is not None:
                        return attrs.evolve(earlier, replayed=True)
                if new.account_id is not None:
                    row = conn.execute(
                        "SELECT balance FROM accounts WHERE id = ?", (new.account_id,)
                    ).fetchone()
                    balance = row["balance"] if row else 0
                    if balance < len(new.urls):
                        raise InsufficientCredits(
                            f"this job needs {len(new.urls)} credits, the account has {balance}",
                            details={"required": len(new.urls), "available": balance},
                        )
                conn.execute(
                    "INSERT INTO jobs (id, kind, account_id, api_key_id, site, sitemap_urls, "
                    "options, root, status, urls_complete, created_at, idempotency_key, "
                    "request_hash, webhook_url, discovery) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job_id,
                        new.kind,
                        new.account_id,
                        new.api_key_id,
                        new.site,
                        json.dumps(list(new.sitemap_urls)),
                        json.dumps(dict(new.options)),
                        new.root,
                        new.status,
                        int(new.urls_complete),
                        now,
                        new.idempotency_key,
                        new.request_hash,
                        new.webhook_url,
                        None if new.discovery is None else json.dumps(dict(new.discovery)),
                    ),
                )
                _insert_urls(conn, job_id, 1, new.urls)
                job = _load_job(conn, job_id)
                assert job is not None
                return job

        return await self._write(tx)

    async def append_urls(
        self, job_id: str, urls: Sequence[tuple[str, str | None]], *, complete: bool = False
    ) -> int:
        """Add URL rows to an uncharged (offline) job whose list is still growing.

        Returns:
            The job's URL count afterwards.
        """

        def tx(conn: sqlite3.Connection) -> int:
            with _immediate(conn):
                row = conn.execute(
                    "SELECT account_id, urls_complete FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id}")
                if row["account_id"] is not None or row["urls_complete"]:
                    raise ValidationError("URLs can only be added to an open offline job")
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM job_urls WHERE job_id = ?", (job_id,)
                ).fetchone()
                _insert_urls(conn, job_id, count + 1, urls)
                if complete:
                    conn.execute("UPDATE jobs SET urls_complete = 1 WHERE id = ?", (job_id,))
                return int(count) + len(urls)

        return await self._write(tx)

    async def job(self, job_id: str, *, account_id: int | None = None) -> JobRow:
        """A job with its counts.

        Args:
            account_id: When given, a job of another account is reported as missing.

        Raises:
            JobNotFound: No such job (for this account).
        """

        def q(conn: sqlite3.Connection) -> JobRow | None:
            return _load_job(conn, job_id)

        job = await self._read(q)
        if job is None or (account_id is not None and job.account_id != account_id):
            raise JobNotFound(f"job {job_id} not found")
        return job

    async def jobs(
        self,
        *,
        statuses: Iterable[str] = (),
        kinds: Iterable[str] = (),
        account_id: int | None = None,
    ) -> list[JobRow]:
        """Jobs filtered by status/kind/account, oldest first."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        statuses, kinds = list(statuses), list(kinds)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args += kinds
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)

        def q(conn: sqlite3.Connection) -> list[JobRow]:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at, id",
                    args,
                )
            ]
            return [j for j in (_load_job(conn, i) for i in ids) if j is not None]

        return await self._read(q)

    async def urls(self, job_id: str) -> list[UrlRow]:
        """Every URL row of a job, in sequence order."""

        def q(conn: sqlite3.Connection) -> list[UrlRow]:
            return [
                UrlRow(**{k: r[k] for k in _URL_FIELDS})
                for r in conn.execute(
                    "SELECT * FROM job_urls WHERE job_id = ? ORDER BY seq", (job_id,)
                )
            ]

        return await self._read(q)

    async def set_status(
        self,
        job_id: str,
        status: JobStatus | None,
        *,
        expect: Iterable[JobStatus] = (),
        **fields: Any,
    ) -> bool:
        """Move a job to ``status`` (only from one of ``expect``, when given).

        ``status=None`` keeps the status and only sets ``fields``.

        ``fields`` may set ``error_code``, ``error_message``, ``zip_path``, ``zip_size``,
        ``zip_sha256``, ``expires_at``, ``webhook_state``, ``root``, ``sitemap_urls``.
        ``started_at``/``finished_at`` are stamped by the ledger.

        Returns:
            Whether the job moved.
        """
        allowed = {
            "error_code",
            "error_message",
            "zip_path",
            "zip_size",
            "zip_sha256",
            "expires_at",
            "webhook_state",
            "root",
            "sitemap_urls",
        }
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set {sorted(bad)}")
        if "sitemap_urls" in fields:
            fields["sitemap_urls"] = json.dumps(list(fields["sitemap_urls"]))
        now = self.clock()
        expect = list(expect)

        def tx(conn: sqlite3.Connection) -> bool:
            sets = ["status = COALESCE(?, status)"] + [f"{k} = ?" for k in fields]
            args: list[Any] = [status, *fields.values()]
            if status == "processing":
                sets.append("started_at = COALESCE(started_at, ?)")
                args.append(iso(now))
            if status in ("completed", "failed"):
                sets.append("finished_at = COALESCE(finished_at, ?)")
                args.append(iso(now))
            where = "id = ?"
            args.append(job_id)
            if expect:
                where += f" AND status IN ({','.join('?' * len(expect))})"
                args += expect
            with _immediate(conn):
                row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id}")
                if status is not None and status != row["status"]:
                    if status not in _TRANSITIONS[row["status"]]:
                        if expect and row["status"] not in expect:
                            return False  # the caller's guard says: not for me
                        raise ValueError(f"a {row['status']} job cannot become {status}")
                    if status in ("completed", "failed"):
                        (unfinished,) = conn.execute(
                            "SELECT COUNT(*) FROM job_urls WHERE job_id = ? "
                            "AND state IN ('queued', 'leased')",
                            (job_id,),
                        ).fetchone()
                        if unfinished:
                            # Their reservations would stay outstanding forever.
                            raise ValueError(
                                f"job {job_id} has {unfinished} unfinished URLs; use fail_job"
                            )
                cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", args)
                return cur.rowcount > 0

        return await self._write(tx)

    async def fail_job(self, job_id: str, code: str, message: str) -> bool:
        """Fail a job: every unfinished URL fails (and is refunded) with ``code``.

        Returns:
            Whether the job was not already terminal.
        """
        now = self.clock()

        def tx(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                cur = conn.execute(
                    "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, "
                    "finished_at = COALESCE(finished_at, ?), urls_complete = 1 "
                    "WHERE id = ? AND status NOT IN ('completed', 'failed', 'expired')",
                    (code, message, iso(now), job_id),
                )
                if cur.rowcount == 0:
                    return False
                conn.execute(
                    "UPDATE job_urls SET state = 'failed', error_code = ?, error_message = ?, "
                    "lease_owner = NULL, lease_until = NULL, finished_at = ? "
                    "WHERE job_id = ? AND state IN ('queued', 'leased')",
                    (code, message, iso(now), job_id),
                )
                return True

        return await self._write(tx)

    # ---- leases --------------------------------------------------------------------

    async def claim(
        self, job_id: str, *, limit: int = 1, lease_seconds: float, max_attempts: int = 3
    ) -> list[Claim]:
        """Lease up to ``limit`` queued (or lease-expired) URLs of a job, in order.

        A URL already tried ``max_attempts`` times without an answer (each attempt
        ended by a crash) is failed and refunded instead of being leased again.
        """
        now = self.clock()
        until = now + lease_seconds

        def tx(conn: sqlite3.Connection) -> list[Claim]:
            with _immediate(conn):
                conn.execute(
                    "UPDATE job_urls SET state = 'failed', error_code = 'CAPTURE_ERROR', "
                    "error_message = ?, lease_owner = NULL, lease_until = NULL, "
                    "finished_at = ? WHERE job_id = ? AND attempts >= ? AND "
                    "(state = 'queued' OR (state = 'leased' AND lease_until < ?))",
                    (
                        f"gave up after {max_attempts} attempts that did not finish",
                        iso(now),
                        job_id,
                        max_attempts,
                        now,
                    ),
                )
                rows = conn.execute(
                    "UPDATE job_urls SET state = 'leased', lease_owner = ?, lease_until = ?, "
                    "attempts = attempts + 1, lease_no = lease_no + 1 WHERE job_id = ? "
                    "AND seq IN ("
                    "  SELECT seq FROM job_urls WHERE job_id = ? AND (state = 'queued' OR "
                    "  (state = 'leased' AND lease_until < ?)) ORDER BY seq LIMIT ?) "
                    "RETURNING seq, url, entry, attempts, lease_no",
                    (self.owner, until, job_id, job_id, now, limit),
                ).fetchall()
            return sorted(
                (
                    Claim(
                        job_id=job_id,
                        seq=r["seq"],
                        url=r["url"],
                        entry=r["entry"],
                        attempt=r["attempts"],
                        lease_until=until,
                        lease=r["lease_no"],
                    )
                    for r in rows
                ),
                key=lambda c: c.seq,
            )

        return await self._write(tx)

    async def finish(self, claim: Claim, result: UrlResult) -> bool:
        """Settle a claimed URL: ``ok`` uses its credit, ``failed`` refunds it.

        Returns:
            False when the lease was lost (expired and taken by another worker, or
            the job failed meanwhile): nothing changed and the caller's result is
            discarded. Exactly-once is enforced by the schema either way.
        """
        now = self.clock()

        def tx(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                cur = conn.execute(
                    "UPDATE job_urls SET state = ?, error_code = ?, error_message = ?, "
                    "http_status = ?, final_url = ?, width = ?, height = ?, bytes = ?, "
                    "sha256 = ?, file = ?, lease_owner = NULL, lease_until = NULL, "
                    "finished_at = ? WHERE job_id = ? AND seq = ? AND state = 'leased' "
                    "AND lease_owner = ? AND attempts = ? AND lease_no = ?",
                    (
                        "ok" if result.ok else "failed",
                        result.error_code,
                        result.error_message,
                        result.http_status,
                        result.final_url,
                        result.width,
                        result.height,
                        result.bytes,
                        result.sha256,
                        result.file,
                        iso(now),
                        claim.job_id,
                        claim.seq,
                        self.owner,
                        claim.attempt,
                        claim.lease,
                    ),
                )
                return cur.rowcount > 0

        return await self._write(tx)

    async def release(self, claims: Sequence[Claim]) -> None:
        """Give leases back unfinished (graceful shutdown): the attempt does not count."""
        if not claims:
            return

        def tx(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                conn.executemany(
                    "UPDATE job_urls SET state = 'queued', lease_owner = NULL, "
                    "lease_until = NULL, attempts = MAX(0, attempts - 1) WHERE job_id = ? "
                    "AND seq = ? AND state = 'leased' AND lease_owner = ? AND attempts = ? "
                    "AND lease_no = ?",
                    [(c.job_id, c.seq, self.owner, c.attempt, c.lease) for c in claims],
                )

        await self._write(tx)

    async def recover(self) -> int:
        """After a restart: leases held by earlier (dead) processes go back to the queue.

        Only one ``bulk serve`` (or offline run) uses a database at a time (the caller
        holds a lock file), so every lease not owned by this process is dead.

        Returns:
            How many URLs were returned to the queue.
        """

        def tx(conn: sqlite3.Connection) -> int:
            with _immediate(conn):
                cur = conn.execute(
                    "UPDATE job_urls SET state = 'queued', lease_owner = NULL, "
                    "lease_until = NULL WHERE state = 'leased' AND lease_owner != ?",
                    (self.owner,),
                )
                return cur.rowcount

        return await self._write(tx)

    async def expire_due(self) -> list[JobRow]:
        """Completed jobs whose download window has passed become ``expired``.

        Returns:
            The jobs just expired (the caller deletes their files).
        """
        now = self.clock()

        def tx(conn: sqlite3.Connection) -> list[JobRow]:
            with _immediate(conn):
                ids = [
                    r[0]
                    for r in conn.execute(
                        "UPDATE jobs SET status = 'expired' WHERE status = 'completed' "
                        "AND expires_at IS NOT NULL AND expires_at <= ? RETURNING id",
                        (now,),
                    )
                ]
                return [j for j in (_load_job(conn, i) for i in ids) if j is not None]

        return await self._write(tx)

    # ---- audit ---------------------------------------------------------------------

    async def audit(self) -> AuditReport:
        """Check every ledger invariant and SQLite's own integrity.

        Invariants: balance >= 0; balance = granted - reserved + refunded (events);
        balance = granted - used once no reservation is outstanding; for every
        finished job reserved = used + refunded = its URL count, and each ok row has
        exactly one ``use``, each failed row one ``refund``; no job is left pending or
        processing with no work.
        """

        now = self.clock()

        def q(conn: sqlite3.Connection) -> AuditReport:
            problems: list[str] = []
            (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
            if integrity != "ok":
                problems.append(f"integrity_check: {integrity}")
            accounts = []
            for a in conn.execute("SELECT id, balance FROM accounts ORDER BY id"):
                sums = {
                    r[0]: r[1]
                    for r in conn.execute(
                        "SELECT kind, SUM(amount) FROM credit_events WHERE account_id = ? "
                        "GROUP BY kind",
                        (a["id"],),
                    )
                }
                granted, reserved = sums.get("grant", 0), sums.get("reserve", 0)
                used, refunded = sums.get("use", 0), sums.get("refund", 0)
                outstanding = reserved - used - refunded
                accounts.append(
                    {
                        "account_id": a["id"],
                        "balance": a["balance"],
                        "granted": granted,
                        "used": used,
                        "outstanding": outstanding,
                    }
                )
                if a["balance"] < 0:
                    problems.append(f"account {a['id']}: negative balance {a['balance']}")
                if a["balance"] != granted - reserved + refunded:
                    problems.append(
                        f"account {a['id']}: balance {a['balance']} != granted {granted} "
                        f"- reserved {reserved} + refunded {refunded}"
                    )
                if outstanding == 0 and a["balance"] != granted - used:
                    problems.append(f"account {a['id']}: balance {a['balance']} != granted - used")
            jobs = []
            for j in conn.execute("SELECT id, status, account_id FROM jobs ORDER BY created_at"):
                job = _load_job(conn, j["id"])
                assert job is not None
                jobs.append(
                    {
                        "job_id": job.id,
                        "status": job.status,
                        "reserved": job.reserved,
                        "used": job.used,
                        "refunded": job.refunded,
                    }
                )
                charged = j["account_id"] is not None
                if job.status in TERMINAL_JOB:
                    if job.queued or job.leased:
                        problems.append(f"job {job.id}: {job.status} with unfinished URLs")
                    if charged and not (job.reserved == job.used + job.refunded == job.total):
                        problems.append(
                            f"job {job.id}: reserved {job.reserved} != used {job.used} "
                            f"+ refunded {job.refunded} (urls {job.total})"
                        )
                if charged:
                    (bad,) = conn.execute(
                        "SELECT COUNT(*) FROM job_urls u WHERE u.job_id = ? AND ("
                        " (u.state = 'ok') != EXISTS (SELECT 1 FROM credit_events e WHERE "
                        "  e.job_id = u.job_id AND e.seq = u.seq AND e.kind = 'use') OR"
                        " (u.state = 'failed') != EXISTS (SELECT 1 FROM credit_events e WHERE"
                        "  e.job_id = u.job_id AND e.seq = u.seq AND e.kind = 'refund'))",
                        (job.id,),
                    ).fetchone()
                    if bad:
                        problems.append(f"job {job.id}: {bad} URL rows disagree with credits")
                if (
                    job.status in ("pending", "processing")
                    and job.urls_complete
                    and not (job.queued or job.leased)
                    and _idle_since(conn, job) < now - _STALL_GRACE
                ):
                    # A live runner moves such a job on within moments; only one that
                    # has sat like this for a while is stuck.
                    problems.append(f"job {job.id}: {job.status} with no work left")
            return AuditReport(
                ok=not problems,
                problems=tuple(problems),
                jobs=tuple(jobs),
                accounts=tuple(accounts),
                integrity=integrity,
            )

        return await self._read(q)


_STALL_GRACE: Final = 60.0


def _idle_since(conn: sqlite3.Connection, job: JobRow) -> float:
    """Unix time of the job's last activity (its latest finished URL, or its creation)."""
    (last,) = conn.execute(
        "SELECT MAX(finished_at) FROM job_urls WHERE job_id = ?", (job.id,)
    ).fetchone()
    text = last or job.started_at or job.created_at
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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


def _grant(conn: sqlite3.Connection, account_id: int, credits: int, now: str | None) -> None:
    conn.execute(
        "INSERT INTO credit_events (account_id, kind, amount, created_at) "
        "VALUES (?, 'grant', ?, ?)",
        (account_id, credits, now),
    )


def _insert_key(conn: sqlite3.Connection, account_id: int, key: str, now: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO api_keys (account_id, key_hash, prefix, created_at) VALUES (?, ?, ?, ?)",
        (account_id, _hash_key(key), key[: len(KEY_PREFIX) + 6], now),
    )
    return int(cur.lastrowid or 0)


def _insert_urls(
    conn: sqlite3.Connection, job_id: str, first_seq: int, urls: Sequence[tuple[str, str | None]]
) -> None:
    conn.executemany(
        "INSERT INTO job_urls (job_id, seq, url, entry) VALUES (?, ?, ?, ?)",
        [(job_id, first_seq + i, url, entry) for i, (url, entry) in enumerate(urls)],
    )


def _account(conn: sqlite3.Connection, account_id: int, key_id: int | None) -> Account:
    row = conn.execute(
        "SELECT id, email, plan, balance, webhook_secret FROM accounts WHERE id = ?",
        (account_id,),
    ).fetchone()
    if row is None:
        raise InvalidAPIKey("no such account")
    prefix = None
    if key_id is not None:
        k = conn.execute("SELECT prefix FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        prefix = k["prefix"] if k else None
    return Account(
        id=row["id"],
        email=row["email"],
        plan=row["plan"],
        balance=row["balance"],
        webhook_secret=row["webhook_secret"],
        api_key_id=key_id,
        key_prefix=prefix,
    )


def _idempotent(
    conn: sqlite3.Connection, account_id: int, key: str, request_hash: str
) -> JobRow | None:
    row = conn.execute(
        "SELECT id, request_hash FROM jobs WHERE account_id = ? AND idempotency_key = ?",
        (account_id, key),
    ).fetchone()
    if row is None:
        return None
    if not hmac.compare_digest(row["request_hash"] or "", request_hash):
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    return _load_job(conn, row["id"])
