"""The schedule endpoints: a bulk job run again at every slot, and what changed.

    POST   /schedules                               bulk-job body + every, webhook_url, notify
    GET    /schedules                               the account's, newest first (paged)
    GET    /schedules/{id}
    PATCH  /schedules/{id}                          paused, every, webhook_url, notify
    DELETE /schedules/{id}
    GET    /schedules/{id}/runs                     newest first (paged)
    GET    /schedules/{id}/runs/{run}/changes       JSON summary; ?format=html: the report

The body is checked exactly as ``POST /bulk-screenshot`` checks it (``bulk_order``)
when the schedule is made; runs are made by ``bulk/_schedules.py``.
"""

from __future__ import annotations

import math
import re
import shutil
from typing import Any, Final, Literal

import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .._exceptions import InvalidSchedule, ScheduleNotFound, ValidationError
from .._ledger import Account, NewSchedule, RunRow, ScheduleRow, iso
from .._ledger._schedules import UNCHANGED
from .._openapi import URL_FIELD_LIMIT
from .._schedules import check_every, first_slot, next_slot, schedule_dir
from ._bulk import bulk_order
from ._core import ServiceState, _check_target, _json_body, _object, _string

__all__ = [
    "create_schedule",
    "delete_schedule",
    "get_schedule",
    "list_runs",
    "list_schedules",
    "patch_schedule",
    "run_changes",
]

#: Items per page of the lists, unless ``limit`` says otherwise (at most ``MAX_LIMIT``).
PER_PAGE: Final = 20
MAX_LIMIT: Final = 100
_ID: Final = re.compile(r"[0-9a-f-]{36}")
_JOB_FIELDS: Final = frozenset({"url", "sitemap_url", "sitemapUrl", "urls", "options"})
_REPORT_CSP: Final = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "script-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _override(state: ServiceState) -> float | None:
    return state.config.schedule_seconds


def _notify(value: Any) -> float | None:
    """``notify``: ``{"min_change": share}`` (0..1), or null."""
    if value is None:
        return None
    notify = _object(value, "notify")
    unknown = set(notify) - {"min_change", "minChange"}
    if unknown:
        raise InvalidSchedule(f"unknown field notify.{sorted(unknown)[0]}", field="notify")
    present = [k for k in ("min_change", "minChange") if k in notify]
    if not present:
        return None
    if len(present) > 1:
        raise InvalidSchedule("notify.min_change given twice", field="notify.min_change")
    share = notify[present[0]]
    if share is None:
        return None
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise InvalidSchedule(
            "notify.min_change must be a number between 0 and 1", field="notify.min_change"
        )
    return float(share)


def _webhook(state: ServiceState, body: dict[str, Any], *, nullable: bool) -> Any:
    """The ``webhook_url`` of a body, checked by the URL policy; ``UNCHANGED`` when
    absent; None when null and ``nullable`` (PATCH: no webhook any more)."""
    fields = [k for k in ("webhook_url", "webhookUrl") if k in body]
    if not fields:
        return UNCHANGED
    if len(fields) > 1:
        raise ValidationError("webhook_url given twice", field="webhook_url")
    if body[fields[0]] is None and nullable:
        return None
    url = _string(body[fields[0]], "webhook_url", limit=URL_FIELD_LIMIT)
    state.policy.check_url(url)
    return url


def _page(request: Request) -> tuple[int, int]:
    """``page`` (1-based) and ``limit`` from the query string."""
    out = []
    for name, default, top in (("page", 1, 1_000_000), ("limit", PER_PAGE, MAX_LIMIT)):
        raw = request.query_params.get(name)
        if raw is None:
            out.append(default)
            continue
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= top:
            raise ValidationError(f"{name} must be an integer from 1 to {top}", field=name)
        out.append(int(raw))
    return out[0], out[1]


def _pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "pages": max(1, math.ceil(total / limit))}


def schedule_body(schedule: ScheduleRow) -> dict[str, Any]:
    """A schedule as the API shows it (cookie and header values masked)."""
    return {
        "id": schedule.id,
        "status": schedule.state,
        "every": schedule.every,
        "job": dict(schedule.body),
        "webhookUrl": schedule.webhook_url,
        "notify": {"min_change": schedule.min_change},
        "nextRunAt": iso(schedule.next_at),
        "runs": schedule.runs,
        "createdAt": schedule.created_at,
        "updatedAt": schedule.updated_at,
        "runsUrl": f"/api/v1/schedules/{schedule.id}/runs",
    }


def run_body(run: RunRow) -> dict[str, Any]:
    """A run as the API shows it."""
    counts = (run.changes or {}).get("counts")
    changes_url = f"/api/v1/schedules/{run.schedule_id}/runs/{run.run}/changes"
    return {
        "run": run.run,
        "slot": iso(run.slot),
        "status": run.state,
        "jobId": run.job_id,
        "statusUrl": f"/api/v1/bulk-screenshot/{run.job_id}/status" if run.job_id else None,
        "reason": {"code": run.reason_code, "message": run.reason} if run.reason_code else None,
        "comparedWith": run.compared_with,
        "changed": run.changed,
        "counts": dict(counts) if isinstance(counts, dict) else None,
        "changesUrl": changes_url if run.changes is not None else None,
        "createdAt": run.created_at,
        "finishedAt": run.finished_at,
    }


