"""Webhook delivery (bulk/_webhooks.py) from the ledger's queue, against real HTTP
receivers on 127.0.0.1/127.0.0.2 and real SQLite files; and the service staying up
whatever a webhook URL does (a real ``bulk serve`` in-process, real Chromium)."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from bulk._ledger import Ledger, NewJob, UrlResult
from bulk._ledger._deliveries import DUE_SQL
from bulk._policy import EgressPolicy
from bulk._webhooks import WebhookConfig, deliver_webhooks
from tests.servicekit import LOOPBACK_ONLY, Service, new_key
from tests.sitekit import Route, SiteServer, serve_site

FAST = WebhookConfig(backoff=(0.01, 0.01), timeout=5, poll=0.02)


async def ended_job(ledger: Ledger, webhook_url: str, *, account_id: int | None = None) -> str:
    """A completed one-URL bulk job with ``webhook_url`` (its delivery is queued)."""
    if account_id is None:
        account, _ = await ledger.create_account(credits=10)
        account_id = account.id
    job = await ledger.create_job(
        NewJob(
            kind="bulk",
            site="https://example.com",
            urls=[("https://example.com/", "index.png")],
            account_id=account_id,
            webhook_url=webhook_url,
        )
    )
    (claim,) = await ledger.claim(job.id, lease_seconds=60)
    await ledger.finish(claim, UrlResult(ok=True, sha256="0" * 64, file="img/1.png"))
    await ledger.set_status(job.id, "processing")
    await ledger.set_status(job.id, "completed")
    return job.id


def deliveries(db: Path) -> dict[str, tuple[str, int, str | None]]:
    """job id -> (state, attempts, last_error), read from the file directly."""
    conn = sqlite3.connect(db)
    try:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT job_id, state, attempts, last_error FROM deliveries")
        }
    finally:
        conn.close()


async def wait_until(condition: Any, within: float = 30) -> None:
    # Polls state another thread or process changes (a file, a server's counters).
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.02)


# ---- the queue ---------------------------------------------------------------------------


async def test_deliveries_are_concurrent_with_a_bound_per_receiver_host(tmp_path: Path) -> None:
    release = threading.Event()
    lock = threading.Lock()
    state = {"a_now": 0, "a_max": 0, "a_done": 0, "b_done": 0}

    def slow(h: Any) -> None:
        with lock:
            state["a_now"] += 1
            state["a_max"] = max(state["a_max"], state["a_now"])
        release.wait(60)
        with lock:
            state["a_now"] -= 1
            state["a_done"] += 1
        SiteServer._send(h, 204, b"", "text/plain", {})

    def quick(h: Any) -> None:
        with lock:
            state["b_done"] += 1
        SiteServer._send(h, 204, b"", "text/plain", {})

    policy = EgressPolicy(allow=("127.0.0.1/32", "127.0.0.2/32"))
    config = WebhookConfig(concurrency=4, per_host=2, poll=0.02, timeout=60)
    with (
        SiteServer(routes={"/hook": Route(handler=slow)}) as a,
        SiteServer(routes={"/hook": Route(handler=quick)}, host="127.0.0.2") as b,
    ):
        try:
            async with Ledger.open(tmp_path / "l.db") as ledger, trio.open_nursery() as nursery:
                for _ in range(6):
                    await ended_job(ledger, a.url("/hook"))
                for _ in range(3):
                    await ended_job(ledger, b.url("/hook"))
                await nursery.start(deliver_webhooks, ledger, policy, config)
                # Host a holds two deliveries and no more; host b is served meanwhile
                # (not one receiver at a time, and not stuck behind a slow one).
                await wait_until(lambda: state["a_now"] == 2 and state["b_done"] == 3)
                assert state["a_max"] == 2
                release.set()
                await wait_until(lambda: state["a_done"] == 6)
                await wait_until(
                    lambda: all(d[0] == "delivered" for d in deliveries(tmp_path / "l.db").values())
                )
                nursery.cancel_scope.cancel()
        finally:
            release.set()
    assert state["a_max"] == 2
    assert sorted(deliveries(tmp_path / "l.db").values()) == [("delivered", 1, None)] * 9


async def test_failures_are_retried_then_final_and_stay_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hits: dict[str, int] = {}

    def receiver(request: httpx.Request) -> httpx.Response:
        # raw_host: httpx's IDNA decoding of request.url.host refuses xn--ls8h.la.
        host = request.url.raw_host.decode()
        hits[host] = hits.get(host, 0) + 1
        if host == "boom.test":
            # Not an httpx error: something nobody foresaw, inside one delivery.
            raise RuntimeError("unforeseen SECRET-TOKEN-2")
        if host == "down.test":
            return httpx.Response(500)
        if host == "flaky.test" and hits[host] == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(204)

    db = tmp_path / "l.db"
    transport = httpx.MockTransport(receiver)
    with caplog.at_level(logging.INFO, logger="bulk"):
        async with Ledger.open(db) as ledger, trio.open_nursery() as nursery:
            jobs = {
                "ok": await ended_job(ledger, "https://ok.test/hook"),
                "down": await ended_job(ledger, "https://down.test/hook/SECRET-TOKEN-1"),
                "boom": await ended_job(ledger, "https://boom.test/hook"),
                "flaky": await ended_job(ledger, "https://flaky.test/hook"),
                # ada accepts these hosts and httpx's IDNA codec refuses them: they
                # are sent in the policy's ASCII form.
                "idna": await ended_job(ledger, "https://xn--ls8h.la/hook"),
                "idna2": await ended_job(ledger, "http://xn--zz.com/"),
                "idna3": await ended_job(ledger, "http://xn--a.com/"),
                # No request can be built from these: the policy refuses the URL.
                "bad": await ended_job(ledger, "https://intranet/SECRET-TOKEN-3"),
                "bad2": await ended_job(ledger, "https://a..b.example/"),
            }
            await nursery.start(
                functools.partial(deliver_webhooks, transport=transport),
                ledger,
                EgressPolicy(),
                FAST,
            )

            def settled() -> bool:
                states = deliveries(db)
                return all(states[j][0] != "pending" for j in jobs.values())

            await wait_until(settled)
            # The loop is alive: a job that ends now is delivered too.
            later = await ended_job(ledger, "https://ok.test/later")
            await wait_until(lambda: deliveries(db)[later][0] == "delivered")
            nursery.cancel_scope.cancel()
    got = deliveries(db)
    assert got[jobs["ok"]] == ("delivered", 1, None)
    assert got[jobs["flaky"]] == ("delivered", 2, "ConnectError")
    assert got[jobs["down"]] == ("failed", 3, "HTTP_500")
    assert got[jobs["boom"]] == ("failed", 3, "INTERNAL_ERROR")
    for name in ("idna", "idna2", "idna3"):
        assert got[jobs[name]] == ("delivered", 1, None)
    # No request can be built from these URLs: failed at once, not retried.
    for name in ("bad", "bad2"):
        assert got[jobs[name]] == ("failed", 1, "INVALID_URL")
    assert hits == {
        "ok.test": 2,
        "down.test": 3,
        "boom.test": 3,
        "flaky.test": 2,
        "xn--ls8h.la": 1,
        "xn--zz.com": 1,
        "xn--a.com": 1,
    }
    # The failures were logged, without URLs, tokens or exception messages.
    text = caplog.text
    assert "RuntimeError" in text
    assert "SECRET-TOKEN" not in text and "unforeseen" not in text


async def test_the_body_is_the_jobs_status_signed(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with Ledger.open(tmp_path / "l.db") as ledger, trio.open_nursery() as nursery:
        job_id = await ended_job(ledger, "https://ok.test/hook")
        await nursery.start(
            functools.partial(deliver_webhooks, transport=httpx.MockTransport(receiver)),
            ledger,
            EgressPolicy(),
            FAST,
        )
        await wait_until(lambda: bool(seen))
        nursery.cancel_scope.cancel()
    (request,) = seen
    body = json.loads(request.content)
    assert body["event"] == "bulk_job.completed"
    assert body["data"]["jobId"] == job_id and body["data"]["status"] == "completed"
    assert request.headers["x-bulk-event"] == "bulk_job.completed"
    assert request.headers["x-bulk-signature"].startswith("t=")


async def test_the_poll_reads_only_pending_deliveries(tmp_path: Path) -> None:
    # Work proportional to the queue, not the history: the due query is a range
    # over the partial index of pending rows (no scan of the table).
    db = tmp_path / "l.db"
    async with Ledger.open(db):
        pass
    conn = sqlite3.connect(db)
    try:
        plan = " ".join(
            str(r[-1])
            for r in conn.execute("EXPLAIN QUERY PLAN " + DUE_SQL.format(skip=""), (0.0, 10))
        )
    finally:
        conn.close()
    assert "USING INDEX deliveries_due" in plan, plan
    assert "SCAN deliveries" not in plan.replace("USING INDEX", ""), plan


# ---- the service stays up ----------------------------------------------------------------


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with serve_site("basic") as server:
        yield server


@pytest.mark.browser
async def test_a_webhook_url_httpx_refuses_never_ends_the_service(
    tmp_path: Path, chromium: str, site: SiteServer
) -> None:
    # ada accepts these hosts and httpx's IDNA codec refuses them: the webhook task
    # used to die with idna.IDNAError, taking `bulk serve` down, again after every
    # restart. They are delivered now, by their ASCII names. A fake resolver maps them
    # to the local receiver: no name leaves this machine.
    idn_hosts = ("xn--ls8h.la", "xn--zz.com", "xn--a.com")
    seen: list[str] = []
    token = trio.lowlevel.current_trio_token()
    delivered = trio.Event()

    def hook(h: Any) -> None:
        seen.append(h.headers.get("Host", ""))
        SiteServer._send(h, 204, b"", "text/plain", {})
        if len(seen) == len(idn_hosts) + 1:
            trio.from_thread.run_sync(delivered.set, trio_token=token)

    async def resolver(host: str, port: int) -> list[Any]:
        if host in idn_hosts or host == "127.0.0.1":
            return [ipaddress.ip_address("127.0.0.1")]
        raise OSError(f"no such name in this test: {host}")

    policy = attrs.evolve(LOOPBACK_ONLY, resolver=resolver)
    db, data = tmp_path / "ledger.db", tmp_path / "data"
    with SiteServer(routes={"/hook": Route(handler=hook)}) as receiver:
        port = receiver.port
        svc = Service(
            db=db, data_dir=data, chromium=chromium, webhook_backoff=(0.2,), policy=policy
        )
        await trio.to_thread.run_sync(svc.start)
        try:
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                key = await new_key(db)
                headers = {"X-API-Key": key}
                idn_jobs = []
                for host in idn_hosts:
                    r = await client.post(
                        svc.api("/bulk-screenshot"),
                        json={
                            "url": site.origin,
                            "options": {"maxPages": 1},
                            "webhook_url": f"http://{host}:{port}/hook",
                        },
                        headers=headers,
                    )
                    assert r.status_code == 202, r.text
                    idn_jobs.append(r.json()["data"]["job_id"])
                await wait_until(
                    lambda: all(deliveries(db).get(j, ("",))[0] == "delivered" for j in idn_jobs)
                )
                assert (await client.get(svc.api("/health"))).status_code == 200
                # ...and it still runs jobs and delivers webhooks.
                r = await client.post(
                    svc.api("/bulk-screenshot"),
                    json={
                        "url": site.origin,
                        "options": {"maxPages": 1},
                        "webhook_url": receiver.url("/hook"),
                    },
                    headers=headers,
                )
                assert r.status_code == 202, r.text
                with trio.fail_after(60):
                    await delivered.wait()
            await trio.to_thread.run_sync(svc.stop)
            assert sorted(seen[:3]) == sorted(f"{h}:{port}" for h in idn_hosts)
            # A restart finds the deliveries recorded: it does not send them again.
            before = deliveries(db)
            svc = Service(
                db=db, data_dir=data, chromium=chromium, webhook_backoff=(0.2,), policy=policy
            )
            await trio.to_thread.run_sync(svc.start)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                assert (await client.get(svc.api("/health"))).status_code == 200
            assert deliveries(db) == before
            assert [before[j] for j in idn_jobs] == [("delivered", 1, None)] * 3
            assert len(seen) == 4
        finally:
            await trio.to_thread.run_sync(svc.stop)
