"""Connectors: ``bulk connector`` inside a "private network" dials out to the service,
which captures the account's routed requests (``connector_id``) through it.

Everything is real: the service is a real ``bulk serve`` (in-process, hypercorn on
127.0.0.1:0) whose policy refuses loopback; the connector a real ``bulk connector``
process allowed 127.0.0.1 (its "private network"); the site a real HTTP server on
127.0.0.1; Chromium real on both sides; the ledger a real SQLite file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from bulk._connector import backoff_delay, open_tunnel, tunnel_url
from bulk._exceptions import ValidationError
from bulk._ledger import Ledger
from bulk._policy import EgressPolicy
from bulk._tunnel import (
    CLOSE,
    DATA,
    MAX_CHANNELS,
    MAX_FRAME,
    MAX_PAYLOAD,
    OPEN,
    Mux,
    TunnelError,
    decode_frame,
    encode_frame,
    hello,
    parse_hello,
)
from tests.conftest import BULK
from tests.servicekit import Service, new_key, wait_for_status
from tests.sitekit import ROOT, Route, SiteServer

# Generous: two cores, several suites at once.
_START = 120.0
_JOB = 300.0
_RED = "<body style='margin:0;background:#d02020'><h1>private</h1></body>"


# -- the tunnel's framing (no network) ----------------------------------------------------


def test_frames_round_trip_and_limits() -> None:
    frame = decode_frame(encode_frame(DATA, 7, b"abc"))
    assert (frame.type, frame.channel, frame.payload) == (DATA, 7, b"abc")
    assert decode_frame(encode_frame(OPEN, 1, b"\0")).payload == b"\0"
    assert decode_frame(encode_frame(CLOSE, 3)).type == CLOSE
    assert len(encode_frame(DATA, 1, b"x" * MAX_PAYLOAD)) == MAX_FRAME
    with pytest.raises(TunnelError):
        encode_frame(DATA, 1, b"x" * (MAX_PAYLOAD + 1))
    for bad in (
        b"",
        b"\x02\0\0",  # short
        encode_frame(DATA, 1, b"x" * MAX_PAYLOAD) + b"x",  # over MAX_FRAME
        b"\x09\0\0\0\1x",  # unknown type
        encode_frame(DATA, 1),  # empty DATA
        encode_frame(OPEN, 1),  # OPEN without its target
        encode_frame(CLOSE, 1) + b"x",  # CLOSE with a payload
    ):
        with pytest.raises(TunnelError):
            decode_frame(bad)


def test_hello_is_checked() -> None:
    token = "A" * 32
    assert parse_hello(hello(token)) == token
    for bad in (
        None,
        b"bytes",
        "not json",
        '{"kind": "other", "node_token": "' + token + '"}',
        '{"kind": "bulk-connector", "node_token": "short"}',
        '{"kind": "bulk-connector", "node_token": "../../etc/passwd/xxxxxxxxxx"}',
        "x" * 5000,
    ):
        with pytest.raises(TunnelError):
            parse_hello(bad)


async def test_mux_bounds_channels_and_refuses_stray_frames() -> None:
    sent: list[bytes] = []

    async def send(message: bytes) -> None:
        sent.append(message)

    opened: list[trio.abc.Stream] = []

    async def opener(target: int) -> trio.abc.Stream:
        a, b = trio.testing.memory_stream_pair()
        opened.append(b)
        return a

    async with trio.open_nursery() as nursery:
        connector = Mux(send, opener=opener, nursery=nursery)
        for channel in range(1, MAX_CHANNELS + 1):
            await connector.feed(encode_frame(OPEN, channel, b"\0"))
        with pytest.raises(TunnelError, match="channels"):
            await connector.feed(encode_frame(OPEN, MAX_CHANNELS + 1, b"\0"))
        with pytest.raises(TunnelError, match="already open"):
            await connector.feed(encode_frame(OPEN, 1, b"\0"))
        nursery.cancel_scope.cancel()
    # The service never takes an OPEN, nor data for a channel it never opened.
    service = Mux(send)
    with pytest.raises(TunnelError, match="only the service"):
        await service.feed(encode_frame(OPEN, 1, b"\0"))
    with pytest.raises(TunnelError, match="never opened"):
        await service.feed(encode_frame(DATA, 5, b"x"))


async def test_mux_carries_bytes_both_ways() -> None:
    """Two Muxes back to back: a stream on the service side reaches the connector's
    target and the answer comes back, then CLOSE ends both ends."""
    to_connector: trio.MemorySendChannel[bytes]
    to_connector, from_service = trio.open_memory_channel[bytes](100)
    to_service, from_connector = trio.open_memory_channel[bytes](100)
    echoed = trio.Event()

    async def echo(stream: trio.abc.Stream) -> None:
        data = await stream.receive_some()
        await stream.send_all(data.upper())
        echoed.set()
        await stream.aclose()

    async def opener(target: int) -> trio.abc.Stream:
        a, b = trio.testing.memory_stream_pair()
        nursery.start_soon(echo, b)
        return a

    async with trio.open_nursery() as nursery:
        service = Mux(to_connector.send)
        connector = Mux(to_service.send, opener=opener, nursery=nursery)

        async def pump(source: Any, mux: Mux) -> None:
            async for message in source:
                await mux.feed(message)

        nursery.start_soon(pump, from_service, connector)
        nursery.start_soon(pump, from_connector, service)
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(service.serve_stream, right)
        await left.send_all(b"hello")
        assert await left.receive_some() == b"HELLO"
        await echoed.wait()
        assert await left.receive_some() == b""  # the connector's end closed it
        nursery.cancel_scope.cancel()


def test_tunnel_url_and_backoff() -> None:
    assert tunnel_url("https://bulk.example.com") == "wss://bulk.example.com/api/v1/connectors/tunnel"
    assert tunnel_url("http://10.0.0.1:8000/") == "ws://10.0.0.1:8000/api/v1/connectors/tunnel"
    for bad in ("ftp://x", "bulk.example.com", "https://user:pw@x.example"):
        with pytest.raises(ValidationError):
            tunnel_url(bad)
    # Doubling, capped, jittered into [0.5, 1) of the step.
    assert [backoff_delay(a, lambda: 0.0) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(100, lambda: 0.999) < 60


# -- the service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("connectors")
    # Its policy refuses loopback: the test site is "private" to the service.
    service = Service(
        db=tmp / "c.db", data_dir=tmp / "d", chromium=chromium, policy=EgressPolicy()
    ).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=120, trust_env=False) as c:
        yield c


@dataclass
class Connector:
    """A running ``bulk connector`` process and what it said on stderr."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def said(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


