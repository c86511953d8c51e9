"""Where a browser comes from: the ``BrowserSource`` interface and its local launch.

The engine never starts or reaches a browser itself: it asks its source to
``connect`` (at start, and again after the browser was lost), and to ``reap`` what is
left of a browser it has closed (after a loss, and when it stops). A source also says
how many pages it can capture at once (``slots``) and has a ``name`` for messages.

``LocalLaunch`` is the one source today: Chromium started on this machine by
Playwright, with bulk's switches, behind bulk's egress proxy, through the launcher
that isolates it (``_sandbox.py``: its user, sandbox, network namespace, memory
cgroups); its leftovers are killed by process group and by cgroup. A remote browser
server (``_remote.RemoteNode``) or a connector's tunnel is another ``BrowserSource``
subclass, not a change to the engine.

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import abc
import asyncio
from contextlib import suppress
from typing import Any, Final, final

from playwright.async_api import Browser, Playwright, ProxySettings
from playwright.async_api import Error as PlaywrightError

from .._exceptions import BrowserUnavailable
from .._sandbox import JS_HEAP_ARG, Launch
from ._config import CLOSE_TIMEOUT, PoolConfig
from ._hygiene import kill_process_group

__all__ = ["CHROMIUM_ARGS", "BrowserSource", "LocalLaunch", "browser_pid"]

# Flags on top of Playwright's own (which already disable breakpad, background
# networking, component updates, sync and the like).
CHROMIUM_ARGS: Final = (
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
    # A page that eats memory kills its own renderer, not the machine (dropped when
    # memory cgroups bound the renderers: then the kernel does, PAGE_TOO_LARGE).
    JS_HEAP_ARG,
)


class BrowserSource(abc.ABC):
    """Where the engine's browser comes from: one browser at a time, replaced when lost.

    The engine calls these on the asyncio loop thread, one at a time: ``connect`` at
    start and after each loss; ``reap`` after a lost browser was closed (before the
    next ``connect``) and once more when the engine stops, after Playwright stopped.

    Attributes:
        name: Says which source this is, in messages.
        slots: Pages this source's browser captures at the same time.
    """

    name: str
    slots: int
    #: ``local`` (launched here) or ``node`` (a remote browser server).
    kind: str = "local"

    @abc.abstractmethod
    async def connect(self, playwright: Playwright) -> Browser:
        """Start or reach a browser and return it, connected.

        Raises:
            BrowserUnavailable: No browser could be had from this source.
        """

    @abc.abstractmethod
    async def reap(self) -> None:
        """Make sure nothing of the browsers this source gave is left running.

        Called when the engine is done with the current browser (it was closed, or
        did not answer the close). Never raises.
        """

    @property
    def pid(self) -> int | None:
        """The current browser's process id when it runs on this machine, else None."""
        return None

    def context_proxy(self) -> ProxySettings | None:
        """The proxy each new browser context is given (None: the browser's own).

        A remote node's contexts go through the node's egress proxy, set per context.
        """
        return None

    async def ping(self, browser: Browser) -> None:
        """One round trip to ``browser`` (a remote one may stop answering).

        Raises:
            PlaywrightError: It did not answer.
        """
        return None

    def memory_mark(self) -> int:
        """A mark for ``killed_for_memory``, taken when a capture starts (no I/O)."""
        return 0

    def killed_for_memory(self, mark: int) -> bool:
        """Whether one of this source's renderers was killed for going over its
        memory bound since ``mark`` (a crashed page is then ``PAGE_TOO_LARGE``)."""
        return False


