"""The dashboard, driven like a person drives it: Playwright in real Chromium against a
real ``bulk serve`` (hypercorn on 127.0.0.1:0, real SQLite) and a local site.

Every page is checked with axe-core (pinned in tests/js, run in the page) for serious
and critical violations, and for console errors (a CSP violation is one).
"""

from __future__ import annotations

import html
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from bulk._archive import ArchiveInfo, PageRecord, gallery_html, make_thumbnail
from bulk._dashboard._forms import (
    ArchiveForm,
    archive_fields,
    estimate,
    field_of_error,
    order_from_form,
)
from bulk._dashboard._session import Session, SessionSigner
from bulk._exceptions import NoSitemapFound, ValidationError
from bulk._ledger import Ledger, NewJob
from bulk._options import OPTION_SPECS
from bulk._policy import EgressPolicy
from tests.servicekit import Service, new_key
from tests.sitekit import ROOT, Route, SiteServer
from tests.test_capture_js import eslint, problems

pytestmark = pytest.mark.browser

#: The service's own rules (no private addresses) for the form's pure checks.
POLICY = EgressPolicy()
AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
# Generous: the machine may be busy with other suites; every wait is for a condition.
SLOW = 120_000

# A page whose left and right edges are marked: a thumbnail cropped at the sides loses them.
BANDS = (
    "<!doctype html><title>Bands</title><style>body{margin:0;background:#fff}"
    "i{position:fixed;top:0;bottom:0;width:12%}</style>"
    '<i style="left:0;background:#f00"></i><i style="right:0;background:#00f"></i>'
    "<h1 style='margin-left:20%'>bands</h1>"
)


@pytest.fixture(scope="module")
def site() -> Iterator[SiteServer]:
    """Three pages that capture, one that answers 404 (a failed URL)."""
    pages = ("/", "/bands", "/about", "/missing")
    sitemap = "<urlset>" + "".join(f"<url><loc>{{origin}}{p}</loc></url>" for p in pages)
    routes = {
        "/robots.txt": Route(body="Sitemap: {origin}/sitemap.xml\n", content_type="text/plain"),
        "/sitemap.xml": Route(body=sitemap + "</urlset>", content_type="application/xml"),
        "/": Route(body="<!doctype html><title>Home</title><h1>Home</h1>"),
        "/bands": Route(body=BANDS),
        "/about": Route(body="<!doctype html><title>About</title><h1>About us</h1>"),
        "/missing": Route(status=404, body="<h1>gone</h1>"),
    }
    with SiteServer(routes=routes) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("dashboard")
    svc = Service(db=root / "ledger.db", data_dir=root / "data", chromium=chromium).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium: str) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium)
    yield browser
    browser.close()


class Console:
    """Console errors of a context's pages (CSP violations, failed loads, exceptions)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def console() -> Console:
    return Console()


def _context(browser: Browser, console: Console, **kw: Any) -> BrowserContext:
    # axe-core comes in as an init script (through DevTools, so the dashboard's CSP,
    # which allows only its own scripts, does not stop it).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **kw)
    if kw.get("java_script_enabled", True):
        context.add_init_script(path=str(AXE))
    context.on("page", console.watch)
    return context


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    context = _context(browser, console)
    yield context
    context.close()


def check_a11y(page: Page) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    assert AXE.is_file(), "axe-core is not installed: run ./scripts/test (npm ci in tests/js)"
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map(n => n.target)}`)"""
    )
    assert violations == [], f"{page.url}: {violations}"


def csrf_of(page: Page) -> str:
    value = page.locator("input[name=csrf]").first.get_attribute("value")
    assert value
    return value


def sign_in(page: Page, service: Service, key: str) -> None:
    page.goto(service.url + "/signin")
    page.fill("#api_key", key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))


