"""The credit ledger, against real SQLite files: every money rule, and who enforces it.

Most rules are checked twice: through ``Ledger`` (what callers see) and with raw
``sqlite3`` connections to the same file (the schema refuses what a careless or
malicious caller would do, which is the point of putting the rules in triggers).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import queue
import random
import sqlite3
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule
from sqlite_utils import Database

from bulk._exceptions import (
    EmailTaken,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidAPIKey,
    InvalidJobTransition,
    JobNotFound,
    KeyLimitReached,
    ValidationError,
)
from bulk._ledger import Claim, Ledger, NewJob, SecretBox, UrlResult, migrations

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0
LEASE = 60.0


class FakeClock:
    """Unix time that only moves when a test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextmanager
def raw(path: Path, *, timeout_ms: int = 5000) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the ledger file, outside the Ledger class."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        yield conn
    finally:
        conn.close()


def scalar(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    return conn.execute(sql, args).fetchone()[0]


def pages(n: int, site: str = "https://example.com") -> list[tuple[str, str | None]]:
    return [(f"{site}/page-{i}", f"page-{i}.png") for i in range(1, n + 1)]


def bulk_job(account_id: int, n: int, **kw: Any) -> NewJob:
    return NewJob(
        kind="bulk",
        site="https://example.com",
        urls=pages(n),
        account_id=account_id,
        sitemap_urls=("https://example.com/sitemap.xml",),
        options={"format": "png", "width": 1280},
        **kw,
    )


def ok(seq: int = 1) -> UrlResult:
    return UrlResult(
        ok=True,
        http_status=200,
        final_url=f"https://example.com/page-{seq}",
        width=1280,
        height=800,
        bytes=1000 + seq,
        sha256=f"{seq:064x}",
        file=f"img/{seq:06d}.png",
    )


def failed(code: str = "HTTP_ERROR") -> UrlResult:
    return UrlResult(ok=False, error_code=code, error_message="boom", http_status=500)


def events(path: Path, job_id: str) -> Counter[str]:
    with raw(path) as conn:
        return Counter(
            dict(
                conn.execute(
                    "SELECT kind, COUNT(*) FROM credit_events WHERE job_id = ? GROUP BY kind",
                    (job_id,),
                ).fetchall()
            )
        )


def credit_trail(path: Path, job_id: str, seq: int) -> list[str]:
    with raw(path) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT kind FROM credit_events WHERE job_id = ? AND seq = ? ORDER BY id",
                (job_id, seq),
            )
        ]


def sqlite_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


async def balance(ledger: Ledger, account_id: int) -> int:
    return (await ledger.account(account_id)).balance


# ---- storage: WAL, busy timeout, one writer, separate readers --------------------------


async def test_wal_busy_timeout_and_read_only_readers(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        await ledger.create_account(credits=1)
        with raw(db) as conn:
            assert scalar(conn, "PRAGMA journal_mode") == "wal"
        assert await ledger._read(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == (
            10000
        )

        def write(c: sqlite3.Connection) -> None:
            c.execute("UPDATE accounts SET plan = 'pro'")

        # Reads go through separate connections that cannot write at all.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await ledger._read(write)


async def test_writer_holds_no_lock_between_commands(db: Path) -> None:
    # Short transactions: while the ledger is open and idle, another connection can
    # take the write lock at once (busy_timeout 0 would fail if anything held it).
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=3)
        await ledger.create_job(bulk_job(account.id, 2))
        with raw(db, timeout_ms=0) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE accounts SET plan = 'pro' WHERE id = ?", (account.id,))
            conn.execute("COMMIT")
        assert (await ledger.account(account.id)).plan == "pro"


async def test_reads_see_committed_writes_of_other_connections(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=1)
        with raw(db) as conn:
            conn.execute(
                "INSERT INTO credit_events (account_id, kind, amount, created_at) "
                "VALUES (?, 'grant', 4, 'now')",
                (account.id,),
            )
        assert await balance(ledger, account.id) == 5


async def test_schema_has_the_issue_columns(db: Path) -> None:
    async with Ledger.open(db):
        pass
    with raw(db) as conn:

        def cols(table: str) -> set[str]:
            return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}

        assert {"id", "balance"} <= cols("accounts")
        assert {"account_id", "key_hash", "prefix", "active"} <= cols("api_keys")
        assert "key" not in cols("api_keys")
        assert {
            "account_id",
            "site",
            "sitemap_urls",
            "options",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "expires_at",
            "idempotency_key",
            "request_hash",
        } <= cols("jobs")
        assert {
            "job_id",
            "seq",
            "state",
            "attempts",
            "lease_until",
            "entry",
            "error_code",
            "bytes",
            "sha256",
        } <= cols("job_urls")
        assert {"account_id", "job_id", "seq", "kind", "amount"} <= cols("credit_events")


async def test_a_cancelled_caller_does_not_cancel_its_command(db: Path) -> None:
    # The writer carries out every command it was sent, shielded: the caller may not
    # hear the answer, but the database never holds half of it.
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=3)
        with raw(db) as holder:
            # Another connection holds the write lock, so the command is surely
            # still running (waiting for the lock) when its caller is cancelled.
            holder.execute("BEGIN IMMEDIATE")
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ledger.create_job, bulk_job(account.id, 2))
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            holder.execute("COMMIT")
        assert scope.cancelled_caught
        await ledger.grant(account.id, 1)  # commands run in order: the job is in
        (job,) = await ledger.jobs()
        assert (job.total, job.reserved) == (2, 2)
        assert await balance(ledger, account.id) == 2
        assert (await ledger.audit()).ok


async def test_errors_leave_the_ledger_as_themselves(db: Path) -> None:
    with pytest.raises(InsufficientCredits):
        async with Ledger.open(db) as ledger:
            account, _ = await ledger.create_account(credits=1)
            await ledger.create_job(bulk_job(account.id, 2))
    async with Ledger.open(db) as ledger:
        assert await balance(ledger, account.id) == 1  # the open ended cleanly
        assert await ledger.jobs() == []


def _first_open(path: str) -> str:
    """Open a ledger file's writer connection (in a worker process)."""
    from bulk._ledger import _connect

    try:
        _connect(path).close()
    except sqlite3.Error as exc:
        return repr(exc)
    return "ok"


def test_many_processes_switching_a_new_file_to_wal(tmp_path: Path) -> None:
    # SQLite may answer the switch to WAL with "database is locked" at once, without
    # waiting, while other processes open the same new file.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        outcomes = [
            outcome
            for i in range(60)
            for outcome in pool.map(_first_open, [str(tmp_path / f"new{i}.db")] * 6)
        ]
    assert [o for o in outcomes if o != "ok"] == []


async def test_simultaneous_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    # Without the write lock around the migrations, two processes opening a new
    # file would both try to create every table ("table accounts already exists").
    paths = [tmp_path / f"l{i}.db" for i in range(2)]
    procs = []
    for path in paths:
        procs += [await _child(path, 0, "open") for _ in range(3)]
    for proc in procs:
        assert await _read_line(proc) == "ready"
        with trio.fail_after(30):
            assert await proc.wait() == 0
    for path in paths:
        with raw(path) as conn:
            assert scalar(conn, "SELECT COUNT(*) FROM _sqlite_migrations") == len(
                migrations.pending(Database(sqlite3.connect(":memory:")))
            )


