"""Schedules and their runs (schema m009): create, read, pause, delete; claim a slot,
record how each run went, queue its change webhook.

A slot is claimed in one transaction with the move of ``next_at`` past it, guarded
by ``next_at`` itself and by the UNIQUE (schedule, slot) row: two claimers (or a
claim after a crash) can never both run one slot. Missed slots are not claimed one
by one: the claimer moves ``next_at`` to the first slot after now.

The body of a schedule is kept with cookie and header values masked; when it has
any, the whole body is also kept sealed (``SecretBox``, bound to
``"schedule:<id>"``), and dropped when the schedule is deleted.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from .._exceptions import ScheduleNotFound
from ._connection import LedgerCore, immediate
from ._deliveries import CHANGED
from ._records import iso

__all__ = [
    "NewSchedule",
    "RunRow",
    "ScheduleRow",
    "ScheduleWrites",
    "mask_body",
]

ScheduleState = Literal["active", "paused", "deleted"]
RunState = Literal["claimed", "running", "completed", "failed", "skipped"]
#: Leave a PATCH-able field as it is.
UNCHANGED: Final[Any] = object()


def mask_body(body: Any) -> Any:
    """``body`` with every cookie value and header value (at any depth: the job's
    options and each URL's) replaced by ``***``."""
    if isinstance(body, list):
        return [mask_body(v) for v in body]
    if not isinstance(body, dict):
        return body
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "cookies" and isinstance(value, list):
            out[key] = [{**c, "value": "***"} if isinstance(c, dict) else "***" for c in value]
        elif key == "headers" and isinstance(value, dict):
            out[key] = dict.fromkeys(value, "***")
        else:
            out[key] = mask_body(value)
    return out


def _sealed_id(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


@attrs.frozen(kw_only=True)
class NewSchedule:
    """A schedule to create (``every`` already checked, ``next_at`` its first slot)."""

    account_id: int
    api_key_id: int
    body: Mapping[str, Any]
    every: str
    webhook_url: str | None
    min_change: float | None
    next_at: float
    anchor: float


@attrs.frozen(kw_only=True)
class ScheduleRow:
    """A schedule as stored. ``body`` is masked; ``runs`` counts its runs."""

    id: str
    account_id: int
    api_key_id: int
    body: Mapping[str, Any]
    every: str
    webhook_url: str | None
    min_change: float | None
    state: ScheduleState
    next_at: float | None
    anchor: float
    baseline_run: int | None
    created_at: str
    updated_at: str
    runs: int = 0
    has_secrets: bool = False


@attrs.frozen(kw_only=True)
class RunRow:
    """One run of a schedule: one slot, at most one job."""

    schedule_id: str
    run: int
    slot: float
    state: RunState
    job_id: str | None
    reason_code: str | None
    reason: str | None
    compared_with: int | None
    changes: Mapping[str, Any] | None
    changed: bool | None
    report: str | None
    created_at: str
    finished_at: str | None


def _schedule(row: sqlite3.Row, runs: int) -> ScheduleRow:
    return ScheduleRow(
        id=row["id"],
        account_id=row["account_id"],
        api_key_id=row["api_key_id"],
        body=json.loads(row["body"]),
        every=row["every"],
        webhook_url=row["webhook_url"],
        min_change=row["min_change"],
        state=row["state"],
        next_at=row["next_at"],
        anchor=row["anchor"],
        baseline_run=row["baseline_run"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        runs=runs,
        has_secrets=row["secrets"] is not None,
    )


def _run(row: sqlite3.Row) -> RunRow:
    return RunRow(
        schedule_id=row["schedule_id"],
        run=row["run"],
        slot=row["slot"],
        state=row["state"],
        job_id=row["job_id"],
        reason_code=row["reason_code"],
        reason=row["reason"],
        compared_with=row["compared_with"],
        changes=json.loads(row["changes"]) if row["changes"] else None,
        changed=None if row["changed"] is None else bool(row["changed"]),
        report=row["report"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _load(
    conn: sqlite3.Connection, schedule_id: str, account_id: int | None
) -> ScheduleRow | None:
    row = conn.execute(
        "SELECT * FROM schedules WHERE id = ? AND state != 'deleted'", (schedule_id,)
    ).fetchone()
    if row is None or (account_id is not None and row["account_id"] != account_id):
        return None
    (runs,) = conn.execute(
        "SELECT COUNT(*) FROM schedule_runs WHERE schedule_id = ?", (schedule_id,)
    ).fetchone()
    return _schedule(row, int(runs))


def _not_found(schedule_id: str) -> ScheduleNotFound:
    return ScheduleNotFound(f"schedule {schedule_id[:40]} not found")


class ScheduleWrites(LedgerCore):
    """The schedule operations of ``Ledger``."""

    # ---- schedules -------------------------------------------------------------------

    async def create_schedule(self, new: NewSchedule) -> ScheduleRow:
        """Store a new, active schedule (its body masked, and sealed when it has
        cookie or header values)."""
        schedule_id = str(uuid.uuid4())
        now = iso(self.clock())
        masked = mask_body(new.body)
        sealed = self._box.seal(_sealed_id(schedule_id), new.body) if masked != new.body else None

        def tx(conn: sqlite3.Connection) -> ScheduleRow:
            with immediate(conn):
                conn.execute(
                    "INSERT INTO schedules (id, account_id, api_key_id, body, secrets, every, "
                    "webhook_url, min_change, state, next_at, anchor, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)",
                    (
                        schedule_id,
                        new.account_id,
                        new.api_key_id,
                        json.dumps(masked),
                        sealed,
                        new.every,
                        new.webhook_url,
                        new.min_change,
                        new.next_at,
                        new.anchor,
                        now,
                        now,
                    ),
                )
                loaded = _load(conn, schedule_id, None)
                assert loaded is not None
                return loaded

        return await self._write(tx)

    async def schedule(self, schedule_id: str, *, account_id: int | None = None) -> ScheduleRow:
        """A schedule that is not deleted (of ``account_id``, when given).

        Raises:
            ScheduleNotFound: None such.
        """

        def q(conn: sqlite3.Connection) -> ScheduleRow | None:
            return _load(conn, schedule_id, account_id)

        found = await self._read(q)
        if found is None:
            raise _not_found(schedule_id)
        return found

    async def schedule_body(self, schedule: ScheduleRow) -> dict[str, Any] | None:
        """The schedule's body with its cookie and header values (None: they cannot
        be decrypted with this key)."""
        if not schedule.has_secrets:
            return dict(schedule.body)

        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT secrets FROM schedules WHERE id = ?", (schedule.id,)
            ).fetchone()
            return None if row is None else row["secrets"]

        token = await self._read(q)
        return None if token is None else self._box.open(_sealed_id(schedule.id), token)

    async def schedules_page(
        self, account_id: int, *, limit: int, offset: int = 0
    ) -> tuple[list[ScheduleRow], int]:
        """One page of an account's schedules, newest first, and how many in all."""

        def q(conn: sqlite3.Connection) -> tuple[list[ScheduleRow], int]:
            (total,) = conn.execute(
                "SELECT COUNT(*) FROM schedules WHERE account_id = ? AND state != 'deleted'",
                (account_id,),
            ).fetchone()
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM schedules WHERE account_id = ? AND state != 'deleted' "
                    "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                    (account_id, limit, offset),
                )
            ]
            rows = [s for s in (_load(conn, i, account_id) for i in ids) if s is not None]
            return rows, int(total)

        return await self._read(q)

    async def update_schedule(
        self,
        schedule_id: str,
        account_id: int,
        *,
        state: ScheduleState | None = None,
        every: str | None = None,
        next_at: float | None = None,
        anchor: float | None = None,
        webhook_url: Any = UNCHANGED,
        min_change: Any = UNCHANGED,
    ) -> ScheduleRow:
        """Change a schedule: pause (``state="paused"``, ``next_at`` cleared), resume
        or change its interval (``next_at``, ``anchor``), its webhook or notify.

        Raises:
            ScheduleNotFound: Not the account's, or deleted.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> ScheduleRow | None:
            with immediate(conn):
                current = _load(conn, schedule_id, account_id)
                if current is None:
                    return None
                new_state = state or current.state
                new_next = None if new_state != "active" else (next_at or current.next_at)
                conn.execute(
                    "UPDATE schedules SET state = ?, every = ?, next_at = ?, anchor = ?, "
                    "webhook_url = ?, min_change = ?, updated_at = ? WHERE id = ?",
                    (
                        new_state,
                        every or current.every,
                        new_next,
                        anchor if anchor is not None else current.anchor,
                        current.webhook_url if webhook_url is UNCHANGED else webhook_url,
                        current.min_change if min_change is UNCHANGED else min_change,
                        now,
                        schedule_id,
                    ),
                )
                return _load(conn, schedule_id, account_id)

        found = await self._write(tx)
        if found is None:
            raise _not_found(schedule_id)
        return found

    async def delete_schedule(self, schedule_id: str, account_id: int) -> None:
        """Delete a schedule: no slot of it runs any more, its sealed body is dropped
        (its rows and runs are kept, for the audit).

        Raises:
            ScheduleNotFound: Not the account's, or deleted already.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                return (
                    conn.execute(
                        "UPDATE schedules SET state = 'deleted', next_at = NULL, secrets = NULL, "
                        "updated_at = ? WHERE id = ? AND account_id = ? AND state != 'deleted'",
                        (now, schedule_id, account_id),
                    ).rowcount
                    == 1
                )

        if not await self._write(tx):
            raise _not_found(schedule_id)

    # ---- slots and runs ----------------------------------------------------------------

    async def due_schedules(self, now: float, *, limit: int = 100) -> list[ScheduleRow]:
        """Active schedules whose next slot has come and that have no open run."""

        def q(conn: sqlite3.Connection) -> list[ScheduleRow]:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT s.id FROM schedules s WHERE s.state = 'active' AND s.next_at <= ? "
                    "AND NOT EXISTS (SELECT 1 FROM schedule_runs r WHERE r.schedule_id = s.id "
                    "AND r.state IN ('claimed', 'running')) ORDER BY s.next_at LIMIT ?",
                    (now, limit),
                )
            ]
            return [s for s in (_load(conn, i, None) for i in ids) if s is not None]

        return await self._read(q)

    async def next_slot_at(self) -> float | None:
        """The earliest ``next_at`` of any active schedule."""

        def q(conn: sqlite3.Connection) -> float | None:
            (value,) = conn.execute(
                "SELECT MIN(next_at) FROM schedules WHERE state = 'active'"
            ).fetchone()
            return None if value is None else float(value)

        return await self._read(q)

    async def claim_slot(self, schedule_id: str, slot: float, following: float) -> RunRow | None:
        """Claim the slot ``slot`` of a schedule and move its ``next_at`` to
        ``following``, in one transaction.

        Returns:
            The new run (``claimed``), or None: the schedule is no longer active, its
            ``next_at`` moved meanwhile, it has an open run, or the slot was claimed.
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> RunRow | None:
            with immediate(conn):
                taken = conn.execute(
                    "SELECT 1 FROM schedule_runs WHERE schedule_id = ? "
                    "AND (slot = ? OR state IN ('claimed', 'running'))",
                    (schedule_id, slot),
                ).fetchone()
                if taken is not None:
                    return None
                moved = conn.execute(
                    "UPDATE schedules SET next_at = ? WHERE id = ? AND state = 'active' "
                    "AND next_at = ?",
                    (following, schedule_id, slot),
                ).rowcount
                if moved != 1:
                    return None
                # The UNIQUE (schedule_id, slot) and the one-open-run index stand
                # behind the check above: a second claim of a slot aborts.
                row = conn.execute(
                    "INSERT INTO schedule_runs (schedule_id, run, slot, state, created_at) "
                    "SELECT ?, COALESCE(MAX(run), 0) + 1, ?, 'claimed', ? FROM schedule_runs "
                    "WHERE schedule_id = ? RETURNING *",
                    (schedule_id, slot, now, schedule_id),
                ).fetchone()
                return _run(row)

        return await self._write(tx)

    async def open_runs(self) -> list[RunRow]:
        """Runs claimed or running (after a restart: the ones to carry on)."""

        def q(conn: sqlite3.Connection) -> list[RunRow]:
            return [
                _run(r)
                for r in conn.execute(
                    "SELECT * FROM schedule_runs WHERE state IN ('claimed', 'running') "
                    "ORDER BY created_at"
                )
            ]

        return await self._read(q)

    async def run_started(self, schedule_id: str, run: int, job_id: str) -> None:
        """A claimed run's job exists: the run is running."""

        def tx(conn: sqlite3.Connection) -> None:
            with immediate(conn):
                conn.execute(
                    "UPDATE schedule_runs SET state = 'running', job_id = ? "
                    "WHERE schedule_id = ? AND run = ? AND state = 'claimed'",
                    (job_id, schedule_id, run),
                )

        await self._write(tx)

    async def finish_run(
        self,
        schedule_id: str,
        run: int,
        state: Literal["completed", "failed", "skipped"],
        *,
        reason_code: str | None = None,
        reason: str | None = None,
        compared_with: int | None = None,
        changes: Mapping[str, Any] | None = None,
        changed: bool | None = None,
        report: str | None = None,
        notify: tuple[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Record how an open run ended, in one transaction: the run; for a completed
        one, the schedule's new baseline; and its change webhook (``notify``: URL and
        payload) in the delivery queue.

        Returns:
            Whether the run was still open (and so was updated).
        """
        now = iso(self.clock())

        def tx(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                row = conn.execute(
                    "UPDATE schedule_runs SET state = ?, reason_code = ?, reason = ?, "
                    "compared_with = ?, changes = ?, changed = ?, report = ?, finished_at = ? "
                    "WHERE schedule_id = ? AND run = ? AND state IN ('claimed', 'running') "
                    "RETURNING job_id",
                    (
                        state,
                        reason_code,
                        reason,
                        compared_with,
                        json.dumps(changes) if changes is not None else None,
                        None if changed is None else int(changed),
                        report,
                        now,
                        schedule_id,
                        run,
                    ),
                ).fetchone()
                if row is None:
                    return False
                if state == "completed":
                    conn.execute(
                        "UPDATE schedules SET baseline_run = ? WHERE id = ?", (run, schedule_id)
                    )
                if notify is not None and row["job_id"] is not None:
                    conn.execute(
                        "INSERT OR IGNORE INTO deliveries (job_id, url, event, payload, "
                        "created_at) VALUES (?, ?, ?, ?, ?)",
                        (row["job_id"], notify[0], CHANGED, json.dumps(notify[1]), now),
                    )
                return True

        return await self._write(tx)

    async def runs_page(
        self, schedule_id: str, *, limit: int, offset: int = 0
    ) -> tuple[list[RunRow], int]:
        """One page of a schedule's runs, newest first, and how many in all."""

        def q(conn: sqlite3.Connection) -> tuple[list[RunRow], int]:
            (total,) = conn.execute(
                "SELECT COUNT(*) FROM schedule_runs WHERE schedule_id = ?", (schedule_id,)
            ).fetchone()
            rows = [
                _run(r)
                for r in conn.execute(
                    "SELECT * FROM schedule_runs WHERE schedule_id = ? ORDER BY run DESC "
                    "LIMIT ? OFFSET ?",
                    (schedule_id, limit, offset),
                )
            ]
            return rows, int(total)

        return await self._read(q)

    async def schedule_run(self, schedule_id: str, run: int) -> RunRow:
        """One run of a schedule.

        Raises:
            ScheduleNotFound: No such run.
        """

        def q(conn: sqlite3.Connection) -> RunRow | None:
            row = conn.execute(
                "SELECT * FROM schedule_runs WHERE schedule_id = ? AND run = ?",
                (schedule_id, run),
            ).fetchone()
            return None if row is None else _run(row)

        found = await self._read(q)
        if found is None:
            raise ScheduleNotFound(f"schedule {schedule_id[:40]} has no run {run}")
        return found
