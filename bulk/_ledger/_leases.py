"""Claims, results and recovery: how a URL row is leased, settled or given back.

Every claim takes the row's next lease number (the fencing token); ``finish`` and
``release`` must present it, so a worker whose lease expired and was taken again
can never touch the row. Settling a row is what moves its credit (``ok``: used,
``failed``: refunded), by trigger, exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from ._connection import LedgerCore, immediate
from ._reads import url_options
from ._records import Claim, UrlResult, iso

__all__ = ["Leases"]


class Leases(LedgerCore):
    """The lease operations of ``Ledger`` (through the writer task)."""

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
            with immediate(conn):
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
                    "RETURNING seq, url, entry, attempts, lease_no, options, secrets, "
                    "extra_entries",
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
                        options=url_options(
                            job_id, r["seq"], r["options"], r["secrets"], self._box
                        ),
                        extra_entries=(
                            json.loads(r["extra_entries"]) if r["extra_entries"] else {}
                        ),
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
            with immediate(conn):
                cur = conn.execute(
                    "UPDATE job_urls SET state = ?, error_code = ?, error_message = ?, "
                    "http_status = ?, final_url = ?, width = ?, height = ?, bytes = ?, "
                    "sha256 = ?, file = ?, facts = ?, lease_owner = NULL, lease_until = NULL, "
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
                        None if result.facts is None else json.dumps(dict(result.facts)),
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
            with immediate(conn):
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
            with immediate(conn):
                cur = conn.execute(
                    "UPDATE job_urls SET state = 'queued', lease_owner = NULL, "
                    "lease_until = NULL WHERE state = 'leased' AND lease_owner != ?",
                    (self.owner,),
                )
                return cur.rowcount

        return await self._write(tx)