async def test_a_database_from_before_lease_numbers_is_upgraded(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    migrations.apply(Database(conn), stop_before="m002_lease_fencing_and_strict_settlement")
    conn.execute(
        "INSERT INTO accounts (id, balance, webhook_secret, created_at) VALUES (1, 0, 'w', 'n')"
    )
    conn.execute(
        "INSERT INTO credit_events (account_id, kind, amount, created_at) "
        "VALUES (1, 'grant', 2, 'n')"
    )
    conn.execute(
        "INSERT INTO jobs (id, kind, account_id, site, status, created_at) "
        "VALUES ('j', 'bulk', 1, 's', 'processing', 'n')"
    )
    conn.execute(
        "INSERT INTO job_urls (job_id, seq, url, state, attempts, lease_owner, lease_until) "
        "VALUES ('j', 1, 'u', 'leased', 1, 'dead', 0)"
    )
    conn.close()
    async with Ledger.open(db) as ledger:
        assert await balance(ledger, 1) == 1
        assert await ledger.recover() == 1
        (claim,) = await ledger.claim("j", lease_seconds=LEASE)
        assert (claim.attempt, claim.lease) == (2, 1)
        assert await ledger.finish(claim, ok(1))
        with raw(db) as c:
            triggers = dict(c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
        assert "NEW.amount" in triggers["credit_events_settles_reservation"]
        assert "job_urls_born_queued" in triggers
        await ledger.set_status("j", "packaging")
        assert (await ledger.audit()).ok


# ---- accounts and API keys -----------------------------------------------------------


async def test_keys_are_never_stored_in_clear(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, key = await ledger.create_account(credits=5, email="a@example.com")
        more = [await ledger.create_key(account.id) for _ in range(3)]
        keys = [key, *more]
        assert all(k.startswith("pix_") and len(k) > 30 for k in keys)
        assert len(set(keys)) == 4
        listed = await ledger.keys(account.id)
        assert [k["prefix"] for k in listed] == [k[:10] for k in keys]
        assert account.key_prefix == key[:10]
        for k in keys:
            assert (await ledger.authenticate(k)).id == account.id
        files_open = sqlite_bytes(db)
    files_closed = sqlite_bytes(db)
    # Every byte SQLite wrote (database, WAL, shared memory), while open and after
    # the final checkpoint: no key, only hashes.
    for blob in (files_open, files_closed):
        for k in keys:
            assert k.encode() not in blob
            assert k[4:].encode() not in blob
            # ...while what was stored is there to be found (the scan is not blind).
            assert hashlib.sha256(k.encode()).hexdigest().encode() in blob
    with raw(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT key_hash FROM api_keys")}
    assert not stored & set(keys)
    assert len(stored) == 4


async def test_unknown_and_revoked_keys_fail_authenticate(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, key = await ledger.create_account(credits=5)
        second = await ledger.create_key(account.id)
        with pytest.raises(InvalidAPIKey):
            await ledger.authenticate("pix_" + "0" * 48)
        assert await ledger.revoke_key(key)
        assert not await ledger.revoke_key(key)  # already inactive
        with pytest.raises(InvalidAPIKey) as info:
            await ledger.authenticate(key)
        assert info.value.code == "INVALID_API_KEY"
        # The other key still works; admins can still find the revoked one.
        assert (await ledger.authenticate(second)).id == account.id
        assert (await ledger.account_by_key(key)).id == account.id
        # Revoking by display prefix only works within the owning account.
        other, _ = await ledger.create_account(credits=0)
        assert not await ledger.revoke_key(second[:10], account_id=other.id)
        assert await ledger.revoke_key(second[:10], account_id=account.id)
        with pytest.raises(InvalidAPIKey):
            await ledger.authenticate(second)
        listed = await ledger.keys(account.id)
        assert [k["active"] for k in listed] == [0, 0]
        assert all(k["revoked_at"] for k in listed)


async def test_at_most_five_active_keys(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, first = await ledger.create_account(credits=0)
        keys = [first] + [await ledger.create_key(account.id) for _ in range(4)]
        with pytest.raises(KeyLimitReached) as info:
            await ledger.create_key(account.id)
        assert info.value.code == "KEY_LIMIT_REACHED"
        assert len(await ledger.keys(account.id)) == 5  # nothing written
        # Revoked keys do not count against the limit.
        await ledger.revoke_key(keys[2])
        await ledger.create_key(account.id)
        with pytest.raises(KeyLimitReached):
            await ledger.create_key(account.id)
        # The limit is per account.
        other, _ = await ledger.create_account(credits=0)
        await ledger.create_key(other.id)


async def test_concurrent_key_creation_respects_the_limit(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=0)
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await ledger.create_key(account.id)
                outcomes.append("ok")
            except KeyLimitReached:
                outcomes.append("limit")

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
        assert Counter(outcomes) == {"ok": 4, "limit": 8}


async def test_account_validation(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        with pytest.raises(ValidationError):
            await ledger.create_account(credits=-1)
        await ledger.create_account(credits=1, email="x@example.com")
        with pytest.raises(EmailTaken) as info:
            await ledger.create_account(credits=1, email="x@example.com")
        assert info.value.code == "EMAIL_TAKEN"
        account, _ = await ledger.create_account(credits=0)
        assert account.balance == 0
        with pytest.raises(ValidationError):
            await ledger.grant(account.id, 0)
        assert (await ledger.grant(account.id, 7)).balance == 7
        with pytest.raises(InvalidAPIKey):
            await ledger.account(999)
    with raw(db) as conn:
        assert scalar(conn, "SELECT COUNT(*) FROM accounts") == 2


# ---- creating jobs: reserve in the same transaction -----------------------------------


async def test_create_job_reserves_one_credit_per_url_with_its_rows(
    db: Path, clock: FakeClock
) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=10)
        job = await ledger.create_job(
            bulk_job(account.id, 4, idempotency_key="k1", request_hash="h1")
        )
        assert job.status == "pending"
        assert (job.total, job.queued, job.reserved, job.used, job.refunded) == (4, 4, 4, 0, 0)
        assert not job.replayed
        assert job.account_id == account.id
        assert job.site == "https://example.com"
        assert job.sitemap_urls == ("https://example.com/sitemap.xml",)
        assert job.options == {"format": "png", "width": 1280}
        assert job.created_at == "2023-11-14T22:13:20.000Z"
        assert job.expires_at is None
        assert await balance(ledger, account.id) == 6
        rows = await ledger.urls(job.id)
        assert [(r.seq, r.url, r.entry, r.state, r.attempts) for r in rows] == [
            (i, f"https://example.com/page-{i}", f"page-{i}.png", "queued", 0) for i in range(1, 5)
        ]
    with raw(db) as conn:
        assert conn.execute(
            "SELECT idempotency_key, request_hash FROM jobs WHERE id = ?", (job.id,)
        ).fetchone() == ("k1", "h1")
        reserves = conn.execute(
            "SELECT account_id, seq, amount FROM credit_events WHERE job_id = ? AND kind = "
            "'reserve' ORDER BY seq",
            (job.id,),
        ).fetchall()
    assert reserves == [(account.id, i, 1) for i in range(1, 5)]


async def test_insufficient_credits_writes_nothing(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=3)

        def counts() -> tuple[int, ...]:
            with raw(db) as conn:
                return tuple(
                    scalar(conn, f"SELECT COUNT(*) FROM {t}")
                    for t in ("jobs", "job_urls", "credit_events")
                )

        before = counts()
        with pytest.raises(InsufficientCredits) as info:
            await ledger.create_job(bulk_job(account.id, 4, idempotency_key="k"))
        assert info.value.code == "INSUFFICIENT_CREDITS"
        assert info.value.details == {"required": 4, "available": 3}
        assert counts() == before
        assert await balance(ledger, account.id) == 3
        # The failed request did not burn its idempotency key either.
        assert await ledger.find_idempotent(account.id, "k", "") is None
        # Exactly the balance is enough.
        job = await ledger.create_job(bulk_job(account.id, 3))
        assert job.reserved == 3
        assert await balance(ledger, account.id) == 0
        with pytest.raises(InsufficientCredits):
            await ledger.create_job(bulk_job(account.id, 1))
        assert (await ledger.audit()).ok


async def test_concurrent_job_creation_never_overdraws(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=10)
        made: list[int] = []
        refused = 0

        async def one(n: int) -> None:
            nonlocal refused
            try:
                job = await ledger.create_job(bulk_job(account.id, n))
                made.append(job.total)
            except InsufficientCredits:
                refused += 1

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, 1 + i % 3)
        assert sum(made) <= 10
        assert refused == 40 - len(made)
        assert await balance(ledger, account.id) == 10 - sum(made)
        # Whatever is left is smaller than every refused request could use: greedy
        # in arrival order, so at most 2 credits can be left over.
        assert 10 - sum(made) < 3
        report = await ledger.audit()
        assert report.ok, report.problems


async def test_terminal_states_are_terminal(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=3)
        job = await ledger.create_job(bulk_job(account.id, 2))
        await ledger.set_status(job.id, "processing")
        # completing with unfinished URLs would strand their reservations
        with pytest.raises(InvalidJobTransition, match="unfinished"):
            await ledger.set_status(job.id, "completed")
        with pytest.raises(InvalidJobTransition, match="unfinished"):
            await ledger.set_status(job.id, "failed")
        assert await ledger.fail_job(job.id, "X", "stop")
        for status in ("processing", "packaging", "completed", "pending"):
            # Only the BulkError tree leaves the ledger (never a ValueError).
            with pytest.raises(InvalidJobTransition, match="cannot become") as caught:
                await ledger.set_status(job.id, status)  # type: ignore[arg-type]
            assert caught.value.code == "INVALID_JOB_TRANSITION"
            assert not isinstance(caught.value, ValueError)
        # with an expect= guard that does not match, it is a quiet no
        assert not await ledger.set_status(job.id, "processing", expect=("pending",))
        assert (await ledger.audit()).ok


async def test_concurrent_job_creation_from_two_writers_never_overdraws(db: Path) -> None:
    # Two Ledger instances (two writer connections) on one file: BEGIN IMMEDIATE
    # serialises the balance check with the reservation across connections.
    async with Ledger.open(db) as first, Ledger.open(db) as second:
        account, _ = await first.create_account(credits=25)
        made = 0

        async def one(ledger: Ledger) -> None:
            nonlocal made
            try:
                await ledger.create_job(bulk_job(account.id, 2))
                made += 1
            except InsufficientCredits:
                pass

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, (first, second)[i % 2])
        assert made == 12
        assert await balance(second, account.id) == 1
        assert (await first.audit()).ok


# ---- idempotency ------------------------------------------------------------------------


async def test_idempotent_replay_returns_the_same_job(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=5)
        new = bulk_job(account.id, 3, idempotency_key="key-1", request_hash="hash-a")
        job = await ledger.create_job(new)
        again = await ledger.create_job(new)
        assert again.replayed and not job.replayed
        assert again.id == job.id
        assert attrs.evolve(again, replayed=False) == job
        assert await balance(ledger, account.id) == 2  # charged once
        found = await ledger.find_idempotent(account.id, "key-1", "hash-a")
        assert found is not None and found.id == job.id

        changed = attrs.evolve(new, request_hash="hash-b")
        with pytest.raises(IdempotencyKeyReused) as info:
            await ledger.create_job(changed)
        assert info.value.code == "IDEMPOTENCY_KEY_REUSED"
        with pytest.raises(IdempotencyKeyReused):
            await ledger.find_idempotent(account.id, "key-1", "hash-b")

        # A replay is answered even when the balance could not pay for it again.
        assert (await ledger.create_job(new)).id == job.id
        # Keys are per account: another account's identical key is a new job.
        other, _ = await ledger.create_account(credits=3)
        theirs = await ledger.create_job(attrs.evolve(new, account_id=other.id))
        assert theirs.id != job.id and not theirs.replayed
        with raw(db) as conn:
            assert scalar(conn, "SELECT COUNT(*) FROM jobs") == 2


async def test_concurrent_replays_create_one_job(db: Path) -> None:
    async with Ledger.open(db) as first, Ledger.open(db) as second:
        account, _ = await first.create_account(credits=10)
        new = bulk_job(account.id, 4, idempotency_key="same", request_hash="h")
        results = []

        async def one(ledger: Ledger) -> None:
            results.append(await ledger.create_job(new))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, (first, second)[i % 2])
        assert len({j.id for j in results}) == 1
        assert sum(not j.replayed for j in results) == 1
        assert await balance(first, account.id) == 6
        with raw(db) as conn:
            assert scalar(conn, "SELECT COUNT(*) FROM jobs") == 1
            assert scalar(conn, "SELECT COUNT(*) FROM credit_events WHERE kind = 'reserve'") == 4


async def test_job_of_another_account_is_not_found(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        mine, _ = await ledger.create_account(credits=2)
        theirs, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(mine.id, 2))
        assert (await ledger.job(job.id, account_id=mine.id)).id == job.id
        assert (await ledger.job(job.id)).id == job.id
        with pytest.raises(JobNotFound) as info:
            await ledger.job(job.id, account_id=theirs.id)
        assert info.value.code == "JOB_NOT_FOUND"
        with pytest.raises(JobNotFound):
            await ledger.job("no-such-job")
        assert [j.id for j in await ledger.jobs(account_id=mine.id)] == [job.id]
        assert await ledger.jobs(account_id=theirs.id) == []


# ---- leases: claim, finish, release -----------------------------------------------------


async def test_claims_are_leases_in_seq_order(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 5))
        first = await ledger.claim(job.id, limit=2, lease_seconds=LEASE)
        assert [(c.seq, c.attempt, c.lease_until) for c in first] == [
            (1, 1, T0 + LEASE),
            (2, 1, T0 + LEASE),
        ]
        assert first[0].url == "https://example.com/page-1"
        assert first[0].entry == "page-1.png"
        # Finishing out of order does not change what comes next.
        assert await ledger.finish(first[1], ok(2))
        assert [c.seq for c in await ledger.claim(job.id, limit=2, lease_seconds=LEASE)] == [3, 4]
        assert [c.seq for c in await ledger.claim(job.id, limit=9, lease_seconds=LEASE)] == [5]
        assert await ledger.claim(job.id, limit=9, lease_seconds=LEASE) == []
        counts = await ledger.job(job.id)
        assert (counts.queued, counts.leased, counts.ok) == (0, 4, 1)
        with raw(db) as conn:
            assert conn.execute(
                "SELECT lease_owner, lease_until FROM job_urls WHERE job_id = ? AND seq = 1",
                (job.id,),
            ).fetchone() == (ledger.owner, T0 + LEASE)


async def test_success_uses_and_failure_refunds_exactly_once(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 2))
        assert await balance(ledger, account.id) == 3
        good, bad = await ledger.claim(job.id, limit=2, lease_seconds=LEASE)
        assert await ledger.finish(good, ok(1))
        assert await balance(ledger, account.id) == 3  # the reservation became a use
        assert await ledger.finish(bad, failed("CAPTURE_TIMEOUT"))
        assert await balance(ledger, account.id) == 4  # refunded
        # Finish called twice (a retried RPC): nothing more moves.
        assert not await ledger.finish(good, ok(1))
        assert not await ledger.finish(bad, failed())
        assert not await ledger.finish(good, failed())
        assert not await ledger.finish(bad, ok(2))
        assert credit_trail(db, job.id, 1) == ["reserve", "use"]
        assert credit_trail(db, job.id, 2) == ["reserve", "refund"]
        assert await balance(ledger, account.id) == 4
        rows = await ledger.urls(job.id)
        assert (rows[0].state, rows[0].bytes, rows[0].sha256, rows[0].file) == (
            "ok",
            1001,
            f"{1:064x}",
            "img/000001.png",
        )
        assert (rows[1].state, rows[1].error_code, rows[1].http_status) == (
            "failed",
            "CAPTURE_TIMEOUT",
            500,
        )
        done = await ledger.job(job.id)
        assert (done.reserved, done.used, done.refunded, done.processed) == (2, 1, 1, 2)


async def test_a_result_that_breaks_a_check_changes_nothing(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=1)
        job = await ledger.create_job(bulk_job(account.id, 1))
        (claim,) = await ledger.claim(job.id, lease_seconds=LEASE)
        with pytest.raises(sqlite3.IntegrityError):
            await ledger.finish(claim, UrlResult(ok=True))  # no file, no sha256
        with pytest.raises(sqlite3.IntegrityError):
            await ledger.finish(claim, UrlResult(ok=False))  # no error code
        assert [r.state for r in await ledger.urls(job.id)] == ["leased"]
        assert credit_trail(db, job.id, 1) == ["reserve"]
        assert await ledger.finish(claim, ok(1))
        assert credit_trail(db, job.id, 1) == ["reserve", "use"]


async def test_finish_after_fail_job_changes_nothing(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=4)
        job = await ledger.create_job(bulk_job(account.id, 4))
        c1, c2 = await ledger.claim(job.id, limit=2, lease_seconds=LEASE)
        assert await ledger.finish(c1, ok(1))
        assert await ledger.fail_job(job.id, "INTERNAL_ERROR", "stopped")
        assert not await ledger.fail_job(job.id, "INTERNAL_ERROR", "again")
        # The worker holding seq 2 comes back with a success: too late.
        assert not await ledger.finish(c2, ok(2))
        assert await ledger.claim(job.id, limit=4, lease_seconds=LEASE) == []
        done = await ledger.job(job.id)
        assert done.status == "failed" and done.error_code == "INTERNAL_ERROR"
        assert done.finished_at is not None
        # A job that fails costs nothing: the URL it captured is given back too.
        assert (done.used, done.refunded, done.reserved) == (0, 4, 4)
        assert [r.state for r in await ledger.urls(job.id)] == ["ok", "failed", "failed", "failed"]
        assert events(db, job.id) == {"reserve": 4, "use": 1, "refund": 3, "reverse": 1}
        assert await balance(ledger, account.id) == 4
        report = await ledger.audit()
        assert report.ok, report.problems


async def test_stale_lease_after_expiry_and_reclaim_cannot_settle(
    db: Path, clock: FakeClock
) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(account.id, 1))
        (old,) = await ledger.claim(job.id, lease_seconds=LEASE)
        # Not expired yet (lease_until == now still counts as held).
        clock.advance(LEASE)
        assert await ledger.claim(job.id, lease_seconds=LEASE) == []
        clock.advance(1)
        (new,) = await ledger.claim(job.id, lease_seconds=LEASE)
        assert (new.seq, new.attempt) == (1, 2)
        assert not await ledger.finish(old, failed())  # would be a wrong refund
        assert not await ledger.finish(old, ok(1))
        assert await ledger.finish(new, ok(1))
        assert not await ledger.finish(new, ok(1))
        assert not await ledger.finish(old, failed())
        assert credit_trail(db, job.id, 1) == ["reserve", "use"]
        assert await balance(ledger, account.id) == 1
        (row,) = await ledger.urls(job.id)
        assert (row.state, row.attempts) == ("ok", 2)


