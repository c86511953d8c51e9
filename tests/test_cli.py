"""``bulk`` as users run it: a separate process, real Chromium, sites on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import BULK, all_chromium_pids, chromium_pids_of, run_bulk, run_cli
from tests.sitekit import ROOT, Route, SiteServer, serve_site

pytestmark = pytest.mark.browser

PAGES = ("/", "/about/", "/blog/", "/blog/my-post")
ENTRIES = ("index.png", "about/index.png", "blog/index.png", "blog/my-post.png")


def _zip_root(zf: zipfile.ZipFile) -> str:
    return zf.namelist()[0].split("/")[0]


def test_archive_end_to_end(tmp_path: Path, basic_site: SiteServer) -> None:
    out = tmp_path / "site.zip"
    result = run_bulk("archive", basic_site.origin, "--allow", "127.0.0.1", "-o", out)
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] == 4 and summary["failed"] == 0 and summary["output"] == str(out)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bulk: 4 ok, 0 failed in ") and str(out) in last and "pages/s" in last
    with zipfile.ZipFile(out) as zf:
        root = _zip_root(zf)
        assert root == f"screenshots-127-0-0-1-{basic_site.port}-{time.strftime('%Y-%m-%d')}"
        names = set(zf.namelist())
        for entry in ENTRIES:
            assert f"{root}/{entry}" in names
            with zf.open(f"{root}/{entry}") as f, Image.open(f) as img:
                assert img.format == "PNG" and img.size == (1280, 800)
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
        assert f"{root}/index.html" in names
    assert [(u["url"], u["entry"], u["status"]) for u in manifest["urls"]] == [
        (basic_site.url(p), e, "ok") for p, e in zip(PAGES, ENTRIES, strict=True)
    ]
    assert manifest["job"]["counts"] == {"total": 4, "ok": 4, "failed": 0}
    assert not out.with_name(out.name + ".partial").exists()
    assert not out.with_name(out.name + ".work").exists()


def test_archive_partial_failure_exit_3(tmp_path: Path) -> None:
    routes = {
        "/sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/</loc></url><url><loc>{origin}/gone</loc></url>"
            "<url><loc>{origin}/boom</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/boom": Route(status=500, body="<h1>boom</h1>"),
    }
    with serve_site("basic", routes) as site:
        out = tmp_path / "p.zip"
        result = run_bulk("archive", site.url("/sitemap.xml"), "--allow", "127.0.0.1", "-o", out)
    assert result.code == 3, result.stderr
    with zipfile.ZipFile(out) as zf:
        rows = json.loads(zf.read(f"{_zip_root(zf)}/_manifest.json"))["urls"]
    assert [(r["status"], r["error_code"], r["http_status"]) for r in rows] == [
        ("ok", None, 200),
        ("failed", "HTTP_ERROR", 404),
        ("failed", "HTTP_ERROR", 500),
    ]


def test_archive_nothing_to_do(tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    with SiteServer(routes={}) as empty:
        result = run_bulk("archive", empty.origin, "--allow", "127.0.0.1", "-o", out)
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("NO_SITEMAP_FOUND:")
    assert not out.exists() and not out.with_name("x.zip.work").exists()

    routes = {"/sitemap.xml": Route(body="<urlset><url><loc>{origin}/a</loc></url></urlset>")}
    with SiteServer(routes=routes) as site:
        result = run_bulk("archive", site.origin, "--allow", "127.0.0.1", "-o", out)
    assert result.code == 1
    assert "NO_PAGES_CAPTURED:" in result.stderr and "HTTP_ERROR" in result.stderr
    assert not out.exists()


def test_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    for args in (
        ["archive", "example.com", "-o", tmp_path / "a.zip", "--width", "99"],
        ["archive", "example.com", "-o", tmp_path / "a.zip", "--format", "gif"],
        ["archive", "example.com"],
        ["archive", "ftp://example.com/", "-o", tmp_path / "a.zip"],
        ["shot", "example.com", "-o", tmp_path / "a.png", "--header", "Host: evil"],
        ["nope"],
    ):
        result = run_cli(*args)
        assert result.code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, lines)
        assert lines[0].split(":")[0] in ("VALIDATION_ERROR", "INVALID_URL")


def test_blocked_site_exit_1(tmp_path: Path, canary: SiteServer) -> None:
    result = run_cli("archive", canary.origin, "-o", tmp_path / "a.zip")
    assert result.code == 1
    assert result.stderr.startswith("URL_BLOCKED:")
    assert canary.requests == []


def test_shot(tmp_path: Path, basic_site: SiteServer) -> None:
    out = tmp_path / "about.jpg"
    result = run_bulk(
        "shot",
        basic_site.url("/about/"),
        "-o",
        out,
        "--allow", "127.0.0.1",
        "--width",
        "640",
        "--height",
        "480",
    )
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "jpeg" and (info["width"], info["height"]) == (640, 480)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (640, 480)


def _slow_site(n: int, delay: float) -> SiteServer:
    routes = {
        "/sitemap.xml": Route(
            body="<urlset>"
            + "".join(f"<url><loc>{{origin}}/p/{i}</loc></url>" for i in range(n))
            + "</urlset>",
            content_type="application/xml",
        )
    }
    for i in range(n):
        routes[f"/p/{i}"] = Route(body=f"<h1>page {i}</h1>", delay=delay)
    return SiteServer(routes=routes)


def _page_hits(site: SiteServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in site.requests:
        if r.path.startswith("/p/"):
            counts[r.path] = counts.get(r.path, 0) + 1
    return counts


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _has_job(db: Path) -> bool:
    """Whether the offline run's ledger holds its job row yet."""
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM jobs").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume(tmp_path: Path, sig: signal.Signals) -> None:
    with _slow_site(8, 0.6) as site:
        out = tmp_path / "slow.zip"
        args = [
            *BULK,
            "archive",
            site.url("/sitemap.xml"),
            "--allow", "127.0.0.1",
            "-o",
            str(out),
            "--concurrency",
            "1",
            "-q",
        ]
        # Started as a script's background job is (`bulk archive ... &`): with SIGINT
        # ignored. bulk restores it: Ctrl-C and kill -INT still stop the run.
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint,
        )
        deadline = time.monotonic() + 60
        while len(_page_hits(site)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ours = chromium_pids_of(proc.pid)
        assert ours, "the run should have a Chromium of its own"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 4, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("INTERRUPTED:") and "--resume" in last
        # nothing presented as complete, nothing left running
        assert not out.exists() and not out.with_name("slow.zip.partial").exists()
        assert out.with_name("slow.zip.work").is_dir()
        time.sleep(1.0)
        assert ours & all_chromium_pids() == set()

        done_before = _page_hits(site)
        result = run_bulk(
            "archive", site.url("/sitemap.xml"), "--allow", "127.0.0.1", "-o", out, "--resume", "-q"
        )
        hits = _page_hits(site)
    with zipfile.ZipFile(out) as zf:
        rows = json.loads(zf.read(f"{_zip_root(zf)}/_manifest.json"))["urls"]
    assert result.code == 0, (result.stderr, [r for r in rows if r["status"] != "ok"])
    assert json.loads(result.stdout)["resumed"] is True
    assert [r["status"] for r in rows] == ["ok"] * 8
    assert len(hits) == 8
    # pages captured before the interruption were not captured again (at most the one
    # in flight when the signal came is repeated)
    repeated = [p for p, n in hits.items() if n > 1]
    assert len(repeated) <= 1, (done_before, hits)
    assert not out.with_name("slow.zip.work").exists()


def test_resume_of_another_run_is_refused(tmp_path: Path, basic_site: SiteServer) -> None:
    out = tmp_path / "r.zip"
    work = out.with_name("r.zip.work")
    # Leave an unfinished run for another site behind, then resume with a different one.
    with _slow_site(3, 5.0) as slow:
        proc = subprocess.Popen(
            [*BULK, "archive", slow.url("/sitemap.xml"), "--allow=127.0.0.1", "-o", str(out), "-q"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not (work / "ledger.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    result = run_bulk("archive", basic_site.origin, "--allow", "127.0.0.1", "-o", out, "--resume")
    assert result.code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("RESUME_MISMATCH:")
    assert work.is_dir()


def test_admin_commands(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    created = run_cli(
        "admin", "create-key", "--db", db, "--credits", "25", "--email", "a@b.co", "--json"
    )
    assert created.code == 0, created.stderr
    key = json.loads(created.stdout)["api_key"]
    credits = run_cli("admin", "credits", "--db", db, "--key", key, "--json")
    assert json.loads(credits.stdout)["balance"] == 25
    audit = run_cli("admin", "audit", "--db", db, "--json")
    assert audit.code == 0 and json.loads(audit.stdout) == []
    assert run_cli("admin", "revoke-key", "--db", db, "--key", key).code == 0
    again = run_cli("admin", "revoke-key", "--db", db, "--key", key)
    assert again.code == 1 and again.stderr.startswith("INVALID_API_KEY:")
    missing = run_cli("admin", "audit", "--db", tmp_path / "nope.db")
    assert missing.code == 2


def test_console_script_entry_point() -> None:
    exe = Path(sys.executable).with_name("bulk")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "bulk" in proc.stdout
    env = {**os.environ}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 2 and "Usage:" in proc.stderr


def test_discover_says_when_a_limit_cut_the_list_short() -> None:
    # Each index level lists one page set and the next level, eight levels deep:
    # levels past the depth limit are not read, and stderr says so.
    routes = {}
    for level in range(8):
        routes[f"/idx{level}.xml"] = Route(
            body=f"<sitemapindex><sitemap><loc>{{origin}}/pages{level}.xml</loc></sitemap>"
            f"<sitemap><loc>{{origin}}/idx{level + 1}.xml</loc></sitemap></sitemapindex>",
            content_type="application/xml",
        )
        routes[f"/pages{level}.xml"] = Route(
            body=f"<urlset><url><loc>{{origin}}/p{level}</loc></url></urlset>",
            content_type="application/xml",
        )
    with SiteServer(routes=routes) as site:
        result = run_cli("discover", site.url("/idx0.xml"), "--allow", "127.0.0.1")
        full = run_cli("discover", site.url("/idx0.xml"), "--allow=127.0.0.1", "--max-pages", "2")
    assert result.code == 0, result.stderr
    found = result.stdout.split()
    assert found == [site.url(f"/p{level}") for level in range(len(found))]
    assert 0 < len(found) < 8
    assert result.stderr.startswith("warning: ") and "deep" in result.stderr.lower()
    # --max-pages cuts the list too: said, with how many URLs the sitemaps list.
    assert full.code == 0 and len(full.stdout.split()) == 2
    assert (
        "warning: --max-pages 2 cut the list: the sitemaps list 4 URLs, only the first 2 "
        "are taken (raise --max-pages for more)\n" in full.stderr
    )
