"""Waiting for a page, and what a capture says about its network: real Chromium, local sites.

- ``load_timeout``: a sub-resource on a host that accepts the connection and never
  answers no longer fails the page; it is captured, marked ``load: "partial"`` with
  the pending host. A page whose document never arrives still fails at ``timeout``.
- ``wait_until``: ``domcontentloaded`` does not wait for images, ``networkidle``
  waits for requests started after load, ``mostly_idle`` tolerates two hanging ones.
- Network errors in words (the proxy says why a connection failed), raw name kept.
- ``block_media`` and ``block_ads`` (EasyList) keep requests from leaving Chromium,
  and count them.

Servers that must hang wait on ``release`` (set at teardown), never on a sleep.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import attrs
import pytest
import trio
from PIL import Image

from bulk._capture import BrowserPool, PoolConfig, Screenshot
from bulk._exceptions import BulkError, CaptureTimeout, NavigationError
from bulk._options import CaptureOptions
from bulk._policy import EgressPolicy, IPAddress
from tests.sitekit import Route, SiteServer, free_port

pytestmark = pytest.mark.browser

RED = (255, 0, 0)
GREEN = (0, 255, 0)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    # No DNS in tests: site.test is this machine, every other name does not exist.
    import ipaddress

    if host == "site.test":
        return [ipaddress.ip_address("127.0.0.1")]
    raise OSError(f"{host}: name does not resolve")


# 127.0.0.2 is the "third-party" host of these sites.
POLICY = EgressPolicy(allow=("127.0.0.0/8", "site.test", "nosuch.test"), resolver=_resolve)


def html(body: str, *, style: str = "", head: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<style>html,body{{margin:0;padding:0}} {style}</style>{head}</head>"
        f"<body>{body}</body></html>"
    )


def at(shot: Screenshot, x: int, y: int) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(shot.data)) as img:
        pixel = img.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    return (pixel[0], pixel[1], pixel[2])


def near(got: tuple[int, ...], want: tuple[int, int, int], tol: int = 24) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got[:3], want, strict=True))


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        yield server


@pytest.fixture
def third() -> Iterator[SiteServer]:
    """Another host (127.0.0.2): the dead or the ad-serving third party."""
    with SiteServer(host="127.0.0.2") as server:
        yield server


def hanging(release: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(h: BaseHTTPRequestHandler) -> None:
        release.wait(60)

    return handler


def gated(gate: threading.Event, seen: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    """Answers ``late`` once the test opens ``gate``; ``seen`` says it was asked."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        seen.set()
        gate.wait(60)
        body = b"late"
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handler


async def outcome(pool: BrowserPool, url: str, options: CaptureOptions) -> Screenshot | BulkError:
    try:
        return await pool.capture(url, options)
    except BulkError as exc:
        return exc


async def test_dead_stylesheet_host_gives_a_partial_capture_not_a_failure(
    chromium: str, site: SiteServer, third: SiteServer, release: threading.Event
) -> None:
    third.routes["/dead.css"] = Route(handler=hanging(release))
    third.routes["/dead.png"] = Route(handler=hanging(release))
    site.routes["/css"] = Route(
        body=html(
            "<p>text</p>",
            style="body{background:rgb(255,0,0)}",
            head=f'<link rel=stylesheet href="{third.url("/dead.css")}">',
        )
    )
    site.routes["/img"] = Route(
        body=html(
            f'<img src="{third.url("/dead.png")}" width=10 height=10>',
            style="body{background:rgb(0,255,0)}",
        )
    )
    # The document itself never arrives: that is still a failure, at the hard deadline.
    site.routes["/stuck"] = Route(handler=hanging(release))
    fast = CaptureOptions(load_timeout=1000, timeout=20000)
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=3), POLICY) as pool:
        css, img, stuck = await _all(
            lambda: pool.capture(site.url("/css"), fast),
            lambda: pool.capture(site.url("/img"), CaptureOptions(load_timeout=1000)),
            lambda: outcome(pool, site.url("/stuck"), CaptureOptions(timeout=3000)),
        )
    assert css.load == "partial" and css.pending_hosts == ("127.0.0.2",)
    assert near(at(css, 5, 5), RED)
    assert img.load == "partial" and img.pending_hosts == ("127.0.0.2",)
    assert near(at(img, 50, 50), GREEN)
    assert isinstance(stuck, CaptureTimeout)


async def _all(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int, call: Callable[[], Any]) -> None:
        results[i] = await call()

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    return results


async def test_a_page_that_loads_is_complete(chromium: str, site: SiteServer) -> None:
    site.routes["/"] = Route(body=html("<p>hi</p>"))
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        shot = await pool.capture(site.url("/"), CaptureOptions())
    assert shot.load == "complete" and shot.pending_hosts == ()
    assert shot.requests == 1 and shot.blocked_requests == 0


LATE_PAGE = html(
    "<script>window.addEventListener('load', () => {"
    "  fetch('/late').then(r => r.text()).then(t => {"
    "    document.body.style.background = 'rgb(0,255,0)'; });"
    "});</script>",
    style="body{background:rgb(255,0,0)}",
)