async def test_stale_lease_reclaimed_by_another_process(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as a, Ledger.open(db, clock=clock) as b:
        assert a.owner != b.owner
        account, _ = await a.create_account(credits=2)
        job = await a.create_job(bulk_job(account.id, 1))
        (old,) = await a.claim(job.id, lease_seconds=LEASE)
        assert await b.claim(job.id, lease_seconds=LEASE) == []  # a live lease is held
        clock.advance(LEASE + 1)
        (new,) = await b.claim(job.id, lease_seconds=LEASE)
        assert new.attempt == 2
        assert not await a.finish(old, ok(1))
        assert not await b.finish(old, ok(1))  # a claim is only good for its owner
        assert await b.finish(new, failed())
        assert credit_trail(db, job.id, 1) == ["reserve", "refund"]
        assert await balance(a, account.id) == 2


async def test_an_expired_lease_nobody_took_can_still_finish(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=1)
        job = await ledger.create_job(bulk_job(account.id, 1))
        (claim,) = await ledger.claim(job.id, lease_seconds=LEASE)
        clock.advance(LEASE * 10)
        assert await ledger.finish(claim, ok(1))
        assert await ledger.claim(job.id, lease_seconds=LEASE) == []
        assert credit_trail(db, job.id, 1) == ["reserve", "use"]


async def test_release_then_reclaim(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(account.id, 2))
        (c1,) = await ledger.claim(job.id, lease_seconds=LEASE)
        await ledger.release([c1])
        (row, _) = await ledger.urls(job.id)
        assert (row.state, row.attempts) == ("queued", 0)  # the release did not count
        await ledger.release([])
        (c2,) = await ledger.claim(job.id, lease_seconds=LEASE)
        assert (c2.seq, c2.attempt) == (1, 1)
        # The released claim is dead: it can neither settle nor release the new lease.
        await ledger.release([c1])
        assert not await ledger.finish(c1, failed())
        assert [r.state for r in await ledger.urls(job.id)] == ["leased", "queued"]
        assert await ledger.finish(c2, ok(1))
        assert credit_trail(db, job.id, 1) == ["reserve", "use"]
        # Releasing a settled claim is a no-op too.
        await ledger.release([c2])
        assert [r.state for r in await ledger.urls(job.id)] == ["ok", "queued"]
        (c3,) = await ledger.claim(job.id, lease_seconds=LEASE)
        assert c3.seq == 2
        assert await balance(ledger, account.id) == 0


async def test_release_keeps_attempts_off_the_give_up_count(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=1)
        job = await ledger.create_job(bulk_job(account.id, 1))
        for _ in range(5):
            (c,) = await ledger.claim(job.id, lease_seconds=LEASE, max_attempts=2)
            await ledger.release([c])
        (c,) = await ledger.claim(job.id, lease_seconds=LEASE, max_attempts=2)
        assert c.attempt == 1
        assert await ledger.finish(c, ok(1))


async def test_max_attempts_gives_up_with_a_refund(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(account.id, 2))
        for attempt in (1, 2, 3):
            claims = await ledger.claim(job.id, limit=1, lease_seconds=LEASE, max_attempts=3)
            assert [(c.seq, c.attempt) for c in claims] == [(1, attempt)]
            clock.advance(LEASE + 1)  # the worker died: its lease runs out
        # A fourth try would exceed max_attempts: seq 1 fails and is refunded, and the
        # claim moves on to seq 2.
        (claim,) = await ledger.claim(job.id, limit=1, lease_seconds=LEASE, max_attempts=3)
        assert (claim.seq, claim.attempt) == (2, 1)
        first = (await ledger.urls(job.id))[0]
        assert (first.state, first.error_code, first.attempts) == ("failed", "CAPTURE_ERROR", 3)
        assert first.error_message and "3 attempts" in first.error_message
        assert credit_trail(db, job.id, 1) == ["reserve", "refund"]
        assert await balance(ledger, account.id) == 1
        assert await ledger.finish(claim, ok(2))
        assert await ledger.claim(job.id, lease_seconds=LEASE, max_attempts=3) == []
        assert credit_trail(db, job.id, 1) == ["reserve", "refund"]


async def test_max_attempts_counts_attempts_that_died_with_their_process(
    db: Path, clock: FakeClock
) -> None:
    async with Ledger.open(db, clock=clock) as first:
        account, _ = await first.create_account(credits=1)
        job = await first.create_job(bulk_job(account.id, 1))
    for attempt in (1, 2):
        async with Ledger.open(db, clock=clock) as process:  # claims, then "crashes"
            assert await process.recover() == (0 if attempt == 1 else 1)
            (claim,) = await process.claim(job.id, lease_seconds=LEASE, max_attempts=2)
            assert claim.attempt == attempt
    async with Ledger.open(db, clock=clock) as last:
        assert await last.recover() == 1  # back in the queue, both attempts used
        assert await last.claim(job.id, lease_seconds=LEASE, max_attempts=2) == []
        (row,) = await last.urls(job.id)
        assert (row.state, row.attempts, row.error_code) == ("failed", 2, "CAPTURE_ERROR")
        assert await balance(last, account.id) == 1
        assert credit_trail(db, job.id, 1) == ["reserve", "refund"]


async def test_recover_requeues_dead_leases_only(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as dead:
        account, _ = await dead.create_account(credits=4)
        job = await dead.create_job(bulk_job(account.id, 4))
        await dead.set_status(job.id, "processing")
        held = await dead.claim(job.id, limit=3, lease_seconds=LEASE)
        assert await dead.finish(held[0], ok(1))
        assert await dead.recover() == 0  # its own leases are alive
    # The dead process's leases are still in the file: a new process recovers them.
    async with Ledger.open(db, clock=clock) as alive:
        mine = await alive.claim(job.id, limit=1, lease_seconds=LEASE)
        assert [c.seq for c in mine] == [4]
        assert await alive.recover() == 2
        assert await alive.recover() == 0
        rows = await alive.urls(job.id)
        assert [(r.state, r.attempts) for r in rows] == [
            ("ok", 1),
            ("queued", 1),
            ("queued", 1),
            ("leased", 1),
        ]
        # The job was running: it resumes where it was.
        resumed = await alive.job(job.id)
        assert resumed.status == "processing"
        claims = await alive.claim(job.id, limit=5, lease_seconds=LEASE)
        assert [(c.seq, c.attempt) for c in claims] == [(2, 2), (3, 2)]
        # The dead process's claims can no longer settle anything.
        assert not await alive.finish(held[1], ok(2))
        for c in [*claims, *mine]:
            assert await alive.finish(c, ok(c.seq) if c.seq != 3 else failed())
        assert await alive.set_status(job.id, "packaging", expect=("processing",))
        assert await alive.set_status(job.id, "completed", expect=("packaging",))
        done = await alive.job(job.id)
        assert (done.used, done.refunded) == (3, 1)
        assert await balance(alive, account.id) == 1
        report = await alive.audit()
        assert report.ok, report.problems


async def test_a_job_that_cannot_resume_fails_with_every_credit_refunded(
    db: Path,
) -> None:
    async with Ledger.open(db) as dead:
        account, _ = await dead.create_account(credits=10)
        job = await dead.create_job(bulk_job(account.id, 5))
        await dead.set_status(job.id, "processing")
        c1, c2, _c3 = await dead.claim(job.id, limit=3, lease_seconds=LEASE)
        await dead.finish(c1, ok(1))
        await dead.finish(c2, failed())
    async with Ledger.open(db) as alive:
        await alive.recover()
        assert await alive.fail_job(job.id, "CAPTURE_ERROR", "interrupted by a restart")
        done = await alive.job(job.id)
        assert done.status == "failed"
        assert (done.reserved, done.used, done.refunded) == (5, 0, 5)
        assert await balance(alive, account.id) == 10
        report = await alive.audit()
        assert report.ok, report.problems
        (acct,) = report.accounts
        assert acct == {
            "account_id": account.id,
            "balance": 10,
            "granted": 10,
            "used": 0,
            "outstanding": 0,
        }


async def test_concurrent_claims_never_hand_one_url_to_two_workers(
    db: Path, clock: FakeClock
) -> None:
    async with Ledger.open(db, clock=clock) as a, Ledger.open(db, clock=clock) as b:
        account, _ = await a.create_account(credits=60)
        job = await a.create_job(bulk_job(account.id, 60))
        seen: list[int] = []
        rng = random.Random(7)

        async def worker(ledger: Ledger, limit: int) -> None:
            while claims := await ledger.claim(job.id, limit=limit, lease_seconds=LEASE):
                seen.extend(c.seq for c in claims)
                for c in claims:
                    await trio.lowlevel.checkpoint()
                    assert await ledger.finish(c, ok(c.seq) if c.seq % 7 else failed())

        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(worker, (a, b)[i % 2], rng.randint(1, 3))
        assert sorted(seen) == list(range(1, 61))
        done = await b.job(job.id)
        assert (done.ok, done.failed, done.used, done.refunded) == (52, 8, 52, 8)
        assert await balance(a, account.id) == 8


# ---- job status and retention -----------------------------------------------------------


async def test_set_status_stamps_and_expects(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=1)
        job = await ledger.create_job(bulk_job(account.id, 1))
        assert not await ledger.set_status(job.id, "packaging", expect=("processing",))
        assert await ledger.set_status(job.id, "processing", expect=("pending",))
        clock.advance(5)
        assert await ledger.set_status(job.id, "processing", expect=("pending", "processing"))
        assert (await ledger.job(job.id)).started_at == "2023-11-14T22:13:20.000Z"
        assert await ledger.set_status(job.id, None, webhook_state="0:0")
        with pytest.raises(ValidationError, match="account_id"):
            await ledger.set_status(job.id, None, account_id=2)
        row = await ledger.job(job.id)
        assert (row.status, row.webhook_state, row.account_id) == ("processing", "0:0", account.id)


async def test_expire_due_uses_the_injected_clock(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=3)
        jobs = [await ledger.create_job(bulk_job(account.id, 1)) for _ in range(3)]
        for j in jobs:
            (c,) = await ledger.claim(j.id, lease_seconds=LEASE)
            await ledger.finish(c, ok(1))
        done, failed_job, later = jobs
        for j in jobs:
            await ledger.set_status(j.id, "processing")
        await ledger.set_status(done.id, "completed", expires_at=T0 + 100)
        await ledger.set_status(later.id, "completed", expires_at=T0 + 200)
        await ledger.set_status(failed_job.id, "failed", expires_at=T0 + 100)
        assert await ledger.expire_due() == []
        clock.advance(99.9)
        assert await ledger.expire_due() == []
        clock.advance(0.1)  # expires_at itself is due
        assert [j.id for j in await ledger.expire_due()] == [done.id]
        assert await ledger.expire_due() == []
        clock.advance(1000)
        expired = await ledger.expire_due()
        assert [(j.id, j.status) for j in expired] == [(later.id, "expired")]
        statuses = {j.id: j.status for j in await ledger.jobs()}
        assert statuses == {done.id: "expired", failed_job.id: "failed", later.id: "expired"}
        assert {j.id for j in await ledger.jobs(statuses=("expired",))} == {done.id, later.id}
        report = await ledger.audit()
        assert report.ok, report.problems


async def test_offline_jobs_are_not_charged_and_can_grow(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        job = await ledger.create_job(
            NewJob(kind="offline", site="https://example.com", urls=pages(2), urls_complete=False)
        )
        assert (job.total, job.reserved) == (2, 0)
        assert await ledger.append_urls(job.id, pages(3)[2:]) == 3
        (c1, c2, c3) = await ledger.claim(job.id, limit=3, lease_seconds=LEASE)
        await ledger.finish(c1, ok(1))
        await ledger.finish(c2, failed())
        await ledger.finish(c3, ok(3))
        # Still growing: no work now is not "stuck".
        assert (await ledger.audit()).ok
        assert await ledger.append_urls(job.id, [("https://example.com/x", None)], complete=True)
        with pytest.raises(ValidationError):
            await ledger.append_urls(job.id, [("https://example.com/y", None)])
        with pytest.raises(JobNotFound):
            await ledger.append_urls("nope", [])
        account, _ = await ledger.create_account(credits=1)
        charged = await ledger.create_job(bulk_job(account.id, 1, urls_complete=False))
        with pytest.raises(ValidationError):
            await ledger.append_urls(charged.id, pages(1))
        with raw(db) as conn:
            assert scalar(conn, "SELECT COUNT(*) FROM credit_events WHERE job_id = ?", job.id) == 0
        assert [r.seq for r in await ledger.urls(job.id)] == [1, 2, 3, 4]


# ---- audit ------------------------------------------------------------------------------


async def test_audit_reports_per_job_and_account(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        report = await ledger.audit()
        assert report.ok and report.integrity == "ok" and report.jobs == ()
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 3))
        c1, c2 = await ledger.claim(job.id, limit=2, lease_seconds=LEASE)
        await ledger.finish(c1, ok(1))
        await ledger.finish(c2, failed())
        report = await ledger.audit()
        assert report.ok, report.problems  # pending, but seq 3 is still queued
        assert report.jobs == (
            {"job_id": job.id, "status": "pending", "reserved": 3, "used": 1, "refunded": 1},
        )
        assert report.accounts == (
            {"account_id": account.id, "balance": 3, "granted": 5, "used": 1, "outstanding": 1},
        )


async def test_audit_detects_a_tampered_balance(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 2))
        assert (await ledger.audit()).ok
        with raw(db) as conn:
            conn.execute("UPDATE accounts SET balance = balance + 10 WHERE id = ?", (account.id,))
        report = await ledger.audit()
        assert not report.ok
        assert any(f"account {account.id}: balance 13" in p for p in report.problems)
        # Nothing outstanding any more: the granted - used rule is checked too.
        await ledger.fail_job(job.id, "INTERNAL_ERROR", "x")
        report = await ledger.audit()
        assert any("!= granted - used" in p for p in report.problems)
        with raw(db) as conn:
            conn.execute("PRAGMA ignore_check_constraints = 1")
            conn.execute("UPDATE accounts SET balance = -3 WHERE id = ?", (account.id,))
        report = await ledger.audit()
        assert not report.ok
        assert any("negative balance -3" in p for p in report.problems)


async def test_audit_detects_a_job_left_processing_with_no_work(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(account.id, 2))
        await ledger.set_status(job.id, "processing")
        for c in await ledger.claim(job.id, limit=2, lease_seconds=LEASE):
            await ledger.finish(c, ok(c.seq))
        # A live runner moves such a job on within moments: not a problem yet.
        assert (await ledger.audit()).ok
        clock.advance(61)
        report = await ledger.audit()
        assert not report.ok
        assert report.problems == (f"job {job.id}: processing with no work left",)
        await ledger.set_status(job.id, "packaging")
        assert (await ledger.audit()).ok


async def test_audit_detects_a_finished_job_with_unsettled_urls(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=3)
        job = await ledger.create_job(bulk_job(account.id, 3))
        (c,) = await ledger.claim(job.id, lease_seconds=LEASE)
        await ledger.finish(c, ok(1))
        with raw(db) as conn:
            conn.execute("UPDATE jobs SET status = 'completed' WHERE id = ?", (job.id,))
        report = await ledger.audit()
        assert not report.ok
        assert f"job {job.id}: completed with unfinished URLs" in report.problems
        assert any("reserved 3 != used 1 + refunded 0" in p for p in report.problems)


async def test_audit_detects_rows_that_disagree_with_credits(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=3)
        job = await ledger.create_job(bulk_job(account.id, 1))
        # Detach the job from its account, settle the row (no credit moves), reattach.
        with raw(db) as conn:
            conn.execute("UPDATE jobs SET account_id = NULL WHERE id = ?", (job.id,))
            conn.execute(
                "UPDATE job_urls SET state = 'ok', file = 'f', sha256 = 's' WHERE job_id = ?",
                (job.id,),
            )
            conn.execute("UPDATE jobs SET account_id = ? WHERE id = ?", (account.id, job.id))
        report = await ledger.audit()
        assert f"job {job.id}: 1 URL rows disagree with credits" in report.problems


# ---- the schema enforces the rules, whatever the caller does ----------------------------


@pytest.fixture
async def charged_job(db: Path) -> tuple[int, str]:
    """An account with 5 credits and a 3-URL job: seq 1 ok, seq 2 failed, seq 3 queued."""
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 3))
        c1, c2 = await ledger.claim(job.id, limit=2, lease_seconds=LEASE)
        await ledger.finish(c1, ok(1))
        await ledger.finish(c2, failed())
    return account.id, job.id


