"""Hostile robots.txt and sitemaps through the real CLI: every case ends with a clear
code, in bounded time and memory, reading no local file and reaching no local address.

Each run is a separate `bulk discover` process whose own peak RSS is measured (wait4).
"""

from __future__ import annotations

import gzip
import http.server
import time
import zlib
from collections.abc import Iterator

import pytest

from tests.security.kit import Canary, Measured, canary, run_measured
from tests.sitekit import Route, SiteServer

GiB = 1 << 30
MiB = 1 << 20
# Peak RSS of one `bulk discover` process on any hostile input (a plain run is ~80 MB).
RSS_LIMIT_MB = 300


def _crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine (GF(2) matrix squaring), which Python does not expose."""

    def times(mat: list[int], vec: int) -> int:
        s, i = 0, 0
        while vec:
            if vec & 1:
                s ^= mat[i]
            vec >>= 1
            i += 1
        return s

    def square(mat: list[int]) -> list[int]:
        return [times(mat, mat[n]) for n in range(32)]

    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]
    even = square(odd)
    odd = square(even)
    while True:
        even = square(odd)
        if len2 & 1:
            crc1 = times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = square(even)
        if len2 & 1:
            crc1 = times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def gzip_bomb(total: int = 10 * GiB, block: int = MiB) -> bytes:
    """A valid gzip of ``total`` zero bytes (~10 MB for 10 GiB), built without inflating
    anything: one full-flushed deflate block of zeros repeated, with a correct trailer."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(block)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.flush(zlib.Z_FINISH)
    n = total // block
    crc_block = zlib.crc32(zeros)
    crc, done, power_crc, power_len, k = 0, 0, crc_block, block, n
    while k:  # crc of n blocks by doubling
        if k & 1:
            crc = _crc32_combine(crc, power_crc, power_len) if done else power_crc
            done += power_len
        power_crc = _crc32_combine(power_crc, power_crc, power_len)
        power_len *= 2
        k >>= 1
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little")
    return header + first + repeat * (n - 1) + last + trailer


def test_gzip_bomb_is_what_it_claims() -> None:
    small = gzip_bomb(total=64 * MiB)
    assert gzip.decompress(small) == bytes(64 * MiB)
    big = gzip_bomb()
    assert 9 * MiB < len(big) < 12 * MiB  # 10 MB that inflates to 10 GiB


@pytest.fixture(scope="module")
def the_canary() -> Iterator[Canary]:
    with canary() as c:
        yield c


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb()


def _discover(server: SiteServer, path: str, *extra: str) -> Measured:
    return run_measured(
        "discover", server.url(path), "--allow", "127.0.0.1/32", *extra, timeout=120
    )


def _one_line(m: Measured, code: str) -> None:
    lines = m.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"{code}:"), m.stderr
    assert m.code in (1, 2)