@contextmanager
def bulk_connector(service: Service, token: str, *args: str) -> Iterator[Connector]:
    """``bulk connector --server URL --token TOKEN --allow 127.0.0.1 ARGS``."""
    process = subprocess.Popen(
        [*BULK, "connector", "--server", service.url, "--allow", "127.0.0.1", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
        # The token through the environment: never on a command line others can read.
        env={**os.environ, "BULK_CONNECTOR_TOKEN": token},
    )
    connector = Connector(process)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            connector.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield connector
    finally:
        connector.stop()
        reader.join(30)
        if process.stderr is not None:
            process.stderr.close()


async def _create(client: httpx.AsyncClient, service: Service, key: str, name: str) -> Any:
    r = await client.post(
        service.api("/connectors"), json={"name": name}, headers={"X-API-Key": key}
    )
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def _listed(client: httpx.AsyncClient, service: Service, key: str) -> dict[str, Any]:
    r = await client.get(service.api("/connectors"), headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()["data"]}


async def _until_status(
    client: httpx.AsyncClient, service: Service, key: str, connector_id: str, status: str
) -> dict[str, Any]:
    with trio.fail_after(_START):
        while True:
            row = (await _listed(client, service, key))[connector_id]
            if row["status"] == status:
                return row
            await trio.sleep(0.2)


async def _until(condition: Any, within: float = _START) -> None:
    """Wait for ``condition()`` (polled: another process's output, seen from outside)."""
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.1)


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


# -- the API ----------------------------------------------------------------------------


