"""Reading the ledger: jobs with their counts, URL rows, accounts and keys.

The row loaders here are shared with the write side (a write returns the job as it
left it); the ``Reads`` methods run on the read-only connections.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._exceptions import IdempotencyKeyReused, InvalidAPIKey, JobNotFound
from ._connection import LedgerCore
from ._records import Account, JobRow, UrlRow
from ._secrets import SecretBox, merge_secrets, url_secret_id

__all__ = [
    "Reads",
    "account_row",
    "hash_key",
    "idempotent_job",
    "load_job",
    "url_options",
]

# The columns UrlRow takes as they are; options, extra_entries and facts are JSON.
_URL_JSON: Final = frozenset({"options", "extra_entries", "facts"})
_URL_FIELDS: Final = tuple(f for f in attrs.fields_dict(UrlRow) if f not in _URL_JSON)
_JOB_COLUMNS: Final = (
    "id, kind, account_id, site, sitemap_urls, options, root, status, urls_complete, "
    "created_at, started_at, finished_at, expires_at, error_code, error_message, "
    "zip_path, zip_size, zip_sha256, webhook_url, webhook_state, secrets, discovery, "
    "connector_id"
)


def hash_key(key: str) -> str:
    """How an API key is stored and looked up (it is never stored in clear)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _job_from_row(
    row: sqlite3.Row,
    counts: Mapping[str, int],
    credits: Mapping[str, int],
    box: SecretBox | None,
) -> JobRow:
    options = json.loads(row["options"])
    unreadable = False
    if row["secrets"] is not None:
        secret = box.open(row["id"], row["secrets"]) if box is not None else None
        if secret is None:
            unreadable = box is not None
        else:
            options = merge_secrets(options, secret)
    reversed_ = credits.get("reverse", 0)
    return JobRow(
        id=row["id"],
        kind=row["kind"],
        account_id=row["account_id"],
        site=row["site"],
        sitemap_urls=tuple(json.loads(row["sitemap_urls"])),
        options=options,
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
        # Net: a use given back because the job failed counts as refunded.
        used=credits.get("use", 0) - reversed_,
        refunded=credits.get("refund", 0) + reversed_,
        secrets_unreadable=unreadable,
        connector_id=row["connector_id"],
    )


def url_options(
    job_id: str, seq: int, options: str | None, secrets: str | None, box: SecretBox | None
) -> dict[str, Any] | None:
    """A URL row's options override, its cookie and header values opened when ``box``
    can (masked otherwise: the job has ended, or the key changed)."""
    if options is None:
        return None
    value: dict[str, Any] = json.loads(options)
    if secrets is not None and box is not None:
        secret = box.open(url_secret_id(job_id, seq), secrets)
        if secret is not None:
            value = merge_secrets(value, secret)
    return value


def _url_row(row: sqlite3.Row, job_id: str, box: SecretBox | None) -> UrlRow:
    return UrlRow(
        **{k: row[k] for k in _URL_FIELDS},
        options=url_options(job_id, row["seq"], row["options"], row["secrets"], box),
        extra_entries=json.loads(row["extra_entries"]) if row["extra_entries"] else {},
        facts=json.loads(row["facts"]) if row["facts"] else {},
    )


def load_job(conn: sqlite3.Connection, job_id: str, box: SecretBox | None) -> JobRow | None:
    """A job with its counts, or None.

    Args:
        box: Opens the job's sealed cookie and header values; None leaves them masked
            (the audit has no use for them).
    """
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
    return _job_from_row(row, counts, credits, box)


def account_row(conn: sqlite3.Connection, account_id: int, key_id: int | None) -> Account:
    """An account (and the display prefix of the key used, when given).

    Raises:
        InvalidAPIKey: No such account.
    """
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
    return _account(row, key_id, prefix)


def _account(row: sqlite3.Row, key_id: int | None, prefix: str | None) -> Account:
    """An ``Account`` from a row with the accounts table's columns."""
    return Account(
        id=row["id"],
        email=row["email"],
        plan=row["plan"],
        balance=row["balance"],
        webhook_secret=row["webhook_secret"],
        api_key_id=key_id,
        key_prefix=prefix,
    )


def idempotent_job(
    conn: sqlite3.Connection, account_id: int, key: str, request_hash: str, box: SecretBox
) -> JobRow | None:
    """The job an earlier request with this Idempotency-Key made, if any.

    Raises:
        IdempotencyKeyReused: The key was used with a different request body.
    """
    row = conn.execute(
        "SELECT id, request_hash FROM jobs WHERE account_id = ? AND idempotency_key = ?",
        (account_id, key),
    ).fetchone()
    if row is None:
        return None
    if not hmac.compare_digest(row["request_hash"] or "", request_hash):
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    return load_job(conn, row["id"], box)


def _active_key_account(conn: sqlite3.Connection, digest: str) -> Account | None:
    """The account of the active key whose hash is ``digest`` (one query), or None."""
    row = conn.execute(
        "SELECT k.id AS key_id, k.key_hash, k.prefix, a.id, a.email, a.plan, a.balance, "
        "a.webhook_secret FROM api_keys k JOIN accounts a ON a.id = k.account_id "
        "WHERE k.key_hash = ? AND k.active = 1",
        (digest,),
    ).fetchone()
    # The lookup is by hash (no timing signal about the key itself); the
    # compare_digest is the belt to that brace.
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return _account(row, row["key_id"], row["prefix"])