def api_get(service: Service, path: str, key: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.get(service.api(path), headers=headers, timeout=30, trust_env=False)


def fresh_key(service: Service, credits: int = 100, email: str | None = None) -> str:
    return trio.run(new_key, service.db, credits, email)


# ---- the whole flow -----------------------------------------------------------------------


def test_register_archive_watch_gallery_download_keys(
    service: Service, site: SiteServer, context: BrowserContext, console: Console, tmp_path: Path
) -> None:
    page = context.new_page()

    # Signed out: every page leads to sign-in.
    page.goto(service.url + "/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    check_a11y(page)

    # Register with an email, as POST /register does: a key, shown once, and signed in.
    page.fill("#email", "dash@example.com")
    page.click("text=Create account")
    expect(page.locator("h1")).to_have_text("Your account is ready")
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("pix_")
    assert api_get(service, "/account", key).json()["data"]["email"] == "dash@example.com"
    check_a11y(page)

    # New archive: the estimate follows max pages as it is typed.
    page.click("text=Archive a site")
    expect(page.locator("h1")).to_have_text("New archive")
    check_a11y(page)
    page.fill("#site", site.origin)
    page.fill("#max_pages", "10")
    expect(page.locator("#estimate-credits")).to_have_text("10")
    page.click("text=Start archive")

    # The job page: live progress to 100% without a reload (the marker survives).
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.evaluate("() => { window.bulkMarker = 'same page' }")
    expect(page.locator("#progress-text")).to_have_text(
        "4 of 4 pages done (100%)", timeout=SLOW
    )
    expect(page.locator("#job-status")).to_have_text("completed", timeout=SLOW)
    assert page.evaluate("() => window.bulkMarker") == "same page"
    expect(page.locator("#count-ok")).to_have_text("3")
    expect(page.locator("#count-failed")).to_have_text("1")
    expect(page.locator("#credits-reserved")).to_have_text("4")
    expect(page.locator("#credits-used")).to_have_text("3")
    expect(page.locator("#credits-refunded")).to_have_text("1")
    failed = page.locator("table.failed tbody tr")
    expect(failed).to_have_count(1)
    expect(failed.first).to_contain_text(site.url("/missing"))
    expect(failed.first).to_contain_text("HTTP_ERROR")
    expect(failed.first).to_contain_text("404")
    expect(page.locator("#expires-in")).to_have_text(re.compile(r"^23 h 5\d min$"))

    # The gallery: every thumbnail loaded, each the top of its page at full width.
    thumbs = page.locator("#gallery img")
    expect(thumbs).to_have_count(3)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')]"
        ".every(i => i.complete && i.naturalWidth === 320)"
    )
    bands = page.locator("#gallery li", has_text=site.url("/bands")).locator("a.thumb")
    assert_edges_kept(bands.screenshot())
    check_a11y(page)

    # Click a thumbnail: the full image.
    with page.expect_response(re.compile(r"/images/\d+$")) as shot:
        page.locator("#gallery li", has_text=site.url("/about")).locator("a.thumb").click()
    assert shot.value.status == 200
    assert shot.value.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(shot.value.body())) as im:
        assert im.size == (1280, 800)
    page.go_back()

    # Download the ZIP and check it.
    with page.expect_download() as download_info:
        page.click("#download")
    zip_path = tmp_path / "job.zip"
    download_info.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
        assert f"{root}/index.html" in names
    assert manifest["job"]["counts"] == {"total": 4, "ok": 3, "failed": 1}
    statuses = sorted((r["url"], r["status"]) for r in manifest["urls"])
    assert statuses == sorted(
        [
            (site.url("/"), "ok"),
            (site.url("/bands"), "ok"),
            (site.url("/about"), "ok"),
            (site.url("/missing"), "failed"),
        ]
    )

    # The jobs list has it, newest first.
    page.click("nav >> text=Jobs")
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    expect(page.locator(f"a[href='/jobs/{job_id}']")).to_have_text(site.origin)
    check_a11y(page)

    # Account: create a key (shown once, works on the API), then deactivate it.
    page.click("nav >> text=Account")
    expect(page.locator("#balance")).to_have_text("97")
    check_a11y(page)
    page.click("text=Create a key")
    second = page.locator("#new-key").inner_text().strip()
    assert second.startswith("pix_") and second != key
    assert api_get(service, "/account", second).status_code == 200
    check_a11y(page)
    page.reload()  # the key is shown once: not on the page again
    assert second not in page.content()
    row = page.locator("table.keys tbody tr", has_text=second[:10])
    row.locator("button", has_text="Deactivate").click()
    expect(page.locator(".notice")).to_contain_text(second[:10])
    expect(page.locator("table.keys tbody tr", has_text=second[:10])).to_contain_text(
        "deactivated"
    )
    r = api_get(service, "/account", second)
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_API_KEY"
    assert api_get(service, "/account", key).status_code == 200

    # Signing out ends the session.
    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto(service.url + f"/jobs/{job_id}")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    assert console.errors == []


