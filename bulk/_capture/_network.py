"""What a page is loading: its requests in flight, by host, and waiting for quiet.

``NetworkWatch`` follows one page's requests (Playwright's
``request``, ``requestfinished`` and ``requestfailed`` events). It answers the two
questions the capture steps ask: has the network been quiet enough for long enough
(``wait_quiet``, behind ``wait_until: mostly_idle``), and, when a page is captured
before it finished loading, which hosts was it still waiting for (``pending_hosts``,
the ``load: "partial"`` mark).

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit

from playwright.async_api import Page, Request

__all__ = ["NetworkWatch"]

# Requests a page may leave hanging without being "pending" (not shown as partial).
_IGNORED_SCHEMES: Final = ("data:", "blob:", "about:", "chrome", "devtools:")
# How often a quiet wait looks again when nothing changes.
_RECHECK: Final = 0.1
# The "at most N in flight" levels a wait can ask for (mostly_idle uses 2).
_LEVELS: Final = (0, 1, 2)

_F = TypeVar("_F", bound=Callable[..., Any])


def _signature_once(fn: _F) -> _F:
    """Compute ``fn``'s signature once, here.

    Playwright's event wrapper calls ``inspect.signature`` on the handler at every
    event (to pass only as many arguments as it takes); with ``__signature__`` set,
    that is a lookup. The watch's handlers run three times per request of every page,
    and a sampling profile of ``bulk archive`` showed that signature among the
    watch's costs in bulk's own process.
    """
    fn.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return fn


@final
class NetworkWatch:
    """The requests of one page since ``attach`` (counted since ``restart``).

    Attributes:
        started: Requests the page started (redirect hops each count).
    """

    def __init__(self, page: Page) -> None:
        self._page = page
        self._inflight: dict[Request, str] = {}
        self._changed = asyncio.Event()
        # Level -> the last loop time more than that many requests were in flight.
        self._busy_at: dict[int, float] = {}
        self.started = 0

    def restart(self) -> None:
        """Count from now: a page reused for another capture keeps its watch (its
        listeners stay, so the driver is not asked to re-subscribe every time)."""
        self.started = 0
        self._busy_at.clear()
        self._changed.clear()

    def attach(self) -> None:
        self._page.on("request", self._on_request)
        self._page.on("requestfinished", self._on_done)
        self._page.on("requestfailed", self._on_done)

    @_signature_once
    def _on_request(self, request: Request) -> None:
        url = request.url
        if url.startswith(_IGNORED_SCHEMES):
            return
        self.started += 1
        self._inflight[request] = urlsplit(url).hostname or ""
        self._mark_busy()
        self._changed.set()

    @_signature_once
    def _on_done(self, request: Request) -> None:
        if request in self._inflight:
            self._mark_busy()  # busy until this moment
            del self._inflight[request]
            self._changed.set()

    def _mark_busy(self) -> None:
        now = asyncio.get_running_loop().time()
        for level in _LEVELS:
            if len(self._inflight) > level:
                self._busy_at[level] = now

    @property
    def inflight(self) -> int:
        """Requests started and neither finished nor failed yet."""
        return len(self._inflight)

    def pending_hosts(self) -> tuple[str, ...]:
        """The hosts of the requests still in flight, sorted, each once."""
        return tuple(sorted({host for host in self._inflight.values() if host}))

    async def wait_quiet(self, most: int, quiet: float) -> None:
        """Return once at most ``most`` (0 to 2) requests were in flight for the last
        ``quiet`` seconds. No limit of its own: the caller puts its deadline around it.
        """
        assert most in _LEVELS
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            now = loop.time()
            calm_since = max(self._busy_at.get(most, started), started)
            if self.inflight <= most and now - calm_since >= quiet:
                return
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _RECHECK)
