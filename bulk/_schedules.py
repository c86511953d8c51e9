"""Schedules: a bulk job run again at every slot, each run compared with the last.

    every: "1h" | "1d" | "7d" | a 5-field cron expression (UTC; cronsim)
    scheduler loop (bulk serve), every ``poll`` seconds:
      open runs (claimed: make the job; running: has its job ended?)
      due schedules (next_at <= now, no open run) -> claim the slot, next_at moves on
    a run's job ended:
      failed ........................................ run failed
      completed, first run .......................... run completed (the baseline)
      completed -> compare with the baseline's ZIP (bulk/_diff, in a worker thread)
                -> run completed with its change summary and report;
                   bulk_job.changed queued when anything changed (notify.min_change)

A run is an ordinary bulk job, made by ``start_bulk_job`` like ``POST
/bulk-screenshot`` (credits reserved per URL when it starts); a run that cannot be
made (no credits, a revoked key, nothing found) is recorded skipped with the reason,
and the schedule goes on. The first slot is at creation (a baseline at once).

Exactly once: a slot is claimed in one transaction with the move of ``next_at`` past
now (missed slots collapse into that one run), and a claimed run's job carries the
idempotency key ``schedule:<id>:<run>``, so making it again after a crash finds it.
A slot that comes while the schedule's previous run is still open waits for it.

The baseline is the last completed run's ZIP, hard-linked (copied where links
cannot be made) to ``data_dir/schedules/<id>/baseline-<run>.zip``, so it outlives
its job's download window.

No schedule's failure ends the loop (``_util.contained``), and the loop cannot end
the service.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio
from cronsim import CronSim, CronSimError

from ._exceptions import BulkError, InvalidSchedule, SecretsUnavailable
from ._ledger import RunRow
from ._util import contained

__all__ = [
    "INTERVALS",
    "SchedulerConfig",
    "check_every",
    "first_slot",
    "next_slot",
    "run_schedules",
    "schedule_dir",
]

log = logging.getLogger("bulk.schedules")

#: The named intervals ``every`` accepts, in seconds.
INTERVALS: Final[Mapping[str, int]] = {"1h": 3600, "1d": 86400, "7d": 7 * 86400}
_FIELDS: Final = re.compile(r"\S+(?:\s+\S+){4}")


def check_every(every: Any) -> str:
    """``every`` as stored: a named interval, or a 5-field cron expression (UTC).

    Raises:
        InvalidSchedule: Neither.
    """
    if not isinstance(every, str) or not every.strip() or len(every) > 200:
        raise InvalidSchedule(
            "every must be 1h, 1d, 7d or a 5-field cron expression", field="every"
        )
    text = " ".join(every.split())
    if text in INTERVALS:
        return text
    if not _FIELDS.fullmatch(text):
        raise InvalidSchedule(
            f"every {text[:60]!r} is not 1h, 1d, 7d or a 5-field cron expression",
            field="every",
        )
    try:
        probe = CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
        next(probe)
    except (CronSimError, StopIteration, ValueError) as exc:
        raise InvalidSchedule(
            f"every: not a valid cron expression ({exc})", field="every"
        ) from None
    return text


def next_slot(every: str, anchor: float, after: float, override: float | None = None) -> float:
    """The first slot of a schedule strictly after ``after`` (Unix time).

    Args:
        every: A checked ``every``.
        anchor: Where interval slots count from.
        after: The slot returned is later than this.
        override: Seconds between slots whatever ``every`` says (``BULK_SCHEDULE_SECONDS``).
    """
    interval = override or INTERVALS.get(every)
    if interval is not None:
        steps = max(0, math.floor((after - anchor) / interval) + 1)
        slot = anchor + steps * interval
        while slot <= after:  # float rounding
            slot += interval
        return slot
    start = datetime.fromtimestamp(after, UTC).replace(microsecond=0)
    for when in CronSim(every, start):
        if when.timestamp() > after:
            return when.timestamp()
    raise InvalidSchedule(f"every {every!r} has no slot after {start}", field="every")


def first_slot(now: float) -> float:
    """A new (or resumed-from-scratch) schedule's first slot: now."""
    return now


def schedule_dir(data_dir: Path, schedule_id: str) -> Path:
    return data_dir / "schedules" / schedule_id