def assert_edges_kept(png: bytes) -> None:
    """The thumbnail shows the page's left (red) and right (blue) edge bands."""
    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        left = rgb.getpixel((2, h // 4))
        right = rgb.getpixel((w - 3, h // 4))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > 180 and left[2] < 90, f"left edge is {left}, not the page's red band"
    assert right[2] > 180 and right[0] < 90, f"right edge is {right}, not the page's blue band"


# ---- forms and sessions ------------------------------------------------------------------


def test_form_posts_without_the_dashboards_token_are_refused(
    service: Service, site: SiteServer, context: BrowserContext
) -> None:
    key = fresh_key(service)
    page = context.new_page()
    sign_in(page, service, key)
    keys_before = len(api_get(service, "/account", key).json()["data"]["api_keys"])

    # A post with the session cookie but no token, and one with another session's token.
    r = context.request.post(service.url + "/account/keys", form={})
    assert r.status == 403 and "Form refused" in r.text()
    r = context.request.post(
        service.url + "/jobs/new",
        form={"csrf": "0" * 64, "site": site.origin, "max_pages": "2"},
    )
    assert r.status == 403

    # A page of another origin (same site: 127.0.0.1, so SameSite lets the cookie go)
    # that posts a form to the dashboard.
    site.routes["/attack"] = Route(
        body=f'<!doctype html><title>x</title><form method="post" '
        f'action="{service.url}/account/keys"><button>go</button></form>'
    )
    page.goto(site.url("/attack"))
    page.click("text=go")
    expect(page.locator("h1")).to_have_text("Form refused")
    check_a11y(page)
    # Even with the right token, from another origin.
    token = context.request.get(service.url + "/account").text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', token)
    assert csrf
    r = context.request.post(
        service.url + "/account/keys",
        form={"csrf": csrf.group(1)},
        headers={"Origin": site.origin},
    )
    assert r.status == 403

    data = api_get(service, "/account", key).json()["data"]
    assert len(data["api_keys"]) == keys_before
    assert data["jobs_in_flight"] == []
    # The same token, from the dashboard itself: accepted.
    r = context.request.post(
        service.url + "/account/keys", form={"csrf": csrf.group(1)}, headers={"Origin": service.url}
    )
    assert r.status == 201
    assert len(api_get(service, "/account", key).json()["data"]["api_keys"]) == keys_before + 1


def test_a_session_cookie_cannot_call_the_json_api(
    service: Service, context: BrowserContext
) -> None:
    key = fresh_key(service)
    page = context.new_page()
    sign_in(page, service, key)
    [cookie] = [c for c in context.cookies() if c["name"] == "bulk_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie") == ""
    for path in ("/account", "/bulk-screenshot/00000000-0000-0000-0000-000000000000/status"):
        r = context.request.get(service.api(path))
        assert r.status == 401, path
        assert r.json()["error"]["code"] == "API_KEY_REQUIRED"
    r = context.request.post(service.api("/api-keys"))
    assert r.status == 401
    # The dashboard itself accepts it; a forged one is a signed-out visitor.
    assert context.request.get(service.url + "/account", max_redirects=0).status == 200
    context.add_cookies([{**cookie, "value": cookie["value"][:-4] + "AAAA"}])
    r = context.request.get(service.url + "/account", max_redirects=0)
    assert r.status == 303 and r.headers["location"].startswith("/signin")


def test_pages_read_without_javascript(
    service: Service, site: SiteServer, browser: Browser, console: Console
) -> None:
    key = fresh_key(service)
    context = _context(browser, console, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, service, key)
        expect(page.locator("main")).to_contain_text("No archive yet")
        page.goto(service.url + "/jobs/new")
        # Fields and their bounds are there, without a script.
        expect(page.locator("#width")).to_have_attribute("max", "3840")
        expect(page.locator("#estimate-credits")).to_have_text("100")
        page.fill("#site", site.origin)
        page.fill("#max_pages", "3")
        page.click("text=Start archive")
        expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
        job_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#progress-text")).to_be_visible()
        # No script, no live updates: the page says how to see more, and a reload does.
        status = api_wait(service, key, job_id)
        assert status["status"] == "completed"
        page.reload()
        expect(page.locator("#progress-text")).to_have_text("3 of 3 pages done (100%)")
        # Which 3 of the site's 4 pages discovery keeps is its business: the page
        # shows what the API reports.
        ok, failed = status["progress"]["successful"], status["progress"]["failed"]
        assert ok + failed == 3
        expect(page.locator("#gallery img")).to_have_count(ok)
        expect(page.locator("table.failed tbody tr")).to_have_count(failed)
        expect(page.locator("#download")).to_be_visible()
        expect(page.locator("#expires-in")).to_have_text(re.compile(r"\d+ h \d+ min"))
        page.goto(service.url + "/jobs")
        expect(page.locator("table.jobs tbody tr")).to_have_count(1)
        page.goto(service.url + "/account")
        expect(page.locator("#balance")).to_have_text(str(100 - ok))
        assert console.errors == []
    finally:
        context.close()


def api_wait(service: Service, key: str, job_id: str) -> dict[str, Any]:
    done = threading.Event()
    result: dict[str, Any] = {}

    async def main() -> None:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            url = service.api(f"/bulk-screenshot/{job_id}/status")
            with trio.fail_after(SLOW / 1000):
                while True:
                    data = (await client.get(url, headers={"X-API-Key": key})).json()["data"]
                    if data["status"] in ("completed", "failed"):
                        result.update(data)
                        done.set()
                        return
                    await trio.sleep(0.2)

    trio.run(main)
    assert done.is_set()
    return result


def test_archive_form_errors_sit_next_to_their_field(
    service: Service, site: SiteServer, context: BrowserContext, console: Console
) -> None:
    key = fresh_key(service, credits=5)
    page = context.new_page()
    sign_in(page, service, key)
    page.goto(service.url + "/jobs/new")
    # Out of range (the form does not stop it: the server's answer is what counts).
    page.fill("#site", site.origin)
    page.fill("#width", "99999")
    page.click("text=Start archive")
    expect(page.locator("#width-error")).to_have_text("width must be between 320 and 3840")
    expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#width")).to_have_value("99999")  # what was typed is kept
    check_a11y(page)
    # An option under "More options": its section opens to show the error.
    page.fill("#width", "1280")
    page.click("summary >> text=More options")
    page.fill("#headers", "Host: evil")
    page.click("text=Start archive")
    expect(page.locator("#headers-error")).to_contain_text("cannot be set")
    expect(page.locator("#headers")).to_be_visible()  # a new page, the section open
    page.fill("#headers", "")
    # The URL policy, next to the site field.
    page.fill("#site", "http://10.0.0.1/")
    page.click("text=Start archive")
    expect(page.locator("#site-error")).to_contain_text("10.0.0.1")
    # Credits: 5, the site has 4 pages; with max pages 10 the estimate warns.
    page.fill("#site", site.origin)
    page.fill("#max_pages", "10")
    expect(page.locator("#estimate-warning")).to_be_visible()
    page.fill("#max_pages", "4")
    expect(page.locator("#estimate-warning")).to_be_hidden()
    assert api_get(service, "/account", key).json()["data"]["credits"] == 5
    assert console.errors == [] or all("400" in e for e in console.errors)


def test_a_pasted_url_list_is_archived_as_given(
    service: Service, site: SiteServer, context: BrowserContext, console: Console
) -> None:
    key = fresh_key(service, credits=10)
    page = context.new_page()
    sign_in(page, service, key)
    page.goto(service.url + "/jobs/new")
    # A bad line refuses the whole list, next to the list, and nothing is reserved.
    page.fill("#urls", f"{site.url('/about')}\nhttp://10.0.0.1/x")
    expect(page.locator("#estimate-credits")).to_have_text("2")
    page.click("text=Start archive")
    expect(page.locator("#urls-error")).to_contain_text("urls:2")
    expect(page.locator("#urls")).to_have_attribute("aria-invalid", "true")
    check_a11y(page)
    assert api_get(service, "/account", key).json()["data"]["credits"] == 10
    # Two pages of the site, one of them twice: captured and charged once each.
    listed = f"{site.url('/about')}\n{site.url('/bands')}\n{site.url('/about')}"
    page.fill("#urls", listed)
    expect(page.locator("#estimate-credits")).to_have_text("3")
    page.click("text=Start archive")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    expect(page.locator("#job-status")).to_have_text("completed", timeout=SLOW)
    expect(page.locator("#progress-text")).to_have_text("2 of 2 pages done (100%)")
    expect(page.locator("#gallery img")).to_have_count(2)
    assert api_get(service, "/account", key).json()["data"]["credits"] == 8
    assert console.errors == [] or all("400" in e for e in console.errors)


def test_the_same_form_sent_twice_makes_one_job(
    service: Service, site: SiteServer, context: BrowserContext
) -> None:
    key = fresh_key(service)
    page = context.new_page()
    sign_in(page, service, key)
    page.goto(service.url + "/jobs/new")
    fields = {
        el.get_attribute("name") or "": el.get_attribute("value") or ""
        for el in page.locator("input[type=hidden]").all()
    }
    form = {**fields, "site": site.origin, "max_pages": "1", "width": "800"}
    first = context.request.post(service.url + "/jobs/new", form=form, max_redirects=0)
    second = context.request.post(service.url + "/jobs/new", form=form, max_redirects=0)
    assert first.status == second.status == 303
    assert first.headers["location"] == second.headers["location"]
    jobs = api_get(service, "/account", key).json()["data"]
    assert jobs["credits"] == 99


def test_jobs_list_is_paged_newest_first(
    service: Service, context: BrowserContext, console: Console
) -> None:
    key = fresh_key(service)

    async def make_jobs() -> None:
        async with Ledger.open(service.db) as ledger:
            account = await ledger.account_by_key(key)
            for i in range(25):
                await ledger.create_job(
                    NewJob(
                        kind="bulk",
                        site=f"https://site{i:02d}.example",
                        urls=[],
                        account_id=account.id,
                        status="failed",
                    )
                )

    trio.run(make_jobs)
    page = context.new_page()
    sign_in(page, service, key)
    sites = page.locator("table.jobs tbody th a")
    expect(sites).to_have_count(20)
    expect(sites.first).to_have_text("https://site24.example")
    check_a11y(page)
    page.click("text=Older")
    expect(sites).to_have_count(5)
    expect(sites.last).to_have_text("https://site00.example")
    expect(page.locator(".pager")).to_contain_text("Page 2 of 2")
    page.click("text=Newer")
    expect(sites.first).to_have_text("https://site24.example")
    # Someone else's job is not found, in HTML.
    other = fresh_key(service)
    other_page = context.new_page()
    job_url = service.url + (sites.first.get_attribute("href") or "")
    context.clear_cookies()
    sign_in(other_page, service, other)
    other_page.goto(job_url)
    expect(other_page.locator("h1")).to_have_text("Not found")
    check_a11y(other_page)
    other_page.goto(service.url + "/no/such/page")
    expect(other_page.locator("h1")).to_have_text("Not found")
    assert console.errors == [] or all("404" in e for e in console.errors)


MARKUP = '"><img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def test_what_a_site_or_a_user_wrote_is_shown_as_text(
    service: Service, context: BrowserContext, console: Console
) -> None:
    """Markup in a job's site, its URLs and its error message stays text: nothing
    runs, no element is made (the ledger holds what a site's sitemap or a job
    could put there; written directly, past the URL normalisation that would
    otherwise encode most of it)."""
    key = fresh_key(service)
    site = "https://x.example/" + MARKUP
    url = "https://x.example/page?q=" + MARKUP

    async def make_job() -> tuple[str, bool]:
        async with Ledger.open(service.db) as ledger:
            account = await ledger.account_by_key(key)
            job = await ledger.create_job(
                NewJob(kind="bulk", site=site, urls=[(url, "page.png")], account_id=account.id)
            )
            # Failing it at once fails its URL with this message; should the runner
            # have taken the job meanwhile, its URL fails on the address policy instead.
            failed = await ledger.fail_job(job.id, "CAPTURE_ERROR", "said " + MARKUP)
            return job.id, failed

    job_id, failed_here = trio.run(make_job)
    page = context.new_page()
    sign_in(page, service, key)
    expect(page.locator("table.jobs tbody th a").first).to_have_text(site)
    page.goto(service.url + f"/jobs/{job_id}")
    expect(page.locator("h1 .site")).to_have_text(site)
    expect(page.locator("table.failed tbody tr")).to_have_count(1)
    expect(page.locator("table.failed tbody tr td.url")).to_have_text(url)
    if failed_here:
        expect(page.locator("#live")).to_contain_text("said " + MARKUP)
    assert page.locator("main img[src=x], main script").count() == 0
    assert page.evaluate("() => window.pwned") is None
    check_a11y(page)
    assert console.errors == []


# ---- thumbnails in the ZIP's gallery --------------------------------------------------------


def test_zip_gallery_thumbnails_keep_the_page_edges(
    tmp_path: Path, browser: Browser, console: Console
) -> None:
    # A 1280x800 capture with a red band at the left edge and a blue one at the right.
    image = tmp_path / "page.png"
    shot = Image.new("RGB", (1280, 800), (255, 255, 255))
    shot.paste((255, 0, 0), (0, 0, 150, 800))
    shot.paste((0, 0, 255), (1130, 0, 1280, 800))
    shot.save(image)
    thumb = tmp_path / "_thumbs" / "000001.jpg"
    make_thumbnail(image, thumb)
    (tmp_path / "index.png").write_bytes(image.read_bytes())
    from datetime import UTC, datetime

    info = ArchiveInfo(
        job_id="j",
        root="screenshots-x",
        site="https://x.example/",
        sitemap_urls=(),
        options={},
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )
    record = PageRecord(
        seq=1,
        url="https://x.example/",
        entry="index.png",
        status="ok",
        width=1280,
        height=800,
        image_path=image,
        thumb_path=thumb,
    )
    (tmp_path / "index.html").write_bytes(gallery_html(info, [record]))
    context = _context(browser, console)
    try:
        page = context.new_page()
        page.goto((tmp_path / "index.html").as_uri())
        page.wait_for_function("() => document.querySelector('.thumb img').complete")
        assert_edges_kept(page.locator(".thumb").first.screenshot())
    finally:
        context.close()


# ---- pieces without a browser ---------------------------------------------------------------


def test_archive_form_is_generated_from_the_option_schema(
    service: Service, context: BrowserContext
) -> None:
    key = fresh_key(service)
    page = context.new_page()
    sign_in(page, service, key)
    page.goto(service.url + "/jobs/new")
    assert [f.name for f in archive_fields()] == [s.name for s in OPTION_SPECS]
    for spec in OPTION_SPECS:
        control = page.locator(f"[name={spec.name}]")
        expect(control).to_have_count(1)
        expect(page.locator(f"label[for={spec.name}]")).to_have_count(1)
        if spec.minimum is not None:
            assert float(control.get_attribute("min") or "nan") == spec.minimum, spec.name
            assert float(control.get_attribute("max") or "nan") == spec.maximum, spec.name
        if spec.choices:
            options = control.locator("option").all_text_contents()  # also under "More options"
            assert tuple(options) == spec.choices
            expect(control).to_have_value(str(spec.default))
        if spec.kind == "bool":
            assert control.get_attribute("type") == "checkbox"


def test_order_from_form_validates_like_the_api() -> None:
    blank = dict(ArchiveForm.blank("t" * 24).values)
    order = order_from_form(
        {
            **blank,
            "site": " example.com ",
            "max_pages": "7",
            "format": "jpeg",
            "full_page": "on",
            "block_selectors": ".ad\n\n#cookie\n",
            "cookies": "session=abc\nlang=en",
            "headers": "Authorization: Bearer x",
            "scale": "1.5",
            "actions": '[{"click": "#more"}, {"wait": 100}]',
        },
        POLICY,
    )
    assert order.target == "example.com" and order.max_pages == 7
    assert order.options.to_json()["actions"] == [{"click": "#more"}, {"wait": 100}]
    assert order.options.format == "jpeg" and order.options.full_page is True
    assert order.options.block_selectors == (".ad", "#cookie")
    cookies = [(c.name, c.value) for c in order.options.cookies]
    assert cookies == [("session", "abc"), ("lang", "en")]
    assert order.options.headers == (("Authorization", "Bearer x"),)
    assert order.options.scale == 1.5
    assert order.idempotency_key == "t" * 24
    again = order_from_form(
        {
            **blank,
            "site": "example.com",
            "max_pages": "7",
            "format": "jpeg",
            "full_page": "on",
            "block_selectors": ".ad\n#cookie",
            "cookies": "session=abc\nlang=en",
            "headers": "Authorization: Bearer x",
            "scale": "1.5",
            "actions": '[{"click": "#more"}, {"wait": 100}]',
        },
        POLICY,
    )
    assert again.request_hash == order.request_hash
    names = [f.name for f in archive_fields()] + ["site", "max_pages"]
    for field, value, where in [
        ("site", "", "site"),
        ("max_pages", "0", "max_pages"),
        ("max_pages", "101", "max_pages"),
        ("width", "12.5", "width"),
        ("width", "100", "width"),
        ("quality", "x", "quality"),
        ("format", "gif", "format"),
        ("cookies", "novalue", "cookies"),
        ("headers", "Host: x", "headers"),
        ("actions", "[{", "actions"),
        ("actions", '[{"fly": 1}]', "actions"),
    ]:
        with pytest.raises(ValidationError) as caught:
            order_from_form({**blank, "site": "example.com", field: value}, POLICY)
        assert field_of_error(caught.value, names) == where
    assert field_of_error(NoSitemapFound("none"), ["site"]) == "site"


def test_order_from_form_reads_a_pasted_url_list_like_the_api() -> None:
    blank = dict(ArchiveForm.blank("u" * 24).values)
    listed = "https://example.com/a\n\n# a comment\nhttps://example.com/b\nhttps://example.com/a\n"
    order = order_from_form({**blank, "urls": listed, "max_pages": "1"}, POLICY)
    assert order.url_list is not None and order.field == "urls"
    # Captured as given (max pages does not cut a list); the repeat is dropped.
    assert [i.url for i in order.url_list.items] == [
        "https://example.com/a",
        "https://example.com/b",
    ]
    assert order.url_list.deduplicated == 1
    assert estimate({"urls": listed, "max_pages": "1"}, 10).upto == 3
    names = ["site", "urls", "max_pages"]
    for form, message in [
        ({"urls": "https://example.com/\nhttp://10.0.0.1/x"}, "urls:2"),
        ({"urls": "https://example.com/", "site": "example.com"}, "not both"),
        ({"urls": '{"url": 5}'}, "urls:1"),
    ]:
        with pytest.raises(ValidationError) as caught:
            order_from_form({**blank, **form}, POLICY)
        assert message in caught.value.message
        assert field_of_error(caught.value, names) == "urls"


def test_session_cookies_are_signed_and_tokens_are_per_session() -> None:
    signer = SessionSigner("a" * 64)
    session = Session.new(key_id=7)
    value = signer.dumps(session)
    loaded = signer.loads(value)
    assert loaded is not None and loaded.key_id == 7 and loaded.nonce == session.nonce
    assert SessionSigner("b" * 64).loads(value) is None  # another server's secret
    assert signer.loads(value[:-2] + "xx") is None
    assert signer.loads(None) is None and signer.loads("garbage") is None
    other = Session.new(key_id=7)
    assert signer.csrf_ok(session, signer.csrf_token(session))
    assert not signer.csrf_ok(other, signer.csrf_token(session))
    assert not signer.csrf_ok(session, None) and not signer.csrf_ok(session, "")


def test_dashboard_script_lints_clean() -> None:
    script = ROOT / "bulk" / "_dashboard" / "static" / "dashboard.js"
    [entry] = eslint(str(script))
    assert problems(entry) == []


def test_pages_stay_small(service: Service) -> None:
    key = fresh_key(service)
    with httpx.Client(
        base_url=service.url, trust_env=False, timeout=30, follow_redirects=True
    ) as client:
        page = client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = client.post("/signin", data={"csrf": html.unescape(csrf.group(1)), "api_key": key})
        assert r.status_code == 200 and r.url.path == "/jobs"
        for path in ("/jobs", "/jobs/new", "/account", "/signin", "/static/dashboard.css",
                     "/static/dashboard.js"):
            r = client.get(path)
            assert r.status_code == 200, path
            assert len(r.content) < 100_000, (path, len(r.content))


