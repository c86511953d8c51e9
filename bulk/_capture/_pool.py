"""The trio-facing capture API: ``BrowserPool`` and its ``CaptureSession``s.

    async with BrowserPool.open(config, policy) as pool:
        async with pool.session(options, site_url) as session:   # one context per job
            shot = await session.capture(url)                     # -> Screenshot

The pool owns the asyncio thread (``_bridge.py``) and Playwright on it, and one engine
(``_engine.py``) per browser source: the local Chromium (``LocalLaunch``, behind the
egress proxy and Chromium's isolation, ``_sandbox.py``) and each remote ``bulk node``
(``_remote.RemoteNode``, behind the node's own egress proxy).

It hands out slots across its sources: a FIFO ``trio.CapacityLimiter`` over all
their slots (so jobs sharing the pool take turns), then the source with the most
free slots that is up. A capture runs under a trio deadline (the engine's own asyncio
deadline fires first and gives the precise error; the trio one is the backstop for a
capture stuck where that one cannot reach). A browser that died is relaunched (or
reconnected: once per generation, under the source's lock) and the URL retried once
there; a source that cannot be had again is marked down, its captures move to another
source (no URL is lost: the caller's lease is held all along), and it is tried again
in the background with backoff until it comes back by itself. A remote source that
stops answering (``ping``) is treated as lost.

Routing: a source added with a ``route`` (a connector's id, ``add_remote``) serves
only sessions opened with that same route, and a routed session runs only there
(``CONNECTOR_OFFLINE`` when no source has its route: the connector is not
connected). Unrouted captures never reach a routed source: the FIFO limiter counts
only unrouted slots, and routed captures wait for their own source's slots.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final, TypeVar, final

import attrs
import trio

from .._exceptions import (
    BrowserCrashed,
    BrowserRefused,
    BrowserUnavailable,
    CaptureTimeout,
    ConnectorOffline,
    ConnectorTimeout,
    ValidationError,
)
from .._options import MAX_HTML_BYTES, CaptureOptions
from .._policy import EgressPolicy
from .._proxy import EgressProxy, open_egress_proxy
from .._sandbox import Isolation, Launch, open_launch, plan_isolation
from .._urls import parse_http_url
from ._bridge import AsyncioThread
from ._config import CLEANUP_TIMEOUT, PoolConfig, RemoteEndpoint
from ._engine import Engine
from ._errors import BrowserGone
from ._hygiene import lower_priority, no_priority_boost
from ._pages import ContextState
from ._remote import RemoteNode
from ._source import BrowserSource, LocalLaunch
from ._steps import Screenshot

__all__ = ["BrowserPool", "CaptureSession", "SourceState"]

T = TypeVar("T")

# Time on top of the user's per-URL timeout for the outside (trio) deadline: the
# engine's own deadline fires first and gives a precise error; this one is the
# backstop for a capture stuck where the engine's deadline cannot reach.
_DEADLINE_GRACE: Final = 3.0
# Seconds between tries to get a lost source back: doubling up to the last.
_BACKOFF: Final = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# A remote source is asked for a round trip this often, and is lost when it takes
# longer than _PING_TIMEOUT (generous: a loaded node answers late, not never).
_PING_INTERVAL: Final = 5.0
_PING_TIMEOUT: Final = 20.0
# Seconds between two writes of the status file (it is rewritten only on change).
_STATUS_INTERVAL: Final = 1.0


@attrs.define(eq=False)
class _Member:
    """One browser source and its engine, with what the pool knows about it."""

    source: BrowserSource
    engine: Engine
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    up: bool = False
    busy: int = 0
    captures: int = 0
    reconnects: int = 0
    last_error: str | None = None
    # Set when the source is lost; the recovery task waits for it.
    lost: trio.Event = attrs.field(factory=trio.Event)
    # Only sessions of this route (a connector's id) run here; None: unrouted work.
    route: str | None = None
    # Cancels the recovery task of a source added while the pool runs.
    keeper: trio.CancelScope | None = None
    # Who added it (``add_remote``): only they remove it.
    owner: object = None


@attrs.frozen
class SourceState:
    """One browser source as ``/health`` and ``bulk admin browsers`` show it.

    Attributes:
        name: ``local``, or a remote endpoint without its secret path.
        kind: ``local`` or ``node``.
        slots: Pages it captures at once.
        in_flight: Captures holding one of its slots now.
        up: Whether it has a browser now.
        captures: Captures it finished since the pool started.
        reconnects: Times its browser was relaunched or reconnected.
        last_error: The last reason it was lost or could not be had (None: never).
    """

    name: str
    kind: str
    slots: int
    in_flight: int
    up: bool
    captures: int
    reconnects: int
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@final
class BrowserPool:
    """A bounded pool of Chromium pages over one or more browser sources, trio-native.
    Open it with ``BrowserPool.open``.

    Resource handling: the pool owns the asyncio thread, Playwright, the local
    Chromium and its egress proxy, and the connections to remote nodes; leaving
    ``open``'s context closes all of them, also on error or cancellation (shielded,
    with a deadline), so no Chromium process outlives it.
    """

    def __init__(
        self,
        config: PoolConfig,
        thread: AsyncioThread,
        members: list[_Member],
        proxy: EgressProxy | None,
        launch: Launch | None = None,
    ) -> None:
        self.config = config
        self._thread = thread
        self._members = members
        self._local = next((m for m in members if isinstance(m.source, LocalLaunch)), None)
        self._proxy = proxy
        self._launch = launch
        self._limiter = trio.CapacityLimiter(max(1, sum(m.source.slots for m in members)))
        # None: a routed slot whose source is gone (its captures fail CONNECTOR_OFFLINE).
        self._held: dict[trio.lowlevel.Task, _Member | None] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.relaunches = 0

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: PoolConfig, policy: EgressPolicy | None = None
    ) -> AsyncIterator[BrowserPool]:
        """Start Chromium (behind an egress proxy applying ``policy``), connect to the
        remote nodes, and yield the pool.

        Args:
            config: Executable, concurrency, reuse settings and remote browsers.
            policy: The address policy for every connection the local Chromium makes;
                ``None`` means no proxy (only for trusted, offline measurements).
                Remote nodes apply their own.

        Raises:
            BrowserUnavailable: No source could be had: Chromium could not be started
                (or, ``BULK_SANDBOX=require``, isolated as asked) and no remote node
                answered.
            BrowserRefused: A remote endpoint is not a ``bulk node``.

        Resource handling:
            Leaving the block closes Chromium, the remote connections, Playwright and
            the asyncio thread, shielded from cancellation and bounded in time;
            leftovers of Chromium's process group and memory cgroups are killed, the
            cgroups removed.
        """
        async with _local_side(config, policy) as (proxy, launch):
            thread = AsyncioThread()
            thread.start()
            members: list[_Member] = []
            if config.local:
                source: BrowserSource = LocalLaunch.from_config(
                    config, proxy.url if proxy is not None else None, launch
                )
                members.append(_Member(source, Engine(config, source, proxy)))
            for remote in config.remotes:
                node = RemoteNode(remote, connect_timeout=config.launch_timeout)
                members.append(_Member(node, Engine(config, node, None)))
            pool = cls(config, thread, members, proxy, launch)
            body_error: BaseException | None = None
            try:
                try:
                    await pool._start()
                    async with trio.open_nursery() as nursery:
                        pool._nursery = nursery
                        for member in members:
                            nursery.start_soon(pool._keep_up, member)
                        if config.status_file is not None:
                            nursery.start_soon(pool._write_status, config.status_file)
                        try:
                            yield pool
                        except GeneratorExit:
                            raise
                        except BaseException as exc:
                            # Re-raised below, outside the nursery: the caller's own
                            # exception is not wrapped in an ExceptionGroup.
                            body_error = exc
                        finally:
                            pool._nursery = None
                            nursery.cancel_scope.cancel()
                    if body_error is not None:
                        raise body_error
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT * 2):
                        await thread.run(pool._stop_all)
            finally:
                await thread.stop()

    async def _start(self) -> None:
        """Start Playwright and every source at once; fail only if none came up."""
        first = self._members[0].engine
        config = self.config

        async def start_playwright() -> None:
            no_priority_boost()
            lower_priority(config.nice)
            from playwright.async_api import async_playwright

            first.playwright = await async_playwright().start()

        await self._thread.run(start_playwright)
        for member in self._members:
            member.engine.playwright = first.playwright
        errors: list[BaseException] = []

        async def start(member: _Member) -> None:
            try:
                await self._thread.run(member.engine.launch)
            except BrowserRefused:
                raise  # a configuration mistake: never retried, never quiet
            except BrowserUnavailable as exc:
                errors.append(exc)
                self._down(member, exc.message)
                return
            member.up = True

        async with trio.open_nursery() as nursery:
            for member in self._members:
                nursery.start_soon(start, member)
        if not any(m.up for m in self._members):
            raise errors[0]

    async def _stop_all(self) -> None:
        # Runs on the loop thread: each engine closes its browser and reaps; the
        # shared Playwright is stopped once, by the first engine, last.
        members = self._members
        for member in members[1:]:
            member.engine.playwright = None
            await member.engine.stop()
        await members[0].engine.stop()

    # -- what the pool shows ------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Pages captured at once across every unrouted source (up or not)."""
        return sum(m.source.slots for m in self._members if m.route is None)

    # -- routed sources (connectors) --------------------------------------------------------

    async def add_remote(
        self, endpoint: RemoteEndpoint, *, route: str, owner: object = None
    ) -> None:
        """Connect to the ``bulk node`` at ``endpoint`` as the one source of ``route``.

        Only sessions opened with ``route`` run there (a connector's captures), and
        nothing else does. It is looked after like any remote source (pinged,
        reconnected) until ``remove_route`` (with the same ``owner``: a connector's
        newer tunnel is never removed by its older one's cleanup).

        Raises:
            BrowserUnavailable: It did not answer, or the pool is closing.
            BrowserRefused: It is not a ``bulk node``.

        Resource handling:
            The member is registered before it connects, so ``remove_route`` (also
            after a cancelled ``add_remote``) closes whatever connection it got.
        """
        nursery = self._nursery
        if nursery is None:
            raise BrowserUnavailable("the browser pool is closing")
        node = RemoteNode(endpoint, connect_timeout=self.config.launch_timeout)
        engine = Engine(self.config, node, None)
        engine.playwright = self._members[0].engine.playwright
        member = _Member(node, engine, route=route, keeper=trio.CancelScope(), owner=owner)
        self._members.append(member)
        await self._thread.run(engine.launch)
        if member not in self._members:  # removed while it connected
            raise BrowserUnavailable(f"{node.name} went away while connecting")
        member.up = True
        nursery.start_soon(self._keep_routed, member)
        self._notify()

    async def remove_route(self, route: str, owner: object = None) -> None:
        """Drop the sources of ``route`` added by ``owner``: their captures in flight
        fail (``CONNECTOR_OFFLINE`` when no other source has the route) and new ones
        are refused at once.

        Resource handling: the connection is closed (shielded, bounded in time).
        """
        gone = [m for m in self._members if m.route == route and m.owner is owner]
        for member in gone:
            self._members.remove(member)
            if member.keeper is not None:
                member.keeper.cancel()
            self._down(member, "the connector disconnected")
        for member in gone:
            member.engine.playwright = None  # the pool's, stopped by the pool
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                await self._thread.run(member.engine.stop)

    def has_route(self, route: str) -> bool:
        """Whether a source of ``route`` is connected now."""
        return any(m.route == route for m in self._members)

    async def _keep_routed(self, member: _Member) -> None:
        assert member.keeper is not None
        with member.keeper:
            await self._keep_up(member)

    def sources(self) -> list[SourceState]:
        """Each browser source's state now (no I/O)."""
        return [
            SourceState(
                name=m.source.name,
                kind=m.source.kind,
                slots=m.source.slots,
                in_flight=m.busy,
                up=m.up,
                captures=m.captures,
                reconnects=m.reconnects,
                last_error=m.last_error,
            )
            for m in self._members
        ]

    @property
    def browser_pid(self) -> int | None:
        """PID of the local Chromium browser process (tests kill it to prove recovery)."""
        return self._local.engine.pid if self._local is not None else None

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
        return sum(m.engine.pages_opened for m in self._members)

    async def page_count(self) -> int:
        """Pages open in the browsers right now, idle ones and popups included."""
        total = 0
        for member in self._members:
            total += await self._thread.run(member.engine.page_count)
        return total

    # -- sessions -------------------------------------------------------------------------

    @asynccontextmanager
    async def session(
        self, options: CaptureOptions, site_url: str | None = None, *, route: str | None = None
    ) -> AsyncIterator[CaptureSession]:
        """A capture session: one fresh browser context per source, for one job.

        Args:
            options: The job's capture options (viewport, cookies, headers...).
            site_url: URL for cookies given without a domain (default: the first
                URL captured).
            route: Capture only on the source of this route (a connector's id).

        Resource handling:
            The contexts and their pages are closed when the block ends (shielded).
        """
        session = CaptureSession(
            self, ContextState(options=options, cookie_url=site_url), route=route
        )
        try:
            # One context now, so that options the browser refuses fail here (the
            # local browser's; a remote node's contexts are opened when first used).
            member = self._local
            if member is not None and member.up and route is None:
                state = session._state_on(member)
                await self._on(member, functools.partial(member.engine.open_context, state))
            yield session
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                for member, state in list(session._states.items()):
                    engine = member.engine
                    await self._thread.run(functools.partial(engine.close_context, state))

    async def capture(
        self,
        url: str,
        options: CaptureOptions,
        site_url: str | None = None,
        *,
        route: str | None = None,
    ) -> Screenshot:
        """One capture in its own short-lived context (``bulk shot``, ``GET /screenshot``)."""
        async with self.session(options, site_url or url, route=route) as session:
            return await session.capture(url)

    async def capture_html(
        self, html: str, options: CaptureOptions, *, route: str | None = None
    ) -> Screenshot:
        """Render the document ``html`` in its own short-lived context (see
        ``CaptureSession.capture_html``)."""
        async with self.session(options, route=route) as session:
            return await session.capture_html(html)

    # -- sources: relaunch, loss, recovery -----------------------------------------------

    async def _on(self, member: _Member, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``fn`` on ``member``'s engine; relaunched and tried once more if its browser
        died (``BrowserCrashed`` if it dies again)."""
        try:
            return await self._thread.run(fn)
        except BrowserGone as gone:
            if not await self._relaunch(member, gone.generation):
                raise BrowserUnavailable(member.last_error or "Chromium is not running") from None
        try:
            return await self._thread.run(fn)
        except BrowserGone as gone:
            await self._relaunch(member, gone.generation)
            raise BrowserCrashed("Chromium crashed twice while opening a session") from None

    async def _relaunch(self, member: _Member, generation: int) -> bool:
        """Replace ``member``'s browser of ``generation``; False (and the member is
        down) when it cannot be had again."""
        async with member.lock:
            if not member.up:
                return False
            if member.engine.generation != generation:
                return True
            self.relaunches += 1
            member.reconnects += 1
            try:
                await self._thread.run(lambda: member.engine.relaunch(generation))
            except BrowserUnavailable as exc:
                self._down(member, exc.message)
                return False
            return True

    def _down(self, member: _Member, why: str) -> None:
        member.up = False
        member.last_error = why
        member.lost.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _keep_up(self, member: _Member) -> None:
        """Bring ``member`` back whenever it is lost; watch a remote one's answers.

        Cancellation: runs until the pool closes.
        """
        while True:
            if member.up:
                async with trio.open_nursery() as watch:
                    if isinstance(member.source, RemoteNode):
                        watch.start_soon(self._ping, member)
                    await member.lost.wait()
                    watch.cancel_scope.cancel()
            member.lost = trio.Event()
            for attempt in itertools.count():
                await trio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
                async with member.lock:
                    again = functools.partial(member.engine.relaunch, member.engine.generation)
                    try:
                        await self._thread.run(again)
                    except BrowserUnavailable as exc:
                        member.last_error = exc.message
                        self._notify()
                        continue
                    member.up = True
                    member.reconnects += 1
                    self._notify()
                    break

    async def _ping(self, member: _Member) -> None:
        """Lose ``member`` when its remote browser stops answering."""
        engine = member.engine
        while True:
            await trio.sleep(_PING_INTERVAL)
            browser = engine.browser
            if browser is None:
                continue
            with trio.move_on_after(_PING_TIMEOUT) as waited:
                try:
                    await self._thread.run(functools.partial(member.source.ping, browser))
                    continue
                except Exception as exc:  # any failure is a lost source
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if waited.cancelled_caught:
                why = f"no answer within {_PING_TIMEOUT:.0f} s"
            async with member.lock:
                if member.up and engine.browser is browser:
                    # Closing the connection wakes every capture on it (BrowserGone).
                    with trio.move_on_after(CLEANUP_TIMEOUT):
                        await self._thread.run(functools.partial(_close_quietly, browser))
                    self._down(member, why)
            return

    async def _write_status(self, path: Path) -> None:
        """Keep ``path`` showing ``sources()`` for ``bulk admin browsers`` (atomically)."""
        last = ""
        while True:
            text = json.dumps(
                {"pid": os.getpid(), "sources": [s.to_json() for s in self.sources()]},
                indent=1,
            )
            if text != last:
                with suppress(OSError):
                    await trio.to_thread.run_sync(_replace_file, path, text)
                last = text
            await self._changed.wait()
            await trio.sleep(_STATUS_INTERVAL)

    # -- slots and captures ----------------------------------------------------------------

    async def _take_member(self, route: str | None = None) -> _Member | None:
        """A source of ``route`` that is up and has a free slot, the freest first
        (waits for one); None when ``route`` is set and no source has it.

        Raises:
            BrowserUnavailable: The local Chromium is the only source and could not
                be started again (nothing would come back by itself in time).
        """
        while True:
            mine = [m for m in self._members if m.route == route]
            if route is not None and not mine:
                return None
            free = [m for m in mine if m.up and m.busy < m.source.slots]
            if free:
                member = max(free, key=lambda m: (m.source.slots - m.busy, -m.captures))
                member.busy += 1
                return member
            local = self._local
            if route is None and local is not None and len(mine) == 1 and not local.up:
                raise BrowserUnavailable(local.last_error or "Chromium is not running")
            await self._changed.wait()

    def _give_back(self, member: _Member | None) -> None:
        if member is not None:
            member.busy -= 1
        self._notify()

    @asynccontextmanager
    async def _slot(self, route: str | None = None) -> AsyncIterator[None]:
        # One of the pool's slots for this task, unless it holds one already. A routed
        # slot is its source's own: the FIFO limiter counts unrouted slots only.
        task = trio.lowlevel.current_task()
        if task in self._held:
            yield
            return
        limiter = self._limiter if route is None else contextlib.nullcontext()
        async with limiter:
            member = await self._take_member(route)
            self._held[task] = member
            try:
                yield
            finally:
                if task in self._held:
                    self._give_back(self._held.pop(task))

    async def _capture(
        self, session: CaptureSession, url: str | None, html: str | None = None
    ) -> Screenshot:
        template = session._template
        if html is None:
            assert url is not None
            # Chromium would happily show file:, data: or chrome: URLs, none of which
            # pass the egress proxy: only http(s) reaches the browser.
            parse_http_url(url)
            if template.cookie_url is None:
                # Cookies without a domain belong to the job's site: its first URL.
                template.cookie_url = url
        elif len(html.encode("utf-8", "surrogatepass")) > MAX_HTML_BYTES:
            raise ValidationError(
                f"html is over {MAX_HTML_BYTES // 1024} KiB of UTF-8", field="html"
            )
        timeout = template.options.timeout / 1000
        task = trio.lowlevel.current_task()
        route = session._route
        async with self._slot(route):
            crashes = 0
            # Each loss of a source moves the URL to another; bounded all the same.
            for _ in range(2 * len(self._members) + 2):
                member = self._held[task]
                if member is None:
                    raise ConnectorOffline(f"connector {route} is not connected")
                state = session._state_on(member)
                if state.cookie_url is None:
                    state.cookie_url = template.cookie_url
                run = functools.partial(
                    member.engine.capture, state, url, timeout, trio.current_time(), html
                )
                try:
                    with trio.fail_after(timeout + _DEADLINE_GRACE):
                        shot = await self._thread.run(run)
                    member.captures += 1
                    return shot
                except trio.TooSlowError:
                    if route is not None:
                        raise ConnectorTimeout(
                            f"connector {route} sent no image within {template.options.timeout}"
                            " ms"
                        ) from None
                    raise CaptureTimeout(f"no image within {template.options.timeout} ms") from None
                except BrowserGone as gone:
                    if await self._relaunch(member, gone.generation):
                        crashes += 1
                        if crashes == 2:
                            raise BrowserCrashed(
                                "Chromium crashed twice while capturing this URL"
                            ) from None
                        continue
                # The source is lost: the URL moves to another one (waits for one).
                self._give_back(self._held.pop(task))
                self._held[task] = await self._take_member(route)
        raise BrowserUnavailable("every browser source was lost while capturing this URL")


def _replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def _close_quietly(browser: Any) -> None:
    with suppress(Exception):
        await browser.close()


@asynccontextmanager
async def _local_side(
    config: PoolConfig, policy: EgressPolicy | None
) -> AsyncIterator[tuple[EgressProxy | None, Launch | None]]:
    """The local Chromium's egress proxy and isolation (nothing without a local one)."""
    if not config.local:
        yield None, None
        return
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
        yield proxy, launch


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

    def __init__(
        self, pool: BrowserPool, template: ContextState, *, route: str | None = None
    ) -> None:
        self._pool = pool
        # Captures run only on the source of this route (a connector), if set.
        self._route = route
        # The job's options and cookie URL; each source gets a context of its own.
        self._template = template
        self._states: dict[_Member, ContextState] = {}

    def _state_on(self, member: _Member) -> ContextState:
        state = self._states.get(member)
        if state is None:
            template = self._template
            state = self._states[member] = ContextState(
                options=template.options, cookie_url=template.cookie_url
            )
        return state

    @property
    def options(self) -> CaptureOptions:
        return self._template.options

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of the pool's slots (FIFO): captures in the block start at once.

        For callers that should take work only when they can start it: wait for
        the slot, then claim the URL, then ``capture`` it.
        """
        return self._pool._slot(self._route)

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
        return await self._pool._capture(self, url)

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
        return await self._pool._capture(self, None, html)
