"""The webhook delivery queue: which callbacks are due, attempts, final states.

A job that ends with a ``webhook_url`` gets one ``deliveries`` row, by trigger
(schema m004); a schedule run that changed gets one ``bulk_job.changed`` row with
its summary as ``payload`` (m009, written by ``_schedules``). The sender
(``bulk/_webhooks.py``) asks for the due rows (an indexed range over pending rows
only, so its work follows the queue, not the history), counts an attempt before
each send (a send the process dies in counts, so a callback that kills its sender
cannot do it forever), and records how each attempt ended: delivered and failed
are final.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Final

from ._connection import LedgerCore, immediate
from ._records import Delivery, iso

__all__ = ["CHANGED", "DUE_SQL", "Deliveries"]

#: The event of a schedule run that changed (m009): its delivery carries a payload
#: and goes to the schedule's webhook URL, not the job's.
CHANGED: Final = "bulk_job.changed"

#: The poll of the queue (``{skip}``: the ids being sent). It reads the partial
#: index ``deliveries_due``: pending rows only, due ones first (a test checks the
#: plan), so delivered and failed history is never read again.
DUE_SQL = (
    "SELECT id, job_id, url, event, attempts, due_at, payload FROM deliveries "
    "WHERE state = 'pending' AND due_at <= ?{skip} ORDER BY due_at, id LIMIT ?"
)


def _payload(text: str | None) -> dict[str, object] | None:
    return json.loads(text) if text else None


def _not_in(ids: Collection[int]) -> tuple[str, list[int]]:
    if not ids:
        return "", []
    return f" AND id NOT IN ({','.join('?' * len(ids))})", list(ids)


class Deliveries(LedgerCore):
    """The delivery-queue operations of ``Ledger``."""

    async def due_deliveries(self, *, limit: int, exclude: Collection[int] = ()) -> list[Delivery]:
        """Pending deliveries due now, oldest due first.

        Args:
            limit: At most this many.
            exclude: Ids the caller is sending already.
        """
        now = self.clock()
        skip, args = _not_in(exclude)

        def q(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(DUE_SQL.format(skip=skip), [now, *args, limit]).fetchall()
            return [
                Delivery(**{**dict(r), "payload": _payload(r["payload"])}) for r in rows
            ]

        return await self._read(q)

    async def next_delivery_due(self, *, exclude: Collection[int] = ()) -> float | None:
        """When the next pending delivery (not in ``exclude``) is due, or None."""
        skip, args = _not_in(exclude)

        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                f"SELECT due_at FROM deliveries WHERE state = 'pending'{skip} "
                "ORDER BY due_at, id LIMIT 1",
                args,
            ).fetchone()
            return None if row is None else float(row[0])

        return await self._read(q)

    async def start_delivery(self, delivery_id: int, *, max_attempts: int) -> int | None:
        """Count an attempt of a pending delivery before it is sent.

        Returns:
            The attempt's number, or None: the delivery is no longer pending, or it
            already had ``max_attempts`` (the earlier ones never reported: the
            process died while sending) and is failed now instead.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> int | None:
            with immediate(conn):
                row = conn.execute(
                    "SELECT attempts, job_id, event FROM deliveries "
                    "WHERE id = ? AND state = 'pending'",
                    (delivery_id,),
                ).fetchone()
                if row is None:
                    return None
                if row["attempts"] >= max_attempts:
                    conn.execute(
                        "UPDATE deliveries SET state = 'failed', finished_at = ?, "
                        "last_error = COALESCE(last_error, 'INTERRUPTED') WHERE id = ?",
                        (now, delivery_id),
                    )
                    if row["event"] != CHANGED:
                        conn.execute(
                            "UPDATE jobs SET webhook_state = 'failed' WHERE id = ?",
                            (row["job_id"],),
                        )
                    return None
                (attempt,) = conn.execute(
                    "UPDATE deliveries SET attempts = attempts + 1 WHERE id = ? "
                    "RETURNING attempts",
                    (delivery_id,),
                ).fetchone()
                return int(attempt)

        return await self._write(tx)

    async def end_delivery(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> bool:
        """Record how an attempt ended.

        Args:
            delivered: The receiver answered 2xx: the delivery is done.
            error: Why it did not (a code, never a message that could hold a secret).
            retry_at: When to try again (Unix time); None fails the delivery for good.

        Returns:
            Whether the delivery was still pending (and so was updated).
        """
        now = iso(self.clock())
        if delivered:
            state, due, webhook_state = "delivered", None, "delivered"
        elif retry_at is None:
            state, due, webhook_state = "failed", None, "failed"
        else:
            state, due, webhook_state = "pending", retry_at, None
        reason = None if delivered else (error or "FAILED")

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                row = conn.execute(
                    "UPDATE deliveries SET state = ?, last_error = COALESCE(?, last_error), "
                    "due_at = COALESCE(?, due_at), finished_at = ? "
                    "WHERE id = ? AND state = 'pending' RETURNING job_id, attempts, event",
                    (
                        state,
                        reason,
                        due,
                        None if state == "pending" else now,
                        delivery_id,
                    ),
                ).fetchone()
                if row is None:
                    return False
                if row["event"] == CHANGED:
                    return True  # the job's own webhook_state is about its end event
                # jobs.webhook_state mirrors the queue for readers of the job row.
                conn.execute(
                    "UPDATE jobs SET webhook_state = ? WHERE id = ?",
                    (webhook_state or f"{row['attempts']}:{due:.0f}", row["job_id"]),
                )
                return True

        return await self._write(tx)
