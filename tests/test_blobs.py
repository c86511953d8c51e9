"""Content-addressed images in the service (issue 17): two identical jobs store each
image once; expiring one keeps what the other needs; expiring both deletes them.
An in-process ``bulk serve`` (real Chromium, real SQLite) whose clock the test moves.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from bulk._jobs import _write_image, release_blobs, sweep_blobs
from tests.servicekit import Service, new_key, wait_for_status
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

PAGE = "<!doctype html><body style='margin:0;font:20px sans-serif'><h1>{}</h1></body>"
TTL = 1000


@pytest.fixture
def site() -> Iterator[SiteServer]:
    routes = {
        "/": Route(body=PAGE.format("Home")),
        "/a/": Route(body=PAGE.format("A")),
        "/b/": Route(body=PAGE.format("B")),
        "/robots.txt": Route(body="User-agent: *\n", content_type="text/plain"),
        "/sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/</loc></url><url><loc>{origin}/a/</loc></url>"
            "<url><loc>{origin}/b/</loc></url></urlset>",
            content_type="application/xml",
        ),
    }
    with SiteServer(routes=routes) as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, chromium: str) -> Iterator[Service]:
    svc = Service(
        db=tmp_path / "ledger.db", data_dir=tmp_path / "data", chromium=chromium, download_ttl=TTL
    ).start()
    yield svc
    svc.stop()


def _blobs(service: Service) -> dict[str, int]:
    """Stored image -> its link count."""
    root = service.data_dir / "blobs"
    if not root.exists():
        return {}
    return {p.name: p.stat().st_nlink for p in root.glob("*/*") if p.is_file()}


def _images(service: Service, job_id: str) -> list[Path]:
    return sorted((service.data_dir / "jobs" / job_id / "img").iterdir())


async def _job(client: httpx.AsyncClient, service: Service, key: str, site: SiteServer) -> str:
    r = await client.post(
        service.api("/bulk-screenshot"),
        json={"sitemap_url": site.url("/sitemap.xml"), "options": {"width": 640, "height": 400}},
        headers={"X-API-Key": key},
    )
    assert r.status_code == 202, r.text
    job_id = str(r.json()["data"]["job_id"])
    data = await wait_for_status(
        client, service.api(f"/bulk-screenshot/{job_id}/status"), key, {"completed", "failed"}, 180
    )
    assert data["status"] == "completed" and data["progress"]["successful"] == 3, data
    return job_id


async def _zip(client: httpx.AsyncClient, service: Service, key: str, job_id: str) -> bytes:
    r = await client.get(
        service.api(f"/bulk-screenshot/{job_id}/download"), headers={"X-API-Key": key}
    )
    assert r.status_code == 200, r.text
    return r.content


async def _expired(client: httpx.AsyncClient, service: Service, key: str, job_id: str) -> None:
    await wait_for_status(
        client, service.api(f"/bulk-screenshot/{job_id}/status"), key, {"expired"}, 60
    )
    # The sweeper marks the job expired, then deletes its files.
    with trio.fail_after(60):
        while True:
            if not (service.data_dir / "jobs" / job_id).exists():
                return
            await trio.sleep(0.1)


async def test_identical_jobs_store_each_image_once(service: Service, site: SiteServer) -> None:
    key = await new_key(service.db)
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        first = await _job(client, service, key, site)
        service.clock.offset = TTL * 0.6
        second_started = time.time()
        second = await _job(client, service, key, site)
        first_zip = await _zip(client, service, key, first)
        second_zip = await _zip(client, service, key, second)

        # Three pages, the same pixels twice: three stored images, each linked from
        # both jobs (and the store itself).
        assert sorted(_blobs(service).values()) == [3, 3, 3]
        for a, b in zip(_images(service, first), _images(service, second), strict=True):
            assert a.stat().st_ino == b.stat().st_ino
            digest = hashlib.sha256(a.read_bytes()).hexdigest()
            assert (service.data_dir / "blobs" / digest[:2] / digest).samefile(a)

        # The ZIPs are what they were: the same images, each entry dated by its own
        # job's write (not by when the stored copy was first written).
        old, new = _entries(first_zip), _entries(second_zip)
        assert {n.split("/", 1)[1]: d for n, (d, _) in old.items() if n.endswith(".png")} == {
            n.split("/", 1)[1]: d for n, (d, _) in new.items() if n.endswith(".png")
        }
        for name, (_, when) in new.items():
            if name.endswith(".png"):
                assert time.mktime((*when, 0, 0, -1)) >= int(second_started) - 2, name

        # The first job expires: the second keeps every image it needs.
        service.clock.offset = TTL * 1.1
        await _expired(client, service, key, first)
        assert sorted(_blobs(service).values()) == [2, 2, 2]
        assert await _zip(client, service, key, second) == second_zip

        # Both expired: nothing is left.
        service.clock.offset = TTL * 3
        await _expired(client, service, key, second)
        # Released right after the job's folder is deleted.
        with trio.fail_after(60):
            while True:
                if _blobs(service) == {}:
                    break
                await trio.sleep(0.1)


def _entries(data: bytes) -> dict[str, tuple[bytes, tuple[int, ...]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {i.filename: (archive.read(i), i.date_time) for i in archive.infolist()}


def test_write_release_and_sweep(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    digest = _write_image(tmp_path / "a" / "1.png", b"same bytes", blobs)
    assert _write_image(tmp_path / "b" / "1.png", b"same bytes", blobs) == digest
    stored = blobs / digest[:2] / digest
    assert stored.stat().st_nlink == 3 and stored.read_bytes() == b"same bytes"
    # Still linked: kept.
    assert release_blobs(blobs, [digest, "not-a-digest", "0" * 64]) == 0
    os.unlink(tmp_path / "a" / "1.png")
    assert release_blobs(blobs, [digest]) == 0
    os.unlink(tmp_path / "b" / "1.png")
    # Nothing links to it: released (by name, or by the sweep at start).
    other = _write_image(tmp_path / "a" / "2.png", b"other", blobs)
    os.unlink(tmp_path / "a" / "2.png")
    assert release_blobs(blobs, [digest]) == 1 and not stored.exists()
    assert sweep_blobs(blobs) == 1 and not (blobs / other[:2] / other).exists()
    # Without a store, each file is its own copy.
    _write_image(tmp_path / "b" / "3.png", b"same bytes", None)
    assert (tmp_path / "b" / "3.png").stat().st_nlink == 1