def insert_event(
    conn: sqlite3.Connection, account_id: int, job_id: str | None, seq: int | None, kind: str
) -> None:
    conn.execute(
        "INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at) "
        "VALUES (?, ?, ?, ?, 1, 'now')",
        (account_id, job_id, seq, kind),
    )


async def test_credit_events_are_append_only(db: Path, charged_job: tuple[int, str]) -> None:
    with raw(db) as conn:
        before = conn.execute("SELECT * FROM credit_events ORDER BY id").fetchall()
        for sql in (
            "UPDATE credit_events SET amount = 100",
            "UPDATE credit_events SET kind = 'grant', job_id = NULL, seq = NULL WHERE kind = 'use'",
            "DELETE FROM credit_events WHERE kind = 'reserve'",
            "DELETE FROM credit_events",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT * FROM credit_events ORDER BY id").fetchall() == before


async def test_a_row_settles_once_and_only_what_was_reserved(
    db: Path, charged_job: tuple[int, str]
) -> None:
    account_id, job_id = charged_job
    with raw(db) as conn:

        def balance_of(account: int) -> int:
            return int(scalar(conn, "SELECT balance FROM accounts WHERE id = ?", account))

        balance_before = balance_of(account_id)
        for seq, kind in [(1, "use"), (1, "refund"), (2, "refund"), (2, "use")]:
            with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
                insert_event(conn, account_id, job_id, seq, kind)
        # A use or refund with no reservation behind it.
        for seq in (99, None):
            for kind in ("use", "refund"):
                with pytest.raises(sqlite3.IntegrityError, match="never reserved"):
                    insert_event(conn, account_id, job_id, seq, kind)
        # A second reservation of one row.
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            insert_event(conn, account_id, job_id, 3, "reserve")
        # Job events need a job; grants must not have one.
        with pytest.raises(sqlite3.IntegrityError, match=r"CHECK|never reserved"):
            insert_event(conn, account_id, None, None, "refund")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            insert_event(conn, account_id, job_id, 3, "grant")
        # A settlement must match its reservation: same account, same amount (or
        # credits could be minted, or paid to someone else).
        other = conn.execute(
            "INSERT INTO accounts (webhook_secret, created_at) VALUES ('w', 'now')"
        ).lastrowid
        assert other is not None
        with pytest.raises(sqlite3.IntegrityError, match="never reserved"):
            insert_event(conn, other, job_id, 3, "refund")
        with pytest.raises(sqlite3.IntegrityError, match="never reserved"):
            conn.execute(
                "INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at) "
                "VALUES (?, ?, 3, 'refund', 1000, 'now')",
                (account_id, job_id),
            )
        assert (balance_of(account_id), balance_of(other)) == (balance_before, 0)
        # The row still queued can settle exactly once, by a direct insert too.
        insert_event(conn, account_id, job_id, 3, "refund")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            insert_event(conn, account_id, job_id, 3, "use")
        assert balance_of(account_id) == balance_before + 1


async def test_a_finished_url_cannot_leave_ok_or_failed(
    db: Path, charged_job: tuple[int, str]
) -> None:
    _, job_id = charged_job
    with raw(db) as conn:
        for seq in (1, 2):
            for state in ("queued", "leased", "ok" if seq == 2 else "failed"):
                with pytest.raises(sqlite3.IntegrityError, match="cannot change state"):
                    conn.execute(
                        "UPDATE job_urls SET state = ?, error_code = 'X', file = 'f', "
                        "sha256 = 's' WHERE job_id = ? AND seq = ?",
                        (state, job_id, seq),
                    )
        with pytest.raises(sqlite3.IntegrityError, match="kept for the audit"):
            conn.execute("DELETE FROM job_urls WHERE job_id = ?", (job_id,))
        # Re-writing a finished row in its own state moves no credit.
        conn.execute("UPDATE job_urls SET state = 'ok' WHERE job_id = ? AND seq = 1", (job_id,))
        conn.execute("UPDATE job_urls SET state = 'failed' WHERE job_id = ? AND seq = 2", (job_id,))
    assert events(db, job_id) == {"reserve": 3, "use": 1, "refund": 1}


async def test_raw_state_changes_move_credits_through_triggers(
    db: Path, charged_job: tuple[int, str]
) -> None:
    account_id, job_id = charged_job
    with raw(db) as conn:
        assert scalar(conn, "SELECT balance FROM accounts") == 3
        # An ok row must carry its image facts; a failed one its error code.
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE job_urls SET state = 'ok' WHERE job_id = ? AND seq = 3", (job_id,))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "UPDATE job_urls SET state = 'failed' WHERE job_id = ? AND seq = 3", (job_id,)
            )
        conn.execute(
            "UPDATE job_urls SET state = 'failed', error_code = 'X' WHERE job_id = ? AND seq = 3",
            (job_id,),
        )
        assert scalar(conn, "SELECT balance FROM accounts") == 4
    assert credit_trail(db, job_id, 3) == ["reserve", "refund"]
    async with Ledger.open(db) as ledger:
        await ledger.set_status(job_id, "failed")
        report = await ledger.audit()
        assert report.ok, report.problems
        # Failing the job gave back seq 1's use as well.
        assert (await ledger.account(account_id)).balance == 5
    assert credit_trail(db, job_id, 1) == ["reserve", "use", "reverse"]


