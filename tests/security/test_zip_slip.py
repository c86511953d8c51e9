"""URL paths built to escape the archive: archived for real, then unpacked by Python's
zipfile, `unzip` and `bsdtar` into an empty directory. Nothing lands outside it, every
entry is a regular file with a safe name, and the manifest maps ok rows one-to-one
onto images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_bulk
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

HOSTILE_PATHS = [
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/tmp/evil",
    "/..%2f..%2f..%2ftmp%2fevil",
    "/..%5c..%5c..%5cwindows%5cevil",
    "/a/..%2F..%2F..%2Fescape",
    "/C:/Windows/System32/evil",
    "/c%3A%5Cwindows%5Cevil",
    "/%00nul/evil",
    "/CON",
    "/aux.txt",
    "/COM1/lpt9.html",
    "/trailing-dot.",
    "/trailing-space%20",
    "/%E2%80%AEgnp.exe",  # right-to-left override
    "/caf%C3%A9",
    "/cafe%CC%81",  # the same word, NFD
    "/About",
    "/about",
    "/_manifest.json",
    "/index.html",
    "/_thumbs/000001.jpg",
    # folders named like the archive's own files (issue 11 item 3: build_zip raised
    # after every page was captured)
    "/index.html/",
    "/index.html/x",
    "/INDEX.HTML/y",
    "/_manifest.json/x",
    "/_conflicts/x",
    "/_long/x",
    # Windows console and clock devices (issue 11 item 4)
    "/CONIN$",
    "/conout$.txt",
    "/Clock$/x",
    "/x" + "/deep" * 40,
    "/" + "long" * 200,
    "/q?a=1&b=../../../etc",
    "/file.png",
    "/file.png/child",
    "/%2F%2Fdouble",
    "/semi;colon:pipe%7Cstar*",
]


@pytest.fixture
def hostile_site() -> SiteServer:
    server = SiteServer(routes={})
    locs = "".join(
        f"<url><loc>{{origin}}{p.replace('&', '&amp;')}</loc></url>" for p in HOSTILE_PATHS
    )
    server.routes["/sitemap.xml"] = Route(
        body=f"<urlset>{locs}</urlset>", content_type="application/xml"
    )
    server.fallback = Route(body="<body style='background:#d44'><h1>page</h1></body>")
    return server


def _check_tree(base: Path, target: Path) -> list[Path]:
    """Every file under ``base`` is inside ``target``; returns the files."""
    files = []
    for root, dirs, names in os.walk(base):
        for d in dirs:
            assert not (Path(root) / d).is_symlink()
        for n in names:
            path = Path(root) / n
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(target.resolve()), path
            files.append(path)
    return files


def test_zip_slip_paths(tmp_path: Path, hostile_site: SiteServer) -> None:
    with hostile_site as site:
        out = tmp_path / "hostile.zip"
        result = run_bulk(
            "archive",
            site.url("/sitemap.xml"),
            "--allow",
            "127.0.0.1/32",
            "-o",
            out,
            "-q",
            "--max-pages",
            "1000",
        )
        assert result.code == 0, result.stderr
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        root = infos[0].filename.split("/")[0]
        for info in infos:
            name = info.filename
            assert name.startswith(root + "/") and not name.startswith("/")
            assert ".." not in name.split("/") and "\\" not in name and ":" not in name
            assert not info.is_dir()
            assert (info.external_attr >> 16) & 0o170000 in (0, 0o100000)  # regular files
        manifest = json.loads(zf.read(f"{root}/_manifest.json"))
    rows = manifest["urls"]
    assert len(rows) == len(HOSTILE_PATHS)
    ok = {r["entry"]: r for r in rows if r["status"] == "ok"}
    assert len(ok) == len(rows), [r for r in rows if r["status"] != "ok"]
    names = {i.filename[len(root) + 1 :] for i in infos}
    images = {n for n in names if n.endswith(".png") and not n.startswith("_thumbs/")}
    assert set(ok) == images  # a bijection between ok rows and images
    entry_of = {r["url"].split("/", 3)[3]: r["entry"] for r in rows}
    for path in ("index.html/", "index.html/x", "INDEX.HTML/y", "_manifest.json/x"):
        assert entry_of[path].startswith("_conflicts/"), (path, entry_of[path])
    for path in ("CONIN$", "conout$.txt", "Clock$/x"):
        assert entry_of[path].startswith("_"), (path, entry_of[path])

    extractors = [("zipfile", None)]
    for tool, cmd in (("unzip", ["unzip", "-q"]), ("bsdtar", ["bsdtar", "-xf"])):
        if shutil.which(tool):
            extractors.append((tool, cmd))
    for tool, cmd in extractors:
        target = tmp_path / f"x-{tool}" / "inside"
        target.mkdir(parents=True)
        if cmd is None:
            with zipfile.ZipFile(out) as zf:
                zf.extractall(target)
        else:
            subprocess.run(
                [*cmd, str(out)] if tool == "bsdtar" else [*cmd, str(out), "-d", str(target)],
                cwd=target,
                check=True,
                capture_output=True,
            )
        files = _check_tree(tmp_path / f"x-{tool}", target)
        assert len(files) == len(infos), tool
        for entry, row in ok.items():
            path = target / root / entry
            with Image.open(path) as img:
                img.verify()
            import hashlib

            assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], entry
    # nothing escaped into the directories above the targets
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["hostile.zip", *[f"x-{t}" for t, _ in extractors]]
    )