async def _own(request: Request, state: ServiceState, account: Account) -> ScheduleRow:
    schedule_id = request.path_params["schedule_id"]
    if not _ID.fullmatch(schedule_id):
        raise ScheduleNotFound(f"schedule {schedule_id[:40]} not found")
    return await state.ledger.schedule(schedule_id, account_id=account.id)


# ---- handlers -------------------------------------------------------------------------


async def create_schedule(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None and account.api_key_id is not None
    body = _object(await _json_body(request), "body")
    unknown = set(body) - _JOB_FIELDS - {"every", "webhook_url", "webhookUrl", "notify"}
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    if "every" not in body:
        raise InvalidSchedule("every is required (1h, 1d, 7d or a cron expression)", field="every")
    job = {k: v for k, v in body.items() if k in _JOB_FIELDS}
    order = bulk_order(job, state)
    every = check_every(body["every"])
    min_change = _notify(body.get("notify"))
    webhook = _webhook(state, body, nullable=False)
    if order.url_list is None:
        _check_target(state.policy, order.target, order.field)
    now = state.config.clock()
    schedule = await state.ledger.create_schedule(
        NewSchedule(
            account_id=account.id,
            api_key_id=account.api_key_id,
            body=job,
            every=every,
            webhook_url=None if webhook is UNCHANGED else webhook,
            min_change=min_change,
            next_at=first_slot(now),
            anchor=now,
        )
    )
    return JSONResponse({"success": True, "data": schedule_body(schedule)}, status_code=201)


async def list_schedules(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    page, limit = _page(request)
    rows, total = await state.ledger.schedules_page(
        account.id, limit=limit, offset=(page - 1) * limit
    )
    return JSONResponse(
        {
            "success": True,
            "data": [schedule_body(s) for s in rows],
            "pagination": _pagination(page, limit, total),
        }
    )


async def get_schedule(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    schedule = await _own(request, state, account)
    return JSONResponse({"success": True, "data": schedule_body(schedule)})


async def patch_schedule(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    schedule = await _own(request, state, account)
    body = _object(await _json_body(request), "body")
    unknown = set(body) - {"paused", "every", "webhook_url", "webhookUrl", "notify"}
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    if not body:
        raise ValidationError(
            "give at least one of paused, every, webhook_url, notify", field="body"
        )
    paused = body.get("paused")
    if "paused" in body and not isinstance(paused, bool):
        raise ValidationError("paused must be true or false", field="paused")
    every = check_every(body["every"]) if "every" in body else None
    min_change = _notify(body["notify"]) if "notify" in body else UNCHANGED
    webhook = _webhook(state, body, nullable=True)
    now = state.config.clock()
    new_state: Literal["active", "paused"] | None = (
        None if paused is None else ("paused" if paused else "active")
    )
    active = (new_state or schedule.state) == "active"
    next_at = anchor = None
    if active and (every is not None or (new_state == "active" and schedule.state != "active")):
        # Resumed, or a new interval: slots count from now, the next one after it.
        anchor = now
        next_at = next_slot(every or schedule.every, anchor, now, _override(state))
    updated = await state.ledger.update_schedule(
        schedule.id,
        account.id,
        state=new_state,
        every=every,
        next_at=next_at,
        anchor=anchor,
        webhook_url=webhook,
        min_change=min_change,
    )
    return JSONResponse({"success": True, "data": schedule_body(updated)})


async def delete_schedule(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    schedule = await _own(request, state, account)
    await state.ledger.delete_schedule(schedule.id, account.id)
    # Its baseline ZIP and reports go too (the runs' jobs keep their own files).
    folder = schedule_dir(state.data_dir, schedule.id)
    await trio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
    return JSONResponse({"success": True, "data": {"id": schedule.id, "deleted": True}})


async def list_runs(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    schedule = await _own(request, state, account)
    page, limit = _page(request)
    rows, total = await state.ledger.runs_page(
        schedule.id, limit=limit, offset=(page - 1) * limit
    )
    return JSONResponse(
        {
            "success": True,
            "data": [run_body(r) for r in rows],
            "pagination": _pagination(page, limit, total),
        }
    )


async def run_changes(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    schedule = await _own(request, state, account)
    raw = request.path_params["run"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise ScheduleNotFound(f"schedule {schedule.id} has no run {raw[:20]}")
    run = await state.ledger.schedule_run(schedule.id, int(raw))
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "html"):
        raise ValidationError("format must be json or html", field="format")
    if run.changes is None:
        raise ScheduleNotFound(
            f"run {run.run} of schedule {schedule.id} has no change report "
            "(the first run, or not compared yet)"
        )
    if fmt == "html":
        if not run.report or not await trio.Path(run.report).is_file():
            raise ScheduleNotFound(f"the report of run {run.run} is gone")
        text = await trio.Path(run.report).read_text(encoding="utf-8")
        return HTMLResponse(
            text,
            headers={"Content-Security-Policy": _REPORT_CSP, "Cache-Control": "private, no-store"},
        )
    return JSONResponse(
        {
            "success": True,
            "data": {
                "scheduleId": schedule.id,
                "run": run.run,
                "jobId": run.job_id,
                "comparedWith": run.compared_with,
                **dict(run.changes),
            },
        }
    )
