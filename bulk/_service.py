"""``bulk serve``: the HTTP API, the job runner, the expiry sweeper and webhook delivery
in one trio process, started from our own ``trio.run``.

    serve(config, shutdown)
      ledger (one writer; secrets key in data_dir) ─ fetcher (httpx, policy) ─
      BrowserPool (Chromium, proxy)
      background nursery: JobRunner.serve, sweeper, deliver_webhooks (_webhooks.py),
        run_schedules (_schedules.py)
      web nursery: hypercorn (trio worker) serving create_app(state): the JSON API
        under /api/v1 and the dashboard (bulk/_dashboard) at /

No background loop can end the process: each contains its items' failures
(``_util.contained``): a job, an expiry or a webhook that fails is logged and
recorded failed, and the loop goes on.

Shutdown (``shutdown`` set, e.g. by SIGTERM): hypercorn stops accepting and lets
in-flight requests finish (``graceful_timeout``), then the background tasks are
cancelled: capture workers give their leases back, Chromium and the proxy close.
Unfinished jobs stay in the ledger and resume at the next start.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._api import ApiConfig, ServiceState, create_app
from ._capture import BrowserPool, PoolConfig
from ._dashboard import dashboard
from ._fetch import open_fetcher
from ._jobs import JobRunner, RunnerConfig, sweep_blobs
from ._ledger import Ledger, SecretBox
from ._listeners import own_listener
from ._policy import EgressPolicy
from ._schedules import SchedulerConfig, run_schedules
from ._tunnel import MAX_FRAME
from ._util import contained, hold_lock
from ._webhooks import WEBHOOK_BACKOFF, WebhookConfig, deliver_webhooks, webhook_signature

__all__ = ["ServiceConfig", "serve", "webhook_signature"]

log = logging.getLogger("bulk.service")

#: The file in ``data_dir`` that holds the key sealing jobs' cookies and headers.
KEY_FILE: Final = "secrets.key"
#: Where jobs' images are stored once by content (``_jobs._write_image``): identical
#: images of successive runs, or of any jobs, take their space once.
BLOBS: Final = "blobs"


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """Everything ``bulk serve`` needs.

    Args:
        host, port: Where to listen (port 0: any free port; the bound address is
            passed to ``task_status.started``).
        db: The ledger database. One ``bulk serve`` per database (a lock file).
        data_dir: Job files (images, ZIPs) live under ``data_dir/jobs``; images
            are stored once by content under ``data_dir/blobs`` and linked there.
        pool: Chromium settings.
        policy: The egress policy for every request made on a user's behalf.
        download_ttl: Seconds a completed job's ZIP stays downloadable.
        api: HTTP-layer knobs (rate limits, discovery time cap).
        graceful_timeout: Seconds in-flight requests get at shutdown.
        sweep_interval: Seconds between expiry sweeps.
        webhook_backoff: Seconds before each webhook retry (``WebhookConfig``).
        webhooks: The rest of webhook delivery (its ``backoff`` is replaced by
            ``webhook_backoff``).
        schedule_seconds: Seconds between every schedule's slots, whatever its
            ``every`` (``BULK_SCHEDULE_SECONDS``: tests and operators only).
        schedule_poll: Seconds between the scheduler's looks at the ledger.
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
    webhooks: WebhookConfig = attrs.field(factory=WebhookConfig)
    schedule_seconds: float | None = None
    schedule_poll: float = 1.0


async def serve(
    config: ServiceConfig,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``shutdown`` is set, then stop gracefully.

    The key that seals running jobs' cookie and header values is ``KEY_FILE`` in
    ``data_dir`` (0600, created on first start): a restart-resumed job still has
    them; a copy of the database alone does not.

    Raises:
        BrowserUnavailable: Chromium would not start.
        LockHeld: Another ``bulk serve`` uses this database.
        ValidationError: The key file is damaged.
    """
    lock = config.db.with_name(config.db.name + ".lock")
    with (
        hold_lock(lock, held=f"another bulk serve uses {config.db}"),
        contextlib.ExitStack() as own,
    ):
        if config.port:
            # Before any job runs: a page must never reach the API (_listeners).
            own.enter_context(own_listener(config.host, config.port))
        config.data_dir.mkdir(parents=True, exist_ok=True)
        box = await trio.to_thread.run_sync(SecretBox.from_key_file, config.data_dir / KEY_FILE)
        webhooks = attrs.evolve(config.webhooks, backoff=config.webhook_backoff)
        async with (
            Ledger.open(config.db, clock=config.api.clock, secrets=box) as ledger,
            open_fetcher(config.policy) as fetcher,
            BrowserPool.open(config.pool, config.policy) as pool,
        ):
            runner = JobRunner(
                ledger,
                pool,
                config.policy,
                RunnerConfig(
                    data_dir=config.data_dir,
                    download_ttl=config.download_ttl,
                    blobs=config.data_dir / BLOBS,
                ),
            )
            with contained(log, "releasing unused stored images"):
                await trio.to_thread.run_sync(sweep_blobs, config.data_dir / BLOBS)
            state = ServiceState(
                ledger=ledger,
                pool=pool,
                fetcher=fetcher,
                runner=runner,
                policy=config.policy,
                data_dir=config.data_dir,
                config=attrs.evolve(config.api, schedule_seconds=config.schedule_seconds),
            )
            app = create_app(state, pages=dashboard)
            hconfig = HypercornConfig()
            hconfig.bind = [f"{config.host}:{config.port}"]
            hconfig.accesslog = None
            hconfig.errorlog = logging.getLogger("bulk.hypercorn")
            hconfig.graceful_timeout = config.graceful_timeout
            # The only WebSocket is a connector's tunnel: no message is over one frame.
            hconfig.websocket_max_message_size = MAX_FRAME
            async with trio.open_nursery() as background:
                await background.start(runner.serve)
                background.start_soon(_sweeper, ledger, runner, config.sweep_interval)
                await background.start(deliver_webhooks, ledger, config.policy, webhooks)
                await background.start(
                    run_schedules,
                    state,
                    SchedulerConfig(override=config.schedule_seconds, poll=config.schedule_poll),
                )
                async with trio.open_nursery() as web:
                    binds = await web.start(
                        functools.partial(
                            hypercorn_serve,
                            app,  # type: ignore[arg-type]  # Starlette is an ASGI app
                            hconfig,
                            shutdown_trigger=shutdown.wait,
                        )
                    )
                    for bind in binds:
                        address = urlsplit(bind)
                        if address.port is not None:
                            own.enter_context(own_listener(address.hostname or "", address.port))
                    log.info("listening on %s", ", ".join(binds))
                    task_status.started(binds)
                    await shutdown.wait()
                    state.draining = True
                # hypercorn has returned: no request is in flight any more.
                background.cancel_scope.cancel()


async def _sweeper(ledger: Ledger, runner: JobRunner, interval: float) -> None:
    """Expire completed jobs whose download window passed, and delete their files.

    Each job's cleanup is its own item: one that fails is logged and the others go
    on; a sweep that fails as a whole is tried again at the next interval.
    """
    while True:
        with contained(log, "expiry sweep"):
            for job in await ledger.expire_due():
                with contained(log, "deleting the files of expired job %s", job.id) as outcome:
                    await runner.delete_files(job)
                if not outcome.failed:
                    log.info("job %s expired; files deleted", job.id)
        await trio.sleep(interval)
