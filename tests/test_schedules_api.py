"""Schedules: slots (pure), validation, 404s, PATCH, a run that cannot be paid, and the
ledger's one-run-per-slot rule (an in-process ``bulk serve``, real SQLite)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bulk._exceptions import InvalidSchedule
from bulk._ledger import Ledger, NewSchedule
from bulk._schedules import check_every, next_slot
from tests.servicekit import Service, new_key
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser


# ---- slots ---------------------------------------------------------------------------


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("every", "anchor", "after", "want"),
    [
        ("1h", 1000.0, 1000.0, 4600.0),
        ("1h", 1000.0, 4599.0, 4600.0),
        ("1h", 1000.0, 4600.0, 8200.0),
        # Down for ten slots: the next one is the first after now, not the first missed.
        ("1h", 1000.0, 1000.0 + 10.5 * 3600, 1000.0 + 11 * 3600),
        ("1d", 0.0, 1.0, 86400.0),
        ("7d", 0.0, 86400.0 * 7, 86400.0 * 14),
        ("0 3 * * 1", 0.0, _ts("2026-12-03T10:00:00"), _ts("2026-12-07T03:00:00")),
        ("*/15 * * * *", 0.0, _ts("2026-12-03T10:00:00"), _ts("2026-12-03T10:15:00")),
        ("*/15 * * * *", 0.0, _ts("2026-12-03T10:14:59.5"), _ts("2026-12-03T10:15:00")),
    ],
)
def test_next_slot(every: str, anchor: float, after: float, want: float) -> None:
    assert next_slot(check_every(every), anchor, after) == want


def test_the_override_replaces_every_interval() -> None:
    assert next_slot("7d", 100.0, 100.0, override=2.0) == 102.0
    assert next_slot("0 3 * * 1", 100.0, 105.0, override=2.0) == 106.0


@pytest.mark.parametrize(
    "every",
    ["", "2h", "1w", "daily", "@daily", "* * * *", "61 * * * *", "* * * * * *", "0 25 * * *", 5],
)
def test_bad_every_is_refused(every: Any) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        check_every(every)
    assert caught.value.field == "every"


# ---- the API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    routes = {
        "/": Route(body="<h1>Home</h1>"),
        "/robots.txt": Route(body="User-agent: *\n", content_type="text/plain"),
    }
    with SiteServer(routes=routes) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    svc = Service(db=root / "ledger.db", data_dir=root / "data", chromium=chromium).start()
    yield svc
    svc.stop()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as c:
        yield c


def _err(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error["details"]["field"] == field, error


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"url": "{site}"}, "INVALID_SCHEDULE", "every"),
        ({"url": "{site}", "every": "2h"}, "INVALID_SCHEDULE", "every"),
        ({"url": "{site}", "every": "61 * * * *"}, "INVALID_SCHEDULE", "every"),
        ({"url": "{site}", "every": "* * *"}, "INVALID_SCHEDULE", "every"),
        ({"url": "{site}", "every": 3600}, "INVALID_SCHEDULE", "every"),
        (
            {"url": "{site}", "every": "1h", "notify": {"min_change": 2}},
            "INVALID_SCHEDULE",
            "notify.min_change",
        ),
        ({"url": "{site}", "every": "1h", "notify": {"x": 1}}, "INVALID_SCHEDULE", "notify"),
        ({"url": "{site}", "every": "1h", "notify": 1}, "VALIDATION_ERROR", "notify"),
        ({"every": "1h"}, "VALIDATION_ERROR", "url"),
        ({"url": "{site}", "every": "1h", "cron": "x"}, "VALIDATION_ERROR", "cron"),
        (
            {"url": "{site}", "every": "1h", "options": {"width": 0}},
            "VALIDATION_ERROR",
            "options.width",
        ),
        ({"url": "http://10.0.0.1/", "every": "1h"}, "URL_BLOCKED", None),
        ({"url": "{site}", "every": "1h", "webhook_url": "http://10.0.0.1/h"}, "URL_BLOCKED", None),
    ],
)
async def test_create_validation(
    service: Service,
    site: SiteServer,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    code: str,
    field: str | None,
) -> None:
    key = await new_key(service.db)
    body = {k: (v.format(site=site.url("/")) if isinstance(v, str) else v) for k, v in body.items()}
    r = await client.post(service.api("/schedules"), json=body, headers={"X-API-Key": key})
    _err(r, 400, code, field)
    r = await client.get(service.api("/schedules"), headers={"X-API-Key": key})
    assert r.json()["data"] == []


async def test_not_found_and_other_accounts(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    owner, other = await new_key(service.db), await new_key(service.db)
    r = await client.post(
        service.api("/schedules"),
        json={"url": site.url("/"), "every": "7d"},
        headers={"X-API-Key": owner},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["data"]["id"]
    for path in (
        f"/schedules/{sid}",
        f"/schedules/{sid}/runs",
        f"/schedules/{sid}/runs/1/changes",
        "/schedules/00000000-0000-0000-0000-000000000000",
        "/schedules/not-an-id",
        f"/schedules/{sid}/runs/abc/changes",
    ):
        key = other if sid in path else owner
        _err(
            await client.get(service.api(path), headers={"X-API-Key": key}),
            404,
            "SCHEDULE_NOT_FOUND",
        )
    _err(
        await client.patch(
            service.api(f"/schedules/{sid}"), json={"paused": True}, headers={"X-API-Key": other}
        ),
        404,
        "SCHEDULE_NOT_FOUND",
    )
    _err(
        await client.delete(service.api(f"/schedules/{sid}"), headers={"X-API-Key": other}),
        404,
        "SCHEDULE_NOT_FOUND",
    )
    r = await client.get(service.api("/schedules"), headers={"X-API-Key": other})
    assert r.json()["data"] == [] and r.json()["pagination"]["total"] == 0
    _err(
        await client.get(
            service.api("/schedules"), params={"page": "0"}, headers={"X-API-Key": owner}
        ),
        400,
        "VALIDATION_ERROR",
        "page",
    )
    _err(await client.get(service.api("/schedules")), 401, "API_KEY_REQUIRED")


async def test_patch_pause_resume_and_interval(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db)
    h = {"X-API-Key": key}
    r = await client.post(
        service.api("/schedules"), json={"url": site.url("/"), "every": "1d"}, headers=h
    )
    sid = r.json()["data"]["id"]
    url = service.api(f"/schedules/{sid}")
    r = await client.patch(url, json={"paused": True}, headers=h)
    assert r.status_code == 200 and r.json()["data"]["status"] == "paused"
    assert r.json()["data"]["nextRunAt"] is None
    r = await client.patch(url, json={"every": "0 3 * * 1"}, headers=h)
    assert r.json()["data"]["every"] == "0 3 * * 1" and r.json()["data"]["status"] == "paused"
    r = await client.patch(url, json={"paused": False}, headers=h)
    data = r.json()["data"]
    assert data["status"] == "active"
    # Resumed: the next slot is the cron's next Monday 03:00 UTC, not now.
    next_at = datetime.fromisoformat(data["nextRunAt"].replace("Z", "+00:00"))
    assert (next_at.weekday(), next_at.hour, next_at.minute) == (0, 3, 0)
    assert next_at.timestamp() > service.clock()
    r = await client.patch(
        url, json={"notify": {"min_change": 0.5}, "webhook_url": None}, headers=h
    )
    assert r.json()["data"]["notify"] == {"min_change": 0.5}
    for body, code, field in (
        ({}, "VALIDATION_ERROR", "body"),
        ({"paused": "yes"}, "VALIDATION_ERROR", "paused"),
        ({"every": "every day"}, "INVALID_SCHEDULE", "every"),
        ({"url": site.url("/")}, "VALIDATION_ERROR", "url"),
    ):
        _err(await client.patch(url, json=body, headers=h), 400, code, field)
    r = await client.delete(url, headers=h)
    assert r.status_code == 200 and r.json()["data"] == {"id": sid, "deleted": True}


async def test_a_run_that_cannot_be_paid_is_skipped_and_the_schedule_stays(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=0)
    h = {"X-API-Key": key}
    r = await client.post(
        service.api("/schedules"), json={"url": site.url("/"), "every": "1h"}, headers=h
    )
    assert r.status_code == 201, r.text
    sid = r.json()["data"]["id"]
    with trio.fail_after(120):
        while True:
            runs = (await client.get(service.api(f"/schedules/{sid}/runs"), headers=h)).json()
            if runs["data"] and runs["data"][0]["status"] != "claimed":
                break
            await trio.sleep(0.2)
    run = runs["data"][0]
    assert run["status"] == "skipped" and run["jobId"] is None
    assert run["reason"]["code"] == "INSUFFICIENT_CREDITS"
    r = await client.get(service.api(f"/schedules/{sid}"), headers=h)
    assert r.json()["data"]["status"] == "active" and r.json()["data"]["nextRunAt"] is not None


# ---- the ledger's rules ------------------------------------------------------------------


async def test_a_slot_is_claimed_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    async with Ledger.open(db) as ledger:
        _, key = await ledger.create_account(credits=1)
        account = await ledger.authenticate(key)
        assert account.api_key_id is not None
        schedule = await ledger.create_schedule(
            NewSchedule(
                account_id=account.id,
                api_key_id=account.api_key_id,
                body={"url": "http://127.0.0.1/"},
                every="1h",
                webhook_url=None,
                min_change=None,
                next_at=100.0,
                anchor=100.0,
            )
        )
        first = await ledger.claim_slot(schedule.id, 100.0, 3700.0)
        assert first is not None and first.run == 1 and first.state == "claimed"
        # The same slot again (a second claimer, or a claim after a crash): nothing.
        assert await ledger.claim_slot(schedule.id, 100.0, 3700.0) is None
        # The next slot, while run 1 is open: nothing either.
        assert await ledger.claim_slot(schedule.id, 3700.0, 7300.0) is None
        assert await ledger.finish_run(schedule.id, 1, "skipped", reason_code="X", reason="x")
        assert not await ledger.finish_run(schedule.id, 1, "completed")  # final
        second = await ledger.claim_slot(schedule.id, 3700.0, 7300.0)
        assert second is not None and second.run == 2
        report = await ledger.audit()
        assert report.ok, report.problems
    # Behind the checks, the schema: a second row for one slot aborts.
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO schedule_runs (schedule_id, run, slot, state, created_at, finished_at, "
            "reason_code) VALUES (?, 9, 100.0, 'skipped', 'now', 'now', 'X')",
            (schedule.id,),
        )
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM schedule_runs")


async def test_m009_keeps_the_deliveries_of_an_older_file(tmp_path: Path) -> None:
    # A file made before schedules, with a queued end-of-job webhook: m009 rebuilds
    # the delivery table; the delivery is still there, still pending, still sent.
    from sqlite_utils import Database

    from bulk._ledger import _connect, migrations

    db = tmp_path / "ledger.db"
    conn = _connect(str(db))
    migrations.apply(Database(conn), stop_before="m009_schedules_and_change_deliveries")
    conn.executescript(
        """
        INSERT INTO accounts (id, balance, webhook_secret, created_at) VALUES (1, 0, 's', 'x');
        INSERT INTO jobs (id, kind, account_id, site, status, created_at, webhook_url)
        VALUES ('j1', 'bulk', 1, 'http://x', 'failed', 'x', 'http://127.0.0.1/h');
        """
    )
    assert [tuple(r) for r in conn.execute("SELECT event FROM deliveries")] == [
        ("bulk_job.failed",)
    ]
    conn.close()
    async with Ledger.open(db) as ledger:
        due = await ledger.due_deliveries(limit=10)
        assert [(d.job_id, d.event, d.payload) for d in due] == [("j1", "bulk_job.failed", None)]
        report = await ledger.audit()
        assert report.ok, report.problems
    with sqlite3.connect(db) as check, pytest.raises(sqlite3.IntegrityError):
        # A change event needs a completed schedule run of that job.
        check.execute(
            "INSERT INTO deliveries (job_id, url, event, payload, created_at) "
            "VALUES ('j1', 'http://127.0.0.1/h', 'bulk_job.changed', '{}', 'x')"
        )