async def test_connector_api_validation_and_404s(
    service: Service, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db)
    other = await new_key(service.db)
    h = {"X-API-Key": key}
    refused: list[tuple[dict[str, Any], str]] = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a", "x": 1}, "x"),
        ({"name": "n" * 201}, "name"),
    ]
    for body, field_name in refused:
        r = await client.post(service.api("/connectors"), json=body, headers=h)
        assert r.status_code == 400 and _code(r) == "VALIDATION_ERROR", r.text
        assert r.json()["error"]["details"]["field"] == field_name
    made = await _create(client, service, key, "Office")
    assert made["id"].startswith("conn_") and made["token"].startswith("pxc_")
    assert made["status"] == "offline" and made["last_seen"] is None
    listed = await _listed(client, service, key)
    assert listed[made["id"]]["name"] == "Office"
    assert "token" not in listed[made["id"]]
    assert made["id"] not in await _listed(client, service, other)
    async with Ledger.open(service.db) as ledger:
        # Only its hash is kept.
        raw = (service.db).read_bytes()
        assert made["token"].encode() not in raw
        assert (await ledger.connector_by_token(made["token"])) is not None
    # Another account's id answers exactly as a missing one.
    for path, method in ((f"/connectors/{made['id']}", "DELETE"),
                         (f"/connectors/{made['id']}/regenerate-token", "POST"),
                         ("/connectors/conn_0000000000000000", "DELETE"),
                         ("/connectors/nonsense", "DELETE")):  # fmt: skip
        r = await client.request(method, service.api(path), headers={"X-API-Key": other})
        assert r.status_code == 404 and _code(r) == "CONNECTOR_NOT_FOUND", r.text
    r = await client.get(
        service.api("/screenshot"),
        params={"url": "http://127.0.0.1:9/", "connector_id": made["id"]},
        headers={"X-API-Key": other},
    )
    assert r.status_code == 404 and _code(r) == "CONNECTOR_NOT_FOUND", r.text
    # Never connected: offline (503), before any credit.
    r = await client.get(
        service.api("/screenshot"),
        params={"url": "http://127.0.0.1:9/", "connector_id": made["id"]},
        headers=h,
    )
    assert r.status_code == 503 and _code(r) == "CONNECTOR_OFFLINE", r.text
    r = await client.post(
        service.api("/bulk-screenshot"),
        json={"url": "http://127.0.0.1:9/", "connectorId": made["id"]},
        headers=h,
    )
    assert r.status_code == 400 and _code(r) == "VALIDATION_ERROR", r.text
    r = await client.post(
        service.api("/bulk-screenshot"),
        json={"urls": ["http://127.0.0.1:9/"], "connector_id": made["id"], "connectorId": "x"},
        headers=h,
    )
    assert r.status_code == 400 and _code(r) == "VALIDATION_ERROR", r.text
    # Regenerated: the old token is gone, the new one works; deleted: none does.
    r = await client.post(service.api(f"/connectors/{made['id']}/regenerate-token"), headers=h)
    assert r.status_code == 200, r.text
    fresh = r.json()["data"]["token"]
    async with Ledger.open(service.db) as ledger:
        assert await ledger.connector_by_token(made["token"]) is None
        assert (await ledger.connector_by_token(fresh)) is not None
    r = await client.delete(service.api(f"/connectors/{made['id']}"), headers=h)
    assert r.status_code == 200 and r.json()["data"] == {"id": made["id"], "deleted": True}
    assert made["id"] not in await _listed(client, service, key)
    async with Ledger.open(service.db) as ledger:
        assert await ledger.connector_by_token(fresh) is None
    r = await client.delete(service.api(f"/connectors/{made['id']}"), headers=h)
    assert r.status_code == 404 and _code(r) == "CONNECTOR_NOT_FOUND", r.text


