"""The capture steps: navigate, wait, clean the page up, run the script, take the picture.

One capture, on a page the engine hands over (``capture_on``), is one ``Capture``:

1. Check the job's CSS selectors once (the script's too), route the page's requests
   when the job blocks media or ads (``_blocking.py``), and follow its requests
   (``_network.NetworkWatch``).
2. Load the URL (or set the HTML given instead of one). The document must arrive
   before the URL's deadline (``timeout``, the hard limit); the proxy's refusals are
   told apart from the site's answers and from network errors, which are put in words.
3. Wait for ``wait_until`` (``load``, ``domcontentloaded``, ``networkidle``: no
   request for 500 ms, ``mostly_idle``: at most 2 for 500 ms), for ``load_timeout``
   at most. When that passes, the page is captured as it is and marked
   ``load: "partial"`` with the hosts it was still waiting for: a dead third-party
   host must not fail every page. Style sheets still loading are dropped then
   (``js/unblock.js``), or the page would never paint.
4. Web fonts and two frames, the options' waits (``wait_for_selector``, ``delay``),
   ``block_selectors`` hidden, cookie banners dismissed. Scrollbars and their gutter
   are hidden from the document's start (``js/init.js``), so no second style pass.
5. The ``actions`` script (``_actions.py``), whose ``screenshot`` steps are extra
   pictures and whose navigations get steps 2 to 4 again.
6. The picture (``_shoot.py``): an image of the page or one element, or a PDF.

Chromium reaches the network only through bulk's egress proxy (``_proxy.py``), which
applies the same address policy as the httpx fetches. The proxy's refusals
(``X-Bulk-Error`` / a refused ``CONNECT``) are told apart from network errors by
asking the proxy whether it refused one of the hosts this navigation went to; a
failed ``CONNECT`` (Chromium only says ``ERR_TUNNEL_CONNECTION_FAILED``) is explained
by the proxy's own record of why it could not connect.

Runs on the asyncio loop thread only; the in-page scripts are ``js/*.js``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import suppress
from typing import Final, Literal, final
from urllib.parse import urlsplit

import attrs
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Request
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .._exceptions import (
    CaptureError,
    CaptureTimeout,
    HTTPStatusError,
    InvalidURL,
    NavigationError,
    URLBlocked,
)
from .._options import CaptureOptions
from .._proxy import EgressProxy
from .._urls import parse_http_url
from . import _scripts as js
from ._actions import run_actions
from ._blocking import install_routes, wants_routes
from ._errors import net_error, net_error_message
from ._network import NetworkWatch
from ._pages import ContextState, PageSlot
from ._shoot import SELECTOR_MARGIN_MS, Shot, max_css_height, shoot, until_visible

__all__ = ["NamedShot", "Screenshot", "capture_on", "hostname", "max_css_height"]

# Part of the timeout kept for the work after the wait for ``wait_until``, whatever
# ``load_timeout`` says: a page that never finishes loading is still captured.
_AFTER_LOAD_RESERVE: Final = 0.25
# How long the network must be (mostly) quiet for networkidle and mostly_idle.
_QUIET_SECONDS: Final = 0.5
# Requests in flight that still count as quiet, by wait_until.
_QUIET_LEVEL: Final = {"networkidle": 0, "mostly_idle": 2}
# Playwright's own timeouts run this much longer than the asyncio ones, which decide.
_DRIVER_SLACK_MS: Final = 5000.0
_CONSENT_POLL_MS: Final = 1000

LoadState = Literal["complete", "partial"]


@attrs.frozen(kw_only=True)
class NamedShot:
    """An extra picture a capture script took (its ``screenshot`` step)."""

    name: str
    data: bytes
    format: str
    width: int
    height: int
    pdf_pages: int | None = None
    truncated_height: bool = False


@attrs.frozen(kw_only=True)
class Screenshot:
    """One captured image (or PDF) and what is known about the page it came from.

    Attributes:
        data: The image's or the PDF's bytes.
        format: ``png``, ``jpeg``, ``webp`` or ``pdf``.
        width: Pixels of the image; for a PDF, its first page's width in points.
        height: The same, in height.
        final_url: Where the page ended up (``about:blank`` for HTML input).
        http_status: The main document's HTTP status (None for HTML input).
        elapsed: Seconds the capture took.
        load: ``complete`` when ``wait_until`` was reached, ``partial`` when
            ``load_timeout`` passed first and the page was captured as it was.
        pending_hosts: For a partial load, the hosts of the requests still waited for.
        truncated_height: A full page taller than the cap, cut at the cap.
        blocked_requests: Requests dropped by ``block_media`` / ``block_ads``.
        requests: Requests the page made (redirect hops each count).
        pdf_pages: A PDF's page count.
        shots: The capture script's extra pictures, in order.
    """

    data: bytes
    format: str
    width: int
    height: int
    final_url: str
    http_status: int | None
    elapsed: float
    load: LoadState = "complete"
    pending_hosts: tuple[str, ...] = ()
    truncated_height: bool = False
    blocked_requests: int = 0
    requests: int = 0
    pdf_pages: int | None = None
    shots: tuple[NamedShot, ...] = ()


def hostname(url: str) -> str:
    try:
        return parse_http_url(url).hostname
    except InvalidURL:
        return urlsplit(url).hostname or ""


async def capture_on(
    slot: PageSlot,
    state: ContextState,
    url: str | None,
    deadline: float,
    since: float,
    proxy: EgressProxy | None,
    *,
    html: str | None = None,
) -> Screenshot:
    """Load ``url`` (or ``html``) in ``slot``'s page, wait as ``state``'s options say,
    run their script, take the picture.

    ``deadline`` is the asyncio loop time the capture must end by; ``since`` the trio
    time the attempt started at, and ``proxy`` the egress proxy, whose refusals since
    then tell a blocked URL from a network error.
    """
    return await Capture(slot, state, deadline, since, proxy).run(url, html)


@final
class Capture:
    """One capture in one page (see the module docstring); also the ``Runner`` that
    the capture script's steps call back into."""

    def __init__(
        self,
        slot: PageSlot,
        state: ContextState,
        deadline: float,
        since: float,
        proxy: EgressProxy | None,
    ) -> None:
        self.slot = slot
        self.state = state
        self.opts: CaptureOptions = state.options
        self.deadline = deadline
        self.since = since
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        if slot.watch is None:
            slot.watch = NetworkWatch(slot.page)
            slot.watch.attach()
        self.watch: NetworkWatch = slot.watch
        self.watch.restart()
        self.partial = False
        self.pending: set[str] = set()
        self.shots: list[NamedShot] = []
        self.status: int | None = None

    @property
    def page(self) -> Page:
        return self.slot.page

    def remaining_ms(self, margin: float = 0.0) -> float:
        """Milliseconds left before the deadline, less ``margin``; never 0 (Playwright
        reads a timeout of 0 as "no timeout")."""
        return max(1.0, (self.deadline - self.loop.time()) * 1000 - margin)

    async def run(self, url: str | None, html: str | None) -> Screenshot:
        started = self.loop.time()
        slot, opts = self.slot, self.opts
        await check_selectors(self.page, self.state)
        if wants_routes(opts) and not slot.routed:

            def count() -> None:
                slot.blocked += 1

            await install_routes(self.page, opts, count)
            slot.routed = True
        blocked_before = slot.blocked
        if html is not None:
            await self._set_content(html)
        else:
            assert url is not None
            await self._navigate(url)
        final_url = self.page.url
        try:
            await self._ready()
            if opts.actions:
                await run_actions(self, opts.actions)
            shot = await self._shoot_ready()
            final_url = self.page.url
            if html is None and refused(self.proxy, {hostname(final_url)}, self.since):
                # What is showing is the proxy's refusal (or Chromium's error page).
                raise URLBlocked("the egress policy blocked where the page navigated to")
        except CaptureError as exc:
            exc.http_status = exc.http_status or self.status
            exc.final_url = exc.final_url or final_url
            raise
        requests = self.watch.started
        return Screenshot(
            data=shot.data,
            format=shot.format,
            width=shot.width,
            height=shot.height,
            final_url=final_url,
            http_status=self.status,
            elapsed=self.loop.time() - started,
            load="partial" if self.partial else "complete",
            pending_hosts=tuple(sorted(self.pending)),
            truncated_height=shot.truncated_height,
            blocked_requests=slot.blocked - blocked_before,
            requests=requests,
            pdf_pages=shot.pdf_pages,
            shots=tuple(self.shots),
        )

    # -- loading -----------------------------------------------------------------------

    async def _set_content(self, html: str) -> None:
        # The document is written into the blank page: its sub-resources (absolute
        # URLs, or relative to a <base href>) load through the egress proxy like any.
        try:
            await asyncio.wait_for(
                self.page.set_content(
                    html, wait_until="commit", timeout=self.remaining_ms() + _DRIVER_SLACK_MS
                ),
                self.remaining_ms() / 1000,
            )
        except (TimeoutError, PlaywrightTimeout):
            raise CaptureTimeout(f"the HTML was not set within {self.opts.timeout} ms") from None

    async def _navigate(self, url: str) -> None:
        """Load ``url`` until its document arrives (the rest is ``_wait_load``).

        Raises:
            URLBlocked: The egress policy refused the URL or a redirect.
            NavigationError: A network error, in words (``details.net_error``: Chromium's).
            HTTPStatusError: The page answered 4xx/5xx.
            CaptureTimeout: No document before the deadline.
        """
        page = self.page
        hosts = {hostname(url)}

        def on_request(request: Request) -> None:
            # Every main-frame navigation request, redirects included: a refusal of
            # any of them by the proxy explains a failed navigation.
            with suppress(PlaywrightError):
                if request.is_navigation_request() and request.frame.parent_frame is None:
                    hosts.add(hostname(request.url))

        page.on("request", on_request)
        try:
            response = await page.goto(url, wait_until="commit", timeout=self.remaining_ms())
        except PlaywrightTimeout:
            raise CaptureTimeout(f"page did not load within {self.opts.timeout} ms") from None
        except PlaywrightError as exc:
            if refused(self.proxy, hosts, self.since):
                raise URLBlocked("the egress policy blocked this page or a redirect") from None
            explained = explain_tunnel_failure(self.proxy, exc, hosts, self.since)
            if explained is not None:
                raise explained from None
            raise
        finally:
            page.remove_listener("request", on_request)
        self.partial = False
        self.pending.clear()
        status = response.status if response is not None else None
        self.status = status
        if response is not None and status is not None and status >= 400:
            check_proxy_answer(self.proxy, response.headers, status, hosts, self.since)
            raise HTTPStatusError(
                f"the page answered HTTP {status}", http_status=status, final_url=page.url
            )

    async def _wait_load(self) -> None:
        """Wait for ``wait_until``, for ``load_timeout`` at most; then mark partial."""
        opts = self.opts
        budget = min(
            float(opts.load_timeout), self.remaining_ms(opts.timeout * _AFTER_LOAD_RESERVE)
        )
        try:
            await asyncio.wait_for(self._until(opts.wait_until, budget), budget / 1000)
        except (TimeoutError, PlaywrightTimeout):
            self.partial = True
            self.pending.update(self.watch.pending_hosts())
            # Style sheets that never arrive would keep the page from painting.
            with suppress(PlaywrightError):
                await self.page.evaluate(js.UNBLOCK)

    async def _until(self, mode: str, budget: float) -> None:
        driver_ms = budget + _DRIVER_SLACK_MS
        if mode in ("load", "domcontentloaded"):
            await self.page.wait_for_load_state(mode, timeout=driver_ms)  # type: ignore[arg-type]
            return
        await self.page.wait_for_load_state("domcontentloaded", timeout=driver_ms)
        await self.watch.wait_quiet(_QUIET_LEVEL[mode], _QUIET_SECONDS)

    async def _prepare(self) -> None:
        """Wait as the options say and clean the page up."""
        page, opts = self.page, self.opts
        await self._wait_load()
        await page.evaluate(js.SETTLE)
        if opts.wait_for_selector:
            await until_visible(
                page.locator("css=" + opts.wait_for_selector).first,
                self.remaining_ms(SELECTOR_MARGIN_MS),
                f"wait_for_selector {opts.wait_for_selector!r} did not appear",
            )
        if opts.delay:
            await asyncio.sleep(min(opts.delay, self.remaining_ms(0)) / 1000)
        if opts.block_selectors:
            await page.evaluate(js.HIDE_SELECTORS, list(opts.block_selectors))
        if opts.dismiss_cookie_consent:
            await page.evaluate(
                js.DISMISS_CONSENT, min(_CONSENT_POLL_MS, self.remaining_ms(0) / 4)
            )

    async def _again_after_redirect(self, exc: PlaywrightError, again: bool) -> None:
        # A page may navigate itself (a JS or meta redirect) while it is being
        # prepared: the new document gets the same treatment, twice at most.
        if not again or "context was destroyed" not in str(exc):
            raise exc
        budget = min(float(self.opts.load_timeout), self.remaining_ms(SELECTOR_MARGIN_MS))
        with suppress(TimeoutError, PlaywrightTimeout):
            await asyncio.wait_for(
                self.page.wait_for_load_state(
                    "domcontentloaded", timeout=budget + _DRIVER_SLACK_MS
                ),
                budget / 1000,
            )

    async def _ready(self) -> None:
        for again in (True, True, False):
            try:
                await self._prepare()
                return
            except PlaywrightError as exc:
                await self._again_after_redirect(exc, again)

    async def _shoot_ready(self) -> Shot:
        for again in (True, True, False):
            try:
                return await shoot(self.slot, self.opts, self.remaining_ms, partial=self.partial)
            except PlaywrightError as exc:
                await self._again_after_redirect(exc, again)
                await self._ready()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the capture script's callbacks (``_actions.Runner``) ----------------------------

    async def goto(self, url: str) -> None:
        """Load ``url`` as the first URL was loaded (policy, waits, clean-up)."""
        parse_http_url(url)
        await self._navigate(url)
        await self._ready()

    async def settle_navigation(self, before: str) -> None:
        """If the page left the document at ``before`` (a link clicked), wait for the
        new one as for the first."""
        if self.page.url == before:
            return
        if refused(self.proxy, {hostname(self.page.url)}, self.since):
            raise URLBlocked("the egress policy blocked where the page navigated to")
        await self._ready()

    async def snapshot(self, name: str) -> None:
        """Take a picture named ``name`` of the page as it is now."""
        shot = await shoot(self.slot, self.opts, self.remaining_ms, partial=self.partial)
        self.shots.append(
            NamedShot(
                name=name,
                data=shot.data,
                format=shot.format,
                width=shot.width,
                height=shot.height,
                pdf_pages=shot.pdf_pages,
                truncated_height=shot.truncated_height,
            )
        )


