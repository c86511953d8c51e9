"""A remote browser source: a ``bulk node`` reached over Playwright's server protocol.

``bulk node`` (``bulk/_node.py``) runs ``playwright launch-server`` with the system
Chromium, bulk's switches and, as the browser's own proxy, bulk's egress proxy on
the node's loopback, which applies the node's address policy. The coordinator
connects with ``browser_type.connect(ws_endpoint)`` and then makes sure it talks to
such a node before it sends any page there: it asks, through the remote browser,
for ``IDENTITY_URL`` (a name that can never resolve). Only bulk's egress proxy
answers that, with its address on the node's loopback; every context the coordinator
opens there is then given that proxy (a context-level proxy, on top of the
browser's own). A stock browser server (``playwright run-server``, a hosted grid)
cannot answer: it is refused (``BROWSER_REFUSED``), since its pages would reach the
node's private network and metadata address unchecked.

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import suppress
from typing import Final, final

from playwright.async_api import Browser, Playwright, ProxySettings
from playwright.async_api import Error as PlaywrightError

from .._exceptions import BrowserRefused, BrowserUnavailable
from .._proxy import IDENTITY_URL
from .._sandbox import NO_RESOLVER_ARG
from ._config import CLOSE_TIMEOUT, RemoteEndpoint
from ._source import CHROMIUM_ARGS, BrowserSource

__all__ = ["RemoteNode", "browser_server_command", "node_launch_options"]

# What a node's proxy may say it is: a proxy on the node's own loopback.
_LOOPBACK_PROXY: Final = re.compile(r"^http://127\.0\.0\.1:[0-9]{1,5}$")
_EXIT_WITH_STDIN: Final = (
    "process.stdin.on('end', () => process.exit(0)); process.stdin.resume();"
    " require(process.argv[1]);"
)
# Seconds the identity question gets (the page's first request on that node).
_IDENTIFY_TIMEOUT: Final = 15.0


@final
class RemoteNode(BrowserSource):
    """A ``bulk node`` (Playwright browser server) at ``endpoint``.

    Args:
        endpoint: Its ``ws://HOST:PORT/TOKEN`` and slots.
        connect_timeout: Seconds the connection and the identity question get.

    Resource handling:
        Nothing runs on this machine: ``reap`` has nothing to kill; closing the
        connected ``Browser`` closes the node's contexts (the node's browser stays up
        for the next connection).
    """

    kind = "node"

    def __init__(self, endpoint: RemoteEndpoint, *, connect_timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.slots = endpoint.slots
        self.connect_timeout = connect_timeout
        self._proxy: ProxySettings | None = None

    def context_proxy(self) -> ProxySettings | None:
        return self._proxy

    async def connect(self, playwright: Playwright) -> Browser:
        try:
            browser = await playwright.chromium.connect(
                self.endpoint.url, timeout=self.connect_timeout * 1000
            )
        except PlaywrightError as exc:
            # Playwright's message may quote the URL, whose path is the node's secret.
            why = _first_line(exc).replace(self.endpoint.url, self.name)
            raise BrowserUnavailable(f"{self.name} did not answer: {why}") from None
        try:
            self._proxy = await _identify(browser, self.name)
        except BaseException:
            with suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(browser.close(), CLOSE_TIMEOUT)
            raise
        return browser

    async def reap(self) -> None:
        return None

    async def ping(self, browser: Browser) -> None:
        cdp = await browser.new_browser_cdp_session()
        await cdp.detach()


async def _identify(browser: Browser, name: str) -> ProxySettings:
    """Ask the node's egress proxy for itself; the proxy settings for its contexts.

    Raises:
        BrowserRefused: No bulk egress proxy answered (a stock browser server).
        BrowserUnavailable: The node went away while being asked.
    """
    try:
        context = await browser.new_context()
    except PlaywrightError as exc:
        raise BrowserUnavailable(f"{name}: {_first_line(exc)}") from None
    body: bytes | None = None
    try:
        page = await context.new_page()
        with suppress(PlaywrightError):
            response = await page.goto(IDENTITY_URL, timeout=_IDENTIFY_TIMEOUT * 1000)
            if response is not None and response.headers.get("x-bulk-node") == "1":
                body = await response.body()
    except PlaywrightError as exc:
        raise BrowserUnavailable(f"{name}: {_first_line(exc)}") from None
    finally:
        with suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(context.close(), CLOSE_TIMEOUT)
    proxy = _node_proxy(body)
    if proxy is None:
        if not browser.is_connected():
            raise BrowserUnavailable(f"{name} went away while connecting")
        raise BrowserRefused(
            f"{name} is not a bulk node (no bulk egress proxy answered there): its pages "
            "would reach its network unchecked; run 'bulk node' on that machine instead"
        )
    return {"server": proxy}


def _node_proxy(body: bytes | None) -> str | None:
    """The proxy URL in a node's identity answer, if it is one."""
    if body is None:
        return None
    try:
        facts = json.loads(body)
    except ValueError:
        return None
    proxy = facts.get("proxy") if isinstance(facts, dict) else None
    if not isinstance(proxy, str) or not _LOOPBACK_PROXY.match(proxy):
        return None
    return proxy


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def browser_server_command(config_file: str) -> list[str]:
    """The command that runs Playwright's browser server with ``config_file``
    (``launchServer`` options), from the Playwright package bulk uses.

    ``launch-server`` launches the one browser the file describes; clients can only
    connect to it. (``run-server`` would take a system Chromium only with
    ``--unsafe``, which lets any client holding the path pick the executable and
    its switches.)
    """
    from playwright._impl._driver import compute_driver_executable

    node, cli = compute_driver_executable()
    # ``node -e`` keeps argv as ``node cli.js ...`` would; the server ends when its
    # stdin does, i.e. when the process holding the pipe (``bulk node``) is gone,
    # however it ended.
    return [node, "-e", _EXIT_WITH_STDIN, cli, "launch-server", "--browser", "chromium",
            "--config", config_file]  # fmt: skip


def node_launch_options(
    executable: str, *, proxy: str, host: str, port: int, token: str
) -> dict[str, object]:
    """``launchServer`` options for a ``bulk node``: bulk's Chromium switches, behind
    the node's egress proxy at ``proxy``, served at ``ws://host:port/token``."""
    return {
        "executablePath": executable,
        "headless": True,
        "chromiumSandbox": False,
        # Chromium resolves no name itself: the proxy gets them unresolved and its
        # policy resolves and checks them (as for the local browser).
        "args": [*CHROMIUM_ARGS, NO_RESOLVER_ARG],
        # As for the local browser: no user ever clicks, so no page opens windows.
        "ignoreDefaultArgs": ["--disable-popup-blocking"],
        # The browser's own proxy (loopback included: Playwright adds <-loopback>);
        # the coordinator sets the same one on every context it opens.
        "proxy": {"server": proxy},
        "host": host,
        "port": port,
        "wsPath": "/" + token,
    }
