"""Pages whose every kind of sub-resource aims at local addresses, captured for real:
the capture succeeds, and the canary (TCP and UDP, every local address) sees nothing.

The site itself lives on 127.0.0.3, the one address the policy allows; the canary
listens on every other local address (dual-stack ``[::]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bulk._policy import EgressPolicy
from tests.conftest import run_bulk
from tests.security.kit import Canary, canary
from tests.servicekit import Service, new_key
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

SITE_HOST = "127.0.0.3"
TARGETS = (
    "127.0.0.1:{p}",
    "localhost:{p}",
    "[::1]:{p}",
    "0.0.0.0:{p}",
    "192.0.2.2:{p}",
    "[fd00::2]:{p}",
    "127.0.0.2:{p}",
    "2130706433:{p}",
    "[::ffff:127.0.0.1]:{p}",
)


def _sub_resources(t: str) -> str:
    """Every way a page can make the browser connect somewhere, aimed at ``t``."""
    h = f"http://{t}"
    return f"""
<link rel="stylesheet" href="{h}/style.css">
<link rel="preconnect" href="{h}">
<link rel="dns-prefetch" href="{h}">
<link rel="prefetch" href="{h}/prefetch">
<link rel="preload" as="image" href="{h}/preload.png">
<link rel="modulepreload" href="{h}/mod.js">
<link rel="icon" href="{h}/favicon.ico">
<script src="{h}/script.js"></script>
<img src="{h}/img.png" srcset="{h}/img2x.png 2x">
<picture><source srcset="{h}/pic.webp"><img src="{h}/pic.png"></picture>
<iframe src="{h}/frame"></iframe>
<object data="{h}/object"></object>
<embed src="{h}/embed">
<video src="{h}/video.mp4" poster="{h}/poster.png" autoplay muted></video>
<audio src="{h}/audio.mp3" autoplay></audio>
<svg><image href="{h}/svg.png" width="10" height="10"/></svg>
<a ping="{h}/ping" href="#" id="pinger">x</a>
<div style="background-image:url({h}/bg.png);width:10px;height:10px"></div>
<style>
  @import url("{h}/import.css");
  @font-face {{ font-family: evil; src: url("{h}/font.woff2"); }}
  .f {{ font-family: evil; }}
</style>
<p class="f">text in a remote font</p>
<form id="f" action="{h}/form" method="post" target="sink"><input name="a" value="1"></form>
<iframe name="sink" style="display:none"></iframe>
<script>
  const h = "{h}";
  fetch(h + "/fetch").catch(() => {{}});
  fetch(h + "/fetch-keepalive", {{method: "POST", body: "x", keepalive: true, mode: "no-cors"}}).catch(() => {{}});
  try {{ const x = new XMLHttpRequest(); x.open("GET", h + "/xhr"); x.send(); }} catch (e) {{}}
  try {{ navigator.sendBeacon(h + "/beacon", "x"); }} catch (e) {{}}
  try {{ new WebSocket("ws://{t}/ws"); }} catch (e) {{}}
  try {{ new EventSource(h + "/sse"); }} catch (e) {{}}
  try {{ new Worker(h + "/worker.js"); }} catch (e) {{}}
  try {{ new SharedWorker(h + "/shared.js"); }} catch (e) {{}}
  try {{ navigator.serviceWorker.register(h + "/sw.js").catch(() => {{}}); }} catch (e) {{}}
  try {{ import(h + "/dynamic.js").catch(() => {{}}); }} catch (e) {{}}
  try {{
    const pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:{t}"}}, {{urls: "turn:{t}", username: "u", credential: "c"}}]}});
    pc.createDataChannel("x");
    pc.createOffer().then(o => pc.setLocalDescription(o)).catch(() => {{}});
  }} catch (e) {{}}
  try {{ document.getElementById("f").submit(); }} catch (e) {{}}
  try {{ document.getElementById("pinger").click(); }} catch (e) {{}}
  try {{ const w = window.open(h + "/popup"); }} catch (e) {{}}
  const blob = new Blob(["fetch('" + h + "/from-blob-worker')"], {{type: "text/javascript"}});
  try {{ new Worker(URL.createObjectURL(blob)); }} catch (e) {{}}
