"""``bulk node``: a browser machine for a coordinator (``bulk serve|archive --browser``).

It runs Playwright's own browser server (``playwright launch-server``, from the
Playwright package bulk installs) with the Chromium bulk would use and bulk's
switches, under a secret path: the endpoint is ``ws://HOST:PORT/TOKEN``. Next to it,
on the node's loopback, runs bulk's egress proxy with the node's own address policy
(``--allow-private``/``--allow``); it is the browser's proxy, and the coordinator
gives every context it opens the same one, having asked the proxy for itself
(``_capture._remote``): a page on a node reaches exactly what a local page may, never
the node's private network, its metadata address or its own listeners (the browser
server's port is registered as bulk's own, refused whatever ``--allow`` says).

If the browser server ends (its Chromium died), it is started again on the same port
with the same token, so coordinators reconnect by themselves.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import signal
import subprocess
import tempfile
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Final, final

import attrs
import trio

from ._exceptions import BrowserUnavailable
from ._listeners import own_listener
from ._policy import EgressPolicy
from ._proxy import open_egress_proxy
from ._version import __version__

__all__ = ["NodeConfig", "new_token", "run_node"]

log = logging.getLogger(__name__)

# Seconds the browser server gets to print its endpoint; to stop before SIGKILL.
_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 10.0
# Seconds before a browser server that ended is started again (doubling, capped).
_RESTART_BACKOFF: Final = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_ENDPOINT: Final = re.compile(rb"ws://[^\s]+")
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def new_token() -> str:
    """A random secret path for a node's endpoint (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


@final
@attrs.frozen(kw_only=True)
class NodeConfig:
    """How a node runs.

    Args:
        host: Address the browser server listens on (coordinators connect there).
        port: Its port (0: any free one, chosen at start and kept across restarts).
        token: The secret path (``new_token``): 16-128 URL-safe characters.
        executable: The Chromium binary (``_config.find_chromium``).
        policy: The node's address policy (its pages' every connection).
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str = attrs.field()
    executable: str
    policy: EgressPolicy

    @token.validator
    def _check_token(self, _: object, value: str) -> None:
        if not _TOKEN.match(value):
            raise ValueError("the token must be 16-128 of A-Z a-z 0-9 _ -")


async def run_node(
    config: NodeConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the node until cancelled; ``task_status.started(endpoint)`` once it serves.

    Raises:
        BrowserUnavailable: The browser server did not start the first time.

    Cancellation:
        The browser server is sent SIGTERM (Playwright closes its Chromium), then
        SIGKILL after a grace period; the proxy's sockets are closed.
    """
    async with open_egress_proxy(config.policy, require_auth=False, listen=True) as proxy:
        proxy.identity = json.dumps({"bulk_node": __version__, "proxy": proxy.url}).encode()
        with tempfile.TemporaryDirectory(prefix="bulk-node-") as tmp, ExitStack() as own:
            port = config.port
            started = False
            for attempt in itertools.count():
                cfg = Path(tmp) / "launch-server.json"
                options = _launch_options(config, proxy.url, port)
                cfg.write_text(json.dumps(options), encoding="utf-8")
                cfg.chmod(0o600)
                try:
                    endpoint, process = await _start_server(str(cfg), Path(tmp) / "server.log")
                except BrowserUnavailable:
                    if not started:
                        raise
                    log.warning("the browser server did not start again; retrying")
                    await trio.sleep(_RESTART_BACKOFF[min(attempt, len(_RESTART_BACKOFF) - 1)])
                    continue
                try:
                    if not started:
                        port = int(endpoint.rsplit(":", 1)[1].split("/", 1)[0])
                        # Never a destination for the node's own pages.
                        own.enter_context(own_listener(config.host, port))
                        started = True
                        task_status.started(endpoint)
                    else:
                        log.warning("the browser server was started again")
                    async with trio.open_nursery() as nursery:
                        assert process.stdout is not None
                        nursery.start_soon(_drain, process.stdout)
                        await process.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        await _stop(process)
                log.warning("the browser server ended (exit %s)", process.returncode)
                await trio.sleep(_RESTART_BACKOFF[0])


def _launch_options(config: NodeConfig, proxy: str, port: int) -> dict[str, object]:
    from ._capture._remote import node_launch_options

    return node_launch_options(
        config.executable, proxy=proxy, host=config.host, port=port, token=config.token
    )


async def _start_server(config_file: str, log_file: Path) -> tuple[str, trio.Process]:
    """Start ``playwright launch-server``; its endpoint (first line) and process.

    Its stderr goes to ``log_file`` (quoted when it does not start)."""
    from ._capture._remote import browser_server_command

    with log_file.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            browser_server_command(config_file),
            # Held until the server is stopped: it ends with its stdin (see
            # browser_server_command), so it never outlives this process.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    out = b""
    try:
        assert process.stdout is not None
        with trio.move_on_after(_START_TIMEOUT):
            async for chunk in process.stdout:
                out += chunk
                if (_ENDPOINT.search(out) and out.endswith(b"\n")) or len(out) > 65536:
                    break
        found = _ENDPOINT.search(out)
        if found is None:
            with suppress(OSError):
                out += (await trio.Path(log_file).read_bytes())[-4096:]
            lines = out.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else "no endpoint printed"
            raise BrowserUnavailable(f"the browser server did not start: {why}")
    except BaseException:
        with trio.CancelScope(shield=True):
            await _stop(process)
        raise
    return found.group().decode(), process


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with suppress(trio.ClosedResourceError, OSError):
                await stream.aclose()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    # Whatever the server prints after its endpoint must not fill the pipe.
    with suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
        async for _ in stream:
            pass
