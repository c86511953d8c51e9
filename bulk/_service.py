"""``bulk serve``: the HTTP API, the job runner, the expiry sweeper and webhook delivery
in one trio process, started from our own ``trio.run``.

    serve(config, shutdown)
      ledger (one writer) ─ fetcher (httpx, policy) ─ BrowserPool (Chromium, proxy)
      background nursery: JobRunner.serve, sweeper, webhooks
      web nursery: hypercorn (trio worker) serving create_app(state)

Shutdown (``shutdown`` set, e.g. by SIGTERM): hypercorn stops accepting and lets
in-flight requests finish (``graceful_timeout``), then the background tasks are
cancelled: capture workers give their leases back, Chromium and the proxy close.
Unfinished jobs stay in the ledger and resume at the next start.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._api import ApiConfig, ServiceState, create_app, job_status_body
from ._capture import BrowserPool, PoolConfig
from ._exceptions import BulkError
from ._fetch import open_fetcher
from ._jobs import JobRunner, RunnerConfig
from ._ledger import Ledger
from ._policy import EgressPolicy, policy_transport
from ._util import hold_lock

__all__ = ["ServiceConfig", "serve"]

log = logging.getLogger("bulk.service")

WEBHOOK_BACKOFF: Final = (2.0, 10.0, 60.0, 300.0, 1800.0)


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """Everything ``bulk serve`` needs.

    Args:
        host, port: Where to listen (port 0: any free port; the bound address is
            passed to ``task_status.started``).
        db: The ledger database. One ``bulk serve`` per database (a lock file).
        data_dir: Job files (images, ZIPs) live under ``data_dir/jobs``.
        pool: Chromium settings.
        policy: The egress policy for every request made on a user's behalf.
        download_ttl: Seconds a completed job's ZIP stays downloadable.
        api: HTTP-layer knobs (rate limits, discovery time cap).
        graceful_timeout: Seconds in-flight requests get at shutdown.
        sweep_interval: Seconds between expiry sweeps.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    db: Path
    data_dir: Path
    pool: PoolConfig
    policy: EgressPolicy
    download_ttl: int = 86400
    api: ApiConfig = attrs.field(factory=ApiConfig)
    graceful_timeout: float = 10.0
    sweep_interval: float = 60.0
    webhook_backoff: tuple[float, ...] = WEBHOOK_BACKOFF


async def serve(
    config: ServiceConfig,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``shutdown`` is set, then stop gracefully.

    Raises:
        BrowserUnavailable: Chromium would not start.
        LockHeld: Another ``bulk serve`` uses this database.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with hold_lock(config.db.with_name(config.db.name + ".lock")):
        async with (
            Ledger.open(config.db, clock=config.api.clock) as ledger,
            open_fetcher(config.policy) as fetcher,
            BrowserPool.open(config.pool, config.policy) as pool,
        ):
            runner = JobRunner(
                ledger,
                pool,
                config.policy,
                RunnerConfig(data_dir=config.data_dir, download_ttl=config.download_ttl),
            )
            state = ServiceState(
                ledger=ledger,
                pool=pool,
                fetcher=fetcher,
                runner=runner,
                policy=config.policy,
                data_dir=config.data_dir,
                config=config.api,
            )
            app = create_app(state)
            hconfig = HypercornConfig()
            hconfig.bind = [f"{config.host}:{config.port}"]
            hconfig.accesslog = None
            hconfig.errorlog = logging.getLogger("bulk.hypercorn")
            hconfig.graceful_timeout = config.graceful_timeout
            async with trio.open_nursery() as background:
                await background.start(runner.serve)
                background.start_soon(_sweeper, ledger, runner, config.sweep_interval)
                background.start_soon(_webhooks, ledger, config.policy, config.webhook_backoff)
                async with trio.open_nursery() as web:
                    binds = await web.start(
                        functools.partial(
                            hypercorn_serve,
                            app,  # type: ignore[arg-type]  # Starlette is an ASGI app
                            hconfig,
                            shutdown_trigger=shutdown.wait,
                        )
                    )
                    log.info("listening on %s", ", ".join(binds))
                    task_status.started(binds)
                    await shutdown.wait()
                    state.draining = True
                # hypercorn has returned: no request is in flight any more.
                background.cancel_scope.cancel()


async def _sweeper(ledger: Ledger, runner: JobRunner, interval: float) -> None:
    """Expire completed jobs whose download window passed, and delete their files."""
    while True:
        try:
            for job in await ledger.expire_due():
                await runner.delete_files(job)
                log.info("job %s expired; files deleted", job.id)
        except BulkError:
            log.exception("expiry sweep failed")
        await trio.sleep(interval)


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the account secret>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def _webhooks(
    ledger: Ledger,
    policy: EgressPolicy,
    backoff: tuple[float, ...],
    clock: Callable[[], float] = time.time,
) -> None:
    """Deliver job-finished callbacks, signed, retried with backoff, under the policy.

    State lives in ``jobs.webhook_state`` (``"<attempts>:<next unix time>"``, then
    ``delivered`` or ``failed``) so deliveries survive a restart.
    """
    transport = policy_transport(policy)
    async with httpx.AsyncClient(
        transport=transport, timeout=10.0, follow_redirects=False, trust_env=False
    ) as client:
        while True:
            now = clock()
            for job in await ledger.jobs(statuses=("completed", "failed"), kinds=("bulk",)):
                if not job.webhook_url or job.webhook_state in ("delivered", "failed"):
                    continue
                attempts, due = _parse_state(job.webhook_state)
                if due > now:
                    continue
                ok = await _deliver(client, ledger, job)
                if ok:
                    state = "delivered"
                elif attempts + 1 >= len(backoff) + 1:
                    state = "failed"
                else:
                    state = f"{attempts + 1}:{now + backoff[attempts]:.0f}"
                await ledger.set_status(job.id, None, webhook_state=state)
            await trio.sleep(1.0)


def _parse_state(state: str | None) -> tuple[int, float]:
    if not state or ":" not in state:
        return 0, -math.inf
    attempts, _, due = state.partition(":")
    try:
        return int(attempts), float(due)
    except ValueError:
        return 0, -math.inf


async def _deliver(client: httpx.AsyncClient, ledger: Ledger, job: Any) -> bool:
    assert job.account_id is not None
    account = await ledger.account(job.account_id)
    event = "bulk_job.completed" if job.status == "completed" else "bulk_job.failed"
    body = json.dumps(
        {"event": event, "data": job_status_body(job)}, separators=(",", ":")
    ).encode()
    timestamp = int(time.time())
    try:
        response = await client.post(
            job.webhook_url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "bulk-webhook/0.1",
                "X-Bulk-Event": event,
                "X-Bulk-Signature": webhook_signature(account.webhook_secret, timestamp, body),
            },
        )
    except (httpx.HTTPError, BulkError) as exc:
        log.warning(
            "webhook for job %s failed: %s", job.id, getattr(exc, "code", type(exc).__name__)
        )
        return False
    return 200 <= response.status_code < 300
