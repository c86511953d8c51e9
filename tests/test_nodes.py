"""Remote browser nodes: ``bulk node`` (Playwright's browser server behind bulk's egress
proxy) and a coordinator that captures on them, with its own Chromium off.

Everything is real: the nodes are ``bulk node`` processes (``playwright launch-server``
with the system Chromium) on 127.0.0.1, the coordinator a real ``bulk serve`` (or the
CLI), the sites real HTTP servers, the ledger a real SQLite file.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from bulk._capture import RemoteEndpoint
from bulk._exceptions import ValidationError
from bulk._ledger import Ledger
from bulk._policy import EgressPolicy
from tests.conftest import BULK, run_bulk
from tests.security.kit import canary
from tests.security.test_page_egress import SITE_HOST, _page
from tests.servicekit import Service, balance, new_key, wait_for_status
from tests.sitekit import ROOT, Route, SiteServer

pytestmark = pytest.mark.browser

# Generous: two cores, several suites at once.
_START = 120.0
_JOB = 300.0


@dataclass
class Node:
    """A running ``bulk node`` process (its own process group, so it can be killed
    whole, as a machine going away would be)."""

    process: subprocess.Popen[str]
    endpoint: str

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@contextmanager
def bulk_node(*args: str) -> Iterator[Node]:
    """``bulk node --port 0 ARGS``; yields once it printed its endpoint."""
    process = subprocess.Popen(
        [*BULK, "node", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(_START)
    try:
        if not line or not line[0].startswith("ws://"):
            process.kill()
            raise AssertionError(f"bulk node did not start: {process.stderr.read()}")  # type: ignore[union-attr]
        yield Node(process, line[0].strip())
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as c:
        yield c


def _png(color: str) -> str:
    return f"<body style='margin:0;background:{color}'><h1>{color}</h1></body>"


async def _health(client: httpx.AsyncClient, service: Service) -> list[dict[str, Any]]:
    r = await client.get(service.api("/health"))
    assert r.status_code == 200, r.text
    return r.json()["data"]["browsers"]  # type: ignore[no-any-return]


async def _until(condition: Any, within: float = _START) -> None:
    """Wait for ``condition()`` (polled: it is the coordinator's state, seen from outside)."""
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.1)


async def _audit(db: Path, job_id: str) -> dict[str, Any]:
    async with Ledger.open(db) as ledger:
        report = await ledger.audit()
    assert report.ok, report.problems
    return next(j for j in report.jobs if j["job_id"] == job_id)


# -- endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url", "slots", "name"),
    [
        ("ws://10.0.0.5:3000/abc", "ws://10.0.0.5:3000/abc", 4, "ws://10.0.0.5:3000"),
        ("ws://h:1/t#slots=7", "ws://h:1/t", 7, "ws://h:1"),
        ("wss://h.example/t?x=1#slots=64", "wss://h.example/t?x=1", 64, "wss://h.example"),
    ],
)
def test_endpoint_parse(text: str, url: str, slots: int, name: str) -> None:
    endpoint = RemoteEndpoint.parse(text)
    assert (endpoint.url, endpoint.slots, endpoint.name) == (url, slots, name)
    assert RemoteEndpoint.parse(url, 9).slots == 9


@pytest.mark.parametrize(
    "text", ["http://h:1/t", "ws:///t", "ws://h:1/t#slots=0", "ws://h:1/t#slots=x", "ws://h/#a=1"]
)
def test_endpoint_parse_refuses(text: str) -> None:
    with pytest.raises(ValidationError):
        RemoteEndpoint.parse(text)


def test_no_local_browser_needs_a_remote_one(tmp_path: Path) -> None:
    result = run_bulk("shot", "http://127.0.0.1:9/", "-o", tmp_path / "x.png", "--no-local-browser")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("VALIDATION_ERROR: --no-local-browser needs"), result.stderr


# -- a job over two nodes ----------------------------------------------------------------


