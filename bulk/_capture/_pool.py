"""The trio-facing capture API: ``BrowserPool`` and its ``CaptureSession``s.

    async with BrowserPool.open(config, policy) as pool:
        async with pool.session(options, site_url) as session:   # one context per job
            shot = await session.capture(url)                     # -> Screenshot

The pool owns the asyncio thread (``_bridge.py``), the engine on it (``_engine.py``),
the browser source the engine launches from (``LocalLaunch``), the egress proxy and
Chromium's isolation (``_sandbox.py``: planned once per pool, with a warning for
what this machine does not allow).
It hands out its slots (a FIFO ``trio.CapacityLimiter``, so jobs sharing the pool take
turns), puts a trio deadline around every capture (the engine's own asyncio deadline
fires first and gives the precise error; the trio one is the backstop for a capture
stuck where that one cannot reach), and relaunches a dead browser (once per
generation, under a lock) and retries the URL once.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, TypeVar, final

import trio

from .._exceptions import BrowserCrashed, CaptureTimeout, ValidationError
from .._options import MAX_HTML_BYTES, CaptureOptions
from .._policy import EgressPolicy
from .._proxy import EgressProxy, open_egress_proxy
from .._sandbox import Isolation, Launch, open_launch, plan_isolation
from .._urls import parse_http_url
from ._bridge import AsyncioThread
from ._config import CLEANUP_TIMEOUT, PoolConfig
from ._engine import Engine
from ._errors import BrowserGone
from ._pages import ContextState
from ._source import LocalLaunch
from ._steps import Screenshot

__all__ = ["BrowserPool", "CaptureSession"]

T = TypeVar("T")

# Time on top of the user's per-URL timeout for the outside (trio) deadline: the
# engine's own deadline fires first and gives a precise error; this one is the
# backstop for a capture stuck where the engine's deadline cannot reach.
_DEADLINE_GRACE: Final = 3.0


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
        engine: Engine,
        proxy: EgressProxy | None,
        launch: Launch | None = None,
    ) -> None:
        self.config = config
        self._thread = thread
        self._engine = engine
        self._proxy = proxy
        self._launch = launch
        self._limiter = trio.CapacityLimiter(engine.source.slots)
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
            BrowserUnavailable: Chromium could not be started, or (``BULK_SANDBOX=
                require``) could not be isolated as asked.

        Resource handling:
            Leaving the block closes Chromium, Playwright and the asyncio thread,
            shielded from cancellation and bounded in time; leftovers of Chromium's
            process group and memory cgroups are killed, the cgroups removed.
        """
        isolation = await plan_isolation(
            config.sandbox, config.executable, proxied=policy is not None, slots=config.concurrency
        )
        async with (
            # In its own network namespace, Chromium reaches the proxy through the
            # listener its launcher hands over: nothing listens here.
            _maybe_proxy(policy, listen=not isolation.private_network) as proxy,
            open_launch(
                isolation,
                config.executable,
                proxy,
                config=config.sandbox,
                slots=config.concurrency,
            ) as launch,
        ):
            thread = AsyncioThread()
            thread.start()
            source = LocalLaunch.from_config(
                config, proxy.url if proxy is not None else None, launch
            )
            engine = Engine(config, source, proxy)
            try:
                try:
                    await thread.run(engine.start)
                except BaseException:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                        await thread.run(engine.stop)
                    raise
                pool = cls(config, thread, engine, proxy, launch)
                try:
                    yield pool
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT * 2):
                        await thread.run(engine.stop)
            finally:
                await thread.stop()

    @property
    def browser_pid(self) -> int | None:
        """PID of the current Chromium browser process (tests kill it to prove recovery)."""
        return self._engine.pid

    @property
    def isolation(self) -> Isolation:
        """How Chromium is isolated here: what holds, and a warning for what does not."""
        return self._launch.isolation if self._launch is not None else Isolation()

    def memory_peak(self) -> int:
        """The most memory the capture side used at once, in bytes (0: not bounded)."""
        memory = self._launch.memory if self._launch is not None else None
        return memory.peak() if memory is not None else 0

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
        state = ContextState(options=options, cookie_url=site_url)
        session = CaptureSession(self, state)
        try:
            await self._with_relaunch(lambda: self._engine.open_context(state))
            yield session
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                await self._thread.run(lambda: self._engine.close_context(state))

    async def capture(
        self, url: str, options: CaptureOptions, site_url: str | None = None
    ) -> Screenshot:
        """One capture in its own short-lived context (``bulk shot``, ``GET /screenshot``)."""
        async with self.session(options, site_url or url) as session:
            return await session.capture(url)

    async def capture_html(self, html: str, options: CaptureOptions) -> Screenshot:
        """Render the document ``html`` in its own short-lived context (see
        ``CaptureSession.capture_html``)."""
        async with self.session(options) as session:
            return await session.capture_html(html)

    async def _with_relaunch(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            return await self._thread.run(fn)
        except BrowserGone as gone:
            await self._relaunch(gone.generation)
        try:
            return await self._thread.run(fn)
        except BrowserGone as gone:
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

    async def _capture(
        self, state: ContextState, url: str | None, html: str | None = None
    ) -> Screenshot:
        if html is None:
            assert url is not None
            # Chromium would happily show file:, data: or chrome: URLs, none of which
            # pass the egress proxy: only http(s) reaches the browser.
            parse_http_url(url)
            if state.cookie_url is None:
                # Cookies without a domain belong to the job's site: its first URL.
                state.cookie_url = url
        elif len(html.encode("utf-8", "surrogatepass")) > MAX_HTML_BYTES:
            raise ValidationError(
                f"html is over {MAX_HTML_BYTES // 1024} KiB of UTF-8", field="html"
            )
        timeout = state.options.timeout / 1000
        async with self._slot():
            for attempt in (1, 2):
                run = functools.partial(
                    self._engine.capture, state, url, timeout, trio.current_time(), html
                )
                try:
                    with trio.fail_after(timeout + _DEADLINE_GRACE):
                        return await self._thread.run(run)
                except trio.TooSlowError:
                    raise CaptureTimeout(f"no image within {state.options.timeout} ms") from None
                except BrowserGone as gone:
                    await self._relaunch(gone.generation)
                    if attempt == 2:
                        raise BrowserCrashed(
                            "Chromium crashed twice while capturing this URL"
                        ) from None
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def _maybe_proxy(
    policy: EgressPolicy | None, *, listen: bool
) -> AsyncIterator[EgressProxy | None]:
    if policy is None:
        yield None
        return
    async with open_egress_proxy(policy, require_auth=False, listen=listen) as proxy:
        yield proxy


@final
class CaptureSession:
    """Captures for one job, in that job's own browser context. Made by ``BrowserPool.session``."""

    def __init__(self, pool: BrowserPool, state: ContextState) -> None:
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

    async def capture_html(self, html: str) -> Screenshot:
        """Render the document ``html`` (instead of loading a URL) and capture it.

        The document is written into a blank page (its URL is ``about:blank``): its
        sub-resources need absolute URLs (or a ``<base href>``) and load through the
        egress proxy and its address policy like any page's. Everything else is as
        for ``capture``.

        Raises:
            ValidationError: ``html`` is over ``MAX_HTML_BYTES`` of UTF-8.
            CaptureError: As for ``capture``.

        Cancellation:
            As for ``capture``.
        """
        return await self._pool._capture(self._state, None, html)
