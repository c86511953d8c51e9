"""The HTTP API through real HTTP: hypercorn on 127.0.0.1:0, real Chromium, real SQLite."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import sqlite3
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bulk._api import RateLimit
from bulk._ledger import Ledger
from bulk._openapi import MAX_BODY, MAX_LARGE_BODY
from tests.servicekit import Service, balance, new_key, wait_for_status
from tests.sitekit import Route, SiteServer, serve_site

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    """The basic fixture site plus a page that 404s and a slow section."""
    routes = {
        "/broken-sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/</loc></url><url><loc>{origin}/missing</loc></url>"
            "<url><loc>{origin}/about/</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/slow-sitemap.xml": Route(
            body="<urlset>"
            + "".join(f"<url><loc>{{origin}}/slow/{i}</loc></url>" for i in range(6))
            + "</urlset>",
            content_type="application/xml",
        ),
        **{f"/slow/{i}": Route(body=f"<h1>slow {i}</h1>", delay=1.0) for i in range(6)},
    }
    with serve_site("basic", routes) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    svc = Service(db=root / "ledger.db", data_dir=root / "data", chromium=chromium).start()
    yield svc
    svc.stop()


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as c:
        yield c


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def _create(
    client: httpx.AsyncClient,
    service: Service,
    key: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        service.api("/bulk-screenshot"), json=body, headers={**_h(key), **(headers or {})}
    )


def _err(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert "Traceback" not in r.text
    return body["error"]  # type: ignore[no-any-return]


# ---- the main flow ----------------------------------------------------------------------


async def test_register_create_poll_download(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    r = await client.post(service.api("/register"), json={"email": "flow@example.com"})
    assert r.status_code == 201, r.text
    reg = r.json()["data"]
    key = reg["api_key"]
    assert reg["credits"] == 100 and key.startswith("pix_")

    r = await _create(client, service, key, {"url": site.origin, "options": {"maxPages": 50}})
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["status"] == "pending"
    assert data["total_urls"] == 4 == data["credits_reserved"]
    assert data["credits_remaining"] == 96
    assert data["sitemap_url"] == site.url("/sitemap_index.xml")
    assert data["status_url"] == f"/api/v1/bulk-screenshot/{data['job_id']}/status"
    uuid.UUID(data["job_id"])

    status = await wait_for_status(
        client, service.url + data["status_url"], key, {"completed", "failed"}
    )
    assert status["status"] == "completed"
    assert status["progress"] == {
        "totalUrls": 4,
        "processed": 4,
        "successful": 4,
        "failed": 0,
        "percentage": 100,
    }
    assert status["credits"] == {"reserved": 4, "used": 4, "refunded": 0}
    assert status["download"]["fileSize"] > 0 and status["download"]["expiresAt"].endswith("Z")

    r = await client.get(
        service.api(f"/bulk-screenshot/{data['job_id']}/download"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert int(r.headers["content-length"]) == status["download"]["fileSize"] == len(r.content)
    assert "attachment" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        assert root.startswith("screenshots-127-0-0-1-")
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
        for entry in ("index.png", "about/index.png", "blog/index.png", "blog/my-post.png"):
            assert f"{root}/{entry}" in names
    assert [u["url"] for u in manifest["urls"]] == [
        site.url(p) for p in ("/", "/about/", "/blog/", "/blog/my-post")
    ]
    assert await balance(service.db, key) == 96

    # Range request: a broken download can resume.
    url = service.api(f"/bulk-screenshot/{data['job_id']}/download")
    r2 = await client.get(url, headers={**_h(key), "Range": "bytes=10-109"})
    assert r2.status_code == 206
    assert r2.content == r.content[10:110]
    assert r2.headers["content-range"] == f"bytes 10-109/{len(r.content)}"


async def test_failed_urls_are_refunded(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=10)
    r = await _create(client, service, key, {"sitemap_url": site.url("/broken-sitemap.xml")})
    assert r.status_code == 202, r.text
    job = r.json()["data"]
    status = await wait_for_status(
        client, service.url + job["status_url"], key, {"completed", "failed"}
    )
    assert status["status"] == "completed"
    r = await client.get(service.url + status["download"]["url"], headers=_h(key))
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        root = zf.namelist()[0].split("/")[0]
        rows = json.loads(zf.read(f"{root}/_manifest.json"))["urls"]
    progress = status["progress"]
    assert progress["successful"] == 2 and progress["failed"] == 1, rows
    assert status["credits"] == {"reserved": 3, "used": 2, "refunded": 1}
    assert await balance(service.db, key) == 8
    missing = next(row for row in rows if row["url"].endswith("/missing"))
    assert missing["status"] == "failed" and missing["entry"] is None
    assert missing["error_code"] == "HTTP_ERROR" and missing["http_status"] == 404


# ---- auth and isolation -----------------------------------------------------------------


async def test_auth_errors_and_spellings(service: Service, client: httpx.AsyncClient) -> None:
    url = service.api("/account")
    _err(await client.get(url), 401, "API_KEY_REQUIRED")
    _err(await client.get(url, headers=_h("pix_nope")), 401, "INVALID_API_KEY")
    key = await new_key(service.db, credits=3)
    for kwargs in (
        {"headers": _h(key)},
        {"headers": {"Authorization": f"Bearer {key}"}},
        {"params": {"api_key": key}},
    ):
        r = await client.get(url, **kwargs)
        assert r.status_code == 200, (kwargs, r.text)
        assert r.json()["data"]["credits"] == 3
    async with Ledger.open(service.db) as ledger:
        assert await ledger.revoke_key(key)
    _err(await client.get(url, headers=_h(key)), 401, "INVALID_API_KEY")


async def test_other_keys_job_is_not_found(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    alice, bob = await new_key(service.db), await new_key(service.db)
    r = await _create(client, service, alice, {"url": site.origin, "options": {"maxPages": 1}})
    job_id = r.json()["data"]["job_id"]
    for path in (f"/bulk-screenshot/{job_id}/status", f"/bulk-screenshot/{job_id}/download"):
        _err(await client.get(service.api(path), headers=_h(bob)), 404, "JOB_NOT_FOUND")
    for bad in (str(uuid.uuid4()), "../../etc/passwd", "x" * 300):
        r = await client.get(service.api(f"/bulk-screenshot/{bad}/status"), headers=_h(alice))
        assert r.status_code == 404
    await wait_for_status(
        client, service.api(f"/bulk-screenshot/{job_id}/status"), alice, {"completed"}
    )


# ---- validation, policy, credits, in that order ---------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"maxPages": "50"}, "options.maxPages"),
        ({"maxPages": True}, "options.maxPages"),
        ({"maxPages": 1.5}, "options.maxPages"),
        ({"maxPages": None}, "options.maxPages"),
        ({"maxPages": 0}, "options.maxPages"),
        ({"maxPages": 101}, "options.maxPages"),
        ({"width": "1280"}, "options.width"),
        ({"width": 100}, "options.width"),
        ({"fullPage": "yes"}, "options.fullPage"),
        ({"format": "gif"}, "options.format"),
        ({"scale": 4}, "options.scale"),
        ({"cookies": [{"name": "a"}]}, "options.cookies"),
        ({"headers": {"Host": "evil"}}, "options.headers"),
        ({"full_page": True, "fullPage": False}, "options.fullPage"),
        ({"colour": "red"}, "options.colour"),
    ],
)
async def test_strict_validation(
    service: Service, client: httpx.AsyncClient, options: dict[str, Any], field: str
) -> None:
    key = await new_key(service.db)
    r = await _create(client, service, key, {"url": "example.com", "options": options})
    err = _err(r, 400, "VALIDATION_ERROR")
    assert err["details"]["field"] == field


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "example.com", "sitemap_url": "https://example.com/sitemap.xml"},
        {"url": 42},
        {"url": ""},
        {"url": "example.com", "extra": 1},
        {"url": "example.com", "options": []},
        [1, 2],
    ],
)
async def test_body_shape_errors(service: Service, client: httpx.AsyncClient, body: Any) -> None:
    key = await new_key(service.db)
    _err(await _create(client, service, key, body), 400, "VALIDATION_ERROR")


async def test_not_json_and_too_large(service: Service, client: httpx.AsyncClient) -> None:
    key = await new_key(service.db)
    url = service.api("/bulk-screenshot")
    _err(await client.post(url, content=b"{nope", headers=_h(key)), 400, "VALIDATION_ERROR")
    _err(await client.post(url, content=b"NaN", headers=_h(key)), 400, "VALIDATION_ERROR")
    # A URL list may be large (MAX_LARGE_BODY), other bodies not (MAX_BODY). The
    # server answers 413 from the declared length without reading the upload, so
    # the client declares it and sends none: writing megabytes nobody reads would
    # block on the socket's buffer (how much fits depends on the kernel).
    r = await _declared_only(service.api("/bulk-screenshot"), MAX_LARGE_BODY + 1, key)
    _err(r, 413, "PAYLOAD_TOO_LARGE")
    r = await _declared_only(service.api("/register"), MAX_BODY + 1, None)
    _err(r, 413, "PAYLOAD_TOO_LARGE")
    # Under the large limit a /bulk-screenshot body is read (and judged as JSON).
    fits = json.dumps({"url": "example.com", "pad": "x" * (MAX_BODY + 1)}).encode()
    r = await client.post(url, content=fits, headers=_h(key))
    assert r.status_code != 413, r.text


async def _declared_only(url: str, length: int, key: str | None) -> httpx.Response:
    """POST with ``Content-Length: length`` and no body; the response as httpx's."""
    parts = httpx.URL(url)
    head = [f"POST {parts.raw_path.decode()} HTTP/1.1", f"Host: {parts.netloc.decode()}"]
    head += ["Content-Type: application/json", f"Content-Length: {length}"]
    if key is not None:
        head.append(f"X-API-Key: {key}")
    stream = await trio.open_tcp_stream(parts.host, parts.port or 80)
    async with stream:
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode())
        data = b""
        with trio.fail_after(30):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                data += chunk
            top, _, body = data.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            headers: list[tuple[str, str]] = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
            size = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
            while len(body) < size:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                body += chunk
    status = int(lines[0].split()[1])
    return httpx.Response(status, headers=headers, content=body[:size])


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/", "INVALID_URL"),
        ("http://", "INVALID_URL"),
        ("http://exa mple.com/", "INVALID_URL"),
        ("localhost", "URL_BLOCKED"),
        ("http://127.0.0.2:8080/", "URL_BLOCKED"),
        ("http://169.254.169.254/latest/meta-data/", "URL_BLOCKED"),
        ("http://[::1]/", "URL_BLOCKED"),
        ("http://user:pw@example.com/", "INVALID_URL"),
        ("http://2130706434/", "URL_BLOCKED"),
    ],
)
async def test_url_policy_at_submission(
    service: Service, client: httpx.AsyncClient, canary: SiteServer, url: str, code: str
) -> None:
    key = await new_key(service.db)
    _err(await _create(client, service, key, {"url": url}), 400, code)
    assert canary.requests == []


