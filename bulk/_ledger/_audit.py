"""The audit: proves every ledger rule on the whole file (``bulk admin audit``).

The schema refuses what breaks a rule as it is written; the audit re-derives the
books from the events and rows, so a file edited behind the ledger's back (or a
rule a future migration forgets) is caught: balances against events, every ended
job's credits, every row against its credit events, deliveries against the jobs
they announce, and no secret kept by a job that ended.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from ._connection import LedgerCore
from ._reads import load_job
from ._records import TERMINAL_JOB, AuditReport, JobRow, parse_iso
from ._schema import holds_secrets_sql

__all__ = ["Audit"]

# A job with no work left is moved on by a live runner within moments; only one
# that has sat like this for a while is stuck.
_STALL_GRACE: Final = 60.0


def _idle_since(conn: sqlite3.Connection, job: JobRow) -> float:
    """Unix time of the job's last activity (its latest finished URL, or its creation)."""
    (last,) = conn.execute(
        "SELECT MAX(finished_at) FROM job_urls WHERE job_id = ?", (job.id,)
    ).fetchone()
    text = last or job.started_at or job.created_at
    return parse_iso(text).timestamp()


def _account_problems(conn: sqlite3.Connection) -> tuple[list[str], list[dict[str, Any]]]:
    problems: list[str] = []
    accounts: list[dict[str, Any]] = []
    for a in conn.execute("SELECT id, balance FROM accounts ORDER BY id"):
        sums = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT kind, SUM(amount) FROM credit_events WHERE account_id = ? GROUP BY kind",
                (a["id"],),
            )
        }
        granted, reserved = sums.get("grant", 0), sums.get("reserve", 0)
        used, refunded = sums.get("use", 0), sums.get("refund", 0)
        reversed_ = sums.get("reverse", 0)
        outstanding = reserved - used - refunded
        accounts.append(
            {
                "account_id": a["id"],
                "balance": a["balance"],
                "granted": granted,
                "used": used - reversed_,
                "outstanding": outstanding,
            }
        )
        if a["balance"] < 0:
            problems.append(f"account {a['id']}: negative balance {a['balance']}")
        if a["balance"] != granted - reserved + refunded + reversed_:
            problems.append(
                f"account {a['id']}: balance {a['balance']} != granted {granted} "
                f"- reserved {reserved} + refunded {refunded} + reversed {reversed_}"
            )
        if outstanding == 0 and a["balance"] != granted - used + reversed_:
            problems.append(f"account {a['id']}: balance {a['balance']} != granted - used")
    return problems, accounts


def _job_problems(
    conn: sqlite3.Connection, now: float
) -> tuple[list[str], list[dict[str, Any]]]:
    problems: list[str] = []
    jobs: list[dict[str, Any]] = []
    for j in conn.execute("SELECT id, status, account_id FROM jobs ORDER BY created_at"):
        job = load_job(conn, j["id"], None)
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
            if charged and job.status == "failed" and job.used:
                problems.append(f"job {job.id}: failed but kept {job.used} credits")
        if charged:
            (bad,) = conn.execute(
                "SELECT COUNT(*) FROM job_urls u WHERE u.job_id = ? AND ("
                " (u.state = 'ok') != EXISTS (SELECT 1 FROM credit_events e WHERE "
                "  e.job_id = u.job_id AND e.seq = u.seq AND e.kind = 'use') OR"
                " (u.state = 'failed') != EXISTS (SELECT 1 FROM credit_events e WHERE"
                "  e.job_id = u.job_id AND e.seq = u.seq AND e.kind = 'refund') OR"
                " EXISTS (SELECT 1 FROM credit_events e WHERE e.job_id = u.job_id AND"
                "  e.seq = u.seq AND e.kind = 'reverse') != (u.state = 'ok' AND ? = 'failed'))",
                (job.id, job.status),
            ).fetchone()
            if bad:
                problems.append(f"job {job.id}: {bad} URL rows disagree with credits")
        if (
            job.status in ("pending", "processing")
            and job.urls_complete
            and not (job.queued or job.leased)
            and _idle_since(conn, job) < now - _STALL_GRACE
        ):
            problems.append(f"job {job.id}: {job.status} with no work left")
    return problems, jobs