URLSET = "<urlset><url><loc>{origin}/ok</loc></url></urlset>"


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        (
            "xxe-file",
            '<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<urlset><url><loc>{origin}/&x;</loc></url></urlset>",
            "INVALID_SITEMAP",
        ),
        (
            "external-dtd",
            '<?xml version="1.0"?><!DOCTYPE urlset SYSTEM "http://127.0.0.2:{p}/evil.dtd">'
            + URLSET,
            "INVALID_SITEMAP",
        ),
        (
            "parameter-entity",
            '<?xml version="1.0"?><!DOCTYPE u [<!ENTITY % p SYSTEM "http://127.0.0.2:{p}/p">%p;]>'
            + URLSET,
            "INVALID_SITEMAP",
        ),
        (
            "billion-laughs",
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(
                f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                for i in range(1, 10)
            )
            + "]><urlset><url><loc>{origin}/&lol9;</loc></url></urlset>",
            "INVALID_SITEMAP",
        ),
        (
            "doctype-utf16",
            None,  # built below: UTF-16 so a byte scan for "<!DOCTYPE" misses it
            "INVALID_SITEMAP",
        ),
        (
            "binary-garbage",
            bytes(range(256)) * 20000,
            "NO_SITEMAP_FOUND",
        ),
        (
            "html-page",
            "<!doctype html><html><body><a href='/a'>a</a></body></html>",
            "NO_SITEMAP_FOUND",
        ),
        (
            "huge-text-node",
            "<urlset><url><loc>http://x.example/" + "a" * (12 * MiB) + "</loc></url></urlset>",
            "NO_URLS_FOUND",
        ),
    ],
)
def test_hostile_documents(
    the_canary: Canary, name: str, body: str | bytes | None, code: str
) -> None:
    if body is None:
        body = (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE u [<!ENTITY x SYSTEM '
            '"file:///etc/passwd">]><urlset><url><loc>http://u.example/&x;</loc></url></urlset>'
        ).encode("utf-16")
    elif isinstance(body, str):
        body = body.replace("{p}", str(the_canary.port))
    routes = {"/sitemap.xml": Route(body=body, content_type="application/xml")}
    with SiteServer(routes=routes) as server:
        m = _discover(server, "/sitemap.xml")
    _one_line(m, code)
    assert "root:" not in m.stdout + m.stderr
    assert m.seconds < 20 and m.peak_rss_mb < RSS_LIMIT_MB, (m.seconds, m.peak_rss_mb)
    assert the_canary.hits == 0


def test_xinclude_is_never_processed(the_canary: Canary) -> None:
    body = (
        '<urlset xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="file:///etc/passwd" parse="text"/>'
        f'<xi:include href="http://127.0.0.2:{the_canary.port}/x.xml"/>'
        "<url><loc>{origin}/ok</loc></url></urlset>"
    )
    with SiteServer(routes={"/sitemap.xml": Route(body=body)}) as server:
        m = _discover(server, "/sitemap.xml")
        assert m.code == 0, m.stderr
        assert m.stdout.split() == [server.url("/ok")]
    assert "root:" not in m.stdout
    assert the_canary.hits == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file", "content-encoding", "robots"])
def test_gzip_bomb_10mb_to_10gib(bomb: bytes, how: str) -> None:
    routes: dict[str, Route] = {}
    if how == "file":
        routes["/sitemap.xml.gz"] = Route(body=bomb, content_type="application/gzip")
        path, code = "/sitemap.xml.gz", "RESPONSE_TOO_LARGE"
    elif how == "content-encoding":
        routes["/sitemap.xml"] = Route(
            body=bomb, content_type="application/xml", headers={"Content-Encoding": "gzip"}
        )
        path, code = "/sitemap.xml", "RESPONSE_TOO_LARGE"
    else:
        # robots.txt as a bomb: ignored as unreadable, the common paths are probed.
        routes["/robots.txt"] = Route(body=bomb, headers={"Content-Encoding": "gzip"})
        routes["/sitemap.xml"] = Route(body=URLSET)
        path, code = "/", ""
    with SiteServer(routes=routes) as server:
        m = _discover(server, path)
        if code:
            _one_line(m, code)
        else:
            assert m.code == 0, m.stderr
            assert m.stdout.split() == [server.url("/ok")]
    assert m.seconds < 30 and m.peak_rss_mb < RSS_LIMIT_MB, (m.seconds, m.peak_rss_mb)


@pytest.mark.parametrize(
    ("encoding", "code"),
    [("gzip, gzip", "FETCH_ERROR"), ("br", "FETCH_ERROR"), ("zstd", "FETCH_ERROR")],
)
def test_refused_content_encodings(encoding: str, code: str) -> None:
    routes = {
        "/sitemap.xml": Route(
            body=gzip.compress(gzip.compress(URLSET.encode())),
            headers={"Content-Encoding": encoding},
        )
    }
    with SiteServer(routes=routes) as server:
        m = _discover(server, "/sitemap.xml")
    _one_line(m, code)


def test_redirect_loop_and_redirect_body_bomb(bomb: bytes) -> None:
    routes = {
        "/a.xml": Route(redirect="/b.xml", status=302),
        "/b.xml": Route(redirect="/a.xml", status=302),
        "/bomb-redirect.xml": Route(
            status=301, body=bomb, headers={"Location": "/ok.xml", "Content-Encoding": "gzip"}
        ),
        "/ok.xml": Route(body=URLSET),
    }
    with SiteServer(routes=routes) as server:
        loop = _discover(server, "/a.xml")
        _one_line(loop, "FETCH_ERROR")
        assert "redirects" in loop.stderr
        m = _discover(server, "/bomb-redirect.xml")
        assert m.code == 0, m.stderr
        assert m.stdout.split() == [server.url("/ok")]
    assert m.seconds < 20 and m.peak_rss_mb < RSS_LIMIT_MB


def test_index_loops_and_self_reference() -> None:
    routes = {
        "/a.xml": Route(
            body="<sitemapindex><sitemap><loc>{origin}/b.xml</loc></sitemap>"
            "<sitemap><loc>{origin}/a.xml</loc></sitemap></sitemapindex>"
        ),
        "/b.xml": Route(
            body="<sitemapindex><sitemap><loc>{origin}/a.xml</loc></sitemap>"
            "<sitemap><loc>{origin}/c.xml</loc></sitemap></sitemapindex>"
        ),
        "/c.xml": Route(body=URLSET),
    }
    with SiteServer(routes=routes) as server:
        m = _discover(server, "/a.xml")
        assert m.code == 0, m.stderr
        assert m.stdout.split() == [server.url("/ok")]
        assert len(server.hits("/a.xml")) == 1


def test_thousand_child_fan_out_and_deep_nesting() -> None:
    routes: dict[str, Route] = {
        "/fan.xml": Route(
            body="<sitemapindex>"
            + "".join(f"<sitemap><loc>{{origin}}/c{i}.xml</loc></sitemap>" for i in range(1000))
            + "</sitemapindex>"
        )
    }
    for i in range(1000):
        routes[f"/c{i}.xml"] = Route(body=f"<urlset><url><loc>{{origin}}/p{i}</loc></url></urlset>")
    for d in range(40):  # an index chain 40 deep: the depth cap stops it
        routes[f"/deep{d}.xml"] = Route(
            body=f"<sitemapindex><sitemap><loc>{{origin}}/deep{d + 1}.xml</loc></sitemap>"
            "</sitemapindex>"
        )
    routes["/deep40.xml"] = Route(body=URLSET)
    with SiteServer(routes=routes) as server:
        # The default budget (--max-pages 100): 100 documents, the index one of them.
        fan = _discover(server, "/fan.xml")
        assert fan.code == 0, fan.stderr
        assert len(fan.stdout.split()) == 99
        assert "warning: --max-sitemaps 100 was reached" in fan.stderr
        assert len([r for r in server.requests if r.path.startswith("/c")]) == 99
        # A larger --max-pages allows more documents: all 1000 here.
        del server.requests[:]
        fan = _discover(server, "/fan.xml", "--max-pages", "100000")
        assert fan.code == 0, fan.stderr
        assert len(fan.stdout.split()) == 1000
        assert fan.seconds < 60 and fan.peak_rss_mb < RSS_LIMIT_MB
        deep = _discover(server, "/deep0.xml")
        _one_line(deep, "NO_URLS_FOUND")
        assert len([r for r in server.requests if r.path.startswith("/deep")]) <= 6


class _MillionURLs(http.server.BaseHTTPRequestHandler):
    pass


@pytest.mark.slow
def test_million_url_sitemap_streamed() -> None:
    """1,000,000 URLs (about 55 MB) generated on the fly: with the default --max-pages
    the read stops early; reading all of it stays within bounded memory."""

    sent_all: list[bool] = []

    def stream(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        origin = f"http://127.0.0.1:{h.server.server_address[1]}"

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        try:
            chunk(
                b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            )
            for start in range(0, 1_000_000, 10_000):
                chunk(
                    "".join(
                        f"<url><loc>{origin}/page/{i}</loc></url>"
                        for i in range(start, start + 10_000)
                    ).encode()
                )
            chunk(b"</urlset>")
            h.wfile.write(b"0\r\n\r\n")
            sent_all.append(True)
        except (BrokenPipeError, ConnectionResetError):
            sent_all.append(False)

    with SiteServer(routes={"/sitemap.xml": Route(handler=stream)}) as server:
        early = _discover(server, "/sitemap.xml")
        assert early.code == 0 and len(early.stdout.split()) == 100
        # The early stop hung up: 55 MB cannot all fit in the sockets' buffers, so the
        # server's write fails (once bulk has gone, at the latest).
        deadline = time.monotonic() + 60
        while not sent_all and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent_all == [False]
        full = _discover(server, "/sitemap.xml", "--max-pages", "2000000")
        assert full.code == 0, full.stderr
        urls = full.stdout.split()
        assert len(urls) == 1_000_000 and urls[-1] == server.url("/page/999999")
    print(
        f"1M-URL sitemap: early stop {early.seconds:.2f} s {early.peak_rss_mb:.0f} MB; "
        f"full read {full.seconds:.1f} s {full.peak_rss_mb:.0f} MB"
    )
    # The unique-URL set is the only thing that grows (it must, to dedupe).
    assert full.peak_rss_mb < 400
