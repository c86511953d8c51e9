"""What a capture reports beyond its image reaches the archive through the job runner:
a capture script's named screenshots (written next to the page's entry, listed in the
manifest and the gallery, dropped when not reserved) and per-page facts.

Real Chromium captures real pages of a site on 127.0.0.1. The capture engine's script
steps are outside this unit (tests/test_capture*.py test them), so each capture here
is the real one plus, as the engine reports them, one named screenshot (the same
image) and the facts of a PDF-less page (``truncated_height``, ``blocked_requests``).
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import bulk._jobs
import bulk._offline
from bulk import BrowserPool, PoolConfig
from bulk._options import CaptureOptions
from bulk._policy import EgressPolicy
from bulk._urllist import RawItem, prepare_url_list
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

POLICY = EgressPolicy(allow=("127.0.0.1/32",))


@attrs.frozen
class _Named:
    name: str
    data: bytes
    format: str
    width: int
    height: int


class _Reported:
    """A real capture with what the engine reports for a capture script's page."""

    def __init__(self, shot: Any, names: tuple[str, ...]) -> None:
        self.__dict__.update(attrs.asdict(shot, recurse=False))
        self.shots = tuple(
            _Named(name, shot.data, shot.format, shot.width, shot.height) for name in names
        )
        self.truncated_height = True
        self.blocked_requests = 3


class _Session:
    def __init__(self, session: Any, names: tuple[str, ...]) -> None:
        self._session = session
        self._names = names
        self.options = session.options

    def slot(self) -> Any:
        return self._session.slot()

    async def capture(self, url: str) -> Any:
        return _Reported(await self._session.capture(url), self._names)


class _Pool:
    def __init__(self, pool: BrowserPool, names: tuple[str, ...]) -> None:
        self._pool = pool
        self._names = names
        self.config = pool.config
        self.slots = pool.slots

    @contextlib.asynccontextmanager
    async def session(
        self, options: CaptureOptions, site_url: str | None = None, *, route: str | None = None
    ) -> AsyncIterator[_Session]:
        async with self._pool.session(options, site_url, route=route) as session:
            yield _Session(session, self._names)


async def test_named_screenshots_and_facts_reach_the_archive(
    tmp_path: Path, chromium: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = {f"/p/{i}": Route(body=f"<h1>page {i}</h1>") for i in range(2)}
    # The script's screenshot step names "after" (reserved); the engine also reports
    # "stray", which no step named: it must not reach the ZIP.
    monkeypatch.setattr(bulk._jobs, "screenshot_names", lambda _options: ("after",))
    with SiteServer(routes=routes) as site:
        urls = prepare_url_list(
            [RawItem(site.url("/p/0")), RawItem(site.url("/p/1"))], CaptureOptions(), POLICY
        )
        out = tmp_path / "x.zip"
        config = PoolConfig(executable=chromium, concurrency=2)
        async with BrowserPool.open(config, POLICY) as pool:
            with trio.fail_after(120):
                result = await bulk._offline.archive_urls(
                    urls,
                    out,
                    options=CaptureOptions(),
                    pool=_Pool(pool, ("after", "stray")),  # type: ignore[arg-type]
                    policy=POLICY,
                    name="extras",
                )
    assert result.job.ok == 2, result.job
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("extras/_manifest.json"))
        gallery = zf.read("extras/index.html").decode()
        assert zf.read("extras/p/0@after.png") == zf.read("extras/p/0.png")
    assert names[2:6] == [
        "extras/p/0.png",
        "extras/p/0@after.png",
        "extras/p/1.png",
        "extras/p/1@after.png",
    ]
    assert not any("stray" in n for n in names)
    row = manifest["urls"][0]
    assert [s["name"] for s in row["screenshots"]] == ["after"]
    assert row["screenshots"][0]["entry"] == "p/0@after.png"
    assert row["screenshots"][0]["width"] == 1280
    assert row["truncated_height"] is True and row["blocked_requests"] == 3
    assert '<a href="p/0%40after.png">after</a>' in gallery
    assert "cut at the height limit" in gallery
