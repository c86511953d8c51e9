"""Schedules (issue 17): a real ``bulk serve`` process (real Chromium, real SQLite) with
``BULK_SCHEDULE_SECONDS`` shortening every slot, against a loopback site the test
changes between runs, and a loopback webhook receiver.

Waits are for conditions, with deadlines generous enough for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BULK, run_bulk
from tests.sitekit import ROOT, Route, SiteServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE = """<!doctype html><html><head><title>{title}</title>
<style>body{{font:20px sans-serif;margin:0;padding:20px}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>"""
WAIT: float = 240  # seconds, for anything that needs Chromium on a loaded machine


def _hook(h: Any) -> None:
    SiteServer._send(h, 204, b"", "text/plain", {})


def _page(title: str, text: str = "The same text as before.") -> Route:
    return Route(body=PAGE.format(title=title, text=text))


@pytest.fixture
def site() -> Iterator[SiteServer]:
    routes = {
        "/": _page("Home"),
        "/a/": _page("A"),
        "/b/": _page("B"),
        "/robots.txt": Route(
            body="User-agent: *\nSitemap: {origin}/sitemap.xml\n", content_type="text/plain"
        ),
        "/sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/</loc></url><url><loc>{origin}/a/</loc></url>"
            "<url><loc>{origin}/b/</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/hook": Route(handler=_hook),
    }
    with SiteServer(routes=routes) as server:
        yield server


@dataclass
class Serve:
    db: Path
    data: Path
    chromium: str
    seconds: float
    log: Path
    process: subprocess.Popen[str] | None = None
    url: str = ""

    def start(self) -> Serve:
        env = {
            **os.environ,
            "BULK_CHROMIUM": self.chromium,
            "BULK_SCHEDULE_SECONDS": str(self.seconds),
        }
        env.pop("BULK_ALLOW_PRIVATE", None)
        with open(self.log, "a") as err:
            self.process = subprocess.Popen(
                [
                    *BULK,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--db",
                    str(self.db),
                    "--data-dir",
                    str(self.data),
                    "--allow",
                    "127.0.0.1/32",
                    "--concurrency",
                    "2",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
                start_new_session=True,  # its own process group: kill -9 takes Chromium too
            )
        start = self.log.read_text().count("bulk: listening on ")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = [
                line
                for line in self.log.read_text().splitlines()
                if line.startswith("bulk: listening on ")
            ]
            if len(lines) > start:
                self.url = lines[-1].removeprefix("bulk: listening on ").split(",")[0].strip()
                return self
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("bulk serve did not start:\n" + self.log.read_text())

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"


@pytest.fixture
def serve(tmp_path: Path, chromium: str) -> Iterator[Callable[[float], Serve]]:
    made: list[Serve] = []

    def make(seconds: float) -> Serve:
        s = Serve(
            db=tmp_path / "ledger.db",
            data=tmp_path / "data",
            chromium=chromium,
            seconds=seconds,
            log=tmp_path / "serve.log",
        )
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()


def _key(db: Path, credits: int = 200) -> str:
    made = run_bulk("admin", "create-key", "--db", str(db), "--credits", str(credits), "--json")
    assert made.code == 0, made.stderr
    return str(json.loads(made.stdout)["api_key"])


def _wait(what: str, check: Callable[[], Any], within: float = WAIT) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _runs(client: httpx.Client, server: Serve, sid: str) -> list[dict[str, Any]]:
    r = client.get(server.api(f"/schedules/{sid}/runs"), params={"limit": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _run(client: httpx.Client, server: Serve, sid: str, number: int) -> dict[str, Any] | None:
    return next((r for r in _runs(client, server, sid) if r["run"] == number), None)


def _ended(run: dict[str, Any] | None) -> bool:
    return run is not None and run["status"] in ("completed", "failed", "skipped")


def _check_credits(client: httpx.Client, server: Serve, runs: list[dict[str, Any]]) -> None:
    for run in runs:
        if run["jobId"] is None or run["status"] not in ("completed", "failed"):
            continue
        status = client.get(server.api(f"/bulk-screenshot/{run['jobId']}/status")).json()["data"]
        credits = status["credits"]
        assert credits["reserved"] == credits["used"] + credits["refunded"], (run, credits)
        assert credits["reserved"] == 3


def test_a_schedule_runs_again_and_reports_what_changed(
    site: SiteServer, serve: Callable[[float], Serve]
) -> None:
    server = serve(2)
    key = _key(server.db)
    with httpx.Client(headers={"X-API-Key": key}, timeout=60, trust_env=False) as client:
        r = client.post(
            server.api("/schedules"),
            json={
                "sitemap_url": site.url("/sitemap.xml"),
                "every": "1d",
                "webhook_url": site.url("/hook"),
                "notify": {"min_change": 0.0001},
                "options": {"width": 640, "height": 480},
            },
        )
        assert r.status_code == 201, r.text
        schedule = r.json()["data"]
        sid = schedule["id"]
        assert schedule["status"] == "active" and schedule["every"] == "1d"
        assert schedule["notify"] == {"min_change": 0.0001}

        # The first run is at creation: the baseline.
        first = _wait("run 1", lambda: _ended(run := _run(client, server, sid, 1)) and run)
        assert first["status"] == "completed", first
        assert first["changesUrl"] is None and first["comparedWith"] is None
        r = client.get(server.api(f"/schedules/{sid}/runs/1/changes"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "SCHEDULE_NOT_FOUND"

        # Paused: no slot is claimed any more; a run claimed before the pause ends.
        r = client.patch(server.api(f"/schedules/{sid}"), json={"paused": True})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "paused" and r.json()["data"]["nextRunAt"] is None
        settled = _wait(
            "no open run",
            lambda: (runs := _runs(client, server, sid)) and all(map(_ended, runs)) and runs,
        )
        before = max(run["run"] for run in settled)
        # Runs before the change saw the same pages: none of them changed anything.
        assert all(run["changed"] in (None, False) for run in settled), settled

        site.routes["/b/"] = _page("B", "This paragraph was edited between the runs.")
        r = client.patch(server.api(f"/schedules/{sid}"), json={"paused": False})
        assert r.status_code == 200 and r.json()["data"]["status"] == "active", r.text

        after = _wait(
            "a run after the change",
            lambda: _ended(run := _run(client, server, sid, before + 1)) and run,
        )
        assert after["status"] == "completed", after
        assert after["changed"] is True and after["comparedWith"] is not None
        assert after["counts"] == {
            "added": 0,
            "removed": 0,
            "changed": 1,
            "unchanged": 2,
            "failed": 0,
        }
        r = client.get(server.api(f"/schedules/{sid}/runs/{before + 1}/changes"))
        assert r.status_code == 200, r.text
        changes = r.json()["data"]
        assert [c["url"] for c in changes["changed"]] == [site.url("/b/")]
        assert changes["changed"][0]["share"] > 0.0001 and changes["changed"][0]["boxes"]
        assert changes["added"] == [] and changes["removed"] == [] and changes["unchanged"] == 2
        r = client.get(
            server.api(f"/schedules/{sid}/runs/{before + 1}/changes"), params={"format": "html"}
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert site.url("/b/") in r.text and "data:image/png;base64," in r.text
        assert "script-src 'none'" in r.headers["content-security-policy"]

        # The webhook: bulk_job.changed with the counts, once, for that run only.
        def changed_hooks() -> list[dict[str, Any]]:
            return [json.loads(h.body) for h in site.hits("/hook") if h.method == "POST"]

        hooks = _wait("the bulk_job.changed webhook", changed_hooks, within=60)
        assert len(hooks) == 1, hooks
        hook = hooks[0]
        assert hook["event"] == "bulk_job.changed"
        assert hook["data"]["scheduleId"] == sid and hook["data"]["run"] == before + 1
        assert hook["data"]["jobId"] == after["jobId"]
        assert hook["data"]["changes"]["counts"] == after["counts"]
        assert [c["url"] for c in hook["data"]["changes"]["changed"]] == [site.url("/b/")]
        post = next(h for h in site.hits("/hook") if h.method == "POST")
        assert post.headers["x-bulk-event"] == "bulk_job.changed"
        assert post.headers["x-bulk-signature"].startswith("t=")

        runs = _runs(client, server, sid)
        assert len({run["slot"] for run in runs}) == len(runs)
        _check_credits(client, server, runs)

        # Listing, then deleting.
        r = client.get(server.api("/schedules"))
        assert r.status_code == 200 and [s["id"] for s in r.json()["data"]] == [sid]
        assert r.json()["pagination"] == {"page": 1, "limit": 20, "total": 1, "pages": 1}
        assert client.delete(server.api(f"/schedules/{sid}")).status_code == 200
        for method, path in (
            ("GET", f"/schedules/{sid}"),
            ("DELETE", f"/schedules/{sid}"),
            ("PATCH", f"/schedules/{sid}"),
            ("GET", f"/schedules/{sid}/runs"),
            ("GET", f"/schedules/{sid}/runs/1/changes"),
        ):
            r = client.request(method, server.api(path), json={"paused": True})
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "SCHEDULE_NOT_FOUND"
        assert client.get(server.api("/schedules")).json()["data"] == []
    server.stop()
    audit = run_bulk("admin", "audit", "--db", str(server.db))
    assert audit.code == 0, audit.stdout + audit.stderr


def test_kill_9_and_restart_run_each_slot_once(
    site: SiteServer, serve: Callable[[float], Serve]
) -> None:
    seconds = 3.0
    # A slow page: a run stays "running" long enough to be killed in the middle.
    site.routes["/a/"] = Route(body=PAGE.format(title="A", text="slow"), delay=2.0)
    server = serve(seconds)
    key = _key(server.db)
    with httpx.Client(headers={"X-API-Key": key}, timeout=60, trust_env=False) as client:
        r = client.post(
            server.api("/schedules"),
            json={"url": site.url("/"), "every": "7d", "options": {"width": 640, "height": 480}},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["data"]["id"]
        _wait("run 1", lambda: _ended(_run(client, server, sid, 1)))
        running = _wait(
            "run 2 running",
            lambda: (run := _run(client, server, sid, 2)) and run["status"] == "running" and run,
        )
        server.kill9()
        killed_at = time.time()
        # Down for several slots.
        _wait("slots to pass", lambda: time.time() > killed_at + 3 * seconds, within=60)
        server = serve(seconds)
        restarted_at = time.time()
        # The run that was killed goes on with its own job.
        second = _wait(
            "run 2 after the restart", lambda: _ended(run := _run(client, server, sid, 2)) and run
        )
        assert second["jobId"] == running["jobId"] and second["status"] == "completed", second
        # The slots missed while down run once, then the schedule goes on.
        _wait("run 4", lambda: _run(client, server, sid, 4))
        runs = _runs(client, server, sid)
        _check_credits(client, server, runs)
    server.stop()

    slots = [r["slot"] for r in runs]
    assert len(set(slots)) == len(slots), runs
    # Runs 1 and 2 before the kill, one run (3) for every slot missed while down.
    missed = [r for r in runs if _unix(r["slot"]) < restarted_at]
    assert sorted(r["run"] for r in missed) == [1, 2, 3], runs
    with sqlite3.connect(server.db) as conn:
        rows = conn.execute(
            "SELECT run, slot, job_id FROM schedule_runs WHERE schedule_id = ? ORDER BY run",
            (sid,),
        ).fetchall()
        jobs = conn.execute(
            "SELECT idempotency_key, COUNT(*) FROM jobs WHERE idempotency_key LIKE ? "
            "GROUP BY idempotency_key",
            (f"schedule:{sid}:%",),
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert len({r[1] for r in rows}) == len(rows)
    # One job per run, never two for one run (the idempotency key names the run).
    assert all(count == 1 for _, count in jobs)
    assert {k for k, _ in jobs} == {f"schedule:{sid}:{r[0]}" for r in rows if r[2]}
    audit = run_bulk("admin", "audit", "--db", str(server.db))
    assert audit.code == 0, audit.stdout + audit.stderr


def _unix(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
