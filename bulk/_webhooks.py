"""Webhook delivery: job-ended (and schedule-run-changed) callbacks from the ledger's
queue, signed, concurrent.

    ledger.deliveries (indexed queue of pending rows; one per ended job with a URL)
      -> deliver_webhooks: every ``poll`` seconds, the due rows not being sent
         -> one task per delivery: per-host slot, then a global slot
            -> start_delivery (count the attempt) -> POST (signed) -> end_delivery
               2xx: delivered; else retried after ``backoff[attempt - 1]``;
               after the last attempt, or when the URL cannot make a request: failed

Work follows the queue: a poll is one indexed range over pending, due rows, so the
history of ended jobs costs nothing. Every request goes through the egress policy's
transport, no redirect is followed, and each delivery's failure stays its own
(``contained``): whatever a receiver or its URL does, the loop and the service go on,
and the delivery ends recorded as delivered or failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from typing import Final, final

import attrs
import httpx
import trio

from ._api._core import job_status_body
from ._exceptions import BulkError
from ._ledger import Delivery, Ledger
from ._policy import EgressPolicy, policy_client
from ._util import contained, describe_error

__all__ = ["WEBHOOK_BACKOFF", "WebhookConfig", "deliver_webhooks", "webhook_signature"]

log = logging.getLogger("bulk.webhooks")

#: Seconds before each retry: 6 attempts over about 36 minutes.
WEBHOOK_BACKOFF: Final = (2.0, 10.0, 60.0, 300.0, 1800.0)


@attrs.frozen(kw_only=True)
class WebhookConfig:
    """How webhooks are delivered.

    Args:
        backoff: Seconds to wait before each retry; ``len(backoff) + 1`` attempts.
        timeout: Seconds for each phase of a request (connect, write, read); a whole
            attempt gets three times that.
        concurrency: Deliveries sent at once, all receivers together.
        per_host: Deliveries sent at once to one receiver host.
        poll: Seconds between looks at the queue when nothing is due sooner.
    """

    backoff: tuple[float, ...] = WEBHOOK_BACKOFF
    timeout: float = 10.0
    concurrency: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    per_host: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    poll: float = 1.0

    @property
    def max_attempts(self) -> int:
        return len(self.backoff) + 1

    @property
    def backlog(self) -> int:
        """Deliveries taken from the queue at once (sending or waiting for a slot)."""
        return self.concurrency * 4


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the account secret>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def deliver_webhooks(
    ledger: Ledger,
    policy: EgressPolicy,
    config: WebhookConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver the ledger's pending webhooks until cancelled.

    Args:
        ledger: The ledger whose ``deliveries`` queue is served.
        policy: The egress policy every request passes.
        config: Attempts, timeouts and bounds.
        transport: Instead of the policy's transport (tests).

    Cancellation:
        In-flight requests stop; their attempts were counted, and the deliveries
        stay pending, to be sent again after the next start.
    """
    # policy_client: the webhook URL is sent in the policy's canonical form, so a host
    # WHATWG accepts and httpx's IDNA codec would refuse (xn--ls8h.la) cannot raise.
    client = policy_client(policy, timeout=config.timeout, transport=transport)
    async with client, trio.open_nursery() as nursery:
        sender = _Sender(ledger, client, config, nursery)
        task_status.started()
        await sender.run()