@attrs.frozen(kw_only=True)
class SchedulerConfig:
    """How the scheduler runs.

    Args:
        override: Seconds between every schedule's slots, whatever its ``every``
            (``BULK_SCHEDULE_SECONDS``: tests and operators only).
        poll: Seconds between looks at the ledger (runs' jobs, due slots).
        comparisons: Comparisons computed at once (each in a worker thread).
    """

    override: float | None = None
    poll: float = 1.0
    comparisons: int = 1


async def run_schedules(
    state: Any,
    config: SchedulerConfig,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run schedules' slots and finish their runs until cancelled.

    Args:
        state: The service's ``ServiceState`` (ledger, runner, policy, fetcher).
        config: Poll interval, bounds, the test override.

    Cancellation: a run being made or compared stays open in the ledger and is
    carried on at the next start (its job by its idempotency key; a comparison
    again from the start).
    """
    scheduler = _Scheduler(state, config)
    async with trio.open_nursery() as nursery:
        task_status.started()
        await scheduler.loop(nursery)


@final
class _Scheduler:
    def __init__(self, state: Any, config: SchedulerConfig) -> None:
        self.state = state
        self.ledger = state.ledger
        self.config = config
        self.busy: set[tuple[str, int]] = set()
        self.compare_slots = trio.CapacityLimiter(config.comparisons)

    async def loop(self, nursery: trio.Nursery) -> None:
        while True:
            with contained(log, "looking at schedules"):
                await self._tick(nursery)
            await trio.sleep(self.config.poll)

    async def _tick(self, nursery: trio.Nursery) -> None:
        for run in await self.ledger.open_runs():
            self._advance_soon(nursery, run)
        now = self.ledger.clock()
        for schedule in await self.ledger.due_schedules(now):
            with contained(log, "claiming a slot of schedule %s", schedule.id):
                slot = schedule.next_at
                assert slot is not None
                following = next_slot(schedule.every, schedule.anchor, now, self.config.override)
                run = await self.ledger.claim_slot(schedule.id, slot, following)
                if run is not None:
                    log.info("schedule %s: run %d claimed", schedule.id, run.run)
                    self._advance_soon(nursery, run)

    def _advance_soon(self, nursery: trio.Nursery, run: RunRow) -> None:
        key = (run.schedule_id, run.run)
        if key in self.busy:
            return
        self.busy.add(key)
        nursery.start_soon(self._advance_guarded, run)

    async def _advance_guarded(self, run: RunRow) -> None:
        try:
            with contained(log, "run %d of schedule %s", run.run, run.schedule_id) as outcome:
                await self._advance(run)
            if outcome.failed:
                with trio.CancelScope(shield=True), contained(log, "recording a failed run"):
                    await self.ledger.finish_run(
                        run.schedule_id,
                        run.run,
                        "failed" if run.job_id else "skipped",
                        reason_code=outcome.code,
                        reason="the run failed unexpectedly",
                    )
        finally:
            self.busy.discard((run.schedule_id, run.run))

    async def _advance(self, run: RunRow) -> None:
        if run.state == "claimed":
            await self._start(run)
            return
        assert run.job_id is not None
        job = await self.ledger.job(run.job_id)
        if job.status == "failed":
            await self.ledger.finish_run(
                run.schedule_id,
                run.run,
                "failed",
                reason_code=job.error_code or "CAPTURE_ERROR",
                reason=job.error_message,
            )
        elif job.status in ("completed", "expired"):
            await self._compare(run, job)

    async def _start(self, run: RunRow) -> None:
        """Make a claimed run's job (the same job again after a crash), or record the
        run skipped with the reason it could not be made."""
        # Imported here: the API package imports the service's parts, not the reverse.
        from ._api._bulk import bulk_order, start_bulk_job

        try:
            schedule = await self.ledger.schedule(run.schedule_id)
            body = await self.ledger.schedule_body(schedule)
            if body is None:
                raise SecretsUnavailable(
                    "the schedule's cookie and header values cannot be decrypted "
                    "(the key file changed)"
                )
            account = await self.ledger.account_of_key_id(schedule.api_key_id)
            order = attrs.evolve(
                bulk_order(body, self.state),
                idempotency_key=f"schedule:{schedule.id}:{run.run}",
                request_hash=f"schedule:{schedule.id}:{run.run}",
            )
            job = await start_bulk_job(None, self.state, account, order)
        except BulkError as exc:
            log.info(
                "schedule %s: run %d skipped (%s)", run.schedule_id, run.run, exc.code
            )
            await self.ledger.finish_run(
                run.schedule_id, run.run, "skipped", reason_code=exc.code, reason=exc.message
            )
            return
        await self.ledger.run_started(run.schedule_id, run.run, job.id)
        log.info("schedule %s: run %d is job %s", run.schedule_id, run.run, job.id)

    async def _compare(self, run: RunRow, job: Any) -> None:
        """A run's job completed: compare its ZIP with the baseline's, keep its ZIP as
        the next baseline, and record the run (and its webhook)."""
        from ._diff import DEFAULT_MIN_CHANGE, DiffOptions

        try:
            schedule = await self.ledger.schedule(run.schedule_id)
        except BulkError:
            # Deleted meanwhile: the run still ends, nothing is compared or sent.
            await self.ledger.finish_run(run.schedule_id, run.run, "completed")
            return
        folder = schedule_dir(self.state.data_dir, schedule.id)
        new_zip = Path(job.zip_path) if job.zip_path else None
        if new_zip is None or not await trio.Path(new_zip).is_file():
            await self.ledger.finish_run(
                run.schedule_id,
                run.run,
                "failed",
                reason_code="DOWNLOAD_EXPIRED",
                reason="the run's ZIP was gone before it could be compared",
            )
            return
        baseline = (
            folder / f"baseline-{schedule.baseline_run}.zip"
            if schedule.baseline_run is not None
            else None
        )
        keep = folder / f"baseline-{run.run}.zip"
        await trio.to_thread.run_sync(_keep_copy, new_zip, keep)
        summary: dict[str, Any] | None = None
        report: str | None = None
        notify: tuple[str, Mapping[str, Any]] | None = None
        reason_code = reason = None
        if baseline is not None and await trio.Path(baseline).is_file():
            share = schedule.min_change
            options = DiffOptions(min_change=DEFAULT_MIN_CHANGE if share is None else share)
            report_path = folder / "runs" / f"{run.run}.html"
            async with self.compare_slots:
                try:
                    summary = await trio.to_thread.run_sync(
                        _compare_and_report, baseline, new_zip, options, report_path
                    )
                except BulkError as exc:
                    reason_code, reason = exc.code, exc.message
            if summary is not None:
                report = str(report_path)
                counts = summary["counts"]
                changed = bool(counts["changed"] or counts["added"] or counts["removed"])
                summary["changed_any"] = changed
                if changed and schedule.webhook_url:
                    notify = (
                        schedule.webhook_url,
                        {
                            "scheduleId": schedule.id,
                            "run": run.run,
                            "comparedWith": schedule.baseline_run,
                            "changes": summary,
                        },
                    )
        elif baseline is not None:
            reason_code, reason = "DOWNLOAD_EXPIRED", "the previous run's ZIP is gone"
        await self.ledger.finish_run(
            run.schedule_id,
            run.run,
            "completed",
            compared_with=schedule.baseline_run if summary is not None else None,
            changes=summary,
            changed=None if summary is None else bool(summary["changed_any"]),
            report=report,
            notify=notify,
            reason_code=reason_code,
            reason=reason,
        )
        # The new baseline is recorded: older ones are not needed any more.
        await trio.to_thread.run_sync(_drop_baselines, folder, run.run)


def _keep_copy(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source``: a hard link (no space), or a
    copy where links cannot be made. Atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _drop_baselines(folder: Path, current: int) -> None:
    for path in folder.glob("baseline-*.zip"):
        if path.name != f"baseline-{current}.zip":
            with contextlib.suppress(OSError):
                path.unlink()


def _compare_and_report(old: Path, new: Path, options: Any, report: Path) -> dict[str, Any]:
    """Compare two ZIPs; write the HTML report (images inlined: one file the API can
    serve) to ``report``; return the JSON summary (no file entries)."""
    from ._diff import compare_archives, report_html

    report.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=report.parent) as scratch:
        files = Path(scratch) / "files"
        diff = compare_archives(old, new, options=options, files=files, workers=2)

        def inline(entry: str) -> str:
            path = files.parent / entry
            if not path.is_file():
                path = files / Path(entry).name
            kind = {"png": "png", "jpg": "jpeg", "webp": "webp"}.get(
                path.suffix.lstrip(".").lower(), "png"
            )
            data = base64.b64encode(path.read_bytes()).decode()
            return f"data:image/{kind};base64,{data}"

        html = report_html(diff, inline)
    tmp = report.with_name(f".{report.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, report)
    summary = diff.to_json()
    for change in summary["changed"]:
        for key in ("diff_entry", "before_entry", "after_entry"):
            change.pop(key, None)
    summary["counts"] = diff.counts()
    return summary