async def test_raw_insert_of_a_url_row_reserves_and_cannot_overdraw(
    db: Path, charged_job: tuple[int, str]
) -> None:
    account_id, job_id = charged_job
    with raw(db) as conn:
        assert scalar(conn, "SELECT balance FROM accounts") == 3
        for seq in (4, 5, 6):
            conn.execute(
                "INSERT INTO job_urls (job_id, seq, url) VALUES (?, ?, 'https://e.com/x')",
                (job_id, seq),
            )
        assert scalar(conn, "SELECT balance FROM accounts") == 0
        assert credit_trail(db, job_id, 6) == ["reserve"]
        # The CHECK on balance aborts the statement: no row, no event.
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute(
                "INSERT INTO job_urls (job_id, seq, url) VALUES (?, 7, 'https://e.com/y')",
                (job_id,),
            )
        assert scalar(conn, "SELECT COUNT(*) FROM job_urls WHERE seq = 7") == 0
        assert credit_trail(db, job_id, 7) == []
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE accounts SET balance = -1 WHERE id = ?", (account_id,))
        # A multi-row insert that overdraws is refused as a whole.
        conn.execute(
            "INSERT INTO credit_events (account_id, kind, amount, created_at) "
            "VALUES (?, 'grant', 1, 'now')",
            (account_id,),
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO job_urls (job_id, seq, url) VALUES (?, 7, 'a'), (?, 8, 'b')",
                (job_id, job_id),
            )
        assert scalar(conn, "SELECT balance FROM accounts") == 1
        assert scalar(conn, "SELECT COUNT(*) FROM job_urls WHERE job_id = ?", job_id) == 6
    async with Ledger.open(db) as ledger:
        report = await ledger.audit()
        assert report.ok, report.problems
        assert (await ledger.job(job_id)).reserved == 6