async def test_tunnel_refuses_a_bad_token_and_a_bad_hello(
    service: Service, client: httpx.AsyncClient
) -> None:
    from trio_websocket import ConnectionClosed, ConnectionRejected

    key = await new_key(service.db)
    made = await _create(client, service, key, "probe")
    url = tunnel_url(service.url)
    for token in ("pxc_" + "0" * 48, "nonsense", made["token"][:-1]):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_tunnel(url, token):
                pass
        assert rejected.value.status_code == 403
    # A token in the URL is not how it is given.
    with pytest.raises(ConnectionRejected):
        async with open_tunnel(url + "?token=" + made["token"], "pxc_"):
            pass
    # Accepted, but the first message is not the hello: closed, never online.
    async with open_tunnel(url, made["token"]) as ws:
        await ws.send_message(b"\x01\0\0\0\1\0")
        with pytest.raises(ConnectionClosed):
            with trio.fail_after(30):
                await ws.get_message()
    assert (await _listed(client, service, key))[made["id"]]["status"] == "offline"


# -- captures through a connector -------------------------------------------------------


async def test_private_site_is_captured_through_its_accounts_connector(
    service: Service, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=20)
    other = await new_key(service.db, credits=20)
    h = {"X-API-Key": key}
    made = await _create(client, service, key, "office")
    with SiteServer(routes={"/": Route(body=_RED)}) as site:
        # The service's own policy refuses the site.
        r = await client.get(service.api("/screenshot"), params={"url": site.url("/")}, headers=h)
        assert r.status_code == 400 and _code(r) == "URL_BLOCKED", r.text
        with bulk_connector(service, made["token"]) as connector:
            row = await _until_status(client, service, key, made["id"], "online")
            assert row["last_seen"] is not None
            assert connector.said("online as " + made["id"]) == 1
            r = await client.get(
                service.api("/screenshot"),
                params={
                    "url": site.url("/"),
                    "connector_id": made["id"],
                    "width": 400,
                    "height": 300,
                },
                headers=h,
            )
            assert r.status_code == 200, r.text
            assert r.headers["X-Connector-Used"] == made["id"]
            image = Image.open(io.BytesIO(r.content)).convert("RGB")
            assert image.size == (400, 300)
            assert image.getpixel((200, 290)) == (0xD0, 0x20, 0x20)
            assert len(site.hits("/")) == 1
            # POST, Pixcap's camelCase spelling.
            r = await client.post(
                service.api("/screenshot"),
                json={"url": site.url("/"), "connectorId": made["id"]},
                headers=h,
            )
            assert r.status_code == 200, r.text
            assert r.headers["X-Connector-Used"] == made["id"]
            # Unrouted, the same URL is still refused: the connector changes nothing
            # for requests that do not name it, nor for another account.
            r = await client.get(
                service.api("/screenshot"), params={"url": site.url("/")}, headers=h
            )
            assert r.status_code == 400 and _code(r) == "URL_BLOCKED", r.text
            r = await client.get(
                service.api("/screenshot"),
                params={"url": site.url("/"), "connector_id": made["id"]},
                headers={"X-API-Key": other},
            )
            assert r.status_code == 404 and _code(r) == "CONNECTOR_NOT_FOUND", r.text
            assert len(site.hits("/")) == 2
            # Ordinary captures never run on the connector's source.
            r = await client.get(service.api("/health"))
            browsers = r.json()["data"]["browsers"]
            assert [b["kind"] for b in browsers].count("local") == 1
        # Stopped: offline, and a routed request says so.
        await _until_status(client, service, key, made["id"], "offline")
        r = await client.get(
            service.api("/screenshot"),
            params={"url": site.url("/"), "connector_id": made["id"]},
            headers=h,
        )
        assert r.status_code == 503 and _code(r) == "CONNECTOR_OFFLINE", r.text
    async with Ledger.open(service.db) as ledger:
        report = await ledger.audit()
        assert report.ok, report.problems
        account = await ledger.account_by_key(key)
    assert account.balance == 18  # two captures charged; refusals cost nothing