async def test_job_spreads_over_two_nodes(
    tmp_path: Path, chromium: str, client: httpx.AsyncClient
) -> None:
    n = 12
    routes = {f"/p{i}": Route(body=_png("#%02x7733" % (i * 20))) for i in range(n)}
    with (
        SiteServer(routes=routes) as site,
        bulk_node("--allow", "127.0.0.1") as a,
        bulk_node("--allow", "127.0.0.1") as b,
    ):
        status_file = tmp_path / "l.db.browsers.json"
        service = Service(
            db=tmp_path / "l.db",
            data_dir=tmp_path / "d",
            chromium=chromium,
            local_browser=False,
            browsers=(RemoteEndpoint.parse(a.endpoint, 2), RemoteEndpoint.parse(b.endpoint, 2)),
            status_file=status_file,
        )
        await trio.to_thread.run_sync(service.start)
        try:
            key = await new_key(service.db, credits=100)
            urls = [site.url(f"/p{i}") for i in range(n)]
            r = await client.post(
                service.api("/bulk-screenshot"), json={"urls": urls}, headers={"X-API-Key": key}
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["data"]["job_id"]
            status = await wait_for_status(
                client,
                service.api(f"/bulk-screenshot/{job_id}/status"),
                key,
                {"completed", "failed"},
                _JOB,
            )
            assert status["status"] == "completed", status
            assert status["credits"] == {"reserved": n, "used": n, "refunded": 0}
            browsers = await _health(client, service)
            # The endpoint's secret path is never shown.
            assert {s["name"] for s in browsers} == {
                a.endpoint.rsplit("/", 1)[0],
                b.endpoint.rsplit("/", 1)[0],
            }
            assert all(s["kind"] == "node" and s["up"] and s["slots"] == 2 for s in browsers)
            captured = [s["captures"] for s in browsers]
            assert sum(captured) == n and min(captured) > 0, browsers
            admin = run_bulk("admin", "browsers", "--db", service.db, "--json")
            assert admin.code == 0, admin.stderr
            shown = json.loads(admin.stdout)
            assert shown["running"] is True
            assert [s["name"] for s in shown["sources"]] == [s["name"] for s in browsers]
            assert a.endpoint.rsplit("/", 1)[1] not in admin.stdout
        finally:
            await trio.to_thread.run_sync(service.stop)


async def test_killed_node_mid_job_loses_no_url_and_charges_once(
    tmp_path: Path, chromium: str, client: httpx.AsyncClient
) -> None:
    n = 16
    gate = threading.Event()
    served: list[str] = []
    lock = threading.Lock()

    def held(h: BaseHTTPRequestHandler) -> None:
        # The first pages answer at once; the rest wait for the gate, so that the
        # node killed has captures in flight.
        with lock:
            served.append(h.path)
            first = len(served) <= 4
        if not first:
            gate.wait(_JOB)
        SiteServer._send(h, 200, _png("#33aa77").encode(), "text/html", {})

    routes = {f"/p{i}": Route(handler=held) for i in range(n)}
    with (
        SiteServer(routes=routes) as site,
        bulk_node("--allow", "127.0.0.1") as a,
        bulk_node("--allow", "127.0.0.1") as b,
    ):
        service = Service(
            db=tmp_path / "l.db",
            data_dir=tmp_path / "d",
            chromium=chromium,
            local_browser=False,
            browsers=(RemoteEndpoint.parse(a.endpoint, 2), RemoteEndpoint.parse(b.endpoint, 2)),
        )
        await trio.to_thread.run_sync(service.start)
        try:
            key = await new_key(service.db, credits=100)
            urls = [site.url(f"/p{i}") for i in range(n)]
            r = await client.post(
                service.api("/bulk-screenshot"), json={"urls": urls}, headers={"X-API-Key": key}
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["data"]["job_id"]
            name_a = a.endpoint.rsplit("/", 1)[0]
            # Wait until node A holds captures that wait at the gate.
            with trio.fail_after(_JOB):
                while True:
                    browsers = {s["name"]: s for s in await _health(client, service)}
                    with lock:
                        waiting = len(served) > 4
                    if waiting and browsers[name_a]["in_flight"] > 0:
                        break
                    await trio.sleep(0.1)
            a.kill()
            # The coordinator notices: node A is down, with its error.
            with trio.fail_after(_JOB):
                while True:
                    browsers = {s["name"]: s for s in await _health(client, service)}
                    if not browsers[name_a]["up"]:
                        break
                    await trio.sleep(0.1)
            assert browsers[name_a]["last_error"]
            gate.set()
            status = await wait_for_status(
                client,
                service.api(f"/bulk-screenshot/{job_id}/status"),
                key,
                {"completed", "failed"},
                _JOB,
            )
            assert status["status"] == "completed", status
            assert status["progress"]["successful"] == n, status
            assert status["credits"] == {"reserved": n, "used": n, "refunded": 0}
            audit = await _audit(service.db, job_id)
            assert audit["reserved"] == audit["used"] + audit["refunded"] == n
            assert await balance(service.db, key) == 100 - n
            # Exactly one image per URL: in the job's files and in the ZIP.
            images = list((service.data_dir / "jobs").rglob("img/*"))
            assert len(images) == n, images
            r = await client.get(
                service.api(f"/bulk-screenshot/{job_id}/download"), headers={"X-API-Key": key}
            )
            with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
                names = [x for x in zf.namelist() if x.endswith(".png")]
                root = zf.namelist()[0].split("/")[0]
                manifest = json.loads(zf.read(f"{root}/_manifest.json"))
            assert len(names) == len(set(names)) == n
            assert sorted(u["url"] for u in manifest["urls"]) == sorted(urls)
            assert {u["status"] for u in manifest["urls"]} == {"ok"}
            browsers = {s["name"]: s for s in await _health(client, service)}
            assert browsers[b.endpoint.rsplit("/", 1)[0]]["up"]
        finally:
            gate.set()
            await trio.to_thread.run_sync(service.stop)


async def test_lost_node_comes_back_by_itself(tmp_path: Path, chromium: str) -> None:
    """A node restarted on the same port and token is used again, without a restart
    of the coordinator."""
    from bulk._capture import BrowserPool, PoolConfig
    from bulk._options import CaptureOptions

    token = "t0k3n-for-the-restart-test"
    with (
        SiteServer(routes={"/": Route(body=_png("#3366cc"))}) as site,
        bulk_node("--allow", "127.0.0.1", "--token", token) as first,
    ):
        endpoint = first.endpoint
        port = endpoint.rsplit(":", 1)[1].split("/")[0]
        config = PoolConfig(
            executable=chromium, local=False, remotes=(RemoteEndpoint.parse(endpoint, 1),)
        )
        async with BrowserPool.open(config, EgressPolicy()) as pool:
            shot = await pool.capture(site.url("/"), CaptureOptions())
            assert shot.data
            first.kill()
            await _until(lambda: not pool.sources()[0].up)
            with bulk_node("--allow", "127.0.0.1", "--token", token, "--port", port) as second:
                assert second.endpoint == endpoint
                with trio.fail_after(_START):
                    # Waits for a source that is up: the same node, back.
                    shot = await pool.capture(site.url("/"), CaptureOptions())
                assert shot.data
                state = pool.sources()[0]
                assert state.up and state.reconnects >= 1 and state.captures == 2


# -- policy ---------------------------------------------------------------------------------


def test_hostile_page_through_a_node_reaches_no_canary(tmp_path: Path) -> None:
    allow = ("--allow", f"{SITE_HOST}/32")
    with canary() as c:
        routes = {"/hostile": Route(body=_page(c))}
        with SiteServer(routes=routes, host=SITE_HOST) as site, bulk_node(*allow) as node:
            out = tmp_path / "hostile.png"
            result = run_bulk(
                "shot",
                site.url("/hostile"),
                "-o",
                out,
                *allow,
                "--delay",
                "1500",
                "--no-local-browser",
                "--browser",
                node.endpoint,
            )
            assert result.code == 0, result.stderr
            with Image.open(out) as img:
                assert img.convert("RGB").getpixel((5, 400)) == (0x33, 0xAA, 0x77)
            # The metadata address, through the node: refused by the node's proxy.
            blocked = run_bulk(
                "shot",
                "http://169.254.169.254/latest/meta-data/",
                "-o",
                tmp_path / "meta.png",
                "--allow-private",
                "--no-local-browser",
                "--browser",
                node.endpoint,
            )
            assert blocked.code == 1, blocked.stderr
            assert not (tmp_path / "meta.png").exists()
        assert c.hits == 0, c


def test_stock_browser_server_is_refused(tmp_path: Path, chromium: str) -> None:
    """A plain Playwright browser server (no bulk egress proxy) is never used."""
    from bulk._capture._remote import browser_server_command

    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "executablePath": chromium,
                "headless": True,
                "host": "127.0.0.1",
                "port": 0,
                "wsPath": "/stock-server-secret",
                "chromiumSandbox": False,
            }
        )
    )
    # The server ends when its stdin does: held open for the test.
    process = subprocess.Popen(
        browser_server_command(str(cfg)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(_START)
        assert line and line[0].startswith("ws://"), line
        with canary() as c, SiteServer(routes={"/": Route(body=_png("#3366cc"))}) as site:
            result = run_bulk(
                "shot",
                site.url("/"),
                "-o",
                tmp_path / "x.png",
                "--allow",
                "127.0.0.1",
                "--no-local-browser",
                "--browser",
                line[0].strip(),
            )
            assert result.code == 1, result.stderr
            assert result.stderr.startswith("BROWSER_REFUSED: ws://127.0.0.1:"), result.stderr
            assert "stock-server-secret" not in result.stderr
            assert not (tmp_path / "x.png").exists()
            assert c.hits == 0
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


async def test_node_that_stops_answering_is_dropped_and_comes_back(
    tmp_path: Path, chromium: str
) -> None:
    """A node frozen (SIGSTOP) with a capture in flight: the capture moves to the other
    node; once the frozen one answers again, it is used again without any restart."""
    from bulk._capture import BrowserPool, PoolConfig
    from bulk._options import CaptureOptions

    gate = threading.Event()
    served: list[str] = []

    def held(h: BaseHTTPRequestHandler) -> None:
        served.append(h.path)
        gate.wait(_JOB)
        SiteServer._send(h, 200, _png("#33aa77").encode(), "text/html", {})

    with (
        SiteServer(routes={"/hold": Route(handler=held)}) as site,
        bulk_node("--allow", "127.0.0.1") as a,
        bulk_node("--allow", "127.0.0.1") as b,
    ):
        config = PoolConfig(
            executable=chromium,
            local=False,
            remotes=(RemoteEndpoint.parse(a.endpoint, 1), RemoteEndpoint.parse(b.endpoint, 1)),
        )
        name_a = a.endpoint.rsplit("/", 1)[0]
        async with BrowserPool.open(config, EgressPolicy()) as pool:
            shots: list[Any] = []

            async def one(path: str) -> None:
                shots.append(await pool.capture(site.url(path), CaptureOptions(timeout=120000)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "/hold?1")
                nursery.start_soon(one, "/hold?2")
                # One capture on each node, both waiting for the site.
                await _until(lambda: len(served) >= 2 and all(s.in_flight for s in pool.sources()))
                os.killpg(a.process.pid, signal.SIGSTOP)
                try:
                    gate.set()
                    await _until(lambda: not {s.name: s for s in pool.sources()}[name_a].up, _JOB)
                finally:
                    os.killpg(a.process.pid, signal.SIGCONT)
            assert len(shots) == 2 and all(s.data for s in shots)
            states = {s.name: s for s in pool.sources()}
            assert states[name_a].captures == 0
            assert states[name_a].last_error  # why it was dropped, or why it is not back yet
            assert states[b.endpoint.rsplit("/", 1)[0]].captures == 2
            # Answering again: back by itself, and used.
            await _until(lambda: {s.name: s for s in pool.sources()}[name_a].up, _JOB)
            assert (await pool.capture(site.url("/hold?3"), CaptureOptions())).data


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def test_browser_server_does_not_outlive_its_node() -> None:
    """``bulk node`` killed alone (SIGKILL, no cleanup): its browser server ends too,
    also after idling (nothing bound to a thread that has gone)."""
    with bulk_node("--allow", "127.0.0.1") as node:
        servers = _children(node.process.pid)
        assert servers, "no browser server under bulk node"
        port = int(node.endpoint.rsplit(":", 1)[1].split("/")[0])
        # Still serving after trio's idle worker threads are gone (about 10 s).
        await trio.sleep(12)  # the time a thread-bound death signal would need
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        await _until(lambda: not any(_alive(p) for p in servers))
