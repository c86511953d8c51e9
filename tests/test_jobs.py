"""The job runner (bulk/_jobs.py) and what it keeps: real Chromium, real SQLite files,
real HTTP sites on 127.0.0.1, a real ``bulk serve`` in-process and real ``bulk``
processes. Failures stay with their item; a failed job costs nothing; cookies and
headers are sealed while a job runs and gone when it ends; two runs to one output
never meet."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import bulk._jobs
from bulk import BrowserPool, PoolConfig
from bulk._ledger import Ledger, NewJob
from bulk._options import CaptureOptions
from bulk._policy import EgressPolicy
from tests.conftest import BULK, run_bulk, run_cli
from tests.servicekit import Service, balance, new_key, wait_for_status
from tests.sitekit import ROOT, Route, SiteServer, serve_site

pytestmark = pytest.mark.browser

POLICY = EgressPolicy(allow=("127.0.0.1/32",))
COOKIE_VALUE = "cookie-secret-value-1234567890"
TOKEN_VALUE = "header-secret-token-abcdefghij"


def gated_site(pages: int, gate: threading.Event) -> SiteServer:
    """A sitemap of ``pages`` pages that each wait for ``gate`` before answering."""

    def page(h: Any) -> None:
        gate.wait(120)
        SiteServer._send(h, 200, f"<h1>{h.path}</h1>".encode(), "text/html", {})

    routes = {
        "/sitemap.xml": Route(
            body="<urlset>"
            + "".join(f"<url><loc>{{origin}}/p/{i}</loc></url>" for i in range(pages))
            + "</urlset>",
            content_type="application/xml",
        ),
        **{f"/p/{i}": Route(handler=page) for i in range(pages)},
    }
    return SiteServer(routes=routes)


def page_requests(site: SiteServer) -> list[dict[str, str]]:
    return [r.headers for r in site.requests if r.path.startswith("/p/")]


async def wait_until(condition: Any, within: float = 60) -> None:
    # Polls state another thread or process changes (a server's log, a file).
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.05)


def file_bytes(db: Path) -> bytes:
    """Every byte SQLite has on disk for ``db`` (database, WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


@pytest.fixture
def service_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "ledger.db", tmp_path / "data"


# ---- a job that fails refunds every credit, whatever stage failed -----------------------


async def test_a_packaging_failure_refunds_every_credit_and_other_jobs_go_on(
    service_dirs: tuple[Path, Path], chromium: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, data = service_dirs
    real_build_zip = bulk._jobs.build_zip
    with serve_site("basic") as doomed_site, serve_site("basic") as fine_site:

        def build_zip(info: Any, records: Any, **kw: Any) -> Any:
            if info.site == doomed_site.origin:
                # What an entry-name clash did: the archive refuses to be built.
                raise ValueError("duplicate entry name")
            return real_build_zip(info, records, **kw)

        monkeypatch.setattr(bulk._jobs, "build_zip", build_zip)
        svc = Service(db=db, data_dir=data, chromium=chromium)
        await trio.to_thread.run_sync(svc.start)
        try:
            key = await new_key(db, credits=20)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                ids = []
                for site in (doomed_site, fine_site):
                    r = await client.post(
                        svc.api("/bulk-screenshot"),
                        json={"url": site.origin},
                        headers={"X-API-Key": key},
                    )
                    assert r.status_code == 202, r.text
                    ids.append(r.json()["data"]["job_id"])
                doomed, fine = [
                    await wait_for_status(
                        client,
                        svc.api(f"/bulk-screenshot/{job_id}/status"),
                        key,
                        {"completed", "failed"},
                    )
                    for job_id in ids
                ]
                assert (await client.get(svc.api("/health"))).status_code == 200
        finally:
            await trio.to_thread.run_sync(svc.stop)
    # Every page of the doomed job was captured, then packaging failed: all refunded.
    assert doomed["status"] == "failed"
    assert doomed["error"]["code"] == "INTERNAL_ERROR"
    assert doomed["progress"]["successful"] == 4
    assert doomed["credits"] == {"reserved": 4, "used": 0, "refunded": 4}
    assert fine["status"] == "completed"
    assert fine["credits"] == {"reserved": 4, "used": 4, "refunded": 0}
    assert await balance(db, key) == 20 - 4
    async with Ledger.open(db) as ledger:
        report = await ledger.audit()
    assert report.ok, report.problems


def test_archive_packaging_failure_is_one_coded_line(
    tmp_path: Path, basic_site: SiteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build_zip(*args: Any, **kw: Any) -> Any:
        raise ValueError("duplicate entry name")

    monkeypatch.setattr(bulk._jobs, "build_zip", build_zip)
    out = tmp_path / "site.zip"
    result = run_cli("archive", basic_site.origin, "--allow=127.0.0.1", "-o", out, "-q")
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["INTERNAL_ERROR: the ZIP could not be made"]
    assert json.loads(result.stdout)["output"] is None
    assert not out.exists() and not out.with_name("site.zip.partial").exists()


async def test_an_unforeseen_error_on_one_url_fails_that_url_only(
    tmp_path: Path, chromium: str, basic_site: SiteServer
) -> None:
    data = tmp_path / "data"
    pages = ["/", "/about/", "/blog/", "/blog/my-post"]
    async with (
        Ledger.open(tmp_path / "l.db") as ledger,
        BrowserPool.open(PoolConfig(executable=chromium, concurrency=2), POLICY) as pool,
    ):
        account, _ = await ledger.create_account(credits=10)
        job = await ledger.create_job(
            NewJob(
                kind="bulk",
                site=basic_site.origin,
                urls=[(basic_site.url(p), f"e{i}.png") for i, p in enumerate(pages)],
                account_id=account.id,
                options=CaptureOptions().to_json(),
                root="root",
            )
        )
        # A real failure nobody wrote a handler for: URL 2's image cannot be written
        # (a directory stands where its temporary file goes).
        img = data / "jobs" / job.id / "img"
        (img / "000002-1.png.tmp").mkdir(parents=True)
        runner = bulk._jobs.JobRunner(ledger, pool, POLICY, bulk._jobs.RunnerConfig(data_dir=data))
        done = await runner.run_job(job.id)
        rows = await ledger.urls(job.id)
        assert done.status == "completed", (done.error_code, done.error_message)
        assert [(r.seq, r.state, r.error_code) for r in rows] == [
            (1, "ok", None),
            (2, "failed", "INTERNAL_ERROR"),
            (3, "ok", None),
            (4, "ok", None),
        ]
        assert (done.used, done.refunded) == (3, 1)
        assert (await ledger.audit()).ok
    with zipfile.ZipFile(done.zip_path or "") as zf:
        manifest = json.loads(zf.read("root/_manifest.json"))
    assert [u["status"] for u in manifest["urls"]] == ["ok", "failed", "ok", "ok"]


# ---- cookies and headers: sealed while the job runs, gone when it ends ------------------


async def test_cookies_and_headers_are_sealed_at_rest_and_dropped_at_the_end(
    service_dirs: tuple[Path, Path], chromium: str, caplog: pytest.LogCaptureFixture
) -> None:
    db, data = service_dirs
    gate = threading.Event()
    options = {
        "cookies": [{"name": "session", "value": COOKIE_VALUE}],
        "headers": {"Authorization": f"Bearer {TOKEN_VALUE}"},
        # The first page waits for the gate until the restart: never a timeout.
        "timeout": 120000,
    }
    caplog.set_level(logging.DEBUG, logger="bulk")
    with gated_site(3, gate) as site:
        svc = Service(db=db, data_dir=data, chromium=chromium, concurrency=1)
        await trio.to_thread.run_sync(svc.start)
        try:
            key = await new_key(db)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                r = await client.post(
                    svc.api("/bulk-screenshot"),
                    json={"sitemap_url": site.url("/sitemap.xml"), "options": options},
                    headers={"X-API-Key": key},
                )
                assert r.status_code == 202, r.text
                job_id = r.json()["data"]["job_id"]
                # The job is running (its first page is being loaded).
                await wait_until(lambda: len(page_requests(site)) >= 1)
                running = file_bytes(db)
                conn = sqlite3.connect(db)
                stored, sealed = conn.execute(
                    "SELECT options, secrets FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
                conn.close()
            # A restart in the middle of the job: it resumes with its cookies.
            await trio.to_thread.run_sync(svc.stop)
            gate.set()
            seen_before = len(page_requests(site))
            svc = Service(db=db, data_dir=data, chromium=chromium, concurrency=1)
            await trio.to_thread.run_sync(svc.start)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                status = await wait_for_status(
                    client,
                    svc.api(f"/bulk-screenshot/{job_id}/status"),
                    key,
                    {"completed", "failed"},
                )
        finally:
            gate.set()
            await trio.to_thread.run_sync(svc.stop)
    assert status["status"] == "completed" and status["progress"]["successful"] == 3
    # While it ran: the values were nowhere in the file, only masked or sealed.
    assert COOKIE_VALUE.encode() not in running and TOKEN_VALUE.encode() not in running
    assert json.loads(stored)["headers"] == {"Authorization": "***"}
    assert json.loads(stored)["cookies"] == [{"name": "session", "value": "***"}]
    assert sealed and sealed.startswith("v1.")
    key_file = data / "secrets.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_bytes() not in running
    # The pages loaded after the restart still got them (the key file opened them).
    after = page_requests(site)[seen_before:]
    assert after and all(
        h.get("authorization") == f"Bearer {TOKEN_VALUE}" and COOKIE_VALUE in h.get("cookie", "")
        for h in after
    )
    # Once ended: nothing sealed is left, and no value anywhere on disk.
    conn = sqlite3.connect(db)
    stored, sealed = conn.execute(
        "SELECT options, secrets FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert sealed is None
    assert json.loads(stored)["headers"] == {"Authorization": "***"}
    ended = file_bytes(db)
    assert COOKIE_VALUE.encode() not in ended and TOKEN_VALUE.encode() not in ended
    # Never logged.
    assert COOKIE_VALUE not in caplog.text and TOKEN_VALUE not in caplog.text
    with zipfile.ZipFile(next((data / "jobs" / job_id).glob("*.zip"))) as zf:
        manifest = zf.read(next(n for n in zf.namelist() if n.endswith("_manifest.json")))
    assert COOKIE_VALUE.encode() not in manifest and TOKEN_VALUE.encode() not in manifest


# ---- `bulk archive`: the lock comes first -----------------------------------------------


@pytest.mark.slow
def test_a_second_archive_to_the_same_output_touches_nothing(tmp_path: Path) -> None:
    gate = threading.Event()
    out = (tmp_path / "site.zip").resolve()
    work = out.with_name("site.zip.work")
    with gated_site(4, gate) as site:
        args = [*BULK, "archive", site.url("/sitemap.xml"), "--allow=127.0.0.1", "-o", str(out)]
        first = subprocess.Popen(
            # Its first page waits for the gate while the second run is tried: a
            # long timeout keeps that page from failing on a slow machine.
            [*args, "-q", "--concurrency", "1", "--timeout", "120000"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The first run holds the lock and is capturing (its first page waits).
            trio.run(wait_until, lambda: bool(page_requests(site)))
            ledger_inode = os.stat(work / "ledger.db").st_ino
            before = sorted(p.name for p in work.iterdir())
            second = run_bulk(*args[3:], "-q")
            assert second.code == 1, second.stderr
            assert second.stderr.strip().splitlines() == [
                f"LOCKED: another bulk archive is writing {out}"
            ]
            assert second.stdout == ""
            # Nothing of the first run was touched.
            assert os.stat(work / "ledger.db").st_ino == ledger_inode
            assert sorted(p.name for p in work.iterdir()) == before
            gate.set()
            _, stderr = first.communicate(timeout=120)
        finally:
            gate.set()
            if first.poll() is None:
                first.kill()
                first.communicate()
    assert first.returncode == 0, stderr
    with zipfile.ZipFile(out) as zf:
        assert sum(n.endswith(".png") and "_thumbs" not in n for n in zf.namelist()) == 4
    assert not work.exists() and not out.with_name("site.zip.lock").exists()


@pytest.mark.slow
def test_a_second_serve_on_one_database_is_locked_out(tmp_path: Path) -> None:
    db = (tmp_path / "ledger.db").resolve()
    args = ["serve", "--port", "0", "--db", str(db), "--allow=127.0.0.1", "--concurrency", "1"]
    first = subprocess.Popen(
        [*BULK, *args, "--data-dir", str(tmp_path / "d1")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:
            if "listening on" in line:
                break
        second = run_bulk(*args, "--data-dir", tmp_path / "d2")
        assert second.code == 1, second.stderr
        assert second.stderr.strip().splitlines() == [f"LOCKED: another bulk serve uses {db}"]
        assert not (tmp_path / "d2").exists()
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 0


async def test_packaging_reads_the_rows_a_batch_at_a_time_and_keeps_every_one(
    service_dirs: tuple[Path, Path], chromium: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 3 over a 4-page job: one full batch, one partial, then the empty read
    # that ends the walk. A row lost or repeated between batches shows in the manifest.
    monkeypatch.setattr(bulk._jobs, "_PACKAGE_BATCH", 3)
    db, data = service_dirs
    with serve_site("basic") as site:
        svc = Service(db=db, data_dir=data, chromium=chromium)
        await trio.to_thread.run_sync(svc.start)
        try:
            key = await new_key(db, credits=20)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                r = await client.post(
                    svc.api("/bulk-screenshot"),
                    json={"url": site.origin},
                    headers={"X-API-Key": key},
                )
                assert r.status_code == 202, r.text
                job_id = r.json()["data"]["job_id"]
                done = await wait_for_status(
                    client,
                    svc.api(f"/bulk-screenshot/{job_id}/status"),
                    key,
                    {"completed", "failed"},
                )
                assert done["status"] == "completed", done
                got = await client.get(
                    svc.api(f"/bulk-screenshot/{job_id}/download"), headers={"X-API-Key": key}
                )
                assert got.status_code == 200
        finally:
            await trio.to_thread.run_sync(svc.stop)
    async with Ledger.open(db) as ledger:
        rows = await ledger.urls(job_id)
        pages = [await ledger.urls(job_id, after=a, limit=3) for a in (0, 3, 4)]
    assert [[r.seq for r in page] for page in pages] == [[1, 2, 3], [4], []]
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/_manifest.json"))
        manifest = json.loads(zf.read(name))
        assert all(zf.getinfo(f"{name.rsplit('/', 1)[0]}/{u['entry']}") for u in manifest["urls"])
    assert [u["seq"] for u in manifest["urls"]] == [r.seq for r in rows] == [1, 2, 3, 4]
    assert [u["url"] for u in manifest["urls"]] == [r.url for r in rows]
    assert {u["status"] for u in manifest["urls"]} == {"ok"}