async def test_a_url_row_is_born_queued(db: Path, charged_job: tuple[int, str]) -> None:
    # An ok/failed row inserted directly would keep its reservation for ever (only a
    # state change settles), so the schema refuses it.
    _, job_id = charged_job
    with raw(db) as conn:
        for state, file, code in [("ok", "f", None), ("failed", None, "X"), ("leased", None, None)]:
            with pytest.raises(sqlite3.IntegrityError, match="starts queued"):
                conn.execute(
                    "INSERT INTO job_urls (job_id, seq, url, state, file, sha256, error_code) "
                    "VALUES (?, 9, 'u', ?, ?, ?, ?)",
                    (job_id, state, file, file, code),
                )
        assert scalar(conn, "SELECT COUNT(*) FROM job_urls WHERE job_id = ?", job_id) == 3
    assert events(db, job_id) == {"reserve": 3, "use": 1, "refund": 1}


async def test_raw_insert_for_an_uncharged_job_reserves_nothing(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        job = await ledger.create_job(NewJob(kind="offline", site="s", urls=pages(1)))
    with raw(db) as conn:
        conn.execute("INSERT INTO job_urls (job_id, seq, url) VALUES (?, 2, 'u')", (job.id,))
        assert scalar(conn, "SELECT COUNT(*) FROM credit_events") == 0


# ---- more than one process ---------------------------------------------------------------

CHILD = """
import sys, trio
from bulk._exceptions import InsufficientCredits
from bulk._ledger import Ledger, NewJob

async def main(path, account_id, mode):
    async with Ledger.open(path) as ledger:
        print("ready", flush=True)
        if mode == "open":
            return
        if mode == "grant":
            await ledger.grant(account_id, 5)
            print("done", flush=True)
            return
        made = 0
        while True:
            try:
                await ledger.create_job(NewJob(kind="bulk", site="s", urls=[("u", None)],
                                               account_id=account_id))
                made += 1
            except InsufficientCredits:
                break
        print(f"made {made}", flush=True)

trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
"""


async def _child(db: Path, account_id: int, mode: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(db), str(account_id), mode],
        stdout=-1,
        cwd=ROOT,
    )


async def _read_line(proc: trio.Process) -> str:
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(30):
        while not buf.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()


async def test_another_process_waits_for_the_write_lock(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=1)
    with raw(db) as holder:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE accounts SET plan = 'held' WHERE id = ?", (account.id,))
        proc = await _child(db, account.id, "grant")
        try:
            assert await _read_line(proc) == "ready"
            await trio.sleep(0.5)
            assert proc.poll() is None  # blocked on the lock, not failed
        finally:
            holder.execute("COMMIT")
        assert await _read_line(proc) == "done"
        with trio.fail_after(30):
            assert await proc.wait() == 0
    async with Ledger.open(db) as ledger:
        got = await ledger.account(account.id)
        assert (got.balance, got.plan) == (6, "held")


async def test_two_processes_creating_jobs_never_overdraw(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=150)
        proc = await _child(db, account.id, "spend")
        assert await _read_line(proc) == "ready"
        made = 0
        while True:
            try:
                await ledger.create_job(
                    NewJob(kind="bulk", site="s", urls=[("u", None)], account_id=account.id)
                )
                made += 1
            except InsufficientCredits:
                break
        line = await _read_line(proc)
        with trio.fail_after(30):
            assert await proc.wait() == 0
        theirs = int(line.removeprefix("made "))
        assert made + theirs == 150
        assert await balance(ledger, account.id) == 0
        report = await ledger.audit()
        assert report.ok, report.problems
        assert len(await ledger.jobs()) == 150


# ---- randomized: any sequence of operations keeps the books ------------------------------


@dataclass
class UrlModel:
    state: str = "queued"
    owner: int | None = None
    attempts: int = 0
    leases: int = 0
    until: float = 0.0

    def free(self, now: float) -> bool:
        return self.state == "queued" or (self.state == "leased" and self.until < now)


@dataclass
class JobModel:
    account: int
    urls: list[UrlModel]
    status: str = "pending"


