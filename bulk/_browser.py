"""The capture engine: a bounded, crash-proof pool of Chromium pages behind a trio API.

This is the only module that imports ``asyncio`` or ``playwright``. Playwright's async
API runs on one asyncio loop on a dedicated thread (``AsyncioThread``); everything
else in bulk sees the trio-native ``BrowserPool`` / ``CaptureSession``:

    async with BrowserPool.open(config, policy) as pool:
        async with pool.session(options, site_url) as session:   # one context per job
            shot = await session.capture(url)                     # -> Screenshot

Why the pieces are shaped this way:
- One Chromium, one browser *context* per job (cookies never cross jobs or API keys),
  pages inside a context reused for ``page_reuse`` captures then replaced.
- Every capture runs under an asyncio deadline inside the engine (typed
  ``CAPTURE_TIMEOUT``), and under a trio deadline outside it (``trio.fail_after``) that
  a page stuck in JS, or a stuck protocol call, cannot stop. Cancellation reaches the
  asyncio task, whose ``finally`` closes the page before the trio caller moves on; a
  page whose renderer does not answer the close is crashed from the renderer's IO
  thread (``Page.crash``) so it stops eating CPU.
- A capture races the page's ``crash`` event and the browser's ``disconnected``
  event, so a dead renderer or a dead Chromium is noticed at once, not at the deadline.
- If Chromium dies, the capture that notices relaunches it (once per generation,
  under a lock; leftovers of the dead browser's process group are killed), the job's
  context is recreated lazily and in-flight URLs are retried once; a second crash on
  the same URL is ``BROWSER_CRASHED``.
- Chromium reaches the network only through bulk's egress proxy (``_proxy.py``),
  which applies the same address policy as the httpx fetches. The proxy's refusals
  (``X-Bulk-Error`` / a refused ``CONNECT``) are told apart from network errors by
  asking the proxy whether it refused one of the hosts this navigation went to.
- Dialogs are answered in the page by an init script (a page looping on ``alert()``
  would otherwise flood the protocol) and popups are stopped by Chromium's own popup
  blocker (no user gesture ever happens); the ``dialog`` and ``popup`` handlers stay
  as a backstop. A page that served a capture is sent to ``about:blank`` before it
  idles, so a late CPU or memory hog cannot spin there or hurt the next capture.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import io
import math
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit

import attrs
import trio
from PIL import Image
from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Dialog,
    Locator,
    Page,
    Playwright,
    Request,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from ._exceptions import (
    BrowserCrashed,
    BrowserUnavailable,
    CaptureError,
    CaptureTimeout,
    DownloadRefused,
    HTTPStatusError,
    InvalidURL,
    NavigationError,
    PageTooLarge,
    SelectorNotFound,
    URLBlocked,
)
from ._options import FULL_PAGE_MAX_HEIGHT, CaptureOptions
from ._policy import EgressPolicy
from ._proxy import EgressProxy, open_egress_proxy
from ._urls import parse_http_url

__all__ = [
    "AsyncioThread",
    "BrowserPool",
    "CaptureSession",
    "PoolConfig",
    "Screenshot",
    "default_concurrency",
]

T = TypeVar("T")

_CLEANUP_TIMEOUT: Final = 15.0
# One page close; a renderer stuck in JS is crashed after this and closed again.
_CLOSE_TIMEOUT: Final = 2.0
# How long a capture waits for its page to close before it returns anyway.
_DISCARD_WAIT: Final = 1.0
# Time on top of the user's per-URL timeout for the outside (trio) deadline: the
# engine's own deadline fires first and gives a precise error; this one is the
# backstop for a capture stuck where the engine's deadline cannot reach.
_DEADLINE_GRACE: Final = 3.0
# How long an error that smells of "closed" waits for the browser's disconnect event
# (the page's error and the browser's disconnect arrive in either order).
_DISCONNECT_WAIT: Final = 1.0
# Device pixels: Chromium's largest texture. A full page is cut here, whatever scale.
_MAX_DEVICE_PIXELS_HIGH: Final = 16384
# Device pixels of one image (RGBA in memory: 4 bytes each, in Chromium and Pillow).
_MAX_DEVICE_PIXELS_AREA: Final = 64 * 1024 * 1024
# Part of the timeout kept for the work after "load" when load is slow: a page whose
# beacon never finishes is captured after DOMContentLoaded rather than not at all.
_AFTER_LOAD_RESERVE: Final = 0.25
# SELECTOR_NOT_FOUND is decided this long before the deadline, so it is not lost in
# a race with CAPTURE_TIMEOUT.
_SELECTOR_MARGIN_MS: Final = 300.0
# How long the element of ``selector`` gets to show once the page is ready (slower
# content is what ``wait_for_selector`` is for).
_ELEMENT_WAIT_MS: Final = 5000.0
_CONSENT_POLL_MS: Final = 1000

# Flags on top of Playwright's own (which already disable breakpad, background
# networking, component updates, sync and the like).
_CHROMIUM_ARGS: Final = (
    "--disable-gpu",
    "--disable-quic",
    "--mute-audio",
    "--hide-scrollbars",
    "--no-pings",
    "--disable-notifications",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    # WebRTC must not send UDP around the proxy.
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy",
    # A page that eats memory kills its own renderer, not the machine.
    "--js-flags=--max-old-space-size=512",
)


_PR_CAPBSET_READ: Final = 23
_PR_CAPBSET_DROP: Final = 24
_CAP_SYS_NICE: Final = 23


def _no_priority_boost() -> None:
    """Keep Chromium from raising its threads above bulk's own (call on the thread
    that starts Playwright).

    Run as root, Chromium puts its compositor and IO threads at nice -8; with the CPU
    full they then starve bulk's threads (scripts/bench-api: status answers slower
    several-fold). Dropping CAP_SYS_NICE from this thread's bounding set means the
    processes it starts from now on (Playwright's driver, and Chromium under it) can
    no longer raise a priority. Other threads keep theirs; a no-op when not root.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_CAPBSET_READ, _CAP_SYS_NICE, 0, 0, 0) == 1:
            libc.prctl(_PR_CAPBSET_DROP, _CAP_SYS_NICE, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: nothing to drop
        pass


def default_concurrency() -> int:
    """Pages captured at once by default: measured best on 2-8 cores (see scripts/bench)."""
    return max(2, min(8, (os.cpu_count() or 2) * 2))


@attrs.frozen(kw_only=True)
class PoolConfig:
    """How the pool runs Chromium.

    Args:
        executable: The Chromium binary (``_config.find_chromium``).
        concurrency: Pages capturing at the same time, across all sessions.
        page_reuse: Captures a page serves before it is replaced by a fresh one.
        launch_timeout: Seconds Chromium gets to start.
        extra_args: More Chromium switches (appended after bulk's own).
        nice: CPU niceness (0-19) of the capture side: Playwright's thread in this
            process, its driver and Chromium. ``bulk serve`` raises it so the API
            answers at once while captures use the rest of the CPU.
    """

    executable: str
    concurrency: int = attrs.field(factory=default_concurrency)
    page_reuse: int = attrs.field(default=20)
    launch_timeout: float = 30.0
    extra_args: tuple[str, ...] = ()
    nice: int = attrs.field(default=0, validator=attrs.validators.in_(range(20)))

    @concurrency.validator
    def _check_concurrency(self, _: object, value: int) -> None:
        if not 1 <= value <= 64:
            raise ValueError("concurrency must be between 1 and 64")

    @page_reuse.validator
    def _check_page_reuse(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("page_reuse must be at least 1")


@attrs.frozen(kw_only=True)
class Screenshot:
    """One captured image and what is known about the page it came from."""

    data: bytes
    format: str
    width: int
    height: int
    final_url: str
    http_status: int | None
    elapsed: float


@final
class AsyncioThread:
    """One asyncio event loop on a daemon thread; trio tasks run coroutines on it.

    Resource handling: ``start`` creates the thread; ``stop`` stops the loop, cancels
    and drains whatever is still on it, and joins the thread.
    """

    def __init__(self, name: str = "bulk-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "AsyncioThread not started"
        return self._loop

    def start(self) -> None:
        """Start the thread and its loop; returns once the loop is running."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    async def stop(self) -> None:
        """Stop the loop and wait for its thread to end (without blocking trio)."""
        if self._loop is None or self._thread is None:
            return
        loop, thread = self._loop, self._thread
        with suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join, _CLEANUP_TIMEOUT)
        self._thread = None

    async def run(
        self,
        fn: Callable[[], Coroutine[Any, Any, T]],
        *,
        cleanup_timeout: float = _CLEANUP_TIMEOUT,
    ) -> T:
        """Run ``fn()`` as an asyncio task on the loop thread and await its result.

        Args:
            fn: Makes the coroutine; called on the loop thread, where it runs.
            cleanup_timeout: How long a cancelled call waits for the asyncio task's
                own cleanup (``finally`` blocks that close pages) to finish.

        Returns:
            The coroutine's result; its exception is re-raised in trio as is.

        Raises:
            RuntimeError: The loop was stopped under the call.

        Cancellation:
            Cancelling the trio caller (or Ctrl-C arriving here) cancels the asyncio
            task, then waits (shielded, up to ``cleanup_timeout``) until the task has
            really finished, so no page or context is left half-used behind the caller.
        """
        loop = self.loop
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[asyncio.Task[T]] = []

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # trio already gone
                token.run_sync_soon(done.set)

        def start_task() -> None:
            try:
                task = loop.create_task(fn())
            except BaseException:
                token.run_sync_soon(done.set)
                raise
            task.add_done_callback(wake)
            box.append(task)

        def cancel_task() -> None:
            # call_soon_threadsafe is FIFO: start_task has run, the task exists.
            if box:
                box[0].cancel()

        loop.call_soon_threadsafe(start_task)
        try:
            await done.wait()
        except BaseException:  # trio.Cancelled, or KeyboardInterrupt delivered here
            with suppress(RuntimeError):  # the loop is closed: nothing left to cancel
                loop.call_soon_threadsafe(cancel_task)
            with trio.CancelScope(shield=True), trio.move_on_after(cleanup_timeout):
                await done.wait()
            raise
        if not box or box[0].cancelled():
            raise RuntimeError("the asyncio loop stopped under a browser call")
        return box[0].result()


# --------------------------------------------------------------------------------------
# asyncio side: everything below until BrowserPool runs on the loop thread.


class _BrowserGone(Exception):
    """Chromium disconnected under a capture; ``generation`` is the dead browser's."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"browser generation {generation} is gone")
        self.generation = generation


class _PageCrashed(Exception):
    """The page's renderer died (its ``crash`` event) during a capture."""


@attrs.define(eq=False)
class _PageSlot:
    page: Page
    cdp: CDPSession
    context: BrowserContext
    crashed: asyncio.Event
    uses: int = 0
    # Popups being closed; a capture waits for them before it returns.
    closing: set[asyncio.Future[None]] = attrs.field(factory=set)


@attrs.define(eq=False)
class _ContextState:
    """A job's browser context, rebuilt lazily when the browser was relaunched."""

    options: CaptureOptions
    cookie_url: str | None
    context: BrowserContext | None = None
    generation: int = -1
    idle: list[_PageSlot] = attrs.field(factory=list)
    closed: bool = False
    lock: asyncio.Lock | None = None
    # None: not checked yet; "" valid; otherwise the error message.
    selector_error: str | None = None
    cookies_pending: bool = False


# Dialogs never show in a screenshot, and answering each one through the protocol
# costs a round trip: a page looping on alert() would flood it. Answers are the ones
# a dismissed dialog gives.
_INIT_JS: Final = r"""
(() => {
  const quiet = {
    alert() {}, confirm() { return false; }, prompt() { return null; }, print() {},
  };
  for (const [name, fn] of Object.entries(quiet)) {
    try { Object.defineProperty(window, name, {value: fn, writable: true, configurable: true}); }
    catch (e) {}
  }
})();
"""

# Known consent managers' accept buttons, then "Accept all"-like buttons inside
# something that calls itself cookie/consent/privacy. Polls a short while, since
# consent managers usually inject their banner after load.
_DISMISS_CONSENT_JS: Final = r"""
async (pollMs) => {
  const selectors = [
    '#onetrust-accept-btn-handler', '#accept-recommended-btn-handler',
    '#CybotCookiebotDialogBodyLevelButtonLevelOptinAllowAll',
    '#CybotCookiebotDialogBodyButtonAccept', '#didomi-notice-agree-button',
    '#truste-consent-button', '.qc-cmp2-summary-buttons button[mode="primary"]',
    '[data-testid="uc-accept-all-button"]', '.cky-btn-accept', '.cmplz-accept',
    '[data-tid="banner-accept"]', '.osano-cm-accept-all', '.cc-allow', '.cc-dismiss',
    '#cookie-accept', '#accept-cookies', '.js-cookie-accept', '[data-cookie-accept]',
    '#gdpr-cookie-accept', '.iubenda-cs-accept-btn', '#hs-eu-confirmation-button',
  ];
  const containers = [
    '#onetrust-consent-sdk', '#onetrust-banner-sdk', '#CybotCookiebotDialog', '#didomi-host',
    '#truste-consent-track', '.qc-cmp2-container', '#usercentrics-root', '.cky-consent-container',
    '.cmplz-cookiebanner', '.osano-cm-window', '.cc-window', '#iubenda-cs-banner',
    '#hs-eu-cookie-confirmation',
  ];
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
  };
  const roots = () => {
    const out = [document];
    for (const el of document.querySelectorAll('*')) if (el.shadowRoot) out.push(el.shadowRoot);
    return out;
  };
  const words = /^\s*(accept all( cookies)?|accept( cookies)?|allow all( cookies)?|allow cookies|i agree|agree|agree and (close|continue)|got it|ok|okay|i understand)\s*[.!]?\s*$/i;
  const near = /cookie|consent|gdpr|privacy|cmp/i;
  const attempt = () => {
    let clicked = 0;
    for (const root of roots()) for (const sel of selectors) {
      for (const el of root.querySelectorAll(sel)) {
        if (visible(el)) { el.click(); clicked++; break; }
      }
    }
    if (clicked) return clicked;
    for (const root of roots()) {
      for (const el of root.querySelectorAll('button, a, [role="button"], input[type="button"], input[type="submit"]')) {
        const text = (el.innerText || el.value || '').trim();
        if (!words.test(text) || !visible(el)) continue;
        let node = el, hit = false;
        for (let i = 0; node && i < 8; i++, node = node.parentElement) {
          const label = node.getAttribute ? (node.getAttribute('aria-label') || '') : '';
          const cls = typeof node.className === 'string' ? node.className : '';
          if (near.test((node.id || '') + ' ' + cls + ' ' + label)) { hit = true; break; }
        }
        if (hit) { el.click(); return 1; }
      }
    }
    return 0;
  };
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const start = performance.now();
  let clicked = attempt();
  while (!clicked && performance.now() - start < pollMs) { await sleep(100); clicked = attempt(); }
  if (clicked) await sleep(300);  // banners animate away
  // Whatever a known consent manager still shows after the click is hidden.
  const sheet = new CSSStyleSheet();
  for (const sel of containers) sheet.insertRule(sel + ' { display: none !important; }', 0);
  if (clicked) document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  return clicked;
}
"""

_CHECK_SELECTORS_JS: Final = r"""
(selectors) => {
  for (const [field, sel] of selectors) {
    try { document.createDocumentFragment().querySelector(sel); }
    catch (e) { return field + ': ' + sel; }
  }
  return '';
}
"""

_HIDE_SELECTORS_JS: Final = r"""
(selectors) => {
  const sheet = new CSSStyleSheet();
  for (const sel of selectors) sheet.insertRule(sel + ' { display: none !important; }', sheet.cssRules.length);
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
}
"""

# After load: web fonts, then two frames, so what is painted is what was laid out.
_SETTLE_JS: Final = r"""
async () => {
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  try { await Promise.race([document.fonts.ready, sleep(1000)]); } catch (e) {}
  await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), sleep(300)]);
}
"""

# Scroll down in viewport steps so lazy images and infinite lists load, give started
# image loads a moment, then back up. Bounded by a pixel cap and a time budget: an
# infinite page ends at the cap, it does not hang.
_SCROLL_JS: Final = r"""
async ([maxHeight, budgetMs]) => {
  const start = performance.now();
  const left = () => budgetMs - (performance.now() - start);
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  const frame = () => Promise.race([new Promise(r => requestAnimationFrame(() => r())), sleep(100)]);
  const height = () => Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);
  const step = Math.max(200, Math.floor(window.innerHeight * 0.9));
  let y = 0;
  while (left() > 0) {
    const bottom = Math.min(height(), maxHeight);
    if (y + window.innerHeight >= bottom) {
      if (bottom >= maxHeight) break;
      // At the bottom: an infinite list appends more after a frame or a fetch.
      const before = height();
      const waited = performance.now();
      while (height() <= before && performance.now() - waited < 300 && left() > 0) await sleep(50);
      if (height() <= before) break;
      continue;
    }
    y += step;
    window.scrollTo(0, y);
    await frame();
    await sleep(50);
  }
  const imagesBudget = Math.min(3000, left());
  const imagesStart = performance.now();
  // Images in the captured area that started loading (lazy ones outside it never will).
  const loading = () => Array.from(document.images).some(i => {
    if (i.complete) return false;
    const r = i.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.right > 0 && r.left < innerWidth && r.top + scrollY < maxHeight;
  });
  while (loading() && performance.now() - imagesStart < imagesBudget) await sleep(50);
  window.scrollTo(0, 0);
  await frame();
  await frame();
  return Math.min(height(), maxHeight);
}
"""

# The element's box in document coordinates, scrolled into view first when it is not.
_ELEMENT_BOX_JS: Final = r"""
async (el) => {
  const inside = (r) => r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth;
  if (!inside(el.getBoundingClientRect())) {
    el.scrollIntoView({block: 'nearest', inline: 'nearest'});
    await Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), new Promise(r => setTimeout(r, 300))]);
  }
  const r = el.getBoundingClientRect();
  return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, fits: inside(r)};
}
"""


def _image_size(data: bytes) -> tuple[int, int]:
    # Reads the header only: no pixel decoding on the capture path.
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _looks_closed(exc: BaseException) -> bool:
    # Not "crashed": Chromium itself reports a renderer crash, so it is alive.
    text = str(exc).lower()
    return "closed" in text or "disconnected" in text


def _net_error(exc: BaseException) -> str | None:
    text = str(exc)
    i = text.find("net::ERR_")
    if i < 0:
        return None
    return text[i + 5 :].split()[0].rstrip(".;:,")


def _hostname(url: str) -> str:
    try:
        return parse_http_url(url).hostname
    except InvalidURL:
        return urlsplit(url).hostname or ""


def _map_error(exc: PlaywrightError) -> CaptureError:
    """A Playwright error of a page that is still alive, as a typed capture error."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "Download is starting" in text:
        return DownloadRefused("the URL answered with a file download, not a page")
    if "crashed" in text.lower():
        return BrowserCrashed("the page's renderer crashed (out of memory?)")
    net = _net_error(exc)
    if net is not None:
        return NavigationError(f"could not load the page: {net}", details={"net_error": net})
    return NavigationError(f"could not load the page: {first[:300]}")


def _done(future: asyncio.Future[Any]) -> None:
    # Retrieve the exception of a fire-and-forget future, so asyncio does not log it.
    if not future.cancelled():
        future.exception()


@final
class _Engine:
    """Owns Playwright and Chromium on the loop thread. Not thread-safe: loop only."""

    def __init__(self, config: PoolConfig, proxy: EgressProxy | None) -> None:
        self.config = config
        self.proxy = proxy
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None
        self.generation = 0
        self.pid: int | None = None
        self.pages_opened = 0
        self._gone = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    # -- browser lifetime ----------------------------------------------------------------

    async def start(self) -> None:
        _no_priority_boost()
        if self.config.nice:
            # This thread's niceness, inherited by the processes it starts.
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.nice)
        self.playwright = await async_playwright().start()
        await self.launch()

    async def launch(self) -> None:
        assert self.playwright is not None
        proxy: Any = None
        if self.proxy is not None:
            # No credentials: given some, Playwright intercepts every request and
            # switches the HTTP cache off (see open_egress_proxy's require_auth).
            proxy = {"server": self.proxy.url}
        try:
            browser = await self.playwright.chromium.launch(
                executable_path=self.config.executable,
                headless=True,
                args=[*_CHROMIUM_ARGS, *self.config.extra_args],
                # Playwright turns Chromium's popup blocker off; bulk wants it on: no
                # user ever clicks, so no page gets to open windows.
                ignore_default_args=["--disable-popup-blocking"],
                proxy=proxy,
                timeout=self.config.launch_timeout * 1000,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        except PlaywrightError as exc:
            raise BrowserUnavailable(
                f"Chromium at {self.config.executable} did not start: {str(exc).splitlines()[0]}"
            ) from None
        gone = asyncio.Event()
        browser.on("disconnected", lambda _: gone.set())
        self.browser, self._gone = browser, gone
        self.generation += 1
        self.pid = await _browser_pid(browser)

    async def relaunch(self, generation: int) -> None:
        """Replace the browser if it is still the one from ``generation``."""
        if generation != self.generation:
            return
        old, old_pid = self.browser, self.pid
        self.browser, self.pid = None, None
        if old is not None:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(old.close(), _CLOSE_TIMEOUT)
        if old_pid is not None:
            _kill_process_group(old_pid)
        await self.launch()

    async def stop(self) -> None:
        pid = self.pid
        try:
            if self._closing:
                await asyncio.wait(self._closing, timeout=_CLOSE_TIMEOUT * 2)
            if self.browser is not None:
                await asyncio.wait_for(self.browser.close(), _CLEANUP_TIMEOUT)
        except (PlaywrightError, TimeoutError):
            pass
        finally:
            self.browser = None
            try:
                if self.playwright is not None:
                    await asyncio.wait_for(self.playwright.stop(), _CLEANUP_TIMEOUT)
            except (PlaywrightError, TimeoutError, OSError):
                pass
            finally:
                self.playwright = None
                # Last resort: nothing of this browser may outlive the pool.
                if pid is not None:
                    _kill_process_group(pid)

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
        if exc is not None and _looks_closed(exc):
            gone = self._gone
            with suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), _DISCONNECT_WAIT)
            return gone.is_set()
        return False

    # -- contexts and pages ----------------------------------------------------------------

    async def _context(self, state: _ContextState) -> BrowserContext:
        if state.lock is None:
            state.lock = asyncio.Lock()
        # Concurrent captures of one job must not each build a context after a relaunch.
        async with state.lock:
            return await self._context_locked(state)

    async def _context_locked(self, state: _ContextState) -> BrowserContext:
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
                    raise _BrowserGone(generation) from None
                raise CaptureError(
                    f"the cookies could not be set: {str(exc).splitlines()[0]}",
                    details={"field": "cookies"},
                ) from None
        return context

    async def _new_context(self, state: _ContextState) -> BrowserContext:
        browser = self.browser
        generation = self.generation
        if browser is None or not browser.is_connected():
            raise _BrowserGone(generation)
        opts = state.options
        state.idle.clear()
        context: BrowserContext | None = None
        try:
            context = await browser.new_context(
                viewport={"width": opts.width, "height": opts.height},
                device_scale_factor=opts.scale,
                color_scheme="dark" if opts.dark_mode else "light",
                user_agent=opts.user_agent,
                extra_http_headers=dict(opts.headers) or None,
                accept_downloads=False,
                service_workers="block",
                ignore_https_errors=False,
            )
            await context.add_init_script(script=_INIT_JS)
        except PlaywrightError as exc:
            if context is not None:
                with suppress(PlaywrightError, TimeoutError):
                    await asyncio.wait_for(context.close(), _CLOSE_TIMEOUT)
            if await self._browser_lost(generation, exc):
                raise _BrowserGone(generation) from None
            raise CaptureError(
                f"could not prepare the browser: {str(exc).splitlines()[0]}"
            ) from None
        state.context, state.generation = context, generation
        state.cookies_pending = bool(opts.cookies)
        return context

    async def _add_cookies(self, state: _ContextState, context: BrowserContext) -> None:
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
                    {"name": c.name, "value": c.value, "domain": _hostname(url), "path": c.path}
                )
            else:
                cookies.append({"name": c.name, "value": c.value, "url": url})
        await context.add_cookies(cookies)
        state.cookies_pending = False

    async def open_context(self, state: _ContextState) -> None:
        await self._context(state)

    async def close_context(self, state: _ContextState) -> None:
        state.closed = True
        context, state.context = state.context, None
        state.idle.clear()
        if context is not None:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(context.close(), _CLOSE_TIMEOUT)

    async def _new_page(self, state: _ContextState) -> _PageSlot:
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
            await _close_page(page)
            raise
        slot = _PageSlot(page=page, cdp=cdp, context=context, crashed=asyncio.Event())

        def on_dialog(dialog: Dialog) -> None:
            # The init script answers alert/confirm/prompt in the page; what still
            # arrives here is beforeunload (accepted, or the next navigation of a
            # reused page would be cancelled) and dialogs of frames it missed.
            action = dialog.accept() if dialog.type == "beforeunload" else dialog.dismiss()
            asyncio.ensure_future(action).add_done_callback(_done)

        def on_popup(popup: Page) -> None:
            closing = asyncio.ensure_future(_close_page(popup))
            slot.closing.add(closing)
            closing.add_done_callback(slot.closing.discard)

        page.on("dialog", on_dialog)
        page.on("popup", on_popup)
        page.on("crash", lambda _: slot.crashed.set())
        return slot

    def _keep(self, state: _ContextState, slot: _PageSlot) -> bool:
        return (
            slot.uses < self.config.page_reuse
            and not state.closed
            and not slot.crashed.is_set()
            and slot.context is state.context
            and state.generation == self.generation
            and not slot.page.is_closed()
        )

    async def _discard(self, slot: _PageSlot) -> None:
        """Close ``slot``'s page.

        The close goes on even if the capture task is cancelled meanwhile. The caller
        waits ``_DISCARD_WAIT`` at most: a renderer slow to die (crashed after
        ``_CLOSE_TIMEOUT``) finishes in the background (``stop`` waits for it), so the
        per-URL deadline stays a deadline.
        """
        task = asyncio.ensure_future(_close_hard(slot))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), _DISCARD_WAIT)

    # -- capture ----------------------------------------------------------------------------

    async def capture(
        self, state: _ContextState, url: str, seconds: float, since: float
    ) -> Screenshot:
        """Capture ``url`` with a page of ``state``'s context within ``seconds``.

        ``since`` is the trio time the attempt started at (for the proxy's refusals).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        generation = self.generation
        slot: _PageSlot | None = None
        keep = False
        try:
            async with asyncio.timeout_at(deadline):
                slot = state.idle.pop() if state.idle else await self._new_page(state)
                slot.uses += 1
                shot = await self._watched(
                    slot, self._capture_on(slot, state, url, deadline, since)
                )
            keep = True
            return shot
        except TimeoutError:
            raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
        except PlaywrightTimeout:
            raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
        except PlaywrightError as exc:
            if await self._browser_lost(generation, exc):
                raise _BrowserGone(generation) from None
            error = _map_error(exc)
            # A refused download or a failed navigation leaves a working page.
            keep = not isinstance(error, BrowserCrashed)
            raise error from None
        except _PageCrashed:
            if await self._browser_lost(generation, None):
                raise _BrowserGone(generation) from None
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
                            asyncio.shield(asyncio.gather(*slot.closing)), _CLOSE_TIMEOUT
                        )
                kept = False
                try:
                    kept = keep and self._keep(state, slot) and await _blank(slot.page)
                finally:
                    if kept:
                        state.idle.append(slot)
                    else:
                        await self._discard(slot)

    async def _watched(self, slot: _PageSlot, work: Coroutine[Any, Any, T]) -> T:
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
            raise _PageCrashed
        if gone.done() and not gone.cancelled():
            raise PlaywrightError("Browser has been closed (disconnected)")
        return task.result()

    async def _capture_on(
        self,
        slot: _PageSlot,
        state: _ContextState,
        url: str,
        deadline: float,
        since: float,
    ) -> Screenshot:
        loop = asyncio.get_running_loop()
        started = loop.time()
        opts = state.options

        def remaining_ms(margin: float = 0.0) -> float:
            # Never 0: Playwright reads a timeout of 0 as "no timeout".
            return max(1.0, (deadline - loop.time()) * 1000 - margin)

        page = slot.page
        await self._check_selectors(page, state)

        hosts = {_hostname(url)}

        def on_request(request: Request) -> None:
            # Every main-frame navigation request, redirects included: a refusal of
            # any of them by the proxy explains a failed navigation.
            with suppress(PlaywrightError):
                if request.is_navigation_request() and request.frame.parent_frame is None:
                    hosts.add(_hostname(request.url))

        page.on("request", on_request)
        try:
            response = await page.goto(url, wait_until="domcontentloaded", timeout=remaining_ms())
        except PlaywrightTimeout:
            raise CaptureTimeout(f"page did not load within {opts.timeout} ms") from None
        except PlaywrightError:
            if self._refused(hosts, since):
                raise URLBlocked("the egress policy blocked this page or a redirect") from None
            raise
        finally:
            page.remove_listener("request", on_request)

        status = response.status if response is not None else None
        final_url = page.url
        if response is not None and status is not None and status >= 400:
            self._check_proxy_answer(response.headers, status, hosts, since)
            raise HTTPStatusError(
                f"the page answered HTTP {status}", http_status=status, final_url=final_url
            )
        try:
            # A page may navigate itself (a JS or meta redirect) while it is being
            # prepared: the new document gets the same treatment, twice at most.
            for again in (True, True, False):
                try:
                    data = await self._prepare_and_shoot(slot, opts, remaining_ms)
                    break
                except PlaywrightError as exc:
                    if not again or "context was destroyed" not in str(exc):
                        raise
                    with suppress(PlaywrightTimeout):
                        await page.wait_for_load_state(
                            "domcontentloaded", timeout=remaining_ms(_SELECTOR_MARGIN_MS)
                        )
            final_url = page.url
            if self._refused({_hostname(final_url)}, since):
                # What is showing is the proxy's refusal (or Chromium's error page).
                raise URLBlocked("the egress policy blocked where the page navigated to")
        except CaptureError as exc:
            exc.http_status = exc.http_status or status
            exc.final_url = exc.final_url or final_url
            raise
        width, height = _image_size(data)
        return Screenshot(
            data=data,
            format=opts.format,
            width=width,
            height=height,
            final_url=final_url,
            http_status=status,
            elapsed=loop.time() - started,
        )

    async def _prepare_and_shoot(
        self, slot: _PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
    ) -> bytes:
        """Wait as the options say, clean the page up, take the image."""
        page = slot.page
        # "load" gets most of the time left; a beacon that never finishes must not
        # cost the whole capture.
        with suppress(PlaywrightTimeout):
            await page.wait_for_load_state(
                "load", timeout=remaining_ms(opts.timeout * _AFTER_LOAD_RESERVE)
            )
        await page.evaluate(_SETTLE_JS)
        if opts.wait_for_selector:
            await _until_visible(
                page.locator("css=" + opts.wait_for_selector).first,
                remaining_ms(_SELECTOR_MARGIN_MS),
                f"wait_for_selector {opts.wait_for_selector!r} did not appear",
            )
        if opts.delay:
            await asyncio.sleep(min(opts.delay, remaining_ms(0)) / 1000)
        if opts.block_selectors:
            await page.evaluate(_HIDE_SELECTORS_JS, list(opts.block_selectors))
        if opts.dismiss_cookie_consent:
            await page.evaluate(_DISMISS_CONSENT_JS, min(_CONSENT_POLL_MS, remaining_ms(0) / 4))
        if opts.selector:
            return await self._element_shot(slot, opts, remaining_ms)
        return await self._page_shot(slot, opts, remaining_ms)

    async def _check_selectors(self, page: Page, state: _ContextState) -> None:
        """Refuse an invalid CSS selector once per job, before any navigation."""
        opts = state.options
        if state.selector_error is None:
            pairs = [["block_selectors", s] for s in opts.block_selectors]
            for field in ("selector", "wait_for_selector"):
                value = getattr(opts, field)
                if value:
                    pairs.append([field, value])
            state.selector_error = await page.evaluate(_CHECK_SELECTORS_JS, pairs) if pairs else ""
        if state.selector_error:
            field, _, selector = state.selector_error.partition(": ")
            raise CaptureError(
                f"{field} has an invalid CSS selector: {selector!r}",
                details={"field": field, "selector": selector},
            )

    def _refused(self, hosts: Iterable[str], since: float) -> bool:
        proxy = self.proxy
        return proxy is not None and any(proxy.recently_blocked(h, since) for h in hosts if h)

    def _check_proxy_answer(
        self, headers: dict[str, str], status: int, hosts: set[str], since: float
    ) -> None:
        """Tell the egress proxy's own answers (refusal, unreachable) from the site's."""
        if self.proxy is None:
            return
        code = headers.get("x-bulk-error")
        if code == URLBlocked.code and self._refused(hosts, since):
            raise URLBlocked("the egress policy blocked this page or a redirect")
        if code == NavigationError.code and status == 502:
            raise NavigationError(
                "could not connect to the server", details={"net_error": "PROXY_CONNECT_FAILED"}
            )

    async def _page_shot(
        self, slot: _PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
    ) -> bytes:
        params: dict[str, Any] = {"format": opts.format, "optimizeForSpeed": True}
        if opts.format != "png":
            params["quality"] = opts.quality
        if opts.full_page:
            max_css = _max_css_height(opts.width, opts.scale)
            budget = min(8000.0, remaining_ms(0) / 2)
            height = await slot.page.evaluate(_SCROLL_JS, [max_css, budget])
            height = max(1, min(int(height), max_css))
            params["captureBeyondViewport"] = True
            # Document coordinates, CSS pixels; scale 1 keeps the emulated device
            # scale factor, so the image is (width x height) * scale device pixels.
            params["clip"] = {"x": 0, "y": 0, "width": opts.width, "height": height, "scale": 1}
        result = await slot.cdp.send("Page.captureScreenshot", params)
        return base64.b64decode(result["data"])

    async def _element_shot(
        self, slot: _PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
    ) -> bytes:
        assert opts.selector is not None
        locator = slot.page.locator("css=" + opts.selector).first
        await _until_visible(
            locator,
            min(remaining_ms(_SELECTOR_MARGIN_MS), _ELEMENT_WAIT_MS),
            f"selector {opts.selector!r} matched no visible element",
        )
        box = await locator.evaluate(_ELEMENT_BOX_JS, timeout=remaining_ms(0))
        if box["width"] < 1 or box["height"] < 1:
            raise SelectorNotFound(f"selector {opts.selector!r} matched an empty element")
        # Whole device pixels around the box (what Playwright's element screenshot does).
        x0, y0 = math.floor(box["x"]), math.floor(box["y"])
        width = math.ceil(box["x"] + box["width"]) - x0
        height = math.ceil(box["y"] + box["height"]) - y0
        if (
            height * opts.scale > _MAX_DEVICE_PIXELS_HIGH
            or width * opts.scale > _MAX_DEVICE_PIXELS_HIGH
            or width * height * opts.scale**2 > _MAX_DEVICE_PIXELS_AREA
        ):
            raise PageTooLarge(f"the element is {width} x {height} px, over the image cap")
        params: dict[str, Any] = {
            "format": opts.format,
            "optimizeForSpeed": True,
            "captureBeyondViewport": not box["fits"],
            "clip": {"x": x0, "y": y0, "width": width, "height": height, "scale": 1},
        }
        if opts.format != "png":
            params["quality"] = opts.quality
        result = await slot.cdp.send("Page.captureScreenshot", params)
        return base64.b64decode(result["data"])


async def _until_visible(locator: Locator, budget_ms: float, message: str) -> None:
    """Wait until ``locator`` shows an element, or raise ``SelectorNotFound``.

    The limit is an asyncio timer, not Playwright's own timeout: that one is decided
    in the driver process and may arrive after the capture's deadline on a busy
    machine, which would turn a missing selector into ``CAPTURE_TIMEOUT``.
    """
    try:
        await asyncio.wait_for(
            locator.wait_for(state="visible", timeout=budget_ms + 5000), budget_ms / 1000
        )
    except (TimeoutError, PlaywrightTimeout):
        raise SelectorNotFound(message) from None


def _max_css_height(width: int, scale: float) -> int:
    """The tallest full page, in CSS pixels, for a viewport ``width`` and ``scale``."""
    by_texture = _MAX_DEVICE_PIXELS_HIGH / scale
    by_area = _MAX_DEVICE_PIXELS_AREA / (width * scale * scale)
    return max(1, int(min(FULL_PAGE_MAX_HEIGHT, by_texture, by_area)))


async def _browser_pid(browser: Browser) -> int | None:
    """The browser process's PID, as Chromium itself reports it."""
    try:
        cdp = await browser.new_browser_cdp_session()
        try:
            info = await asyncio.wait_for(cdp.send("SystemInfo.getProcessInfo"), _CLOSE_TIMEOUT)
        finally:
            with suppress(PlaywrightError):
                await cdp.detach()
    except (PlaywrightError, TimeoutError):
        return None
    for process in info.get("processInfo", ()):
        if process.get("type") == "browser":
            return int(process["id"])
    return None


async def _blank(page: Page) -> bool:
    """Leave the captured document for ``about:blank``; False if the page would not.

    An idle page must not go on running the last site's JS (timers, a CPU or memory
    hog that starts late, network), and the next capture must never see its pixels.
    """
    try:
        await asyncio.wait_for(page.goto("about:blank"), _CLOSE_TIMEOUT)
    except (PlaywrightError, TimeoutError):
        return False
    return True


async def _close_page(page: Page) -> None:
    with suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(page.close(run_before_unload=False), _CLOSE_TIMEOUT)


async def _close_hard(slot: _PageSlot) -> None:
    """Close the page; a renderer that does not answer is crashed first."""
    try:
        await asyncio.wait_for(slot.page.close(run_before_unload=False), _CLOSE_TIMEOUT)
        return
    except PlaywrightError:
        return  # already closed, or the browser is gone
    except TimeoutError:
        pass
    # Page.crash is handled on the renderer's IO thread: it works while JS spins.
    with suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(slot.cdp.send("Page.crash"), _CLOSE_TIMEOUT / 2)
    await _close_page(slot.page)


def _kill_process_group(pgid: int) -> None:
    """SIGKILL what is left of a browser's process group (Playwright starts Chromium
    as a group leader); only Chromium processes are touched (Linux ``/proc``)."""
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        lparen, rparen = stat.find("("), stat.rfind(")")
        name = stat[lparen + 1 : rparen]
        fields = stat[rparen + 2 :].split()
        if len(fields) < 3 or fields[0] == "Z" or int(fields[2]) != pgid:
            continue
        if "chrom" in name.lower():
            with suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


# --------------------------------------------------------------------------------------
# trio side


@final
class BrowserPool:
    """A bounded pool of Chromium pages, trio-native. Open it with ``BrowserPool.open``.

    Resource handling: the pool owns the asyncio thread, Playwright, Chromium and the
    egress proxy; leaving ``open``'s context closes all of them, also on error or
    cancellation (shielded, with a deadline), so no Chromium process outlives it.
    """

    def __init__(
        self,
        config: PoolConfig,
        thread: AsyncioThread,
        engine: _Engine,
        proxy: EgressProxy | None,
    ) -> None:
        self.config = config
        self._thread = thread
        self._engine = engine
        self._proxy = proxy
        self._limiter = trio.CapacityLimiter(config.concurrency)
        self._relaunch_lock = trio.Lock()
        self.relaunches = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: PoolConfig, policy: EgressPolicy | None = None
    ) -> AsyncIterator[BrowserPool]:
        """Start Chromium (behind an egress proxy applying ``policy``) and yield the pool.

        Args:
            config: Executable, concurrency and reuse settings.
            policy: The address policy for every connection Chromium makes; ``None``
                means no proxy (only for trusted, offline measurements).

        Raises:
            BrowserUnavailable: Chromium could not be started.

        Resource handling:
            Leaving the block closes Chromium, Playwright and the asyncio thread,
            shielded from cancellation and bounded in time; leftovers of Chromium's
            process group are killed.
        """
        async with _maybe_proxy(policy) as proxy:
            thread = AsyncioThread()
            thread.start()
            engine = _Engine(config, proxy)
            try:
                try:
                    await thread.run(engine.start)
                except BaseException:
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT):
                        await thread.run(engine.stop)
                    raise
                pool = cls(config, thread, engine, proxy)
                try:
                    yield pool
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT * 2):
                        await thread.run(engine.stop)
            finally:
                await thread.stop()

    @property
    def browser_pid(self) -> int | None:
        """PID of the current Chromium browser process (tests kill it to prove recovery)."""
        return self._engine.pid

    @property
    def pages_opened(self) -> int:
        """Pages opened since the pool started (page reuse shows as a low number)."""
        return self._engine.pages_opened

    async def page_count(self) -> int:
        """Pages open in Chromium right now, idle ones and popups included."""
        return await self._thread.run(self._engine.page_count)

    @asynccontextmanager
    async def session(
        self, options: CaptureOptions, site_url: str | None = None
    ) -> AsyncIterator[CaptureSession]:
        """A capture session: one fresh browser context for one job.

        Args:
            options: The job's capture options (viewport, cookies, headers...).
            site_url: URL for cookies given without a domain (default: the first
                URL captured).

        Resource handling:
            The context and its pages are closed when the block ends (shielded).
        """
        state = _ContextState(options=options, cookie_url=site_url)
        session = CaptureSession(self, state)
        try:
            await self._with_relaunch(lambda: self._engine.open_context(state))
            yield session
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLEANUP_TIMEOUT):
                await self._thread.run(lambda: self._engine.close_context(state))

    async def capture(
        self, url: str, options: CaptureOptions, site_url: str | None = None
    ) -> Screenshot:
        """One capture in its own short-lived context (``bulk shot``, ``GET /screenshot``)."""
        async with self.session(options, site_url or url) as session:
            return await session.capture(url)

    async def _with_relaunch(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            return await self._thread.run(fn)
        except _BrowserGone as gone:
            await self._relaunch(gone.generation)
        try:
            return await self._thread.run(fn)
        except _BrowserGone as gone:
            await self._relaunch(gone.generation)
            raise BrowserCrashed("Chromium crashed twice while opening a session") from None

    async def _relaunch(self, generation: int) -> None:
        async with self._relaunch_lock:
            if self._engine.generation == generation:
                self.relaunches += 1
                await self._thread.run(lambda: self._engine.relaunch(generation))

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        # One of the pool's slots for this task, unless it holds one already.
        if trio.lowlevel.current_task() in self._limiter.statistics().borrowers:
            yield
            return
        async with self._limiter:
            yield

    async def _capture(self, state: _ContextState, url: str) -> Screenshot:
        # Chromium would happily show file:, data: or chrome: URLs, none of which
        # pass the egress proxy: only http(s) reaches the browser.
        parse_http_url(url)
        if state.cookie_url is None:
            # Cookies without a domain belong to the job's site: its first URL.
            state.cookie_url = url
        timeout = state.options.timeout / 1000
        async with self._slot():
            for attempt in (1, 2):
                run = functools.partial(
                    self._engine.capture, state, url, timeout, trio.current_time()
                )
                try:
                    with trio.fail_after(timeout + _DEADLINE_GRACE):
                        return await self._thread.run(run)
                except trio.TooSlowError:
                    raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
                except _BrowserGone as gone:
                    await self._relaunch(gone.generation)
                    if attempt == 2:
                        raise BrowserCrashed(
                            "Chromium crashed twice while capturing this URL"
                        ) from None
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def _maybe_proxy(policy: EgressPolicy | None) -> AsyncIterator[EgressProxy | None]:
    if policy is None:
        yield None
        return
    async with open_egress_proxy(policy, require_auth=False) as proxy:
        yield proxy


@final
class CaptureSession:
    """Captures for one job, in that job's own browser context. Made by ``BrowserPool.session``."""

    def __init__(self, pool: BrowserPool, state: _ContextState) -> None:
        self._pool = pool
        self._state = state

    @property
    def options(self) -> CaptureOptions:
        return self._state.options

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of the pool's slots (FIFO): captures in the block start at once.

        For callers that should take work only when they can start it: wait for
        the slot, then claim the URL, then ``capture`` it.
        """
        return self._pool._slot()

    async def capture(self, url: str) -> Screenshot:
        """Capture one URL.

        Waits for a free slot in the pool (FIFO, so jobs sharing the pool take turns),
        unless the calling task holds one (``slot``).

        Args:
            url: An http(s) URL already accepted by the egress policy's static checks.

        Returns:
            The image and its metadata.

        Raises:
            CaptureError: A subclass with the stable code of what went wrong
                (``HTTP_ERROR``, ``CAPTURE_TIMEOUT``, ``BROWSER_CRASHED``...);
                a plain ``CAPTURE_ERROR`` for an invalid CSS selector in the options.
            URLBlocked: The egress policy refused the page or a redirect on the way.
            InvalidURL: ``url`` is not an http(s) URL.
            BrowserUnavailable: Chromium died and could not be started again.

        Cancellation:
            The page is closed before this returns; the slot is released.
        """
        return await self._pool._capture(self._state, url)