async def test_networkidle_waits_for_requests_after_load_and_load_does_not(
    chromium: str, site: SiteServer
) -> None:
    gate, seen = threading.Event(), threading.Event()
    site.routes["/"] = Route(body=LATE_PAGE)
    site.routes["/late"] = Route(handler=gated(gate, seen))
    try:
        async with BrowserPool.open(
            PoolConfig(executable=chromium, concurrency=1), POLICY
        ) as pool:
            # load: captured while /late is still held by the server.
            at_load = await pool.capture(site.url("/"), CaptureOptions(wait_until="load"))
            assert seen.is_set()
            seen.clear()

            async def open_gate_when_asked() -> None:
                await trio.to_thread.run_sync(seen.wait, 60)
                gate.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_gate_when_asked)
                idle = await pool.capture(site.url("/"), CaptureOptions(wait_until="networkidle"))
    finally:
        gate.set()
    assert near(at(at_load, 5, 5), RED)
    assert near(at(idle, 5, 5), GREEN) and idle.load == "complete"


async def test_domcontentloaded_does_not_wait_for_images_and_mostly_idle_tolerates_two(
    chromium: str, site: SiteServer, release: threading.Event
) -> None:
    site.routes["/hang1.png"] = Route(handler=hanging(release))
    site.routes["/hang2.png"] = Route(handler=hanging(release))
    site.routes["/"] = Route(
        body=html(
            '<img src="/hang1.png" width=5 height=5><img src="/hang2.png" width=5 height=5>',
            style="body{background:rgb(0,255,0)}",
        )
    )
    slow = CaptureOptions(load_timeout=60000, timeout=60000)
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=3), POLICY) as pool:
        dcl, mostly, idle = await _all(
            lambda: pool.capture(site.url("/"), attrs.evolve(slow, wait_until="domcontentloaded")),
            lambda: pool.capture(site.url("/"), attrs.evolve(slow, wait_until="mostly_idle")),
            lambda: pool.capture(
                site.url("/"), CaptureOptions(wait_until="networkidle", load_timeout=1000)
            ),
        )
    # Two hanging images: load never comes, the first two still capture at once.
    assert isinstance(dcl, Screenshot) and dcl.load == "complete"
    assert isinstance(mostly, Screenshot) and mostly.load == "complete"
    assert isinstance(idle, Screenshot) and idle.load == "partial"
    assert idle.pending_hosts == ("127.0.0.1",)


async def test_network_errors_are_put_in_words_with_the_raw_name_kept(
    chromium: str, site: SiteServer
) -> None:
    closed = free_port()
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=4), POLICY) as pool:
        name_http, name_https, refused_http, refused_https = await _all(
            lambda: outcome(pool, "http://nosuch.test/", CaptureOptions()),
            lambda: outcome(pool, "https://nosuch.test/", CaptureOptions()),
            lambda: outcome(pool, f"http://127.0.0.1:{closed}/", CaptureOptions()),
            lambda: outcome(pool, f"https://127.0.0.1:{closed}/", CaptureOptions()),
        )
    for error in (name_http, name_https):
        assert isinstance(error, NavigationError), error
        assert "did not resolve" in error.message and "nosuch.test" in error.message
    assert isinstance(name_https, NavigationError)
    assert name_https.details["net_error"] == "ERR_TUNNEL_CONNECTION_FAILED"
    assert name_https.details["cause"] == "ERR_NAME_NOT_RESOLVED"
    for error in (refused_http, refused_https):
        assert isinstance(error, NavigationError), error
        assert "refused" in error.message and str(closed) in error.message
        assert error.details["cause"] == "ERR_CONNECTION_REFUSED"


BLOCKING_PAGE = html(
    '<img src="/photo.png" width=10 height=10>'
    '<img src="/ad_728.jpg" width=10 height=10>'
    '<script src="/ad_728.js"></script>'
    '<script src="/app.js"></script>'
)


async def test_block_media_and_block_ads_keep_requests_from_leaving(
    chromium: str, site: SiteServer
) -> None:
    site.routes["/"] = Route(body=BLOCKING_PAGE)
    for path in ("/photo.png", "/ad_728.jpg"):
        site.routes[path] = Route(body=b"x", content_type="image/png")
    for path in ("/ad_728.js", "/app.js"):
        site.routes[path] = Route(body="1", content_type="application/javascript")

    def hits() -> dict[str, int]:
        paths = ("/photo.png", "/ad_728.jpg", "/ad_728.js", "/app.js")
        counts = {p: len(site.hits(p)) for p in paths}
        site.requests.clear()
        return counts

    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        plain = await pool.capture(site.url("/"), CaptureOptions())
        plain_hits = hits()
        media = await pool.capture(site.url("/"), CaptureOptions(block_media=True))
        media_hits = hits()
        ads = await pool.capture(site.url("/"), CaptureOptions(block_ads=True))
        ads_hits = hits()
    assert plain_hits == {"/photo.png": 1, "/ad_728.jpg": 1, "/ad_728.js": 1, "/app.js": 1}
    assert plain.blocked_requests == 0
    assert media_hits == {"/photo.png": 0, "/ad_728.jpg": 0, "/ad_728.js": 1, "/app.js": 1}
    assert media.blocked_requests == 2
    assert ads_hits == {"/photo.png": 1, "/ad_728.jpg": 0, "/ad_728.js": 0, "/app.js": 1}
    assert ads.blocked_requests == 2