async def test_webhook_url_checked_by_policy(service: Service, client: httpx.AsyncClient) -> None:
    key = await new_key(service.db)
    body = {"url": "example.com", "webhook_url": "http://127.0.0.2:9999/hook"}
    _err(await _create(client, service, key, body), 400, "URL_BLOCKED")


async def test_check_order(service: Service, site: SiteServer, client: httpx.AsyncClient) -> None:
    bad_body = {"url": "http://127.0.0.2/", "options": {"maxPages": "x"}}
    # auth comes first, even with a bad body
    _err(await client.post(service.api("/bulk-screenshot"), json=bad_body), 401, "API_KEY_REQUIRED")
    broke = await new_key(service.db, credits=0)
    # validation before URL policy, URL policy before credits
    _err(await _create(client, service, broke, bad_body), 400, "VALIDATION_ERROR")
    _err(await _create(client, service, broke, {"url": "http://127.0.0.2/"}), 400, "URL_BLOCKED")
    _err(await _create(client, service, broke, {"url": site.origin}), 402, "INSUFFICIENT_CREDITS")


async def test_insufficient_credits_writes_nothing(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=2)  # the site has 4 pages
    err = _err(
        await _create(client, service, key, {"url": site.origin}), 402, "INSUFFICIENT_CREDITS"
    )
    assert err["details"] == {"required": 4, "available": 2}
    assert await balance(service.db, key) == 2
    r = await client.get(service.api("/account"), headers=_h(key))
    assert r.json()["data"]["jobs_in_flight"] == []