</script>
"""


def _page(c: Canary) -> str:
    body = "".join(_sub_resources(t.replace("{p}", str(c.port))) for t in TARGETS)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>hostile</title></head>"
        "<body style='background:#3a7'><h1>hostile page</h1>"
        f"{body}<script>setTimeout(() => document.title = 'done', 500)</script></body></html>"
    )


@pytest.fixture(scope="module")
def the_canary() -> Iterator[Canary]:
    with canary() as c:
        yield c


@pytest.fixture(scope="module")
def site(the_canary: Canary) -> Iterator[SiteServer]:
    p = the_canary.port
    routes = {
        "/hostile": Route(body=_page(the_canary)),
        "/sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/hostile</loc></url>"
            "<url><loc>{origin}/redirect</loc></url>"
            "<url><loc>{origin}/meta-refresh</loc></url>"
            "<url><loc>{origin}/js-location</loc></url>"
            f"<url><loc>http://localhost:{p}/listed-in-sitemap</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/redirect": Route(redirect=f"http://127.0.0.1:{p}/after-redirect", status=302),
        "/redirect-chain": Route(redirect="{origin}/redirect", status=307),
        "/meta-refresh": Route(
            body=f"<meta http-equiv=refresh content='0;url=http://[::1]:{p}/refresh'><h1>x</h1>"
        ),
        "/js-location": Route(
            body=f"<h1>x</h1><script>location.href='http://0.0.0.0:{p}/js'</script>"
        ),
        "/file-redirect": Route(redirect="file:///etc/passwd", status=302),
    }
    with SiteServer(routes=routes, host=SITE_HOST) as server:
        yield server


ALLOW = ("--allow", f"{SITE_HOST}/32")


def test_hostile_page_captured_without_reaching_the_canary(
    tmp_path: Path, site: SiteServer, the_canary: Canary
) -> None:
    out = tmp_path / "hostile.png"
    result = run_bulk("shot", site.url("/hostile"), "-o", out, *ALLOW, "--delay", "1500")
    assert result.code == 0, result.stderr
    with Image.open(out) as img:
        assert img.size == (1280, 800)
        assert img.convert("RGB").getpixel((5, 400)) == (0x33, 0xAA, 0x77)
    assert the_canary.hits == 0, the_canary


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/redirect", {"URL_BLOCKED"}),
        ("/redirect-chain", {"URL_BLOCKED"}),
        ("/file-redirect", {"NAVIGATION_ERROR", "URL_BLOCKED"}),
    ],
)
def test_redirects_to_local_addresses_are_blocked(
    tmp_path: Path, site: SiteServer, the_canary: Canary, path: str, codes: set[str]
) -> None:
    result = run_bulk("shot", site.url(path), "-o", tmp_path / "x.png", *ALLOW)
    assert result.code == 1
    assert result.stderr.split(":")[0] in codes, result.stderr
    assert the_canary.hits == 0, the_canary


def test_archive_of_hostile_site(tmp_path: Path, site: SiteServer, the_canary: Canary) -> None:
    """Navigations away (meta refresh, JS) end blocked or on the original page; a URL to
    a local address listed in the sitemap is recorded as URL_BLOCKED, never fetched."""
    out = tmp_path / "a.zip"
    result = run_bulk("archive", site.url("/sitemap.xml"), "-o", out, *ALLOW, "-q")
    assert result.code in (0, 3), result.stderr
    import zipfile

    with zipfile.ZipFile(out) as zf:
        root = zf.namelist()[0].split("/")[0]
        rows = {
            r["url"].rsplit("/", 1)[-1]: r
            for r in json.loads(zf.read(f"{root}/_manifest.json"))["urls"]
        }
    assert rows["hostile"]["status"] == "ok"
    assert rows["redirect"]["error_code"] == "URL_BLOCKED"
    assert rows["listed-in-sitemap"]["error_code"] == "URL_BLOCKED"
    for name in ("meta-refresh", "js-location"):
        assert rows[name]["status"] == "ok" or rows[name]["error_code"] == "URL_BLOCKED", rows[name]
    assert the_canary.hits == 0, the_canary


async def test_api_captures_hostile_page_without_reaching_the_canary(
    tmp_path: Path, chromium: str, site: SiteServer, the_canary: Canary
) -> None:
    svc = Service(
        db=tmp_path / "l.db",
        data_dir=tmp_path / "d",
        chromium=chromium,
        policy=EgressPolicy(allow=(f"{SITE_HOST}/32",)),
    )
    import trio

    await trio.to_thread.run_sync(svc.start)
    try:
        key = await new_key(svc.db, credits=5)
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            r = await client.post(
                svc.api("/screenshot"),
                json={"url": site.url("/hostile"), "delay": 1500},
                headers={"X-API-Key": key},
            )
            assert r.status_code == 200, r.text
            r = await client.post(
                svc.api("/screenshot"),
                json={"url": site.url("/redirect")},
                headers={"X-API-Key": key},
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "URL_BLOCKED", r.text
    finally:
        await trio.to_thread.run_sync(svc.stop)
    assert the_canary.hits == 0, the_canary


def test_positive_control_canary_sees_an_unguarded_browser(
    tmp_path: Path, site: SiteServer
) -> None:
    """The same page with the policy opened (every address allowed) does reach a
    canary: the zero counts above are the policy's doing, not a blind canary."""
    with canary() as open_canary:
        page = _page(open_canary)
        routes = {"/open": Route(body=page)}
        with SiteServer(routes=routes, host=SITE_HOST) as open_site:
            result = run_bulk(
                "shot",
                open_site.url("/open"),
                "-o",
                tmp_path / "o.png",
                "--allow",
                "0.0.0.0/0",
                "--allow",
                "::/0",
                "--delay",
                "1500",
            )
        assert result.code == 0, result.stderr
        assert len(open_canary.tcp) > 5, open_canary