@final
class _Sender:
    def __init__(
        self,
        ledger: Ledger,
        client: httpx.AsyncClient,
        config: WebhookConfig,
        nursery: trio.Nursery,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.config = config
        self.nursery = nursery
        self.in_flight: set[int] = set()
        self.slots = trio.CapacityLimiter(config.concurrency)
        self.hosts: dict[str, tuple[trio.CapacityLimiter, int]] = {}
        self.wake = trio.Event()

    async def run(self) -> None:
        while True:
            wait = self.config.poll
            with contained(log, "reading the webhook queue"):
                room = self.config.backlog - len(self.in_flight)
                if room > 0:
                    due = await self.ledger.due_deliveries(limit=room, exclude=self.in_flight)
                    for delivery in due:
                        self.in_flight.add(delivery.id)
                        self.nursery.start_soon(self._deliver, delivery)
                    following = await self.ledger.next_delivery_due(exclude=self.in_flight)
                    if following is not None:
                        wait = min(wait, max(0.0, following - self.ledger.clock()))
            self.wake = trio.Event()
            with trio.move_on_after(wait):
                await self.wake.wait()

    async def _deliver(self, delivery: Delivery) -> None:
        host = _host_of(delivery.url)
        try:
            async with self._host_slot(host), self.slots:
                attempt: list[int] = []
                with contained(
                    log, "webhook delivery %d of job %s", delivery.id, delivery.job_id
                ) as outcome:
                    await self._attempt(delivery, attempt)
                if outcome.failed and attempt:
                    # Something unforeseen: it counts as a failed attempt, like any.
                    with contained(log, "recording webhook delivery %d", delivery.id):
                        await self._end(delivery.id, attempt[0], outcome.code)
        finally:
            self.in_flight.discard(delivery.id)
            self.wake.set()

    async def _attempt(self, delivery: Delivery, attempt: list[int]) -> None:
        number = await self.ledger.start_delivery(
            delivery.id, max_attempts=self.config.max_attempts
        )
        if number is None:
            return
        attempt.append(number)
        job = await self.ledger.job(delivery.job_id)
        if job.account_id is None:
            await self.ledger.end_delivery(
                delivery.id, delivered=False, error="the job has no account"
            )
            return
        account = await self.ledger.account(job.account_id)
        data = job_status_body(job)
        if delivery.payload is not None:
            # bulk_job.changed: the schedule, the run and its change summary.
            data.update(delivery.payload)
        body = json.dumps({"event": delivery.event, "data": data}, separators=(",", ":")).encode()
        timestamp = int(time.time())
        try:
            request = self.client.build_request(
                "POST",
                delivery.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "bulk-webhook/0.1",
                    "X-Bulk-Event": delivery.event,
                    "X-Bulk-Signature": webhook_signature(account.webhook_secret, timestamp, body),
                },
            )
        except Exception as exc:
            # No request can be made from this URL (a host one parser accepts and
            # another refuses, say): retrying cannot help.
            log.warning(
                "webhook delivery %d of job %s: no request from its URL (%s)",
                delivery.id,
                delivery.job_id,
                describe_error(exc),
            )
            await self.ledger.end_delivery(delivery.id, delivered=False, error="INVALID_URL")
            return
        error: str
        with trio.move_on_after(self.config.timeout * 3) as deadline:
            try:
                response = await self.client.send(request)
                await response.aclose()
            except (httpx.HTTPError, BulkError) as exc:
                error = exc.code if isinstance(exc, BulkError) else type(exc).__name__
            else:
                if 200 <= response.status_code < 300:
                    await self.ledger.end_delivery(delivery.id, delivered=True)
                    return
                error = f"HTTP_{response.status_code}"
        if deadline.cancelled_caught:
            error = "TIMEOUT"
        log.info(
            "webhook delivery %d of job %s: attempt %d failed (%s)",
            delivery.id,
            delivery.job_id,
            number,
            error,
        )
        await self._end(delivery.id, number, error)

    async def _end(self, delivery_id: int, attempt: int, error: str) -> None:
        backoff = self.config.backoff
        retry_at = (
            self.ledger.clock() + backoff[attempt - 1] if attempt <= len(backoff) else None
        )
        await self.ledger.end_delivery(delivery_id, delivered=False, error=error, retry_at=retry_at)

    def _host_slot(self, host: str) -> _HostSlot:
        return _HostSlot(self, host)


@final
class _HostSlot:
    """The per-host bound: a limiter per receiver host, dropped when unused."""

    def __init__(self, sender: _Sender, host: str) -> None:
        self.sender = sender
        self.host = host

    async def __aenter__(self) -> None:
        hosts = self.sender.hosts
        limiter, users = hosts.get(self.host) or (
            trio.CapacityLimiter(self.sender.config.per_host),
            0,
        )
        hosts[self.host] = (limiter, users + 1)
        try:
            await limiter.acquire()
        except BaseException:
            self._leave(release=False)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._leave(release=True)

    def _leave(self, *, release: bool) -> None:
        hosts = self.sender.hosts
        limiter, users = hosts[self.host]
        if release:
            limiter.release()
        if users <= 1:
            del hosts[self.host]
        else:
            hosts[self.host] = (limiter, users - 1)


def _host_of(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return url

