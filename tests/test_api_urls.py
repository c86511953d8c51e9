"""URL-list jobs over the API: ``POST /bulk-screenshot`` with ``urls`` (real HTTP, real
Chromium, real SQLite, a site on 127.0.0.1; 127.0.0.2 is outside the service's policy)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from bulk._ledger import Ledger
from tests.servicekit import Service, balance, new_key, wait_for_status
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

PAGES = 8


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    routes = {f"/p/{i}": Route(body=f"<h1>page {i}</h1>") for i in range(PAGES)}
    with SiteServer(routes=routes) as server:
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


async def _create(client: httpx.AsyncClient, service: Service, key: str, body: Any) -> Any:
    return await client.post(service.api("/bulk-screenshot"), json=body, headers={"X-API-Key": key})


async def _jobs_of(service: Service) -> int:
    async with Ledger.open(service.db) as ledger:
        return len(await ledger.jobs(kinds=("bulk",)))


async def test_a_list_with_a_blocked_url_is_refused_whole(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    # 1,000 items, 10% repeats, one URL outside the policy at index 637.
    items: list[Any] = [f"{site.origin}/p/{i % PAGES}?n={i}" for i in range(900)]
    items += [items[i] for i in range(100)]
    items[637] = "http://127.0.0.2/secret"
    items[700] = {"url": site.url("/p/1"), "options": {"width": 99999}}
    key = await new_key(service.db, credits=2000)
    jobs_before = await _jobs_of(service)
    requests_before = len(site.requests)
    r = await _create(client, service, key, {"urls": items})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["bad_items"] == 2
    assert [(e["index"], e["code"]) for e in error["details"]["errors"]] == [
        (637, "URL_BLOCKED"),
        (700, "VALIDATION_ERROR"),
    ]
    assert error["details"]["errors"][1]["field"] == "urls[700].options.width"
    # nothing reserved, no job, no request made
    assert await balance(service.db, key) == 2000
    assert await _jobs_of(service) == jobs_before
    assert len(site.requests) == requests_before


async def test_a_list_job_captures_each_distinct_url_once(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    urls: list[Any] = [site.url(f"/p/{i}") for i in range(4)]
    # repeats (one spelled differently: a fragment and an upper-case host normalise away)
    urls += [site.url("/p/0"), site.url("/p/1#top"), site.url("/p/2").replace("http://", "HTTP://")]
    urls.append({"url": site.url("/p/5"), "options": {"width": 400, "height": 300}})
    urls.append(site.url("/missing"))
    key = await new_key(service.db, credits=50)
    hits_before = {r.path for r in site.requests}
    assert not hits_before & {"/p/0", "/p/1", "/p/2", "/p/3", "/p/5"}
    r = await _create(client, service, key, {"urls": urls, "options": {"width": 800}})
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["total_urls"] == 6 == data["credits_reserved"]
    assert data["deduplicated"] == 3
    assert data["sitemap_url"] is None
    status = await wait_for_status(
        client, service.url + data["status_url"], key, {"completed", "failed"}
    )
    assert status["status"] == "completed", status
    credits = status["credits"]
    assert credits == {"reserved": 6, "used": 5, "refunded": 1}
    assert credits["reserved"] == credits["used"] + credits["refunded"]
    assert await balance(service.db, key) == 45
    # one capture per distinct URL
    paths = [r.path for r in site.requests]
    for path in ("/p/0", "/p/1", "/p/2", "/p/3", "/p/5"):
        assert paths.count(path) == 1, (path, paths)
    r = await client.get(service.url + status["download"]["url"], headers={"X-API-Key": key})
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        root = zf.namelist()[0].split("/")[0]
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
        rows = {row["url"]: row for row in manifest["urls"]}
        with zf.open(f"{root}/{rows[site.url('/p/5')]['entry']}") as f, Image.open(f) as img:
            assert img.size == (400, 300)
        with zf.open(f"{root}/{rows[site.url('/p/0')]['entry']}") as f, Image.open(f) as img:
            assert img.size == (800, 800)
    assert root.startswith("screenshots-127-0-0-1-")
    assert manifest["job"]["source"] == "urls" and manifest["job"]["deduplicated"] == 3
    assert rows[site.url("/p/5")]["options"] == {"width": 400, "height": 300}
    assert "options" not in rows[site.url("/p/0")]
    assert rows[site.url("/missing")]["error_code"] == "HTTP_ERROR"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"urls": "http://127.0.0.1/"}, "urls"),
        ({"urls": []}, "urls"),
        ({"urls": ["http://127.0.0.1/"] * 5001}, "urls"),
        ({"urls": ["http://127.0.0.1/"], "url": "http://127.0.0.1/"}, "url"),
    ],
)
async def test_list_shape_errors(
    service: Service, client: httpx.AsyncClient, body: Any, field: str
) -> None:
    key = await new_key(service.db, credits=10)
    r = await _create(client, service, key, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
    assert await balance(service.db, key) == 10


async def test_an_item_with_an_unknown_field_is_named(
    service: Service, client: httpx.AsyncClient, site: SiteServer
) -> None:
    key = await new_key(service.db, credits=10)
    body = {"urls": [site.url("/p/0"), {"url": site.url("/p/1"), "opts": {}}]}
    r = await _create(client, service, key, body)
    assert r.status_code == 400, r.text
    errors = r.json()["error"]["details"]["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "urls[1]")]
    assert "'opts'" in errors[0]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"html": "<h1>x</h1>", "url": "http://127.0.0.1/"},
        {"html": ""},
        {"html": ["<h1>"]},
        {"html": "<p>" + "x" * (1024 * 1024) + "</p>"},
    ],
)
async def test_screenshot_html_input_is_checked_first(
    service: Service, client: httpx.AsyncClient, body: Any
) -> None:
    key = await new_key(service.db, credits=3)
    r = await client.post(service.api("/screenshot"), json=body, headers={"X-API-Key": key})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == "html"
    assert await balance(service.db, key) == 3


async def test_screenshot_renders_html_input_and_its_images_pass_the_policy(
    service: Service, site: SiteServer, client: httpx.AsyncClient
) -> None:
    # The document paints a red band; one image comes from the loopback site (which
    # the service allows), one from a canary on 127.0.0.2 (which it does not).
    key = await new_key(service.db, credits=3)
    with SiteServer(routes={"/img": Route(body="x")}, host="127.0.0.2") as canary:
        html = (
            "<body style='margin:0;background:#fff'>"
            "<div style='height:200px;background:rgb(255,0,0)'></div>"
            f"<img src='{site.url('/p/0')}?from-html'>"
            f"<img src='{canary.url('/img')}'></body>"
        )
        r = await client.post(
            service.api("/screenshot"),
            json={"html": html, "width": 400, "height": 300},
            headers={"X-API-Key": key},
        )
        assert canary.requests == []
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    image = Image.open(io.BytesIO(base64.b64decode(data["image"]))).convert("RGB")
    assert image.size == (400, 300)
    assert image.getpixel((200, 100)) == (255, 0, 0)
    assert image.getpixel((200, 290)) == (255, 255, 255)
    assert data["credits_remaining"] == 2
    assert await balance(service.db, key) == 2
    assert any(req.path == "/p/0?from-html" for req in site.requests)