async def test_discovery_errors(service: Service, client: httpx.AsyncClient) -> None:
    empty = SiteServer(routes={})
    with empty:
        key = await new_key(service.db)
        _err(await _create(client, service, key, {"url": empty.origin}), 400, "NO_SITEMAP_FOUND")
    assert await balance(service.db, key) == 100


# ---- job lifecycle errors ----------------------------------------------------------------


async def test_not_ready_then_ready(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db)
    r = await _create(client, service, key, {"sitemap_url": site.url("/slow-sitemap.xml")})
    job = r.json()["data"]
    download = service.api(f"/bulk-screenshot/{job['job_id']}/download")
    err = _err(await client.get(download, headers=_h(key)), 409, "JOB_NOT_READY")
    assert err["details"]["status"] in ("pending", "processing")
    await wait_for_status(client, service.url + job["status_url"], key, {"completed"}, 90)
    assert (await client.get(download, headers=_h(key))).status_code == 200


async def test_download_expires(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db)
    r = await _create(client, service, key, {"url": site.origin, "options": {"maxPages": 1}})
    job = r.json()["data"]
    status = await wait_for_status(client, service.url + job["status_url"], key, {"completed"})
    download = service.url + status["download"]["url"]
    assert (await client.get(download, headers=_h(key))).status_code == 200
    service.clock.offset = 86400 + 5  # past the 24 h window
    try:
        _err(await client.get(download, headers=_h(key)), 410, "DOWNLOAD_EXPIRED")
        # the sweeper marks it expired and deletes the files
        status = await wait_for_status(
            client, service.url + job["status_url"], key, {"expired"}, within=10
        )
        assert status["download"] is None
        # The job is marked expired first (a crash then leaves files, never a
        # completed job without them); the files go right after.
        folder = service.data_dir / "jobs" / job["job_id"]
        for _ in range(200):
            if not folder.exists():
                break
            await trio.sleep(0.05)
        assert not folder.exists()
        _err(await client.get(download, headers=_h(key)), 410, "DOWNLOAD_EXPIRED")
    finally:
        service.clock.offset = 0