LOOPBACK_TARGETS = tuple(t for t in TARGETS if "192.0.2" not in t and "fd00" not in t)


def test_allow_private_keeps_loopback_closed(tmp_path: Path) -> None:
    """--allow-private opens intranets, not this machine: the hostile page aimed at
    every loopback spelling reaches nothing, the site itself being named by --allow."""
    with canary() as loop_canary:
        body = "".join(
            _sub_resources(t.replace("{p}", str(loop_canary.port))) for t in LOOPBACK_TARGETS
        )
        routes = {"/loop": Route(body=f"<body style='background:#3a7'>{body}</body>")}
        with SiteServer(routes=routes, host=SITE_HOST) as loop_site:
            result = run_bulk(
                "shot",
                loop_site.url("/loop"),
                "-o",
                tmp_path / "l.png",
                "--allow-private",
                *ALLOW,
                "--delay",
                "1500",
            )
        assert result.code == 0, result.stderr
        assert loop_canary.hits == 0, loop_canary


def _pivot_page(api_port: int, hosts: list[str]) -> str:
    """Every way a page may call the API: a simple POST (no preflight) that would
    create an account, one per host spelling, plus reads and a navigation."""
    calls = "".join(
        f"""fetch("http://{h}:{api_port}/api/v1/register", {{method: "POST", mode: "no-cors",
            body: JSON.stringify({{email: "pivot-{i}@example.com"}})}}).catch(() => {{}});
        """
        for i, h in enumerate(hosts)
    )
    frames = "".join(
        f'<iframe src="http://{h}:{api_port}/api/v1/health"></iframe>'
        f'<img src="http://{h}:{api_port}/api/v1/account?api_key=x">'
        for h in hosts
    )
    return (
        f"<body style='background:#3a7'><h1>pivot</h1>{frames}<script>{calls}"
        "setTimeout(() => document.title = 'done', 500)</script></body>"
    )


def _this_machines_addresses() -> list[str]:
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    return sorted(
        {lines[i - 1].split()[-1] for i, line in enumerate(lines) if "/32 host LOCAL" in line}
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_a_page_cannot_reach_the_api_whatever_allow_says(
    tmp_path: Path, chromium: str, host: str
) -> None:
    """A page served from an allowed address calls ``bulk serve``'s own API on every
    spelling of this machine, under ``--allow-private`` and an ``--allow`` naming all
    of loopback: the API never sees the browser (no account is created) and capturing
    the API's own URL is URL_BLOCKED."""
    import sqlite3

    import trio

    policy = EgressPolicy(allow_private=True, allow=("127.0.0.0/8", "::1/128"))
    svc = Service(
        db=tmp_path / "l.db",
        data_dir=tmp_path / "d",
        chromium=chromium,
        policy=policy,
        host=host,
    )
    await trio.to_thread.run_sync(svc.start)
    try:
        api_port = int(svc.url.rsplit(":", 1)[1])
        hosts = ["127.0.0.1", "localhost", "0.0.0.0", "2130706433", "[::ffff:127.0.0.1]"]
        if host == "0.0.0.0":
            hosts += _this_machines_addresses()
        routes = {"/p": Route(body=_pivot_page(api_port, hosts))}
        with SiteServer(routes=routes, host=SITE_HOST) as pivot:
            key = await new_key(svc.db, credits=5)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                r = await client.post(
                    svc.api("/screenshot"),
                    json={"url": pivot.url("/p"), "delay": 1500},
                    headers={"X-API-Key": key},
                )
                assert r.status_code == 200, r.text
                r = await client.post(
                    svc.api("/screenshot"),
                    json={"url": f"http://127.0.0.1:{api_port}/api/v1/health"},
                    headers={"X-API-Key": key},
                )
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "URL_BLOCKED", r.text
    finally:
        await trio.to_thread.run_sync(svc.stop)
    with sqlite3.connect(svc.db) as db:
        emails = [row[0] for row in db.execute("SELECT email FROM accounts")]
    assert not [e for e in emails if e and e.startswith("pivot-")], emails