class Reads(LedgerCore):
    """The read operations of ``Ledger`` (read-only connections)."""

    # ---- accounts and keys -----------------------------------------------------------

    async def authenticate(self, key: str) -> Account:
        """The account an active API key belongs to.

        Raises:
            InvalidAPIKey: Unknown or revoked key.
        """
        digest = hash_key(key)
        account = await self._read(lambda conn: _active_key_account(conn, digest))
        if account is None:
            raise InvalidAPIKey("the API key is invalid or inactive")
        return account

    async def authenticate_job(self, key: str, job_id: str | None) -> tuple[Account, JobRow | None]:
        """``authenticate`` and ``job`` in one read: what a job's status needs.

        One read transaction on one worker thread: the key is checked against the
        database on every call (a key revoked by any process stops working at once)
        and the job is read from the same snapshot.

        Args:
            key: The API key as the client sent it.
            job_id: The job to read; None reads none (a malformed id, say).

        Returns:
            The key's account, and the job when it exists and belongs to that
            account (None otherwise: the caller says "not found" either way).

        Raises:
            InvalidAPIKey: Unknown or revoked key (checked before the job is looked at).
        """
        digest = hash_key(key)

        def q(conn: sqlite3.Connection) -> tuple[Account, JobRow | None] | None:
            account = _active_key_account(conn, digest)
            if account is None:
                return None
            job = load_job(conn, job_id, self._box) if job_id is not None else None
            if job is not None and job.account_id != account.id:
                job = None
            return account, job

        found = await self._read(q)
        if found is None:
            raise InvalidAPIKey("the API key is invalid or inactive")
        return found

    async def account(self, account_id: int) -> Account:
        """An account by id.

        Raises:
            InvalidAPIKey: No such account.
        """

        def q(conn: sqlite3.Connection) -> Account:
            return account_row(conn, account_id, None)

        return await self._read(q)

    async def account_of_key_id(self, key_id: int) -> Account:
        """The account an active API key (by its row id) belongs to: what a dashboard
        session holds instead of the key itself.

        Raises:
            InvalidAPIKey: No such key, or it was deactivated.
        """

        def q(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT account_id FROM api_keys WHERE id = ? AND active = 1", (key_id,)
            ).fetchone()
            return None if row is None else account_row(conn, row["account_id"], key_id)

        account = await self._read(q)
        if account is None:
            raise InvalidAPIKey("the API key is invalid or inactive")
        return account

    async def account_by_key(self, key: str) -> Account:
        """Like ``authenticate`` but also finds revoked keys (admin use)."""
        digest = hash_key(key)

        def q(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(
                "SELECT id, account_id FROM api_keys WHERE key_hash = ?", (digest,)
            ).fetchone()
            return None if row is None else account_row(conn, row["account_id"], row["id"])

        account = await self._read(q)
        if account is None:
            raise InvalidAPIKey("no such API key")
        return account

    async def keys(self, account_id: int) -> list[dict[str, Any]]:
        """The account's keys (display prefix and dates; never the key)."""

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

    # ---- jobs and URLs ---------------------------------------------------------------

    async def find_idempotent(self, account_id: int, key: str, request_hash: str) -> JobRow | None:
        """The job an earlier request with this Idempotency-Key created, if any.

        Raises:
            IdempotencyKeyReused: The key was used with a different request body.
        """

        def q(conn: sqlite3.Connection) -> JobRow | None:
            return idempotent_job(conn, account_id, key, request_hash, self._box)

        return await self._read(q)

    async def job(self, job_id: str, *, account_id: int | None = None) -> JobRow:
        """A job with its counts.

        Args:
            account_id: When given, a job of another account is reported as missing.

        Raises:
            JobNotFound: No such job (for this account).
        """

        def q(conn: sqlite3.Connection) -> JobRow | None:
            return load_job(conn, job_id, self._box)

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
            return [j for j in (load_job(conn, i, self._box) for i in ids) if j is not None]

        return await self._read(q)

    async def jobs_page(
        self, account_id: int, *, kinds: Iterable[str], limit: int, offset: int = 0
    ) -> tuple[list[JobRow], int]:
        """One page of an account's jobs of ``kinds``, newest first, and how many
        there are in all (one snapshot)."""
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))

        def q(conn: sqlite3.Connection) -> tuple[list[JobRow], int]:
            (total,) = conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE account_id = ? AND kind IN ({marks})",
                (account_id, *kinds),
            ).fetchone()
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM jobs WHERE account_id = ? AND kind IN ({marks}) "
                    "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                    (account_id, *kinds, limit, offset),
                )
            ]
            jobs = [j for j in (load_job(conn, i, self._box) for i in ids) if j is not None]
            return jobs, int(total)

        return await self._read(q)

    async def urls(self, job_id: str, *, after: int = 0, limit: int | None = None) -> list[UrlRow]:
        """The URL rows of a job, in sequence order: every one, or (``after``,
        ``limit``) at most ``limit`` of those whose ``seq`` is over ``after``, so that
        a caller can walk a big job a page at a time."""

        def q(conn: sqlite3.Connection) -> list[UrlRow]:
            return [
                _url_row(r, job_id, self._box)
                for r in conn.execute(
                    "SELECT * FROM job_urls WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (job_id, after, -1 if limit is None else limit),
                )
            ]

        return await self._read(q)
