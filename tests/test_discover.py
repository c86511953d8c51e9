"""Discovery through the real CLI against the sitemap corpus served on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import math
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk._discover import (
    DiscoverLimits,
    discover,
    discover_all,
    is_sitemap_url,
    max_sitemaps_for,
)
from bulk._exceptions import (
    BulkError,
    FetchError,
    NoSitemapFound,
    ResponseTooLarge,
    URLBlocked,
    ValidationError,
)
from bulk._fetch import FetchLimits, _retry_after, open_fetcher
from bulk._policy import EgressPolicy
from bulk._sitemap._inflate import PIECE_BYTES
from bulk._urls import parse_http_url
from tests.conftest import run_cli
from tests.servicekit import Service, new_key, wait_for_status
from tests.sitekit import FIXTURES, Route, SiteServer, load_case, routes_from_case

CASES = sorted(p for p in (FIXTURES / "sitemaps").iterdir() if (p / "case.json").exists())
LOOPBACK = EgressPolicy(allow=("127.0.0.1/32",))


@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_corpus_case_through_cli(case_dir: Path) -> None:
    case = load_case(case_dir)
    with SiteServer(case_dir, routes_from_case(case)) as server:
        # Only the listed routes exist: a probe of an unlisted path must not find a file.
        server.directory = None
        server.routes = routes_from_case(case)
        server.directory = case_dir
        _strict(server, case)
        result = run_cli(
            "discover",
            server.url(case["start"]),
            "--json",
            "--allow",
            "127.0.0.1/32",
            *case.get("args", []),
        )
        expect = case["expect"]
        for part in expect.get("stderr", []):
            assert part.replace("{origin}", server.origin) in result.stderr, result.stderr
        if "urls" in expect:
            assert result.code == 0, result.stderr
            want = [u.replace("{origin}", server.origin) for u in expect["urls"]]
            assert json.loads(result.stdout) == want
        else:
            assert result.code == 1, (result.stdout, result.stderr)
            assert result.stderr.startswith(expect["error"] + ":"), result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert result.stdout == ""


def _strict(server: SiteServer, case: dict) -> None:
    # Serve routes only, never stray files of the case directory.
    server._file_route = lambda path: None  # type: ignore[method-assign]


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40


def test_discover_lines_output_streams_in_order(basic_site: SiteServer) -> None:
    result = run_cli("discover", basic_site.origin, "--allow", "127.0.0.1")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        basic_site.url(p) for p in ("/", "/about/", "/blog/", "/blog/my-post")
    ]


def test_discover_invalid_site_is_usage_error() -> None:
    result = run_cli("discover", "ftp://example.com/")
    assert result.code == 2
    assert result.stderr.startswith("INVALID_URL:")


def test_discover_private_site_blocked_without_allow(basic_site: SiteServer) -> None:
    result = run_cli("discover", basic_site.origin)
    assert result.code == 1
    assert result.stderr.startswith("URL_BLOCKED:")
    assert basic_site.requests == []


def test_bare_domain_tries_https_then_http(basic_site: SiteServer) -> None:
    # "127.0.0.1:PORT" has no scheme: https fails (plain HTTP server), http works.
    result = run_cli("discover", f"127.0.0.1:{basic_site.port}", "--allow", "127.0.0.1", "--json")
    assert result.code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 4


def test_is_sitemap_url() -> None:
    for url, want in [
        ("http://x.com/", False),
        ("http://x.com/blog/", False),
        ("http://x.com/sitemap.xml", True),
        ("http://x.com/sitemap_index.xml.gz", True),
        ("http://x.com/feed.rss", True),
        ("http://x.com/page-sitemap", True),
        ("http://x.com/about", False),
    ]:
        assert is_sitemap_url(parse_http_url(url)) is want, url


def _big_urlset(origin: str, n: int, prefix: str = "p") -> bytes:
    head = b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
    body = b"".join(f"<url><loc>{origin}/{prefix}{i}</loc></url>".encode() for i in range(n))
    return head + body + b"</urlset>"


async def test_max_pages_stops_reading_early() -> None:
    # A 200,000-URL sitemap: with max_pages 10 discovery stops long before the end.
    server = SiteServer(routes={})
    server.routes["/sitemap.xml"] = Route(
        body=_big_urlset(server.origin, 200_000), content_type="application/xml"
    )
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            with trio.fail_after(10):
                urls, result = await discover_all(
                    server.url("/sitemap.xml"), fetcher, DiscoverLimits(max_pages=10)
                )
    assert urls == [f"{server.origin}/p{i}" for i in range(10)]
    assert result.truncated


async def test_first_urls_arrive_before_discovery_ends() -> None:
    # Streaming: an index whose second child is slow; the first child's URLs are
    # delivered while the second is still being fetched.
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/robots.txt"] = Route(body=f"Sitemap: {o}/index.xml\n")
    server.routes["/index.xml"] = Route(
        body=f"<sitemapindex><sitemap><loc>{o}/a.xml</loc></sitemap>"
        f"<sitemap><loc>{o}/b.xml</loc></sitemap></sitemapindex>"
    )
    server.routes["/a.xml"] = Route(body=_big_urlset(o, 3, "a"))
    server.routes["/b.xml"] = Route(body=_big_urlset(o, 3, "b"), delay=2.0)
    got: list[tuple[float, str]] = []
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            send, recv = trio.open_memory_channel[str](math.inf)
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(discover, o, fetcher, send, DiscoverLimits())
                async with recv:
                    async for url in recv:
                        got.append((trio.current_time() - start, url))
    assert [u for _, u in got] == [f"{o}/a{i}" for i in range(3)] + [f"{o}/b{i}" for i in range(3)]
    assert got[0][0] < 1.0 < got[-1][0]


async def test_index_fan_out_and_sitemap_cap() -> None:
    server = SiteServer(routes={})
    o = server.origin
    children = "".join(f"<sitemap><loc>{o}/c{i}.xml</loc></sitemap>" for i in range(1000))
    server.routes["/sitemap.xml"] = Route(body=f"<sitemapindex>{children}</sitemapindex>")
    for i in range(1000):
        server.routes[f"/c{i}.xml"] = Route(body=_big_urlset(o, 1, f"c{i}-"))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            with trio.fail_after(60):
                urls, result = await discover_all(
                    f"{o}/sitemap.xml", fetcher, DiscoverLimits(max_pages=10_000, max_sitemaps=50)
                )
    assert len(urls) == 49  # the index itself is one of the 50 documents
    assert result.truncated and result.reasons == ["max_sitemaps"]
    assert any("50 sitemap documents" in w for w in result.warnings)
    assert result.found == 49
    assert len([r for r in server.requests if r.path.startswith("/c")]) == 49


async def test_gzip_bomb_is_cut_at_the_budget() -> None:
    # 64 MiB of zeros gzip to ~64 KB; the document budget stops it, nothing is kept,
    # and the sitemap asked for by name fails with its own error.
    bomb = gzip.compress(b"<urlset>" + b"\0" * (64 * 2**20), compresslevel=9)
    server = SiteServer(routes={})
    server.routes["/sitemap.xml.gz"] = Route(body=bomb, content_type="application/gzip")
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            with pytest.raises(Exception) as info:
                await discover_all(
                    server.url("/sitemap.xml.gz"),
                    fetcher,
                    DiscoverLimits(max_document_bytes=4 * 2**20),
                )
    assert isinstance(info.value, ResponseTooLarge)


async def test_retry_after_honoured_once() -> None:
    server = SiteServer(routes={})
    o = server.origin
    calls = {"n": 0}

    def flaky(h):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            SiteServer._send(h, 503, b"busy", "text/plain", {"Retry-After": "1"})
        else:
            body = _big_urlset(o, 2)
            SiteServer._send(h, 200, body, "application/xml", {})

    server.routes["/sitemap.xml"] = Route(handler=flaky)
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            start = trio.current_time()
            urls, _ = await discover_all(f"{o}/sitemap.xml", fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    assert calls["n"] == 2
    assert trio.current_time() - start >= 0.9


async def test_unreachable_site_is_a_fetch_error() -> None:
    async with open_fetcher(LOOPBACK, FetchLimits(connect_timeout=2, retries=0)) as fetcher:
        with pytest.raises(FetchError):
            await discover_all("http://127.0.0.1:1/", fetcher)


async def test_site_blocked_before_any_request(canary: SiteServer) -> None:
    async with open_fetcher(LOOPBACK) as fetcher:
        with pytest.raises(URLBlocked):
            await discover_all(canary.origin, fetcher)
    assert canary.requests == []


async def test_no_sitemap_anywhere(basic_site: SiteServer) -> None:
    empty = SiteServer(routes={})
    with empty:
        async with open_fetcher(LOOPBACK) as fetcher:
            with pytest.raises(NoSitemapFound):
                await discover_all(empty.origin, fetcher)
    probed = {r.path for r in empty.requests}
    assert {"/robots.txt", "/sitemap.xml", "/sitemap_index.xml", "/wp-sitemap.xml"} <= probed


async def test_document_over_its_budget_keeps_what_was_read_and_says_so() -> None:
    # Cut at the byte budget: the URLs before the cut are all sent, in order, and the
    # loss is reported (never silent).
    server = SiteServer(routes={})
    server.routes["/sitemap.xml"] = Route(body=_big_urlset(server.origin, 100_000))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(
                server.url("/sitemap.xml"),
                fetcher,
                DiscoverLimits(max_pages=1_000_000, max_document_bytes=2**20),
            )
    assert 10_000 < len(urls) < 100_000
    assert urls == [f"{server.origin}/p{i}" for i in range(len(urls))]
    assert result.truncated
    assert any("RESPONSE_TOO_LARGE" in w and "not read" in w for w in result.warnings)


async def test_slow_receiver_gets_every_url_in_order() -> None:
    # An unbuffered output channel: every send blocks until the receiver takes it (the
    # WouldBlock path), across an index of compressed children read ahead.
    server = SiteServer(routes={})
    o = server.origin
    children = "".join(f"<sitemap><loc>{o}/c{i}.xml.gz</loc></sitemap>" for i in range(5))
    server.routes["/index.xml"] = Route(body=f"<sitemapindex>{children}</sitemapindex>")
    for i in range(5):
        server.routes[f"/c{i}.xml.gz"] = Route(
            body=gzip.compress(_big_urlset(o, 20_000, f"c{i}-")), content_type="application/gzip"
        )
    got: list[str] = []
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            send, recv = trio.open_memory_channel[str](0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    discover, f"{o}/index.xml", fetcher, send, DiscoverLimits(max_pages=10**6)
                )
                async with recv:
                    async for url in recv:
                        got.append(url)
                        if len(got) % 5000 == 0:
                            await trio.sleep(0.01)
    assert got == [f"{o}/c{i}-{n}" for i in range(5) for n in range(20_000)]


async def test_max_pages_cancels_documents_read_ahead() -> None:
    # max_pages reached in the first child: the slow children fetched ahead are
    # cancelled, not waited for.
    server = SiteServer(routes={})
    o = server.origin
    children = "".join(f"<sitemap><loc>{o}/c{i}.xml</loc></sitemap>" for i in range(4))
    server.routes["/index.xml"] = Route(body=f"<sitemapindex>{children}</sitemapindex>")
    server.routes["/c0.xml"] = Route(body=_big_urlset(o, 50, "a"))
    for i in range(1, 4):
        server.routes[f"/c{i}.xml"] = Route(body=_big_urlset(o, 5, f"s{i}-"), delay=20)
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            with trio.fail_after(5):
                urls, result = await discover_all(
                    f"{o}/index.xml", fetcher, DiscoverLimits(max_pages=10, count_timeout=0.5)
                )
    assert urls == [f"{o}/a{i}" for i in range(10)]
    assert result.truncated and result.reasons == ["max_pages"]
    assert result.found is None  # the slow children were not waited for to count


async def test_unreadable_robots_txt_is_an_empty_one() -> None:
    # The host answered: a robots.txt over its limit is ignored and the common paths
    # are probed (it does not mean the site cannot be reached).
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/robots.txt"] = Route(
        body=f"Sitemap: {o}/listed.xml\n" + "# padding\n" * 100_000
    )
    server.routes["/sitemap.xml"] = Route(body=_big_urlset(o, 2))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(o, fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    assert "/listed.xml" not in {r.path for r in server.requests}
    assert any("robots.txt ignored" in w for w in result.warnings)


_DOCTYPE = '<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x "y">]><urlset></urlset>'
_STACKED = Route(
    body=gzip.compress(gzip.compress(b"<urlset/>")), headers={"Content-Encoding": "gzip, gzip"}
)
_BOMB = Route(body=gzip.compress(b"\0" * (2 * 2**20)), content_type="application/gzip")
_DEEP = {
    f"/d{i}.xml": f"<sitemapindex><sitemap><loc>{{origin}}/d{i + 1}.xml</loc></sitemap>"
    "</sitemapindex>"
    for i in range(8)
}


@pytest.mark.parametrize(
    ("routes", "code"),
    [
        # Only guesses, which miss (404, HTML): nothing was found.
        ({"/sitemap.xml": "<html><body>hi</body></html>"}, "NO_SITEMAP_FOUND"),
        # A sitemap read fine, with no usable page, is the answer whatever else failed.
        (
            {
                "/robots.txt": "Sitemap: {origin}/a.xml\nSitemap: {origin}/b.xml\n",
                "/a.xml": "<urlset><url><loc>ftp://x/</loc></url></urlset>",
                "/b.xml": _STACKED,
            },
            "NO_URLS_FOUND",
        ),
        # A hostile sitemap, found by probing.
        ({"/sitemap.xml": _DOCTYPE}, "INVALID_SITEMAP"),
        # A sitemap robots.txt names fails: its own error, not "no sitemap".
        ({"/robots.txt": "Sitemap: {origin}/a.xml\n", "/a.xml": _STACKED}, "FETCH_ERROR"),
        # An index whose only child is a bomb: the child's error says more.
        (
            {
                "/sitemap.xml": "<sitemapindex><sitemap><loc>{origin}/c.xml.gz</loc></sitemap>"
                "</sitemapindex>",
                "/c.xml.gz": _BOMB,
            },
            "RESPONSE_TOO_LARGE",
        ),
        # Indexes nested deeper than max_depth: all read fine, no page anywhere.
        ({"/robots.txt": "Sitemap: {origin}/d0.xml\n", **_DEEP}, "NO_URLS_FOUND"),
    ],
    ids=[
        "probes-miss",
        "empty-beats-failed",
        "refused",
        "robots-listed-fails",
        "index-child-bomb",
        "too-deep",
    ],
)
async def test_no_pages_error_is_the_most_informative(
    routes: dict[str, str | Route], code: str
) -> None:
    server = SiteServer(routes={})
    o = server.origin
    for path, route in routes.items():
        server.routes[path] = (
            Route(body=route.replace("{origin}", o)) if isinstance(route, str) else route
        )
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            with pytest.raises(BulkError) as info:
                await discover_all(o, fetcher, DiscoverLimits(max_document_bytes=2**20))
    assert info.value.code == code, info.value


async def test_content_encoding_is_decoded_in_bounded_pieces() -> None:
    # 32 MiB of zeros sent as ~32 KB with Content-Encoding: gzip. The decoded body
    # comes in pieces of at most PIECE_BYTES, whatever the compression ratio.
    body = bytes(32 * 2**20)
    server = SiteServer(routes={})
    server.routes["/zeros.xml"] = Route(
        body=gzip.compress(body, compresslevel=9), headers={"Content-Encoding": "gzip"}
    )
    sizes: list[int] = []
    with server:
        async with (
            open_fetcher(LOOPBACK) as fetcher,
            fetcher.get(server.url("/zeros.xml")) as response,
            aclosing(response.chunks()) as chunks,
        ):
            async for chunk in chunks:
                sizes.append(len(chunk))
    assert sum(sizes) == len(body)
    assert max(sizes) <= PIECE_BYTES


# ---- item: no input makes discovery end in a traceback ------------------------------------


async def _no_dns(host: str, port: int) -> list[Any]:
    """A resolver that never resolves: no test may look a real name up."""
    raise OSError(f"no DNS in tests ({host})")


NO_DNS = EgressPolicy(allow=("127.0.0.1/32",), resolver=_no_dns)
# Hosts ada accepts and httpx's IDNA codec refuses (the first is a registered domain).
IDNA_HOSTS = ("xn--ls8h.la", "xn--zz.com", "xn--a.com")


async def test_robots_sitemap_lines_on_hosts_httpx_refuses_are_skipped() -> None:
    server = SiteServer(routes={})
    o = server.origin
    lines = "".join(f"Sitemap: https://{host}/sitemap.xml\n" for host in IDNA_HOSTS)
    server.routes["/robots.txt"] = Route(body=lines + f"Sitemap: {o}/ok.xml\n")
    server.routes["/ok.xml"] = Route(body=_big_urlset(o, 2))
    with server:
        async with open_fetcher(NO_DNS) as fetcher:
            urls, result = await discover_all(o, fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    for host in IDNA_HOSTS:
        assert any(host in w for w in result.warnings), (host, result.warnings)


async def test_index_children_on_hosts_httpx_refuses_are_skipped() -> None:
    server = SiteServer(routes={})
    o = server.origin
    children = [f"https://{host}/child.xml" for host in IDNA_HOSTS] + [f"{o}/ok.xml"]
    server.routes["/index.xml"] = Route(
        body="<sitemapindex>"
        + "".join(f"<sitemap><loc>{c}</loc></sitemap>" for c in children)
        + "</sitemapindex>"
    )
    server.routes["/ok.xml"] = Route(body=_big_urlset(o, 2))
    with server:
        async with open_fetcher(NO_DNS) as fetcher:
            urls, _ = await discover_all(f"{o}/index.xml", fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]


async def test_a_redirect_to_a_host_httpx_refuses_fails_that_child_only() -> None:
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/index.xml"] = Route(
        body=f"<sitemapindex><sitemap><loc>{o}/moved.xml</loc></sitemap>"
        f"<sitemap><loc>{o}/ok.xml</loc></sitemap></sitemapindex>"
    )
    server.routes["/moved.xml"] = Route(redirect="https://xn--ls8h.la/sitemap.xml", status=302)
    server.routes["/ok.xml"] = Route(body=_big_urlset(o, 2))
    with server:
        async with open_fetcher(NO_DNS) as fetcher:
            urls, result = await discover_all(f"{o}/index.xml", fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    assert any("moved.xml" in w and "FETCH_ERROR" in w for w in result.warnings)


@pytest.mark.parametrize("host", IDNA_HOSTS)
async def test_a_sitemap_url_httpx_refuses_is_a_coded_error(host: str) -> None:
    async with open_fetcher(NO_DNS) as fetcher:
        with pytest.raises(BulkError) as info:
            await discover_all(f"https://{host}/sitemap.xml", fetcher)
        with pytest.raises(BulkError) as site_info:
            await discover_all(f"https://{host}/", fetcher)
    # Refused before any I/O; once the policy refuses such hosts itself, INVALID_URL
    # too. (FETCH_ERROR if a fetcher ever accepts them: this resolver resolves nothing.)
    assert info.value.code in ("INVALID_URL", "FETCH_ERROR"), info.value
    assert site_info.value.code in ("INVALID_URL", "FETCH_ERROR"), site_info.value


RETRY_AFTER_VALUES = [
    "soon",
    "",
    "\u00b2",  # a digit to str.isdigit, not to float()
    "1.5",
    "-1",
    "99999999999999999999999999999",
    "Mon, 01 Jan 0001 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 +9999",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Thu, 32 Foo 2024 99:99:99 GMT",
]


@pytest.mark.parametrize("value", RETRY_AFTER_VALUES)
async def test_any_retry_after_value_is_a_bounded_wait(value: str) -> None:
    server = SiteServer(routes={})
    o = server.origin
    calls = {"n": 0}

    def busy_once(h):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            SiteServer._send(h, 429, b"slow down", "text/plain", {"Retry-After": value})
        else:
            SiteServer._send(h, 200, _big_urlset(o, 2), "application/xml", {})

    server.routes["/sitemap.xml"] = Route(handler=busy_once)
    with server:
        async with open_fetcher(LOOPBACK, FetchLimits(retry_after_cap=0.2)) as fetcher:
            with trio.fail_after(10):
                urls, _ = await discover_all(f"{o}/sitemap.xml", fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    assert calls["n"] == 2


def test_retry_after_soon_through_the_cli() -> None:
    routes = {
        "/sitemap.xml": Route(
            status=503, body="busy", headers={"Retry-After": "soon"}, content_type="text/plain"
        )
    }
    with SiteServer(routes=routes) as server:
        result = run_cli("discover", server.url("/sitemap.xml"), "--allow=127.0.0.1")
    assert result.code == 1, result.stderr
    assert result.stderr.startswith("NO_SITEMAP_FOUND:") or result.stderr.startswith(
        "FETCH_ERROR:"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert len(server.hits("/sitemap.xml")) == 2


_HEADER_BYTES = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
_HTTP_DATES = st.builds(
    "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Tue", "Sun", "Xyz"]),
    st.integers(0, 40),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["GMT", "UTC", "+0000", "-2359", "+9999", "EST", ""]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_HEADER_BYTES, _HTTP_DATES.map(str.encode), st.text(max_size=12).map(str.encode)))
def test_retry_after_is_always_within_the_cap(value: bytes) -> None:
    headers = httpx.Headers([(b"retry-after", value)])
    delay = _retry_after(headers, 5.0)
    assert 0.0 <= delay <= 5.0


# ---- budgets, the host rule, what is skipped and what was found --------------------------


def _index(*children: str) -> str:
    return (
        "<sitemapindex>"
        + "".join(f"<sitemap><loc>{c}</loc></sitemap>" for c in children)
        + "</sitemapindex>"
    )


def _child_requests(server: SiteServer, prefix: str) -> int:
    return len([r for r in server.requests if r.path.startswith(prefix)])


async def test_a_fan_out_index_is_read_within_the_default_budget() -> None:
    # The API's case: one job, an index of 999 children. At most 100 documents.
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/sitemap.xml"] = Route(body=_index(*(f"{o}/c{i}.xml" for i in range(999))))
    for i in range(999):
        server.routes[f"/c{i}.xml"] = Route(body=_big_urlset(o, 1, f"c{i}-"))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(f"{o}/sitemap.xml", fetcher)
    assert DiscoverLimits().max_sitemaps == 100
    assert _child_requests(server, "/c") == 99  # the index is the first of 100
    assert urls == [f"{o}/c{i}-0" for i in range(99)]
    assert result.truncated and result.reasons == ["max_sitemaps"]
    assert result.to_json()["reasons"] == ["max_sitemaps"]


async def test_nesting_is_read_five_levels_deep_within_the_budget() -> None:
    # Every level is an index of 300 children whose first is the next level: the
    # budget of 100 documents still reaches the page five levels down.
    server = SiteServer(routes={})
    o = server.origin
    for level in range(1, 5):
        server.routes[f"/idx{level}.xml"] = Route(
            body=_index(f"{o}/idx{level + 1}.xml", *(f"{o}/f{level}-{k}.xml" for k in range(300)))
        )
        for k in range(300):
            server.routes[f"/f{level}-{k}.xml"] = Route(body=_big_urlset(o, 1, f"f{level}-{k}-"))
    server.routes["/idx5.xml"] = Route(body=_big_urlset(o, 1, "deep-"))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(
                f"{o}/idx1.xml", fetcher, DiscoverLimits(max_pages=10_000)
            )
    assert urls[0] == f"{o}/deep-0"
    assert len(server.requests) == 100
    assert "max_sitemaps" in result.reasons and "max_depth" not in result.reasons


async def test_child_sitemaps_on_another_host_are_skipped_and_counted() -> None:
    # Two real hosts (127.0.0.1 and 127.0.0.2), both allowed: only the host rule
    # keeps the index's foreign children from being fetched. robots.txt may point
    # elsewhere.
    here = SiteServer(routes={})
    there = SiteServer(routes={}, host="127.0.0.2")
    o, t = here.origin, there.origin
    here.routes["/robots.txt"] = Route(body=f"Sitemap: {o}/index.xml\nSitemap: {t}/theirs.xml\n")
    here.routes["/index.xml"] = Route(
        body=_index(f"{t}/foreign-1.xml", f"{o}/mine.xml", f"{t}/foreign-2.xml")
    )
    here.routes["/mine.xml"] = Route(body=_big_urlset(o, 1, "mine-"))
    there.routes["/theirs.xml"] = Route(body=_big_urlset(t, 1, "theirs-"))
    for name in ("foreign-1", "foreign-2"):
        there.routes[f"/{name}.xml"] = Route(body=_big_urlset(t, 1, f"{name}-"))
    policy = EgressPolicy(allow=("127.0.0.0/8",))
    with here, there:
        async with open_fetcher(policy) as fetcher:
            urls, result = await discover_all(o, fetcher)
    assert urls == [f"{o}/mine-0", f"{t}/theirs-0"]
    assert [r.path for r in there.requests] == ["/theirs.xml"]
    assert result.skipped["cross_host_sitemap"] == 2
    assert any("2 child sitemaps skipped" in w and "foreign-1" in w for w in result.warnings)


async def test_an_index_that_redirected_may_list_children_on_its_new_host() -> None:
    here = SiteServer(routes={})
    there = SiteServer(routes={}, host="127.0.0.2")
    t = there.origin
    here.routes["/sitemap.xml"] = Route(redirect=f"{t}/sitemap.xml", status=301)
    there.routes["/sitemap.xml"] = Route(body=_index(f"{t}/child.xml"))
    there.routes["/child.xml"] = Route(body=_big_urlset(t, 2))
    with here, there:
        async with open_fetcher(EgressPolicy(allow=("127.0.0.0/8",))) as fetcher:
            urls, result = await discover_all(here.url("/sitemap.xml"), fetcher)
    assert urls == [f"{t}/p0", f"{t}/p1"]
    assert result.skipped["cross_host_sitemap"] == 0


async def test_a_bad_child_is_skipped_and_counted() -> None:
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/index.xml"] = Route(
        body=_index(f"{o}/gone.xml", f"{o}/stacked.xml", f"{o}/ok.xml", f"{o}/doctype.xml")
    )
    server.routes["/stacked.xml"] = _STACKED
    server.routes["/doctype.xml"] = Route(body=_DOCTYPE)
    server.routes["/ok.xml"] = Route(body=_big_urlset(o, 2))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(f"{o}/index.xml", fetcher)
    assert urls == [f"{o}/p0", f"{o}/p1"]
    assert result.skipped["failed_sitemap"] == 3
    assert not result.truncated


async def test_relative_locs_are_skipped_and_counted_not_captured() -> None:
    server = SiteServer(routes={})
    o = server.origin
    locs = ["/relative/path", "http:127.0.0.1/", "page", f"{o}/kept", "//other.example/x"]
    server.routes["/maps/sitemap.xml"] = Route(
        body="<urlset>" + "".join(f"<url><loc>{loc}</loc></url>" for loc in locs) + "</urlset>"
    )
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(f"{o}/maps/sitemap.xml", fetcher)
    assert urls == [f"{o}/kept"]
    assert result.skipped["relative_loc"] == 4
    assert result.to_json()["skipped"]["relative_loc"] == 4
    assert any("4 <loc> values skipped" in w and "/relative/path" in w for w in result.warnings)
    # Nothing on the sitemap's host was asked for in their name.
    assert {r.path for r in server.requests} == {"/maps/sitemap.xml"}


@pytest.mark.parametrize(
    ("children", "max_pages", "found", "cut"),
    [
        ([155], 100, 155, True),  # issue 13: 155 pages, the default --max-pages
        ([60, 60, 60], 100, 180, True),  # counting goes on into the next children
        ([100], 100, 100, False),  # exactly the limit: nothing was cut
        ([40], 100, 40, False),
    ],
)
async def test_found_says_how_many_urls_the_sitemaps_list(
    children: list[int], max_pages: int, found: int, cut: bool
) -> None:
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/index.xml"] = Route(
        body=_index(*(f"{o}/c{i}.xml" for i in range(len(children))))
    )
    for i, n in enumerate(children):
        server.routes[f"/c{i}.xml"] = Route(body=_big_urlset(o, n, f"c{i}-"))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(
                f"{o}/index.xml", fetcher, DiscoverLimits(max_pages=max_pages)
            )
    assert len(urls) == min(found, max_pages) == result.pages
    assert result.found == found
    assert result.truncated is cut
    assert result.reasons == (["max_pages"] if cut else [])


async def test_counting_stops_at_its_limit_and_found_is_then_unknown() -> None:
    server = SiteServer(routes={})
    server.routes["/sitemap.xml"] = Route(body=_big_urlset(server.origin, 5000))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(
                server.url("/sitemap.xml"), fetcher, DiscoverLimits(max_pages=10, count_limit=1000)
            )
    assert len(urls) == 10
    assert result.found is None and result.reasons == ["max_pages"]


async def test_without_counting_reading_stops_at_max_pages() -> None:
    server = SiteServer(routes={})
    server.routes["/sitemap.xml"] = Route(body=_big_urlset(server.origin, 10))
    with server:
        async with open_fetcher(LOOPBACK) as fetcher:
            urls, result = await discover_all(
                server.url("/sitemap.xml"), fetcher, DiscoverLimits(max_pages=10, count_timeout=0)
            )
    assert len(urls) == 10
    # Whether more were listed is not known: said as a possible cut, found unknown.
    assert result.found is None and result.reasons == ["max_pages"]


def test_discover_warns_when_max_pages_cut_the_list() -> None:
    server = SiteServer(routes={})
    server.routes["/sitemap.xml"] = Route(body=_big_urlset(server.origin, 155))
    with server:
        cut = run_cli("discover", server.url("/sitemap.xml"), "--allow=127.0.0.1")
        whole = run_cli(
            "discover", server.url("/sitemap.xml"), "--allow=127.0.0.1", "--max-pages", "155"
        )
    assert cut.code == 0 and len(cut.stdout.split()) == 100
    want = (
        "warning: --max-pages 100 cut the list: the sitemaps list 155 URLs, only the first "
        "100 are taken (raise --max-pages for more)\n"
    )
    assert cut.stderr == want, cut.stderr
    assert whole.code == 0 and len(whole.stdout.split()) == 155 and whole.stderr == ""


def test_discover_max_sitemaps_flag() -> None:
    server = SiteServer(routes={})
    o = server.origin
    server.routes["/sitemap.xml"] = Route(body=_index(*(f"{o}/c{i}.xml" for i in range(150))))
    for i in range(150):
        server.routes[f"/c{i}.xml"] = Route(body=_big_urlset(o, 1, f"c{i}-"))
    with server:
        default = run_cli("discover", server.url("/sitemap.xml"), "--allow=127.0.0.1", "--json")
        raised = run_cli(
            "discover", server.url("/sitemap.xml"), "--allow=127.0.0.1", "--json",
            "--max-sitemaps", "151", "--max-pages", "1000",
        )  # fmt: skip
    assert default.code == 0 and len(json.loads(default.stdout)) == 99
    assert "warning: --max-sitemaps 100 was reached" in default.stderr
    assert raised.code == 0 and len(json.loads(raised.stdout)) == 150
    assert raised.stderr == ""


def test_max_sitemaps_scales_with_max_pages() -> None:
    assert max_sitemaps_for(1) == max_sitemaps_for(100) == 100
    assert max_sitemaps_for(5000) == 500
    assert max_sitemaps_for(10_000_000) == 50_000


def test_limits_are_validated() -> None:
    for field in ("max_pages", "max_sitemaps", "max_depth"):
        with pytest.raises(ValidationError) as info:
            DiscoverLimits(**{field: 0})
        assert info.value.details["field"] == field


# ---- the API: one job's discovery is bounded, robust, and reported in its status ---------


def test_api_job_discovery_is_bounded_and_reported(tmp_path: Path, chromium: str) -> None:
    here = SiteServer(routes={})
    there = SiteServer(routes={}, host="127.0.0.2")
    o, t = here.origin, there.origin
    # robots.txt: the index, and a line on a host httpx refuses (a 500 on main).
    here.routes["/robots.txt"] = Route(
        body=f"Sitemap: {o}/index.xml\nSitemap: https://xn--ls8h.la/sitemap.xml\n"
    )
    # The index: 300 children on its host, one on another host, one httpx refuses.
    here.routes["/index.xml"] = Route(
        body=_index(
            f"{t}/foreign.xml",
            "https://xn--zz.com/child.xml",
            *(f"{o}/c{i}.xml" for i in range(300)),
        )
    )
    here.routes["/c0.xml"] = Route(
        body="<urlset><url><loc>/relative/path</loc></url><url><loc>http:127.0.0.1/</loc></url>"
        f"<url><loc>{o}/a</loc></url><url><loc>{o}/b</loc></url></urlset>"
    )
    calls = {"n": 0}

    def busy_once(h):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            SiteServer._send(h, 503, b"busy", "text/plain", {"Retry-After": "soon"})
        else:
            SiteServer._send(h, 200, b"<urlset></urlset>", "application/xml", {})

    here.routes["/c1.xml"] = Route(handler=busy_once)
    for i in range(2, 300):
        here.routes[f"/c{i}.xml"] = Route(body="<urlset></urlset>")
    for page in ("/a", "/b"):
        here.routes[page] = Route(body=f"<html><body><h1>{page}</h1></body></html>")
    there.routes["/foreign.xml"] = Route(body=_big_urlset(t, 1))
    service = Service(
        db=tmp_path / "ledger.db",
        data_dir=tmp_path / "data",
        chromium=chromium,
        policy=EgressPolicy(allow=("127.0.0.0/8",), resolver=_no_dns),
    )

    async def scenario() -> dict[str, Any]:
        key = await new_key(service.db)
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            r = await client.post(
                service.api("/bulk-screenshot"),
                headers={"X-API-Key": key},
                json={"url": o, "options": {"maxPages": 100}},
            )
            assert r.status_code == 202, r.text
            job = r.json()["data"]
            assert job["total_urls"] == 2
            return await wait_for_status(
                client, service.url + job["status_url"], key, {"completed", "failed"}, 120
            )

    with here, there:
        service.start()
        try:
            status = trio.run(scenario)
        finally:
            service.stop()
    report = status["discovery"]
    assert report["truncated"] is True and report["reasons"] == ["max_sitemaps"]
    assert report["pages"] == 2 and report["found"] == 2
    assert report["skipped"] == {
        "relative_loc": 2,
        "cross_host_sitemap": 2,
        "failed_sitemap": 1,
    }
    # 100 documents: the index, the refused robots line, 98 children.
    children = {r.path for r in here.requests if r.path.startswith("/c")}
    assert len(children) == 98
    assert there.requests == []
    assert any("max_sitemaps" in w for w in report["warnings"])