async def test_bulk_job_is_captured_through_the_connector(
    service: Service, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=20)
    h = {"X-API-Key": key}
    made = await _create(client, service, key, "office")
    n = 5
    routes = {f"/p{i}": Route(body=_RED) for i in range(n)}
    with SiteServer(routes=routes) as site, bulk_connector(service, made["token"]):
        await _until_status(client, service, key, made["id"], "online")
        urls = [site.url(f"/p{i}") for i in range(n)]
        # Unrouted, the list is refused whole by the service's policy.
        r = await client.post(service.api("/bulk-screenshot"), json={"urls": urls}, headers=h)
        assert r.status_code == 400, r.text
        r = await client.post(
            service.api("/bulk-screenshot"),
            json={"urls": urls, "connectorId": made["id"]},
            headers=h,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["job_id"]
        status_url = service.api(f"/bulk-screenshot/{job_id}/status")
        status = await wait_for_status(client, status_url, key, {"completed", "failed"}, _JOB)
        assert status["status"] == "completed", (status.get("error"), status["progress"])
        assert status["credits"] == {"reserved": n, "used": n, "refunded": 0}
        assert all(len(site.hits(f"/p{i}")) == 1 for i in range(n))
        r = await client.get(status_url, headers=h)
        assert r.headers["X-Connector-Used"] == made["id"]
        r = await client.get(service.api(f"/bulk-screenshot/{job_id}/download"), headers=h)
        assert r.status_code == 200 and r.headers["X-Connector-Used"] == made["id"]


async def test_connector_gone_mid_job_fails_its_urls_refunded(
    service: Service, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=20)
    h = {"X-API-Key": key}
    made = await _create(client, service, key, "flaky")
    n = 6
    release = threading.Event()

    def slow(handler: Any) -> None:
        release.wait(60)  # held until the connector is gone
        body = _RED.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    routes = {f"/s{i}": Route(handler=slow) for i in range(n)}
    with SiteServer(routes=routes) as site:
        with bulk_connector(service, made["token"]) as connector:
            await _until_status(client, service, key, made["id"], "online")
            r = await client.post(
                service.api("/bulk-screenshot"),
                json={"urls": [site.url(f"/s{i}") for i in range(n)], "connector_id": made["id"]},
                headers=h,
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["data"]["job_id"]
            await _until(lambda: len(site.hits("/s0")) + len(site.hits("/s1")) > 0)
            os.killpg(connector.process.pid, signal.SIGKILL)
        release.set()
        status_url = service.api(f"/bulk-screenshot/{job_id}/status")
        status = await wait_for_status(client, status_url, key, {"completed", "failed"}, _JOB)
    credits = status["credits"]
    assert credits["reserved"] == n == credits["used"] + credits["refunded"], status
    assert credits["refunded"] >= 1, status
    async with Ledger.open(service.db) as ledger:
        rows = await ledger.urls(job_id)
        report = await ledger.audit()
    assert report.ok, report.problems
    assert {r.error_code for r in rows if r.state == "failed"} <= {"CONNECTOR_OFFLINE"}, rows


@pytest.mark.parametrize("how", ["regenerate", "delete"])
async def test_revoking_disconnects_the_running_connector(
    service: Service, client: httpx.AsyncClient, how: str
) -> None:
    key = await new_key(service.db, credits=5)
    h = {"X-API-Key": key}
    made = await _create(client, service, key, "revoked")
    with SiteServer(routes={"/": Route(body=_RED)}) as site, bulk_connector(
        service, made["token"]
    ) as connector:
        await _until_status(client, service, key, made["id"], "online")
        if how == "regenerate":
            r = await client.post(
                service.api(f"/connectors/{made['id']}/regenerate-token"), headers=h
            )
            assert r.status_code == 200, r.text
            # At once: offline on the very next request, not at a reconnect.
            row = (await _listed(client, service, key))[made["id"]]
            assert row["status"] == "offline"
            r = await client.get(
                service.api("/screenshot"),
                params={"url": site.url("/"), "connector_id": made["id"]},
                headers=h,
            )
            assert r.status_code == 503 and _code(r) == "CONNECTOR_OFFLINE", r.text
        else:
            r = await client.delete(service.api(f"/connectors/{made['id']}"), headers=h)
            assert r.status_code == 200, r.text
        # The connector saw its tunnel end, and its old token is refused from then on.
        await _until(lambda: connector.said("refused the token") >= 1)
        assert connector.said("online as") == 1
        assert connector.process.poll() is None  # it keeps trying, with backoff
    if how == "regenerate":
        assert (await _listed(client, service, key))[made["id"]]["status"] == "offline"
