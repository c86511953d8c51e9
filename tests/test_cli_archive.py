"""``bulk archive`` as a person archiving real sites meets it: what it says about cut
lists, other hosts, earlier work, interruptions and each page (real Chromium, sites on
127.0.0.1 and 127.0.0.2)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BULK, run_bulk, run_cli
from tests.sitekit import ROOT, Route, SiteServer

pytestmark = pytest.mark.browser


def _sitemap(paths: list[str], origin: str = "{origin}") -> Route:
    return Route(
        body="<urlset>"
        + "".join(f"<url><loc>{origin}{p}</loc></url>" for p in paths)
        + "</urlset>",
        content_type="application/xml",
    )


def _pages(n: int, delay: float = 0.0) -> dict[str, Route]:
    routes = {"/sitemap.xml": _sitemap([f"/p/{i}" for i in range(n)])}
    for i in range(n):
        routes[f"/p/{i}"] = Route(body=f"<h1>page {i}</h1>", delay=delay)
    return routes


def _zip_file(out: Path, name: str) -> bytes:
    with zipfile.ZipFile(out) as zf:
        root = zf.namelist()[0].split("/")[0]
        return zf.read(f"{root}/{name}")


def test_a_cut_list_is_said_everywhere_and_v_logs_every_page(tmp_path: Path) -> None:
    routes = _pages(6)
    routes["/sitemap.xml"] = _sitemap(
        [f"/p/{i}" for i in range(6)][:2] + ["/gone"] + [f"/p/{i}" for i in range(2, 6)]
    )
    out = tmp_path / "cut.zip"
    with SiteServer(routes=routes) as site:
        result = run_bulk(
            "-v",
            "archive",
            site.url("/sitemap.xml"),
            "--allow",
            "127.0.0.0/8",
            "-o",
            out,
            "--max-pages",
            "4",
            "-q",
        )
    assert result.code == 3, result.stderr
    # stderr: the limit, how many the sitemaps list, and the flag to raise
    assert (
        "warning: --max-pages 4 cut the list: the sitemaps list 7 URLs, only the first 4 "
        "are taken (raise --max-pages for more)" in result.stderr
    )
    summary = json.loads(result.stdout)
    assert summary["truncated"] is True and summary["found"] == 7 and summary["pages"] == 4
    manifest = json.loads(_zip_file(out, "_manifest.json"))
    assert manifest["job"]["truncated"] is True and manifest["job"]["found"] == 7
    assert manifest["job"]["reasons"] == ["max_pages"]
    gallery = _zip_file(out, "index.html").decode()
    assert "Not the whole site" in gallery and "the sitemaps list 7 URLs" in gallery
    # the failed count links to the failed list, whose row says HTTP 404 once
    assert '<a href="#failed">1 failed</a>' in gallery and 'id="failed"' in gallery
    failed_list = gallery[gallery.index('id="failed"') :]
    assert failed_list.count("404") == 1, failed_list
    # -v: one line per page with URL, status, milliseconds and bytes
    logged = [line for line in result.stderr.splitlines() if "bulk.pages" in line]
    assert len(logged) == 4, result.stderr
    ok_line = next(line for line in logged if site.url("/p/0") in line)
    assert re.search(r"HTTP 200 \d+ ms [1-9]\d* bytes", ok_line), ok_line
    gone_line = next(line for line in logged if site.url("/gone") in line)
    assert "HTTP_ERROR" in gone_line and "HTTP 404" in gone_line


def test_an_uncut_list_is_not_called_truncated(tmp_path: Path) -> None:
    out = tmp_path / "all.zip"
    with SiteServer(routes=_pages(2)) as site:
        result = run_bulk(
            "archive", site.url("/sitemap.xml"), "--allow", "127.0.0.0/8", "-o", out, "-q"
        )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["truncated"] is False and summary["found"] is None
    assert "warning" not in result.stderr
    assert "Not the whole site" not in _zip_file(out, "index.html").decode()


def test_most_urls_on_another_host_is_warned(tmp_path: Path) -> None:
    # A sitemap made for production (127.0.0.2) served by a staging copy (127.0.0.1).
    with SiteServer(routes=_pages(3), host="127.0.0.2") as production:
        staging_routes = {"/sitemap.xml": _sitemap(["/p/0", "/p/1", "/p/2"], production.origin)}
        with SiteServer(routes=staging_routes) as staging:
            out = tmp_path / "s.zip"
            result = run_bulk(
                "archive", staging.url("/sitemap.xml"), "--allow", "127.0.0.0/8", "-o", out, "-q"
            )
            own = run_bulk(
                "archive",
                staging.url("/sitemap.xml"),
                "--allow",
                "127.0.0.0/8",
                "-o",
                tmp_path / "own.zip",
                "-q",
                "--same-host",
            )
    assert result.code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "other hosts" in line]
    assert warning == [
        f"warning: 3 of 3 URLs are on other hosts than 127.0.0.1:{staging.port}: "
        f"127.0.0.2:{production.port} (3); --same-host keeps only the site's own pages"
    ]
    # --same-host says which hosts the sitemaps list and which one was expected
    assert own.code == 1
    assert own.stderr.strip().splitlines()[-1] == (
        f"NO_URLS_FOUND: --same-host: the sitemaps of {staging.url('/sitemap.xml')} list "
        f"pages only on other hosts: 127.0.0.2 (3); expected 127.0.0.1 (archive one of "
        "those hosts, or drop --same-host)"
    )


def test_same_host_takes_localhost_and_127_0_0_1_as_one() -> None:
    with SiteServer(routes=_pages(2)) as site:
        result = run_cli(
            "discover",
            f"http://localhost:{site.port}/sitemap.xml",
            "--allow",
            "127.0.0.0/8",
            "--allow",
            "localhost",
            "--same-host",
        )
    assert result.code == 0, result.stderr
    assert result.stdout.split() == [site.url("/p/0"), site.url("/p/1")]


def test_earlier_work_is_not_thrown_away_without_a_flag(tmp_path: Path) -> None:
    out = tmp_path / "k.zip"
    out.write_bytes(b"an earlier archive")
    with SiteServer(routes=_pages(1)) as site:
        refused = run_cli("archive", site.url("/sitemap.xml"), "--allow", "127.0.0.0/8", "-o", out)
        assert refused.code == 2
        assert refused.stderr.splitlines() == [f"OUTPUT_EXISTS: {out} exists: --force replaces it"]
        assert out.read_bytes() == b"an earlier archive"
        forced = run_bulk(
            "archive",
            site.url("/sitemap.xml"),
            "--allow",
            "127.0.0.0/8",
            "-o",
            out,
            "--force",
            "-q",
        )
        assert forced.code == 0, forced.stderr
        assert zipfile.is_zipfile(out)
        # an unfinished run: refused without --resume or --force, kept as it was
        work = out.with_name("k.zip.work")
        work.mkdir()
        (work / "marker").write_text("x")
        out.unlink()
        again = run_cli("archive", site.url("/sitemap.xml"), "--allow", "127.0.0.0/8", "-o", out)
        assert again.code == 2
        assert again.stderr.splitlines() == [
            f"OUTPUT_EXISTS: {work} holds an unfinished run: --resume continues it, "
            "--force discards it"
        ]
        assert (work / "marker").exists() and not out.exists()


def test_blocked_and_unreachable_say_what_to_do(tmp_path: Path) -> None:
    with SiteServer(routes=_pages(1)) as site:
        blocked = run_cli("archive", site.origin, "-o", tmp_path / "b.zip")
        port = site.port
    assert blocked.code == 1
    assert blocked.stderr.startswith("URL_BLOCKED:")
    assert "only --allow HOST|CIDR lets bulk reach it" in blocked.stderr
    # nothing listens any more: the port and the reason are kept
    gone = run_cli("discover", f"127.0.0.1:{port}", "--allow", "127.0.0.0/8")
    assert gone.code == 1
    line = gone.stderr.strip()
    assert line.startswith(f"FETCH_ERROR: could not reach 127.0.0.1:{port}: "), line
    assert len(line) > len(f"FETCH_ERROR: could not reach 127.0.0.1:{port}: ")


def _wait_for(check: object, timeout: float = 60) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_interrupted_run_prints_a_summary_and_resume_counts_right(tmp_path: Path) -> None:
    routes = _pages(6, delay=0.5)
    with SiteServer(routes=routes) as site:
        out = tmp_path / "i.zip"
        proc = subprocess.Popen(
            [
                *BULK,
                "archive",
                site.url("/sitemap.xml"),
                "--allow",
                "127.0.0.0/8",
                "-o",
                str(out),
                "--concurrency",
                "1",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def two_done() -> bool:
            return len({r.path for r in site.requests if r.path.startswith("/p/")}) >= 3

        _wait_for(two_done)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 4, stderr
        summary = json.loads(stdout)
        assert summary["interrupted"] is True and summary["output"] is None
        assert summary["ok"] >= 1 and summary["failed"] == 0
        before = summary["ok"]
        # the resumed run's bar counts the earlier pages too and ends at the total
        resumed = run_bulk(
            "archive",
            site.url("/sitemap.xml"),
            "--allow",
            "127.0.0.0/8",
            "-o",
            out,
            "--resume",
            "--concurrency",
            "1",
        )
    assert resumed.code == 0, resumed.stderr
    progress = [line for line in resumed.stderr.splitlines() if line.startswith("progress:")]
    assert progress[-1].startswith("progress: 6/6 ok 6 failed 0"), progress
    first_done = int(progress[0].split()[1].split("/")[0])
    assert first_done > before, (before, progress)
    assert json.loads(resumed.stdout)["resumed"] is True


def test_resume_with_other_options_names_the_option(tmp_path: Path) -> None:
    out = tmp_path / "m.zip"
    work = out.with_name("m.zip.work")
    with SiteServer(routes=_pages(3, delay=5.0)) as site:
        proc = subprocess.Popen(
            [
                *BULK,
                "archive",
                site.url("/sitemap.xml"),
                "--allow",
                "127.0.0.0/8",
                "-o",
                str(out),
                "-q",
                "--width",
                "800",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for(lambda: any(r.path.startswith("/p/") for r in site.requests))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        result = run_cli(
            "archive",
            site.url("/sitemap.xml"),
            "--allow",
            "127.0.0.0/8",
            "-o",
            out,
            "--resume",
            "--width",
            "1024",
        )
    assert result.code == 2
    assert result.stderr.splitlines() == [
        "RESUME_MISMATCH: --resume: the unfinished run used other capture options "
        "(--width was 800, now 1024); give the same options, or --force to discard it"
    ]
    assert work.is_dir()


def test_archive_urls_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    with SiteServer(routes=_pages(4)) as site:
        listing = tmp_path / "urls.txt"
        listing.write_text(
            "# pages to keep\n"
            f"{site.url('/p/0')}\n"
            f"{site.url('/p/1')}\n"
            f"{site.url('/p/0')}#again\n"
            "\n"
            + json.dumps({"url": site.url("/p/2"), "options": {"width": 400, "height": 300}})
            + "\n"
        )
        out = tmp_path / "list.zip"
        result = run_bulk(
            "archive",
            "--urls",
            listing,
            "-o",
            out,
            "--allow",
            "127.0.0.0/8",
            "-q",
            "--name",
            "my-pages",
        )
        assert result.code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["pages"], summary["ok"], summary["deduplicated"]) == (3, 3, 1)
        assert summary["truncated"] is False
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            assert {n.split("/")[0] for n in names} == {"my-pages"}
            manifest = json.loads(zf.read("my-pages/_manifest.json"))
            rows = {r["url"]: r for r in manifest["urls"]}
            from PIL import Image

            with zf.open(f"my-pages/{rows[site.url('/p/2')]['entry']}") as f, Image.open(f) as img:
                assert img.size == (400, 300)
        assert manifest["job"]["source"] == "urls" and manifest["job"]["deduplicated"] == 1
        assert rows[site.url("/p/2")]["options"] == {"width": 400, "height": 300}
        assert [r.path for r in site.requests].count("/p/0") == 1

        # stdin, lines only; the root folder is named after the first URL's host;
        # --max-pages cuts a list too, and says so
        proc = subprocess.run(
            [
                *BULK,
                "archive",
                "--urls",
                "-",
                "-o",
                str(tmp_path / "in.zip"),
                "--allow",
                "127.0.0.0/8",
                "-q",
                "--max-pages",
                "1",
            ],
            input=f"{site.url('/p/3')}\n{site.url('/p/1')}\n",
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["pages"] == 1 and summary["truncated"] is True and summary["found"] == 2
    assert "--max-pages 1 cut the list: it has 2 distinct URLs" in proc.stderr
    with zipfile.ZipFile(tmp_path / "in.zip") as zf:
        root = zf.namelist()[0].split("/")[0]
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
    assert root.startswith(f"screenshots-127-0-0-1-{site.port}-")
    assert [r["url"] for r in manifest["urls"]] == [site.url("/p/3")]
    assert manifest["job"]["truncated"] is True and manifest["job"]["found"] == 2


def test_a_bad_url_list_is_refused_whole_with_line_numbers(tmp_path: Path) -> None:
    listing = tmp_path / "bad.txt"
    listing.write_text(
        'http://127.0.0.1:9/a\nftp://nope/\n{"url": "http://127.0.0.1:9/b", "x": 1}\n'
    )
    result = run_cli(
        "archive", "--urls", listing, "-o", tmp_path / "b.zip", "--allow", "127.0.0.0/8"
    )
    assert result.code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("VALIDATION_ERROR: ")
    assert f"2 items of {listing} refused, nothing was done: {listing}:2: INVALID_URL" in lines[0]
    assert f"{listing}:3: VALIDATION_ERROR: unknown field 'x'" in lines[0]
    assert not (tmp_path / "b.zip").exists()
    both = run_cli("archive", "http://127.0.0.1:9/", "--urls", listing, "-o", tmp_path / "c.zip")
    assert both.code == 2 and both.stderr.startswith("VALIDATION_ERROR: give SITE or --urls")