class LedgerMachine(RuleBasedStateMachine):
    """Two accounts, two ledgers on one file (two "processes"), any interleaving of
    create / claim / finish / release / fail_job / recover / grant / clock ticks.

    A model predicts every answer (which URLs a claim leases, whether a finish
    settles); after every step each balance is grants - uses - outstanding, and at
    the end the rows match the model and ``audit()`` holds.
    """

    jobs = Bundle("jobs")
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.granted: dict[int, int] = {}
        self.model: dict[str, JobModel] = {}
        ready: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.Event, tuple[Ledger, Ledger]]]
        ready = queue.Queue()

        async def host() -> None:
            path = Path(self.tmp.name) / "ledger.db"
            async with (
                Ledger.open(path, clock=self.clock) as a,
                Ledger.open(path, clock=self.clock) as b,
            ):
                stop = trio.Event()
                ready.put((trio.lowlevel.current_trio_token(), stop, (a, b)))
                await stop.wait()

        self.thread = threading.Thread(target=trio.run, args=(host,))
        self.thread.start()
        self.token, self.stop, self.ledgers = ready.get(timeout=30)
        self.accounts = []
        for credits in (6, 3):
            account, _ = self.run(self.ledgers[0].create_account, credits=credits)
            self.accounts.append(account.id)
            self.granted[account.id] = credits

    def run(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return trio.from_thread.run(functools.partial(fn, *args, **kw), trio_token=self.token)

    def count(self, account: int, *states: str) -> int:
        return sum(
            u.state in states for j in self.model.values() if j.account == account for u in j.urls
        )

    def used(self, account: int) -> int:
        # A failed job's ok URLs were given back: only the other jobs' count.
        return sum(
            u.state == "ok"
            for j in self.model.values()
            if j.account == account and j.status != "failed"
            for u in j.urls
        )

    def expected_balance(self, account: int) -> int:
        # grants - uses - outstanding reservations (a refund gives its credit back)
        outstanding = self.count(account, "queued", "leased")
        return self.granted[account] - self.used(account) - outstanding

    @rule(target=jobs, who=st.integers(0, 1), size=st.integers(1, 4))
    def create(self, who: int, size: int) -> Any:
        account = self.accounts[who]
        try:
            job = self.run(self.ledgers[who].create_job, bulk_job(account, size))
        except InsufficientCredits:
            assert self.expected_balance(account) < size
            return multiple()
        assert self.expected_balance(account) >= size
        self.model[job.id] = JobModel(account, [UrlModel() for _ in range(size)])
        return job.id

    @rule(who=st.integers(0, 1), credits=st.integers(1, 3))
    def grant(self, who: int, credits: int) -> None:
        self.run(self.ledgers[who].grant, self.accounts[who], credits)
        self.granted[self.accounts[who]] += credits

    @rule(
        target=claims,
        job_id=jobs,
        who=st.integers(0, 1),
        limit=st.integers(1, 3),
        max_attempts=st.integers(2, 3),
    )
    def claim(self, job_id: str, who: int, limit: int, max_attempts: int) -> Any:
        job, now = self.model[job_id], self.clock()
        for u in job.urls:
            if u.free(now) and u.attempts >= max_attempts:
                u.state, u.owner = "failed", None  # gave up, refunded
        want = [seq for seq, u in enumerate(job.urls, 1) if u.free(now)][:limit]
        got = self.run(
            self.ledgers[who].claim,
            job_id,
            limit=limit,
            lease_seconds=LEASE,
            max_attempts=max_attempts,
        )
        assert [c.seq for c in got] == want
        for c in got:
            u = job.urls[c.seq - 1]
            u.state, u.owner, u.until = "leased", who, now + LEASE
            u.attempts += 1
            u.leases += 1
            assert (c.attempt, c.lease, c.lease_until) == (u.attempts, u.leases, u.until)
        return multiple(*((who, c) for c in got))

    def _live(self, held: tuple[int, Claim]) -> tuple[bool, UrlModel]:
        owner, c = held
        u = self.model[c.job_id].urls[c.seq - 1]
        return u.state == "leased" and u.owner == owner and u.leases == c.lease, u

    # Claims stay in the bundle once used: finishing or releasing them again (a
    # retry, a stale worker, a dead process) must change nothing.
    @rule(held=claims, success=st.booleans())
    def finish(self, held: tuple[int, Claim], success: bool) -> None:
        live, u = self._live(held)
        owner, c = held
        result = ok(c.seq) if success else failed()
        assert self.run(self.ledgers[owner].finish, c, result) == live
        if live:
            u.state, u.owner = ("ok" if success else "failed"), None

    @rule(held=claims)
    def release(self, held: tuple[int, Claim]) -> None:
        live, u = self._live(held)
        owner, c = held
        self.run(self.ledgers[owner].release, [c])
        if live:
            u.state, u.owner = "queued", None
            u.attempts -= 1

    @rule(target=claims, held=claims)
    def release_and_reclaim(self, held: tuple[int, Claim]) -> Any:
        # A worker gives its lease back (shutdown, cancellation) and a sibling worker
        # of the same process claims at once: often the same URL, same attempt
        # number. The released claim stays in the bundle, stale.
        self.release(held)
        owner, c = held
        return self.claim(c.job_id, owner, limit=1, max_attempts=3)

    @rule(job_id=jobs, who=st.integers(0, 1))
    def fail_job(self, job_id: str, who: int) -> None:
        job = self.model[job_id]
        moved = self.run(self.ledgers[who].fail_job, job_id, "INTERNAL_ERROR", "x")
        assert moved == (job.status != "failed")
        job.status = "failed"
        for u in job.urls:
            if u.state in ("queued", "leased"):
                u.state, u.owner = "failed", None

    @rule(who=st.integers(0, 1))
    def recover(self, who: int) -> None:
        moved = 0
        for job in self.model.values():
            for u in job.urls:
                if u.state == "leased" and u.owner != who:
                    u.state, u.owner = "queued", None
                    moved += 1
        assert self.run(self.ledgers[who].recover) == moved

    @rule(seconds=st.sampled_from([1.0, LEASE / 2, LEASE + 1]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def balances_are_grants_minus_uses_minus_outstanding(self) -> None:
        for account in self.accounts:
            got = self.run(self.ledgers[1].account, account).balance
            assert got == self.expected_balance(account)

    def teardown(self) -> None:
        try:
            a, b = self.ledgers
            for job_id, job in self.model.items():
                rows = self.run(a.urls, job_id)
                assert [(r.state, r.attempts) for r in rows] == [
                    (u.state, u.attempts) for u in job.urls
                ]
                if job.status == "pending" and all(u.state in ("ok", "failed") for u in job.urls):
                    # What the runner does with a job whose work is done.
                    assert self.run(a.set_status, job_id, "processing", expect=("pending",))
                    assert self.run(a.set_status, job_id, "completed", expect=("processing",))
            report = self.run(b.audit)
            assert report.ok, report.problems
            for entry in report.accounts:
                account = entry["account_id"]
                assert entry["granted"] == self.granted[account]
                assert entry["used"] == self.used(account)
                assert entry["outstanding"] == self.count(account, "queued", "leased")
                assert entry["balance"] == self.expected_balance(account)
        finally:
            trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
            self.thread.join(timeout=30)
            self.tmp.cleanup()


LedgerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase


# ---- a job that fails gives back every credit (schema m003) ------------------------------


async def test_failing_a_job_after_its_captures_reverses_every_use(
    db: Path, charged_job: tuple[int, str]
) -> None:
    # The packaging stage (or anything after capture) failing: seq 1 was used, seq 2
    # refunded, seq 3 still queued. Failing the job gives all three back.
    account_id, job_id = charged_job
    async with Ledger.open(db) as ledger:
        assert await balance(ledger, account_id) == 3
        assert await ledger.fail_job(job_id, "INTERNAL_ERROR", "packaging failed")
        done = await ledger.job(job_id)
        assert (done.reserved, done.used, done.refunded) == (3, 0, 3)
        assert await balance(ledger, account_id) == 5
        report = await ledger.audit()
        assert report.ok, report.problems
        assert not await ledger.fail_job(job_id, "INTERNAL_ERROR", "again")
    assert credit_trail(db, job_id, 1) == ["reserve", "use", "reverse"]
    assert credit_trail(db, job_id, 3) == ["reserve", "refund"]


async def test_a_reverse_needs_a_use_of_a_failed_job_and_happens_once(
    db: Path, charged_job: tuple[int, str]
) -> None:
    account_id, job_id = charged_job
    # The job is still running: nothing to give back.
    with (
        raw(db) as conn,
        pytest.raises(sqlite3.IntegrityError, match="not used by a failed job"),
    ):
        insert_event(conn, account_id, job_id, 1, "reverse")
    async with Ledger.open(db) as ledger:
        assert await ledger.fail_job(job_id, "INTERNAL_ERROR", "x")
    with raw(db) as conn:
        before = scalar(conn, "SELECT balance FROM accounts WHERE id = ?", account_id)
        # Once only; never for a refunded row or a row that was not used.
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            insert_event(conn, account_id, job_id, 1, "reverse")
        for seq in (2, 3, 99):
            with pytest.raises(sqlite3.IntegrityError, match="not used by a failed job"):
                insert_event(conn, account_id, job_id, seq, "reverse")
        # A URL of the failed job cannot succeed now, nor can a new one join it.
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "UPDATE job_urls SET state = 'ok' WHERE job_id = ? AND seq = 3", (job_id,)
            )
        with pytest.raises(sqlite3.IntegrityError, match="takes no new URL"):
            conn.execute(
                "INSERT INTO job_urls (job_id, seq, url) VALUES (?, 9, 'https://e.com/z')",
                (job_id,),
            )
        assert scalar(conn, "SELECT balance FROM accounts WHERE id = ?", account_id) == before


async def test_a_url_of_a_failed_job_cannot_succeed(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        account, _ = await ledger.create_account(credits=2)
        job = await ledger.create_job(bulk_job(account.id, 1))
        assert await ledger.claim(job.id, lease_seconds=LEASE)
    with raw(db) as conn:
        # Failing the job but not its row (a hand-made update, the ledger never does
        # this): the row's success afterwards would keep a use.
        conn.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", (job.id,))
        with pytest.raises(sqlite3.IntegrityError, match="failed job cannot succeed"):
            conn.execute(
                "UPDATE job_urls SET state = 'ok', file = 'f', sha256 = 's' WHERE job_id = ?",
                (job.id,),
            )


async def test_audit_detects_a_failed_job_that_kept_its_credits(
    db: Path, charged_job: tuple[int, str]
) -> None:
    _, job_id = charged_job
    with raw(db) as conn:
        conn.execute("DROP TRIGGER jobs_failed_reverse_uses")
        conn.execute(
            "UPDATE job_urls SET state = 'failed', error_code = 'X' WHERE job_id = ? AND seq = 3",
            (job_id,),
        )
        conn.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", (job_id,))
    async with Ledger.open(db) as ledger:
        report = await ledger.audit()
    assert not report.ok
    assert any("failed but kept 1 credits" in p for p in report.problems)
    assert any("disagree with credits" in p for p in report.problems)


def _old_database(db: Path) -> None:
    """A file as the released ledger (m001 + m002) left it: a failed job that kept a
    used credit, ended jobs with webhook states, and cookies in clear in options."""
    conn = sqlite3.connect(db, isolation_level=None)
    migrations.apply(Database(conn), stop_before="m003_failed_jobs_refund_every_credit")
    secret_options = json.dumps(
        {
            "format": "png",
            "cookies": [{"name": "session", "value": "old-cookie-value"}],
            "headers": {"Authorization": "Bearer old-token-value"},
        }
    )
    conn.executescript(
        f"""
        INSERT INTO accounts (id, balance, webhook_secret, created_at) VALUES (1, 0, 'w', 'n');
        INSERT INTO credit_events (account_id, kind, amount, created_at)
            VALUES (1, 'grant', 10, 'n');
        INSERT INTO jobs (id, kind, account_id, site, status, created_at, options,
                          webhook_url, webhook_state)
        VALUES ('failed-job', 'bulk', 1, 's', 'processing', 'n', '{secret_options}',
                'https://hooks.example/a', NULL),
               ('done-job', 'bulk', 1, 's', 'processing', 'n', '{secret_options}',
                'https://hooks.example/b', NULL),
               ('running-job', 'bulk', 1, 's', 'processing', 'n', '{secret_options}', NULL,
                NULL);
        INSERT INTO job_urls (job_id, seq, url) VALUES ('failed-job', 1, 'u1'),
            ('failed-job', 2, 'u2'), ('done-job', 1, 'u3'), ('running-job', 1, 'u4');
        UPDATE job_urls SET state = 'ok', file = 'f', sha256 = 's'
            WHERE job_id IN ('failed-job', 'done-job') AND seq = 1;
        UPDATE job_urls SET state = 'failed', error_code = 'X'
            WHERE job_id = 'failed-job' AND seq = 2;
        UPDATE jobs SET status = 'failed', webhook_state = '2:1700000000'
            WHERE id = 'failed-job';
        UPDATE jobs SET status = 'completed', webhook_state = 'delivered' WHERE id = 'done-job';
        """
    )
    assert scalar(conn, "SELECT balance FROM accounts") == 7
    conn.close()


async def test_a_released_database_is_upgraded_with_its_books_kept(db: Path) -> None:
    _old_database(db)
    async with Ledger.open(db) as ledger:
        # The failed job's used credit comes back; the rest is as it was.
        assert await balance(ledger, 1) == 8
        failed_job = await ledger.job("failed-job")
        assert (failed_job.reserved, failed_job.used, failed_job.refunded) == (2, 0, 2)
        report = await ledger.audit()
        assert report.ok, report.problems
    with raw(db) as conn:
        deliveries = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT job_id, state, attempts, due_at, event FROM deliveries ORDER BY job_id"
            )
        }
        assert deliveries == {
            "done-job": ("delivered", 0, 0.0, "bulk_job.completed"),
            "failed-job": ("pending", 2, 1_700_000_000.0, "bulk_job.failed"),
        }
        options = dict(conn.execute("SELECT id, options FROM jobs"))
    # Ended jobs lose their cleartext secrets; the running one keeps what it needs.
    for job_id in ("failed-job", "done-job"):
        assert "old-cookie-value" not in options[job_id]
        assert "old-token-value" not in options[job_id]
        assert json.loads(options[job_id])["headers"] == {"Authorization": "***"}
    assert "old-cookie-value" in options["running-job"]


# ---- secrets: sealed while a job runs, gone when it ends (m005) ---------------------------

SECRET_OPTIONS: dict[str, Any] = {
    "format": "png",
    "cookies": [{"name": "session", "value": "cookie-value-1234567890", "domain": "e.com"}],
    "headers": {"Authorization": "Bearer token-value-abcdefghij", "X-Trace": "trace-42-value"},
}
SECRET_VALUES = ("cookie-value-1234567890", "token-value-abcdefghij", "trace-42-value")


def _assert_no_secret_in(blob: bytes) -> None:
    for value in SECRET_VALUES:
        assert value.encode() not in blob


async def test_secrets_are_sealed_at_rest_and_dropped_when_the_job_ends(
    db: Path, tmp_path: Path
) -> None:
    box = SecretBox.from_key_file(tmp_path / "keys" / "secrets.key")
    assert (tmp_path / "keys" / "secrets.key").stat().st_mode & 0o777 == 0o600
    async with Ledger.open(db, secrets=box) as ledger:
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(bulk_job(account.id, 2, webhook_url=None))
        secret_job = await ledger.create_job(
            attrs.evolve(bulk_job(account.id, 2), options=SECRET_OPTIONS)
        )
        assert dict(secret_job.options) == SECRET_OPTIONS
        assert dict((await ledger.job(secret_job.id)).options) == SECRET_OPTIONS
        # While it runs: every byte SQLite wrote is free of the values...
        _assert_no_secret_in(sqlite_bytes(db))
        with raw(db) as conn:
            stored, sealed = conn.execute(
                "SELECT options, secrets FROM jobs WHERE id = ?", (secret_job.id,)
            ).fetchone()
        # ...while the names are there, masked, and the values sealed.
        assert json.loads(stored)["headers"] == {"Authorization": "***", "X-Trace": "***"}
        assert json.loads(stored)["cookies"][0] == {
            "name": "session",
            "value": "***",
            "domain": "e.com",
        }
        assert sealed.startswith("v1.")
        assert (await ledger.job(job.id)).options == {"format": "png", "width": 1280}
    # A restart with the same key file still has them (a resumed job needs them).
    again = SecretBox.from_key_file(tmp_path / "keys" / "secrets.key")
    async with Ledger.open(db, secrets=again) as ledger:
        resumed = await ledger.job(secret_job.id)
        assert dict(resumed.options) == SECRET_OPTIONS and not resumed.secrets_unreadable
        for claim in await ledger.claim(secret_job.id, limit=2, lease_seconds=LEASE):
            await ledger.finish(claim, ok(claim.seq))
        await ledger.set_status(secret_job.id, "processing")
        await ledger.set_status(secret_job.id, "completed")
        ended = await ledger.job(secret_job.id)
        assert ended.options["headers"] == {"Authorization": "***", "X-Trace": "***"}
        assert ended.options["cookies"][0]["value"] == "***"
        assert (await ledger.audit()).ok
    with raw(db) as conn:
        assert scalar(conn, "SELECT secrets FROM jobs WHERE id = ?", secret_job.id) is None
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _assert_no_secret_in(sqlite_bytes(db))


async def test_every_way_a_job_ends_drops_its_secrets(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=10)

        def new(n: int) -> NewJob:
            return attrs.evolve(bulk_job(account.id, n), options=SECRET_OPTIONS)

        failed_job = await ledger.create_job(new(2))
        await ledger.fail_job(failed_job.id, "INTERNAL_ERROR", "x")
        done = await ledger.create_job(new(1))
        (claim,) = await ledger.claim(done.id, lease_seconds=LEASE)
        await ledger.finish(claim, ok(1))
        await ledger.set_status(done.id, "processing")
        await ledger.set_status(done.id, "packaging")
        await ledger.set_status(done.id, "completed", expires_at=clock() + 10)
        running = await ledger.create_job(new(1))
        with raw(db) as conn:
            held = dict(conn.execute("SELECT id, secrets IS NOT NULL FROM jobs"))
        assert held == {failed_job.id: 0, done.id: 0, running.id: 1}
        # A hand-made update of an ended row cannot bring a secret back.
        with raw(db) as conn:
            conn.execute(
                "UPDATE jobs SET options = ?, secrets = 'v1.x' WHERE id = ?",
                (json.dumps(SECRET_OPTIONS), done.id),
            )
            row = conn.execute("SELECT options, secrets FROM jobs WHERE id = ?", (done.id,))
            options, sealed = row.fetchone()
        assert sealed is None and "cookie-value" not in options
        clock.advance(11)
        (expired,) = await ledger.expire_due()
        assert expired.id == done.id
        assert (await ledger.audit()).ok


async def test_a_job_whose_secrets_cannot_be_opened_says_so(db: Path, tmp_path: Path) -> None:
    async with Ledger.open(db) as ledger:  # a key for this process only
        account, _ = await ledger.create_account(credits=5)
        job = await ledger.create_job(attrs.evolve(bulk_job(account.id, 1), options=SECRET_OPTIONS))
        assert not (await ledger.job(job.id)).secrets_unreadable
    async with Ledger.open(db) as ledger:
        lost = await ledger.job(job.id)
        assert lost.secrets_unreadable
        assert lost.options["cookies"][0]["value"] == "***"
    # A value sealed for one job does not open as another's.
    box = SecretBox.ephemeral()
    token = box.seal("job-a", {"headers": {"A": "b"}})
    assert box.open("job-a", token) == {"headers": {"A": "b"}}
    assert box.open("job-b", token) is None
    assert SecretBox.ephemeral().open("job-a", token) is None


async def test_a_damaged_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    path.write_text("not a key\n")
    with pytest.raises(ValidationError, match="does not hold a bulk key"):
        SecretBox.from_key_file(path)
    assert path.read_text() == "not a key\n"
    path.unlink()
    first = SecretBox.from_key_file(path)
    path.chmod(0o644)
    second = SecretBox.from_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert second.open("j", first.seal("j", {"cookies": []})) == {"cookies": []}


# ---- the webhook delivery queue (m004) ---------------------------------------------------


async def _ended_job_with_webhook(ledger: Ledger, status: str = "completed") -> str:
    account, _ = await ledger.create_account(credits=5)
    job = await ledger.create_job(bulk_job(account.id, 1, webhook_url="https://hooks.example/x"))
    if status == "failed":
        await ledger.fail_job(job.id, "INTERNAL_ERROR", "x")
    else:
        (claim,) = await ledger.claim(job.id, lease_seconds=LEASE)
        await ledger.finish(claim, ok(1))
        await ledger.set_status(job.id, "processing")
        await ledger.set_status(job.id, "completed")
    return job.id


async def test_an_ended_job_enqueues_one_delivery(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        account, _ = await ledger.create_account(credits=5)
        running = await ledger.create_job(
            bulk_job(account.id, 1, webhook_url="https://hooks.example/r")
        )
        done = await _ended_job_with_webhook(ledger)
        failed_id = await _ended_job_with_webhook(ledger, "failed")
        no_hook = await ledger.create_job(bulk_job(account.id, 1))
        await ledger.fail_job(no_hook.id, "X", "x")
        due = await ledger.due_deliveries(limit=10)
        assert [(d.job_id, d.event, d.attempts) for d in due] == [
            (done, "bulk_job.completed", 0),
            (failed_id, "bulk_job.failed", 0),
        ]
        assert await ledger.due_deliveries(limit=10, exclude=[due[0].id]) == [due[1]]
        assert await ledger.due_deliveries(limit=1) == [due[0]]
        # The job that runs on has none; expiring a completed job adds none.
        with raw(db) as conn:
            assert scalar(conn, "SELECT COUNT(*) FROM deliveries WHERE job_id = ?", running.id) == 0
        assert (await ledger.audit()).ok


async def test_a_delivery_is_retried_then_final(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        job_id = await _ended_job_with_webhook(ledger)
        (d,) = await ledger.due_deliveries(limit=5)
        assert await ledger.start_delivery(d.id, max_attempts=2) == 1
        assert await ledger.end_delivery(d.id, delivered=False, error="HTTP_500", retry_at=T0 + 30)
        assert await ledger.due_deliveries(limit=5) == []
        assert await ledger.next_delivery_due() == T0 + 30
        assert (await ledger.job(job_id)).webhook_state == "1:1700000030"
        clock.advance(30)
        (d,) = await ledger.due_deliveries(limit=5)
        assert d.attempts == 1
        assert await ledger.start_delivery(d.id, max_attempts=2) == 2
        assert await ledger.end_delivery(d.id, delivered=False, error="ConnectError")
        assert not await ledger.end_delivery(d.id, delivered=True)
        assert await ledger.next_delivery_due() is None
        assert (await ledger.job(job_id)).webhook_state == "failed"
    with raw(db) as conn:
        row = conn.execute("SELECT state, attempts, last_error FROM deliveries").fetchone()
        assert row == ("failed", 2, "ConnectError")
        for sql in (
            "UPDATE deliveries SET state = 'pending', finished_at = NULL",
            "UPDATE deliveries SET attempts = 0",
        ):
            with pytest.raises(sqlite3.IntegrityError, match=r"final|only count up"):
                conn.execute(sql)
        with pytest.raises(sqlite3.IntegrityError, match="kept for the audit"):
            conn.execute("DELETE FROM deliveries")


async def test_a_delivery_that_kills_its_sender_ends_failed(db: Path, clock: FakeClock) -> None:
    # Each start counts an attempt before the send: a process that dies while
    # sending leaves it counted, so after max_attempts restarts the delivery fails
    # instead of taking the service down again.
    async with Ledger.open(db, clock=clock) as ledger:
        await _ended_job_with_webhook(ledger)
        (d,) = await ledger.due_deliveries(limit=5)
        for attempt in (1, 2, 3):
            assert await ledger.start_delivery(d.id, max_attempts=3) == attempt
        assert await ledger.start_delivery(d.id, max_attempts=3) is None
        assert await ledger.due_deliveries(limit=5) == []
    with raw(db) as conn:
        row = conn.execute("SELECT state, attempts, last_error FROM deliveries").fetchone()
    assert row == ("failed", 3, "INTERRUPTED")


async def test_the_schema_guards_the_delivery_queue(db: Path, clock: FakeClock) -> None:
    async with Ledger.open(db, clock=clock) as ledger:
        job_id = await _ended_job_with_webhook(ledger)
        account, _ = await ledger.create_account(credits=5)
        running = await ledger.create_job(
            bulk_job(account.id, 1, webhook_url="https://hooks.example/r")
        )
    with raw(db) as conn:
        insert = (
            "INSERT INTO deliveries (job_id, url, event, created_at) "
            "VALUES (?, ?, 'bulk_job.completed', 'n')"
        )
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(insert, (job_id, "https://hooks.example/x"))
        for target, url in [(running.id, "https://hooks.example/r"), (job_id, "https://x.test/")]:
            with pytest.raises(sqlite3.IntegrityError, match="ended job"):
                conn.execute(insert, (target, url))
        with pytest.raises(sqlite3.IntegrityError, match="fixed"):
            conn.execute("UPDATE deliveries SET url = 'https://elsewhere.test/'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE deliveries SET state = 'failed', finished_at = 'n'")
        conn.execute("DROP TRIGGER deliveries_no_delete")
        conn.execute("DELETE FROM deliveries")
    async with Ledger.open(db, clock=clock) as ledger:
        report = await ledger.audit()
    assert any("ended without a webhook delivery" in p for p in report.problems)