async def test_idempotency(service: Service, site: SiteServer, client: httpx.AsyncClient) -> None:
    key = await new_key(service.db, credits=20)
    body = {"url": site.origin, "options": {"maxPages": 2}}
    headers = {"Idempotency-Key": "order-42"}
    first = await _create(client, service, key, body, headers=headers)
    second = await _create(client, service, key, body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["job_id"] == second.json()["data"]["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert await balance(service.db, key) == 18  # reserved once
    other = {"url": site.origin, "options": {"maxPages": 1}}
    _err(
        await _create(client, service, key, other, headers=headers),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # the same Idempotency-Key on another account is independent
    key2 = await new_key(service.db, credits=20)
    third = await _create(client, service, key2, body, headers=headers)
    assert third.json()["data"]["job_id"] != first.json()["data"]["job_id"]
    _err(
        await _create(client, service, key, body, headers={"Idempotency-Key": "a b"}),
        400,
        "VALIDATION_ERROR",
    )


# ---- single screenshots ------------------------------------------------------------------


async def test_screenshot_get_and_post(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    key = await new_key(service.db, credits=5)
    r = await client.get(
        service.api("/screenshot"),
        params={"url": site.url("/about/"), "width": "800", "height": "600", "format": "jpeg"},
        headers=_h(key),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content[:3] == b"\xff\xd8\xff"
    assert r.headers["x-screenshot-width"] == "800" and r.headers["x-screenshot-height"] == "600"
    assert r.headers["x-credits-remaining"] == "4"
    assert r.headers["x-response-time"].endswith("ms")

    r = await client.post(
        service.api("/screenshot"),
        json={"url": site.url("/"), "width": 1024, "fullPage": False, "darkMode": True},
        headers=_h(key),
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    import base64

    assert base64.b64decode(data["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["metadata"]["width"] == 1024 and data["metadata"]["format"] == "png"
    assert data["credits_remaining"] == 3


async def test_screenshot_failure_is_refunded(
    service: Service, site: SiteServer, client: httpx.AsyncClient, canary: SiteServer
) -> None:
    key = await new_key(service.db, credits=2)
    r = await client.get(
        service.api("/screenshot"), params={"url": site.url("/missing")}, headers=_h(key)
    )
    err = _err(r, 500, "CAPTURE_ERROR")
    assert err["details"] == {"reason": "HTTP_ERROR", "http_status": 404}
    _err(
        await client.get(
            service.api("/screenshot"), params={"url": canary.url("/")}, headers=_h(key)
        ),
        400,
        "URL_BLOCKED",
    )
    _err(
        await client.get(
            service.api("/screenshot"),
            params={"url": site.url("/"), "width": "wide"},
            headers=_h(key),
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert await balance(service.db, key) == 2
    assert canary.requests == []
    broke = await new_key(service.db, credits=0)
    _err(
        await client.get(
            service.api("/screenshot"), params={"url": site.url("/")}, headers=_h(broke)
        ),
        402,
        "INSUFFICIENT_CREDITS",
    )


# ---- account, keys, docs -----------------------------------------------------------------


async def test_account_and_keys(service: Service, client: httpx.AsyncClient) -> None:
    r = await client.post(service.api("/register"), json={"email": "Keys@Example.com"})
    key = r.json()["data"]["api_key"]
    _err(
        await client.post(service.api("/register"), json={"email": "keys@example.com"}),
        409,
        "EMAIL_TAKEN",
    )
    _err(
        await client.post(service.api("/register"), json={"email": "nope"}), 400, "VALIDATION_ERROR"
    )
    keys = [key]
    for _ in range(4):
        r = await client.post(service.api("/api-keys"), headers=_h(key))
        assert r.status_code == 201
        keys.append(r.json()["data"]["api_key"])
    _err(await client.post(service.api("/api-keys"), headers=_h(key)), 409, "KEY_LIMIT_REACHED")
    account = (await client.get(service.api("/account"), headers=_h(keys[1]))).json()["data"]
    assert account["email"] == "keys@example.com"
    assert len(account["api_keys"]) == 5
    assert all(
        k["prefix"].startswith("pix_") and len(k["prefix"]) == 10 for k in account["api_keys"]
    )
    assert account["webhook_secret"].startswith("whsec_")
    r = await client.delete(service.api(f"/api-keys/{keys[4][:10]}"), headers=_h(key))
    assert r.status_code == 200
    _err(await client.get(service.api("/account"), headers=_h(keys[4])), 401, "INVALID_API_KEY")
    assert (await client.post(service.api("/api-keys"), headers=_h(key))).status_code == 201


async def test_openapi_and_health(service: Service, client: httpx.AsyncClient) -> None:
    r = await client.get(service.api("/openapi.json"))
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/bulk-screenshot",
        "/bulk-screenshot/{job_id}/status",
        "/bulk-screenshot/{job_id}/download",
        "/screenshot",
        "/register",
        "/account",
        "/health",
        "/openapi.json",
    ):
        assert path in doc["paths"], path
    props = doc["components"]["schemas"]["CaptureOptions"]["properties"]
    assert props["width"]["minimum"] == 320 and props["width"]["maximum"] == 3840
    assert (await client.get(service.api("/health"))).json()["data"]["status"] == "ok"
    _err(await client.get(service.api("/nope")), 404, "NOT_FOUND")
    _err(await client.put(service.api("/account")), 405, "METHOD_NOT_ALLOWED")


async def test_invalid_selector_is_the_requests_fault(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    # Chromium's parser refuses it: a 400 naming the field, not a failed capture (500).
    key = await new_key(service.db, credits=5)
    for params in ({"selector": "0"}, {"block_selectors": "h1,>>>"}):
        r = await client.get(
            service.api("/screenshot"), params={"url": site.url("/"), **params}, headers=_h(key)
        )
        assert _err(r, 400, "VALIDATION_ERROR")["details"]["field"] in params
    assert await balance(service.db, key) == 5


async def test_method_not_allowed_names_every_method(
    service: Service, client: httpx.AsyncClient
) -> None:
    r = await client.put(service.api("/screenshot"))
    _err(r, 405, "METHOD_NOT_ALLOWED")
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}


async def test_api_key_redacted_from_access_log(
    service: Service, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = await new_key(service.db)
    with caplog.at_level(logging.INFO, logger="bulk.api"):
        await client.get(service.api("/account"), params={"api_key": key})
        await trio.sleep(0.1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/api/v1/account?api_key=***" in text
    assert key not in text and key[4:] not in text


async def test_webhook_signed_and_retried(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    token = trio.lowlevel.current_trio_token()
    second = trio.Event()

    def hook(h: Any) -> None:
        received.append(({k.lower(): v for k, v in h.headers.items()}, h.body))
        status = 500 if len(received) == 1 else 204
        SiteServer._send(h, status, b"", "text/plain", {})
        if len(received) == 2:
            trio.from_thread.run_sync(second.set, trio_token=token)

    receiver = SiteServer(routes={"/hook": Route(handler=hook)})
    with receiver:
        key = await new_key(service.db)
        body = {
            "url": site.origin,
            "options": {"maxPages": 1},
            "webhook_url": receiver.url("/hook"),
        }
        r = await _create(client, service, key, body)
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["job_id"]
        with trio.fail_after(30):
            await second.wait()
    headers, payload = received[-1]
    event = json.loads(payload)
    assert event["event"] == "bulk_job.completed"
    assert event["data"]["jobId"] == job_id
    account = (await client.get(service.api("/account"), headers=_h(key))).json()["data"]
    parts = dict(p.split("=", 1) for p in headers["x-bulk-signature"].split(","))
    expected = hmac.new(
        account["webhook_secret"].encode(), f"{parts['t']}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    await trio.sleep(1.5)
    assert len(received) == 2  # delivered: no more attempts


# ---- rate limits (a service of its own, with small limits) -------------------------------


async def test_rate_limits(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    limits = {
        "general": RateLimit(6, 60),
        "screenshot": RateLimit(1, 60),
        "bulk": RateLimit(1, 3600),
        "register": RateLimit(2, 900),
    }
    svc = Service(db=tmp_path / "l.db", data_dir=tmp_path / "d", chromium=chromium, limits=limits)
    await trio.to_thread.run_sync(svc.start)
    try:
        key = await new_key(svc.db)
        url = svc.api("/bulk-screenshot")
        # a rejected request (validation) does not use the bulk slot
        _err(await client.post(url, json={"url": 1}, headers=_h(key)), 400, "VALIDATION_ERROR")
        ok = await client.post(
            url, json={"url": site.origin, "options": {"maxPages": 1}}, headers=_h(key)
        )
        assert ok.status_code == 202
        assert ok.headers["x-ratelimit-limit"] == "1"
        assert ok.headers["x-ratelimit-remaining"] == "0"
        r = await client.post(url, json={"url": site.origin}, headers=_h(key))
        _err(r, 429, "RATE_LIMIT_EXCEEDED")
        assert 3500 <= int(r.headers["retry-after"]) <= 3600
        assert r.headers["x-ratelimit-remaining"] == "0"
        # limits are per key
        other = await new_key(svc.db)
        r = await client.get(svc.api("/account"), headers=_h(other))
        assert r.headers["x-ratelimit-limit"] == "6" and r.headers["x-ratelimit-remaining"] == "5"
        # the general limit: 6 per minute, 429s do not count
        for _ in range(5):
            assert (await client.get(svc.api("/account"), headers=_h(other))).status_code == 200
        for _ in range(3):
            _err(
                await client.get(svc.api("/account"), headers=_h(other)), 429, "RATE_LIMIT_EXCEEDED"
            )
        svc.clock.offset = 61
        assert (await client.get(svc.api("/account"), headers=_h(other))).status_code == 200
        # registration: per client address
        for i in range(2):
            r = await client.post(svc.api("/register"), json={"email": f"r{i}@example.com"})
            assert r.status_code == 201
        r = await client.post(svc.api("/register"), json={"email": "r9@example.com"})
        _err(r, 429, "RATE_LIMIT_EXCEEDED")
    finally:
        await trio.to_thread.run_sync(svc.stop)


@contextlib.asynccontextmanager
async def _limited_service(
    tmp_path: Path, chromium: str, limits: dict[str, RateLimit], **kw: Any
) -> AsyncIterator[Service]:
    svc = Service(
        db=tmp_path / "l.db", data_dir=tmp_path / "d", chromium=chromium, limits=limits, **kw
    )
    await trio.to_thread.run_sync(svc.start)
    try:
        yield svc
    finally:
        await trio.to_thread.run_sync(svc.stop)


def _quota(**override: RateLimit) -> dict[str, RateLimit]:
    return {
        "general": RateLimit(1000, 60),
        "screenshot": RateLimit(1000, 60),
        "bulk": RateLimit(1000, 3600),
        "register": RateLimit(1000, 900),
        **override,
    }


async def test_failed_work_keeps_its_rate_limit_slot(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    limits = _quota(screenshot=RateLimit(1, 60), bulk=RateLimit(1, 3600))
    bare = SiteServer(routes={"/": Route(body="<h1>no sitemap here</h1>")})
    with bare:
        async with _limited_service(tmp_path, chromium, limits) as svc:
            # A capture that loaded a page (a 404) and failed used its slot.
            key = await new_key(svc.db)
            shot = svc.api("/screenshot")
            r = await client.get(shot, params={"url": site.url("/missing")}, headers=_h(key))
            assert _err(r, 500, "CAPTURE_ERROR")["details"]["reason"] == "HTTP_ERROR"
            _err(
                await client.get(shot, params={"url": site.url("/")}, headers=_h(key)),
                429,
                "RATE_LIMIT_EXCEEDED",
            )
            # A discovery that fetched and found nothing used its slot too.
            key = await new_key(svc.db)
            bulk = svc.api("/bulk-screenshot")
            _err(
                await client.post(bulk, json={"url": bare.origin}, headers=_h(key)),
                400,
                "NO_SITEMAP_FOUND",
            )
            r = await client.post(bulk, json={"url": site.origin}, headers=_h(key))
            _err(r, 429, "RATE_LIMIT_EXCEEDED")
            # Requests refused before any work (validation, URL policy, credits) are free.
            key = await new_key(svc.db)
            for body in ({"url": 1}, {"url": "http://127.0.0.2/"}):
                r = await client.post(bulk, json=body, headers=_h(key))
                assert r.status_code == 400, r.text
            poor = await new_key(svc.db, credits=0)
            r = await client.post(bulk, json={"url": site.origin}, headers=_h(poor))
            _err(r, 402, "INSUFFICIENT_CREDITS")
            _err(
                await client.get(shot, params={"url": site.url("/")}, headers=_h(poor)),
                402,
                "INSUFFICIENT_CREDITS",
            )
            for k in (key, poor):
                await client.get(shot, params={"url": "ftp://x/"}, headers=_h(k))
            ok = await client.post(
                bulk, json={"url": site.origin, "options": {"maxPages": 1}}, headers=_h(key)
            )
            assert ok.status_code == 202, ok.text
            assert ok.headers["x-ratelimit-remaining"] == "0"
            r = await client.get(shot, params={"url": site.url("/")}, headers=_h(key))
            assert r.status_code == 200, r.text


class _Gate:
    """A route that holds its request until the test opens the gate; ``arrived`` is
    set (in the test's trio run) when the request has come in."""

    def __init__(self, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.arrived = trio.Event()
        self.opened = threading.Event()
        self.body = body.encode()
        self.content_type = content_type

    def route(self) -> Route:
        def handler(h: Any) -> None:
            trio.from_thread.run_sync(self.arrived.set, trio_token=self.token)
            self.opened.wait(60)
            SiteServer._send(h, 200, self.body, self.content_type, {})

        return Route(handler=handler)


async def test_work_in_flight_is_capped_per_key(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    page = _Gate("<h1>held</h1>")
    robots = _Gate("User-agent: *\nSitemap: /sitemap.xml\n", "text/plain")
    held = SiteServer(
        routes={
            "/held": page.route(),
            "/robots.txt": robots.route(),
            "/sitemap.xml": Route(
                body="<urlset><url><loc>{origin}/</loc></url></urlset>",
                content_type="application/xml",
            ),
            "/": Route(body="<h1>home</h1>"),
        }
    )
    in_flight = {"discovery": 1, "capture": 1}
    with held:
        async with _limited_service(tmp_path, chromium, _quota(), in_flight=in_flight) as svc:
            key, other = await new_key(svc.db), await new_key(svc.db)
            shot, bulk = svc.api("/screenshot"), svc.api("/bulk-screenshot")
            first: dict[str, httpx.Response] = {}

            async def call(name: str, method: str, url: str, kw: dict[str, Any]) -> None:
                first[name] = await client.request(method, url, headers=_h(key), **kw)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    call, "shot", "GET", shot, {"params": {"url": held.url("/held")}}
                )
                nursery.start_soon(call, "bulk", "POST", bulk, {"json": {"url": held.origin}})
                with trio.fail_after(30):
                    await page.arrived.wait()
                    await robots.arrived.wait()
                # The key's one capture and one discovery are running: more wait.
                r = await client.get(shot, params={"url": held.url("/")}, headers=_h(key))
                body = _err(r, 429, "RATE_LIMIT_EXCEEDED")
                assert body["details"]["scope"] == "capture" and r.headers["retry-after"] == "1"
                r = await client.post(bulk, json={"url": site.origin}, headers=_h(key))
                body = _err(r, 429, "RATE_LIMIT_EXCEEDED")
                assert body["details"]["scope"] == "discovery" and r.headers["retry-after"] == "1"
                # Per key: another key is not held back.
                r = await client.get(shot, params={"url": held.url("/")}, headers=_h(other))
                assert r.status_code == 200, r.text
                page.opened.set()
                robots.opened.set()
            assert first["shot"].status_code == 200, first["shot"].text
            assert first["bulk"].status_code == 202, first["bulk"].text
            # Finished work frees its place.
            r = await client.get(shot, params={"url": held.url("/")}, headers=_h(key))
            assert r.status_code == 200, r.text
            r = await client.post(
                bulk, json={"url": site.origin, "options": {"maxPages": 1}}, headers=_h(key)
            )
            assert r.status_code == 202, r.text
            # Refusals cost nothing: the 429s above gave their slots back.
            assert await balance(svc.db, key) == 100 - 1 - 1 - 1 - 1


async def test_idempotent_replays_do_not_use_the_bulk_limit(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    async with _limited_service(tmp_path, chromium, _quota(bulk=RateLimit(2, 3600))) as svc:
        key = await new_key(svc.db)
        url = svc.api("/bulk-screenshot")
        body = {"url": site.origin, "options": {"maxPages": 1}}
        again = {"Idempotency-Key": "order-7"}
        r = await _create(client, svc, key, body, headers=again)
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["job_id"]
        for _ in range(11):
            r = await _create(client, svc, key, body, headers=again)
            assert r.status_code == 202, r.text
            assert r.json()["data"]["job_id"] == job_id
            assert r.headers["idempotent-replayed"] == "true"
            assert r.headers["x-ratelimit-limit"] == "2"
            assert r.headers["x-ratelimit-remaining"] == "1"
        # The second job of the window is still allowed; the third is not.
        r = await client.post(url, json={**body, "options": {"maxPages": 2}}, headers=_h(key))
        assert r.status_code == 202, r.text
        r = await client.post(url, json={**body, "options": {"maxPages": 3}}, headers=_h(key))
        _err(r, 429, "RATE_LIMIT_EXCEEDED")
        # With the window full, a replay still gets its job...
        r = await _create(client, svc, key, body, headers=again)
        assert r.status_code == 202 and r.json()["data"]["job_id"] == job_id
        # ...and anything else under the key still meets the limit first.
        other_body = {**body, "options": {"maxPages": 3}}
        _err(await _create(client, svc, key, other_body, headers=again), 429, "RATE_LIMIT_EXCEEDED")
        # Only two jobs exist.
        async with Ledger.open(svc.db) as ledger:
            account = await ledger.account_by_key(key)
            mine = await ledger.jobs(kinds=("bulk",), account_id=account.id)
        assert len(mine) == 2


# ---- restart mid-job -----------------------------------------------------------------


@pytest.mark.slow
async def test_restart_mid_job_resumes_with_correct_credits(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    svc = Service(db=tmp_path / "l.db", data_dir=tmp_path / "d", chromium=chromium, concurrency=1)
    await trio.to_thread.run_sync(svc.start)
    key = await new_key(svc.db, credits=10)
    r = await _create(client, svc, key, {"sitemap_url": site.url("/slow-sitemap.xml")})
    job = r.json()["data"]
    with trio.fail_after(30):
        while True:
            st = (await client.get(svc.url + job["status_url"], headers=_h(key))).json()["data"]
            if st["progress"]["processed"] >= 2:
                break
            await trio.sleep(0.1)
    await trio.to_thread.run_sync(svc.stop)  # graceful: leases released
    svc2 = Service(db=svc.db, data_dir=svc.data_dir, chromium=chromium, concurrency=2)
    await trio.to_thread.run_sync(svc2.start)
    try:
        done = await wait_for_status(client, svc2.url + job["status_url"], key, {"completed"}, 90)
    finally:
        await trio.to_thread.run_sync(svc2.stop)
    assert done["progress"]["successful"] == 6
    assert done["credits"] == {"reserved": 6, "used": 6, "refunded": 0}
    assert await balance(svc.db, key) == 4
    async with Ledger.open(svc.db) as ledger:
        report = await ledger.audit()
    assert report.ok, report.problems


@pytest.mark.slow
async def test_urls_are_leased_only_when_a_pool_slot_is_free(
    tmp_path: Path, chromium: str, site: SiteServer, client: httpx.AsyncClient
) -> None:
    # Two jobs share a one-page pool: each job runs a worker per slot, but a URL is
    # claimed (its attempt counted) only once its capture can start.
    svc = Service(db=tmp_path / "l.db", data_dir=tmp_path / "d", chromium=chromium, concurrency=1)
    await trio.to_thread.run_sync(svc.start)
    try:
        key = await new_key(svc.db, credits=20)
        jobs = []
        for _ in range(2):
            r = await _create(client, svc, key, {"sitemap_url": site.url("/slow-sitemap.xml")})
            jobs.append(r.json()["data"])
        most = 0
        ids = [j["job_id"] for j in jobs]
        # Both jobs' leases in one statement (one snapshot): reading the jobs one after
        # the other could see job A's lease before it ended and job B's claim after.
        watch = sqlite3.connect(f"file:{svc.db}?mode=ro", uri=True)
        try:
            with trio.fail_after(120):
                while True:
                    leased, open_jobs = watch.execute(
                        "SELECT (SELECT COUNT(*) FROM job_urls WHERE job_id IN (?, ?)"
                        " AND state = 'leased'), (SELECT COUNT(*) FROM jobs"
                        " WHERE id IN (?, ?) AND status != 'completed')",
                        (*ids, *ids),
                    ).fetchone()
                    most = max(most, leased)
                    if open_jobs == 0:
                        break
                    await trio.sleep(0.05)
        finally:
            watch.close()
        async with Ledger.open(svc.db) as ledger:
            attempts = [u.attempts for j in jobs for u in await ledger.urls(j["job_id"])]
    finally:
        await trio.to_thread.run_sync(svc.stop)
    assert most == 1
    assert attempts == [1] * 12