async def check_selectors(page: Page, state: ContextState) -> None:
    """Refuse an invalid CSS selector once per job, before any navigation."""
    opts = state.options
    if state.selector_error is None:
        pairs = [["block_selectors", s] for s in opts.block_selectors]
        for field in ("selector", "wait_for_selector"):
            value = getattr(opts, field)
            if value:
                pairs.append([field, value])
        for i, step in enumerate(opts.actions):
            pairs.extend([f"actions[{i}].{step.kind}", s] for s in step.selectors)
        state.selector_error = await page.evaluate(js.CHECK_SELECTORS, pairs) if pairs else ""
    if state.selector_error:
        field, _, selector = state.selector_error.partition(": ")
        raise CaptureError(
            f"{field} has an invalid CSS selector: {selector!r}",
            details={"field": field, "selector": selector},
        )


def refused(proxy: EgressProxy | None, hosts: Iterable[str], since: float) -> bool:
    """Whether the egress proxy refused one of ``hosts`` since trio time ``since``."""
    return proxy is not None and any(proxy.recently_blocked(h, since) for h in hosts if h)


def explain_tunnel_failure(
    proxy: EgressProxy | None, exc: PlaywrightError, hosts: Iterable[str], since: float
) -> NavigationError | None:
    """A failed ``CONNECT`` through the proxy, in words: Chromium says only
    ``ERR_TUNNEL_CONNECTION_FAILED``; the proxy knows whether the name did not resolve,
    the connection was refused or it timed out. None for any other error."""
    net = net_error(exc)
    if net != "ERR_TUNNEL_CONNECTION_FAILED" or proxy is None:
        return None
    for host in hosts:
        failure = proxy.recent_failure(host, since)
        if failure is not None:
            cause, reason = failure
            return NavigationError(
                f"{net_error_message(cause)}: {reason}",
                details={"net_error": net, "cause": cause},
            )
    return None


def check_proxy_answer(
    proxy: EgressProxy | None,
    headers: dict[str, str],
    status: int,
    hosts: set[str],
    since: float,
) -> None:
    """Tell the egress proxy's own answers (refusal, unreachable) from the site's."""
    if proxy is None:
        return
    code = headers.get("x-bulk-error")
    if code == URLBlocked.code and refused(proxy, hosts, since):
        raise URLBlocked("the egress policy blocked this page or a redirect")
    if code == NavigationError.code and status == 502:
        for host in hosts:
            failure = proxy.recent_failure(host, since)
            if failure is not None:
                cause, reason = failure
                raise NavigationError(
                    f"{net_error_message(cause)}: {reason}",
                    details={"net_error": "PROXY_CONNECT_FAILED", "cause": cause},
                )
        raise NavigationError(
            "could not connect to the server", details={"net_error": "PROXY_CONNECT_FAILED"}
        )
