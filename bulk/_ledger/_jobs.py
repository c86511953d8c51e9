"""Writing jobs: create (reserving credits), grow, move through their statuses, fail.

A job's status moves only along ``TRANSITIONS``; ``fail_job`` is the one way to
fail a job that still has work, and failing a job refunds every credit it holds
(the unfinished URLs here, the used ones by the schema's trigger). Cookie and header
values are sealed on the way in (``_secrets.py``) and dropped by the schema when the
job ends.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from .._exceptions import (
    InsufficientCredits,
    InvalidJobTransition,
    JobNotFound,
    ValidationError,
)
from ._connection import LedgerCore, immediate
from ._reads import idempotent_job, load_job
from ._records import JobRow, JobStatus, NewJob, NewUrl, iso
from ._schema import TRANSITIONS
from ._secrets import SecretBox, split_secrets, url_secret_id

__all__ = ["JobWrites"]

# What ``set_status`` may set besides the status.
_SETTABLE: Final = frozenset(
    {
        "error_code",
        "error_message",
        "zip_path",
        "zip_size",
        "zip_sha256",
        "expires_at",
        "webhook_state",
        "root",
        "sitemap_urls",
        "discovery",
    }
)


def _insert_urls(
    conn: sqlite3.Connection,
    job_id: str,
    first_seq: int,
    urls: Sequence[tuple[str, str | None] | NewUrl],
    box: SecretBox,
) -> None:
    rows = []
    for i, item in enumerate(urls):
        seq = first_seq + i
        if isinstance(item, NewUrl):
            options = sealed = None
            if item.options is not None:
                masked, secret = split_secrets(item.options)
                options = json.dumps(masked)
                sealed = box.seal(url_secret_id(job_id, seq), secret) if secret else None
            extra = json.dumps(dict(item.extra_entries)) if item.extra_entries else None
            rows.append((job_id, seq, item.url, item.entry, options, sealed, extra))
        else:
            url, entry = item
            rows.append((job_id, seq, url, entry, None, None, None))
    conn.executemany(
        "INSERT INTO job_urls (job_id, seq, url, entry, options, secrets, extra_entries) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


class JobWrites(LedgerCore):
    """The job operations of ``Ledger`` (through the writer task)."""

    async def create_job(self, new: NewJob) -> JobRow:
        """Create a job and its URL rows, reserving one credit per URL, atomically.

        The options' cookie and header values are stored sealed (see ``_secrets``),
        the ``options`` column keeps them masked.

        Returns:
            The job (``replayed=True`` when an identical earlier request made it).

        Raises:
            InsufficientCredits: The account cannot cover every URL; nothing written.
            IdempotencyKeyReused: Same key, different request.
        """
        job_id = str(uuid.uuid4())
        now = iso(self.clock())
        masked, secret = split_secrets(new.options)
        sealed = self._box.seal(job_id, secret) if secret else None

        def tx(conn: sqlite3.Connection) -> JobRow:
            with immediate(conn):
                if new.account_id is not None and new.idempotency_key is not None:
                    earlier = idempotent_job(
                        conn, new.account_id, new.idempotency_key, new.request_hash or "", self._box
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
                    "request_hash, webhook_url, secrets, discovery, connector_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job_id,
                        new.kind,
                        new.account_id,
                        new.api_key_id,
                        new.site,
                        json.dumps(list(new.sitemap_urls)),
                        json.dumps(masked),
                        new.root,
                        new.status,
                        int(new.urls_complete),
                        now,
                        new.idempotency_key,
                        new.request_hash,
                        new.webhook_url,
                        sealed,
                        None if new.discovery is None else json.dumps(dict(new.discovery)),
                        new.connector_id,
                    ),
                )
                _insert_urls(conn, job_id, 1, new.urls, self._box)
                job = load_job(conn, job_id, self._box)
                assert job is not None
                return job

        return await self._write(tx)

    async def append_urls(
        self,
        job_id: str,
        urls: Sequence[tuple[str, str | None] | NewUrl],
        *,
        complete: bool = False,
    ) -> int:
        """Add URL rows to an uncharged (offline) job whose list is still growing.

        Returns:
            The job's URL count afterwards.

        Raises:
            JobNotFound: No such job.
            ValidationError: The job is charged, or its list is complete.
        """

        def tx(conn: sqlite3.Connection) -> int:
            with immediate(conn):
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
                _insert_urls(conn, job_id, count + 1, urls, self._box)
                if complete:
                    conn.execute("UPDATE jobs SET urls_complete = 1 WHERE id = ?", (job_id,))
                return int(count) + len(urls)

        return await self._write(tx)

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
        ``zip_sha256``, ``expires_at``, ``webhook_state``, ``root``, ``sitemap_urls``,
        ``discovery`` (what an offline run's discovery found, once it has).
        ``started_at``/``finished_at`` are stamped by the ledger.

        Returns:
            Whether the job moved (False when ``expect`` does not hold).

        Raises:
            ValidationError: A field that cannot be set.
            JobNotFound: No such job.
            InvalidJobTransition: The job cannot move from its status to ``status``
                (and ``expect`` did not say to skip it), or it would end with URLs
                unfinished (``fail_job`` is for that).
        """
        bad = set(fields) - _SETTABLE
        if bad:
            raise ValidationError(f"cannot set {sorted(bad)}", field=sorted(bad)[0])
        if "sitemap_urls" in fields:
            fields["sitemap_urls"] = json.dumps(list(fields["sitemap_urls"]))
        if "discovery" in fields:
            fields["discovery"] = json.dumps(dict(fields["discovery"]))
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
            with immediate(conn):
                row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id}")
                if status is not None and status != row["status"]:
                    if status not in TRANSITIONS[row["status"]]:
                        if expect and row["status"] not in expect:
                            return False  # the caller's guard says: not for me
                        raise InvalidJobTransition(
                            f"a {row['status']} job cannot become {status}",
                            details={"from": row["status"], "to": status},
                        )
                    if status in ("completed", "failed"):
                        (unfinished,) = conn.execute(
                            "SELECT COUNT(*) FROM job_urls WHERE job_id = ? "
                            "AND state IN ('queued', 'leased')",
                            (job_id,),
                        ).fetchone()
                        if unfinished:
                            # Their reservations would stay outstanding forever.
                            raise InvalidJobTransition(
                                f"job {job_id} has {unfinished} unfinished URLs; use fail_job",
                                details={"from": row["status"], "to": status},
                            )
                cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", args)
                return cur.rowcount > 0

        return await self._write(tx)

    async def fail_job(self, job_id: str, code: str, message: str) -> bool:
        """Fail a job and refund every credit it holds, whatever stage it was in.

        Every unfinished URL fails with ``code`` (its credit refunded); the credits of
        URLs already captured are given back too (``reverse`` events, by trigger):
        a job that fails costs nothing.

        Returns:
            Whether the job was not already terminal.
        """
        now = self.clock()

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
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

    async def expire_due(self) -> list[JobRow]:
        """Completed jobs whose download window has passed become ``expired``.

        Returns:
            The jobs just expired (the caller deletes their files).
        """
        now = self.clock()

        def tx(conn: sqlite3.Connection) -> list[JobRow]:
            with immediate(conn):
                ids = [
                    r[0]
                    for r in conn.execute(
                        "UPDATE jobs SET status = 'expired' WHERE status = 'completed' "
                        "AND expires_at IS NOT NULL AND expires_at <= ? RETURNING id",
                        (now,),
                    )
                ]
                return [j for j in (load_job(conn, i, self._box) for i in ids) if j is not None]

        return await self._write(tx)
