"""The Playwright engine on the asyncio loop thread: browser, contexts, pages, captures.

The engine gets its browser from a ``BrowserSource`` (``_source.py``) and owns what
happens in it:

- One browser, one browser *context* per job (cookies never cross jobs or API keys),
  pages inside a context reused for ``page_reuse`` captures then replaced
  (``_pages.py``).
- Every capture runs under an asyncio deadline here (typed ``CAPTURE_TIMEOUT``), and
  under a trio deadline outside (``_pool.py``) that a page stuck in JS, or a stuck
  protocol call, cannot stop. Cancellation reaches the asyncio task, whose ``finally``
  closes the page before the trio caller moves on; a page whose renderer does not
  answer the close is crashed from the renderer's IO thread (``Page.crash``) so it
  stops eating CPU.
- A capture races the page's ``crash`` event and the browser's ``disconnected``
  event, so a dead renderer or a dead browser is noticed at once, not at the deadline.
- If the browser dies, the capture that notices it relaunches it (once per
  generation, under a lock, in the pool; the source reaps what is left of the dead
  one), the job's context is recreated lazily and in-flight URLs are retried once; a
  second crash on the same URL is ``BROWSER_CRASHED``.
- Dialogs are answered in the page by an init script (``js/init.js``: a page looping
  on ``alert()`` would otherwise flood the protocol) and popups are stopped by
  Chromium's own popup blocker (no user gesture ever happens); the ``dialog`` and
  ``popup`` handlers stay as a backstop. A page that served a capture is sent to
  ``about:blank`` before it idles, so a late CPU or memory hog cannot spin there or
  hurt the next capture.

The capture steps themselves (navigate, settle, shoot) are in ``_steps.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, Final, TypeVar, final

from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Playwright,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .._exceptions import (
    BrowserCrashed,
    CaptureError,
    CaptureTimeout,
    PageTooLarge,
    URLBlocked,
)
from .._proxy import EgressProxy
from . import _scripts as js
from ._config import CLEANUP_TIMEOUT, CLOSE_TIMEOUT, PoolConfig
from ._errors import BrowserGone, PageCrashed, looks_closed, map_error
from ._hygiene import lower_priority, no_priority_boost
from ._pages import ContextState, PageSlot, blank, close_hard, close_page, done
from ._source import BrowserSource
from ._steps import Screenshot, capture_on, hostname

__all__ = ["Engine"]

T = TypeVar("T")

# How long a capture waits for its page to close before it returns anyway.
_DISCARD_WAIT: Final = 1.0
# How long an error that smells of "closed" waits for the browser's disconnect event
# (the page's error and the browser's disconnect arrive in either order).
_DISCONNECT_WAIT: Final = 1.0


@final
class Engine:
    """Owns Playwright and the browser on the loop thread. Not thread-safe: loop only.

    Args:
        config: Page reuse and the niceness of the capture side.
        source: Where the browser comes from (the engine's only way to get one).
        proxy: The egress proxy the browser goes through, asked about its refusals.
    """

    def __init__(
        self, config: PoolConfig, source: BrowserSource, proxy: EgressProxy | None
    ) -> None:
        self.config = config
        self.source = source
        self.proxy = proxy
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None
        self.generation = 0
        self.pages_opened = 0
        self._gone = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The current browser's process id, when it runs on this machine."""
        return None if self.browser is None else self.source.pid

    # -- browser lifetime ----------------------------------------------------------------

    async def start(self) -> None:
        no_priority_boost()
        lower_priority(self.config.nice)
        self.playwright = await async_playwright().start()
        await self.launch()

    async def launch(self) -> None:
        assert self.playwright is not None
        browser = await self.source.connect(self.playwright)
        gone = asyncio.Event()
        browser.on("disconnected", lambda _: gone.set())
        if not browser.is_connected():  # it died before the handler was on
            gone.set()
        self.browser, self._gone = browser, gone
        self.generation += 1

    async def relaunch(self, generation: int) -> None:
        """Replace the browser if it is still the one from ``generation``."""
        if generation != self.generation:
            return
        old = self.browser
        self.browser = None
        if old is not None:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(old.close(), CLOSE_TIMEOUT)
        await self.source.reap()
        await self.launch()

    async def stop(self) -> None:
        try:
            if self._closing:
                await asyncio.wait(self._closing, timeout=CLOSE_TIMEOUT * 2)
            if self.browser is not None:
                await asyncio.wait_for(self.browser.close(), CLEANUP_TIMEOUT)
        except (PlaywrightError, TimeoutError):
            pass
        finally:
            self.browser = None
            try:
                if self.playwright is not None:
                    await asyncio.wait_for(self.playwright.stop(), CLEANUP_TIMEOUT)
            except (PlaywrightError, TimeoutError, OSError):
                pass
            finally:
                self.playwright = None
                # Last resort: nothing of this browser may outlive the pool.
                await self.source.reap()

    async def page_count(self) -> int:
        browser = self.browser
        if browser is None or not browser.is_connected():
            return 0
        return sum(len(context.pages) for context in browser.contexts)

    async def _browser_lost(self, generation: int, exc: BaseException | None) -> bool:
        """Whether the browser of ``generation`` is gone (``exc``: the error seen)."""
        browser = self.browser
        if generation != self.generation or browser is None or not browser.is_connected():
            return True
        if exc is not None and looks_closed(exc):
            gone = self._gone
            with suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), _DISCONNECT_WAIT)
            return gone.is_set()
        return False

    # -- contexts and pages ----------------------------------------------------------------

    async def _context(self, state: ContextState) -> BrowserContext:
        if state.lock is None:
            state.lock = asyncio.Lock()
        # Concurrent captures of one job must not each build a context after a relaunch.
        async with state.lock:
            return await self._context_locked(state)

    async def _context_locked(self, state: ContextState) -> BrowserContext:
        if state.closed:
            raise CaptureError("capture session is closed")
        generation = self.generation
        context = state.context
        if context is None or state.generation != generation:
            context = await self._new_context(state)
        if state.cookies_pending:
            try:
                await self._add_cookies(state, context)
            except PlaywrightError as exc:
                if await self._browser_lost(generation, exc):
                    raise BrowserGone(generation) from None
                raise CaptureError(
                    f"the cookies could not be set: {str(exc).splitlines()[0]}",
                    details={"field": "cookies"},
                ) from None
        return context

    async def _new_context(self, state: ContextState) -> BrowserContext:
        browser = self.browser
        generation = self.generation
        if browser is None or not browser.is_connected():
            raise BrowserGone(generation)
        opts = state.options
        state.idle.clear()
        context: BrowserContext | None = None
        try:
            context = await browser.new_context(
                viewport={"width": opts.width, "height": opts.height},
                device_scale_factor=opts.scale,
                color_scheme="dark" if opts.dark_mode else "light",
                reduced_motion="reduce" if opts.freeze_animations else "no-preference",
                user_agent=opts.user_agent,
                extra_http_headers=dict(opts.headers) or None,
                accept_downloads=False,
                service_workers="block",
                ignore_https_errors=False,
                # A remote node's egress proxy (None: the browser's own, bulk's proxy).
                proxy=self.source.context_proxy(),
            )
            await context.add_init_script(script=js.INIT)
        except PlaywrightError as exc:
            if context is not None:
                with suppress(PlaywrightError, TimeoutError):
                    await asyncio.wait_for(context.close(), CLOSE_TIMEOUT)
            if await self._browser_lost(generation, exc):
                raise BrowserGone(generation) from None
            raise CaptureError(
                f"could not prepare the browser: {str(exc).splitlines()[0]}"
            ) from None
        state.context, state.generation = context, generation
        state.cookies_pending = bool(opts.cookies)
        return context

    async def _add_cookies(self, state: ContextState, context: BrowserContext) -> None:
        """Set the job's cookies; those without a domain wait until a URL is known."""
        if not state.cookies_pending:
            return
        url = state.cookie_url
        cookies: list[Any] = []
        for c in state.options.cookies:
            if c.domain:
                cookies.append(
                    {"name": c.name, "value": c.value, "domain": c.domain, "path": c.path or "/"}
                )
            elif url is None:
                return  # all of them once the first URL is known
            elif c.path:
                cookies.append(
                    {"name": c.name, "value": c.value, "domain": hostname(url), "path": c.path}
                )
            else:
                cookies.append({"name": c.name, "value": c.value, "url": url})
        await context.add_cookies(cookies)
        state.cookies_pending = False

    async def open_context(self, state: ContextState) -> None:
        await self._context(state)

    async def close_context(self, state: ContextState) -> None:
        state.closed = True
        context, state.context = state.context, None
        state.idle.clear()
        if context is not None:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(context.close(), CLOSE_TIMEOUT)

    async def _new_page(self, state: ContextState) -> PageSlot:
        context = await self._context(state)
        page = await context.new_page()
        self.pages_opened += 1
        try:
            cdp = await context.new_cdp_session(page)
            # Chromium scopes device metrics to the DevTools session: without the same
            # override as Playwright's, this session's screenshots come out at scale 1,
            # and its captureBeyondViewport would reset the page to scale 1 afterwards.
            opts = state.options
            await cdp.send(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": opts.width,
                    "height": opts.height,
                    "deviceScaleFactor": opts.scale,
                    "mobile": False,
                    "screenWidth": opts.width,
                    "screenHeight": opts.height,
                    "screenOrientation": {"angle": 0, "type": "landscapePrimary"},
                },
            )
        except BaseException:
            await close_page(page)
            raise
        slot = PageSlot(page=page, cdp=cdp, context=context, crashed=asyncio.Event())

        def on_dialog(dialog: Dialog) -> None:
            # The init script answers alert/confirm/prompt in the page; what still
            # arrives here is beforeunload (accepted, or the next navigation of a
            # reused page would be cancelled) and dialogs of frames it missed.
            action = dialog.accept() if dialog.type == "beforeunload" else dialog.dismiss()
            asyncio.ensure_future(action).add_done_callback(done)

        def on_popup(popup: Page) -> None:
            closing = asyncio.ensure_future(close_page(popup))
            slot.closing.add(closing)
            closing.add_done_callback(slot.closing.discard)

        page.on("dialog", on_dialog)
        page.on("popup", on_popup)
        page.on("crash", lambda _: slot.crashed.set())
        return slot

    def _keep(self, state: ContextState, slot: PageSlot) -> bool:
        return (
            slot.uses < self.config.page_reuse
            and not state.closed
            and not slot.crashed.is_set()
            and slot.context is state.context
            and state.generation == self.generation
            and not slot.page.is_closed()
        )

    async def _discard(self, slot: PageSlot) -> None:
        """Close ``slot``'s page.

        The close goes on even if the capture task is cancelled meanwhile. The caller
        waits ``_DISCARD_WAIT`` at most: a renderer slow to die (crashed after
        ``CLOSE_TIMEOUT``) finishes in the background (``stop`` waits for it), so the
        per-URL deadline stays a deadline.
        """
        task = asyncio.ensure_future(close_hard(slot))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), _DISCARD_WAIT)

    # -- capture ----------------------------------------------------------------------------

    async def capture(
        self,
        state: ContextState,
        url: str | None,
        seconds: float,
        since: float,
        html: str | None = None,
    ) -> Screenshot:
        """Capture ``url`` (or the document ``html``) with a page of ``state``'s
        context within ``seconds``.

        ``since`` is the trio time the attempt started at (for the proxy's refusals).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        generation = self.generation
        memory = self.source.memory_mark()
        slot: PageSlot | None = None
        keep = False
        try:
            async with asyncio.timeout_at(deadline):
                slot = state.idle.pop() if state.idle else await self._new_page(state)
                slot.uses += 1
                shot = await self._watched(
                    slot, capture_on(slot, state, url, deadline, since, self.proxy, html=html)
                )
            keep = True
            return shot
        except TimeoutError:
            raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
        except PlaywrightTimeout:
            raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
        except PlaywrightError as exc:
            if await self._browser_lost(generation, exc):
                raise BrowserGone(generation) from None
            error = map_error(exc)
            # A refused download or a failed navigation leaves a working page.
            keep = not isinstance(error, BrowserCrashed)
            if not keep and self.source.killed_for_memory(memory):
                raise _too_large() from None
            raise error from None
        except PageCrashed:
            if await self._browser_lost(generation, None):
                raise BrowserGone(generation) from None
            if self.source.killed_for_memory(memory):
                raise _too_large() from None
            raise BrowserCrashed("the page's renderer crashed (out of memory?)") from None
        except (CaptureTimeout, BrowserCrashed):
            raise
        except (CaptureError, URLBlocked):
            # HTTP errors, missing selectors, refused URLs...: the page itself is fine.
            keep = True
            raise
        finally:
            if slot is not None:
                if slot.closing:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(asyncio.gather(*slot.closing)), CLOSE_TIMEOUT
                        )
                kept = False
                try:
                    kept = keep and self._keep(state, slot) and await blank(slot.page)
                finally:
                    if kept:
                        state.idle.append(slot)
                    else:
                        await self._discard(slot)

    async def _watched(self, slot: PageSlot, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``, but stop it as soon as the page or the browser dies."""
        task = asyncio.ensure_future(work)
        crashed = asyncio.ensure_future(slot.crashed.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({task, crashed, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (task, crashed, gone):
                if not f.done():
                    f.cancel()
            if not task.done():
                await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is None:
            return task.result()
        if slot.crashed.is_set():
            raise PageCrashed
        if gone.done() and not gone.cancelled():
            raise PlaywrightError("Browser has been closed (disconnected)")
        return task.result()


def _too_large() -> PageTooLarge:
    # The kernel killed the renderer at its memory cgroup's limit (_memory.py).
    return PageTooLarge("the page used more memory than a page may (BULK_RENDERER_MEMORY_MB)")