@final
class LocalLaunch(BrowserSource):
    """Chromium launched on this machine by Playwright, with bulk's switches.

    Args:
        executable: The Chromium binary.
        slots: Pages captured at the same time.
        extra_args: More Chromium switches (after bulk's own ``CHROMIUM_ARGS``).
        launch_timeout: Seconds Chromium gets to start.
        proxy_server: The egress proxy's URL every connection goes through (None: no
            proxy, only for trusted, offline measurements).
        launch: How Chromium is isolated (``_sandbox.open_launch``): what Playwright
            starts and with which switches; None: Chromium as Playwright starts it.

    Resource handling:
        Playwright starts Chromium as a process group leader; ``reap`` SIGKILLs what
        is left of the group of the last browser launched, and of the memory cgroups
        (crash handlers leave the group, not the cgroup).
    """

    name = "local"

    def __init__(
        self,
        executable: str,
        *,
        slots: int,
        extra_args: tuple[str, ...] = (),
        launch_timeout: float = 30.0,
        proxy_server: str | None = None,
        launch: Launch | None = None,
    ) -> None:
        self.executable = executable
        self.slots = slots
        self.extra_args = extra_args
        self.launch_timeout = launch_timeout
        self.proxy_server = proxy_server
        self.launch = launch
        self._pid: int | None = None

    @classmethod
    def from_config(
        cls, config: PoolConfig, proxy_server: str | None, launch: Launch | None = None
    ) -> LocalLaunch:
        """The launch ``config`` describes, behind the proxy at ``proxy_server``."""
        return cls(
            config.executable,
            slots=config.concurrency,
            extra_args=config.extra_args,
            launch_timeout=config.launch_timeout,
            proxy_server=proxy_server,
            launch=launch,
        )

    @property
    def pid(self) -> int | None:
        return self._pid

    async def connect(self, playwright: Playwright) -> Browser:
        proxy: Any = None
        if self.proxy_server is not None:
            # No credentials: given some, Playwright intercepts every request and
            # switches the HTTP cache off (see open_egress_proxy's require_auth).
            proxy = {"server": self.proxy_server}
        launch = self.launch
        executable, sandbox, args = self.executable, False, list(CHROMIUM_ARGS)
        if launch is not None:
            executable, sandbox = launch.executable_path, launch.chromium_sandbox
            args = [a for a in args if a not in launch.dropped_args] + list(launch.args)
        try:
            browser = await playwright.chromium.launch(
                executable_path=executable,
                chromium_sandbox=sandbox,
                headless=True,
                args=[*args, *self.extra_args],
                # Playwright turns Chromium's popup blocker off; bulk wants it on: no
                # user ever clicks, so no page gets to open windows.
                ignore_default_args=["--disable-popup-blocking"],
                proxy=proxy,
                timeout=self.launch_timeout * 1000,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        except PlaywrightError as exc:
            lines = str(exc).splitlines() or [type(exc).__name__]
            # The launcher's own line, when it refused, says what to do.
            why = next(
                (line[line.find("bulk-launcher:") :] for line in lines if "bulk-launcher:" in line),
                lines[0],
            )
            raise BrowserUnavailable(
                f"Chromium at {self.executable} did not start: {why.strip()}"
            ) from None
        self._pid = await browser_pid(browser)
        return browser

    async def reap(self) -> None:
        pid, self._pid = self._pid, None
        if pid is not None:
            kill_process_group(pid)
        if self.launch is not None:
            self.launch.reap()

    def memory_mark(self) -> int:
        return self.launch.memory_mark() if self.launch is not None else 0

    def killed_for_memory(self, mark: int) -> bool:
        return self.launch is not None and self.launch.killed_for_memory(mark)


async def browser_pid(browser: Browser) -> int | None:
    """The browser process's PID, as Chromium itself reports it."""
    try:
        cdp = await browser.new_browser_cdp_session()
        try:
            info = await asyncio.wait_for(cdp.send("SystemInfo.getProcessInfo"), CLOSE_TIMEOUT)
        finally:
            with suppress(PlaywrightError):
                await cdp.detach()
    except (PlaywrightError, TimeoutError):
        return None
    for process in info.get("processInfo", ()):
        if process.get("type") == "browser":
            return int(process["id"])
    return None
