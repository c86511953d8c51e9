"""A real ``bulk serve`` (hypercorn on 127.0.0.1:0, real Chromium, real SQLite) running
in a background thread with its own ``trio.run``, so a whole test module can share it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from bulk._api import IN_FLIGHT_LIMITS, ApiConfig, RateLimit
from bulk._capture import PoolConfig, RemoteEndpoint
from bulk._ledger import Ledger
from bulk._policy import EgressPolicy
from bulk._service import ServiceConfig, serve

LOOPBACK_ONLY = EgressPolicy(allow=("127.0.0.1/32",))

TIGHT_LIMITS: Mapping[str, RateLimit] = {
    "general": RateLimit(1000, 60),
    "screenshot": RateLimit(1000, 60),
    "bulk": RateLimit(1000, 3600),
    "register": RateLimit(1000, 900),
}


@dataclass
class Clock:
    """Wall clock plus an offset tests can move forward (expiry, rate windows)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Service:
    db: Path
    data_dir: Path
    chromium: str
    clock: Clock = field(default_factory=Clock)
    limits: Mapping[str, RateLimit] = field(default_factory=lambda: dict(TIGHT_LIMITS))
    in_flight: Mapping[str, int] = field(default_factory=lambda: dict(IN_FLIGHT_LIMITS))
    download_ttl: int = 86400
    concurrency: int = 3
    sweep_interval: float = 0.5
    webhook_backoff: tuple[float, ...] = (0.5, 1.0)
    policy: EgressPolicy = LOOPBACK_ONLY
    host: str = "127.0.0.1"
    # Remote browser nodes, and whether the local Chromium runs too (test_nodes).
    browsers: tuple[RemoteEndpoint, ...] = ()
    local_browser: bool = True
    status_file: Path | None = None
    url: str = ""
    _thread: threading.Thread | None = None
    _token: trio.lowlevel.TrioToken | None = None
    _shutdown: trio.Event | None = None
    _error: BaseException | None = None

    def start(self) -> Service:
        ready = threading.Event()
        config = ServiceConfig(
            host=self.host,
            port=0,
            db=self.db,
            data_dir=self.data_dir,
            pool=PoolConfig(
                executable=self.chromium,
                concurrency=self.concurrency,
                local=self.local_browser,
                remotes=self.browsers,
                status_file=self.status_file,
            ),
            policy=self.policy,
            download_ttl=self.download_ttl,
            api=ApiConfig(
                rate_limits=self.limits,
                in_flight=self.in_flight,
                clock=self.clock,
                discovery_timeout=20,
            ),
            graceful_timeout=5,
            sweep_interval=self.sweep_interval,
            webhook_backoff=self.webhook_backoff,
        )

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(serve, config, self._shutdown)
                self.url = binds[0]
                ready.set()

        def run() -> None:
            try:
                trio.run(main)
            except BaseException as exc:
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name="bulk-service")
        self._thread.start()
        ready.wait(60)
        if self._error is not None or not self.url:
            raise RuntimeError(f"service did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread is None or self._token is None or self._shutdown is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "service did not stop"
        self._thread = None
        if self._error is not None:
            raise self._error

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"


async def new_key(db: Path, credits: int = 100, email: str | None = None) -> str:
    """An API key on a fresh account, made like ``bulk admin create-key`` does
    (a second connection to the service's database)."""
    async with Ledger.open(db) as ledger:
        _, key = await ledger.create_account(credits=credits, email=email)
    return key


async def balance(db: Path, key: str) -> int:
    async with Ledger.open(db) as ledger:
        return (await ledger.account_by_key(key)).balance


async def wait_for_status(
    client: httpx.AsyncClient, url: str, key: str, want: set[str], within: float = 60
) -> dict[str, Any]:
    with trio.fail_after(within):
        while True:
            r = await client.get(url, headers={"X-API-Key": key})
            data = r.json()["data"]
            if data["status"] in want:
                return data  # type: ignore[no-any-return]
            await trio.sleep(0.2)