def _delivery_and_secret_problems(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    for (job_id,) in conn.execute(
        "SELECT j.id FROM jobs j WHERE j.webhook_url IS NOT NULL "
        "AND j.status IN ('completed', 'failed', 'expired') "
        "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id "
        "AND d.event != 'bulk_job.changed')"
    ):
        problems.append(f"job {job_id}: ended without a webhook delivery")
    for (delivery_id, job_id) in conn.execute(
        "SELECT d.id, d.job_id FROM deliveries d LEFT JOIN jobs j ON j.id = d.job_id "
        "WHERE j.id IS NULL OR (d.event != 'bulk_job.changed' AND ("
        " j.webhook_url IS NOT d.url OR j.status NOT IN ('completed', 'failed', 'expired')))"
        " OR (d.event = 'bulk_job.changed' AND (j.status NOT IN ('completed', 'expired')"
        " OR NOT EXISTS (SELECT 1 FROM schedule_runs r WHERE r.job_id = d.job_id)))"
    ):
        problems.append(f"delivery {delivery_id}: does not announce the end of job {job_id}")
    for (job_id,) in conn.execute(
        "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'expired') "
        f"AND {holds_secrets_sql('options', 'secrets')}"
    ):
        problems.append(f"job {job_id}: ended but still holds cookie or header values")
    for (job_id,) in conn.execute(
        "SELECT DISTINCT u.job_id FROM job_urls u JOIN jobs j ON j.id = u.job_id "
        "WHERE (u.secrets IS NOT NULL AND j.status IN ('completed', 'failed', 'expired')) "
        f"OR (u.options IS NOT NULL AND {holds_secrets_sql('u.options', 'NULL')})"
    ):
        problems.append(f"job {job_id}: a URL row holds cookie or header values it may not")
    return problems


def _schedule_problems(conn: sqlite3.Connection) -> list[str]:
    """Schedules (m009): one run per slot, one open run per schedule, each run's job
    made for that run (its idempotency key names it)."""
    problems: list[str] = []
    for schedule_id, slot in conn.execute(
        "SELECT schedule_id, slot FROM schedule_runs GROUP BY schedule_id, slot "
        "HAVING COUNT(*) > 1"
    ):
        problems.append(f"schedule {schedule_id}: slot {slot} ran more than once")
    for (schedule_id,) in conn.execute(
        "SELECT schedule_id FROM schedule_runs WHERE state IN ('claimed', 'running') "
        "GROUP BY schedule_id HAVING COUNT(*) > 1"
    ):
        problems.append(f"schedule {schedule_id}: more than one open run")
    for schedule_id, run in conn.execute(
        "SELECT r.schedule_id, r.run FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id "
        "WHERE r.job_id IS NOT NULL AND (j.id IS NULL OR j.idempotency_key IS NOT "
        "('schedule:' || r.schedule_id || ':' || r.run))"
    ):
        problems.append(f"schedule {schedule_id}: run {run} has a job made for another run")
    return problems


class Audit(LedgerCore):
    """The audit of ``Ledger`` (one read snapshot)."""

    async def audit(self) -> AuditReport:
        """Check every ledger invariant and SQLite's own integrity.

        Invariants: balance >= 0; balance = granted - reserved + refunded + reversed
        (events); balance = granted - used + reversed once no reservation is
        outstanding; for every ended job reserved = used + refunded = its URL count
        (net of reversals), and a failed job kept no credit; each ok row has exactly
        one ``use``, each failed row one ``refund``, and a ``reverse`` exactly when
        an ok row's job failed; no job is left pending or processing with no work;
        every ended job with a webhook has its delivery, and every delivery an
        ended job; no ended job holds a cookie or header value (nor do its URL
        rows), and no URL row's options hold one unmasked; no schedule slot ran
        twice, no schedule has two open runs, and each run's job is its own.
        """
        now = self.clock()

        def q(conn: sqlite3.Connection) -> AuditReport:
            problems: list[str] = []
            (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
            if integrity != "ok":
                problems.append(f"integrity_check: {integrity}")
            account_problems, accounts = _account_problems(conn)
            job_problems, jobs = _job_problems(conn, now)
            problems += account_problems + job_problems + _delivery_and_secret_problems(conn)
            problems += _schedule_problems(conn)
            return AuditReport(
                ok=not problems,
                problems=tuple(problems),
                jobs=tuple(jobs),
                accounts=tuple(accounts),
                integrity=integrity,
            )

        return await self._read(q)
