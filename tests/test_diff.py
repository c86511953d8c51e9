"""``bulk diff`` and ``bulk archive --compare-with``: what changed between two archives.

The pixel rules are checked against a plain per-pixel transcription of pixelmatch
(``_reference``); the whole command against archives that real ``bulk archive`` runs
made of a local site whose pages the test edits between the runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from bulk._diff import (
    DiffOptions,
    compare_archives,
    compare_images,
    decode,
    diff_png,
    open_snapshot,
    report_html,
)
from bulk._diff._pixels import PINK, RED
from bulk._exceptions import InvalidArchive, ValidationError
from tests.conftest import run_bulk
from tests.sitekit import SiteServer

# ---- pixelmatch, pixel by pixel (mapbox/pixelmatch v7, the test's reference) ----------


def _y(p: tuple[int, ...]) -> float:
    return p[0] * 0.29889531 + p[1] * 0.58662247 + p[2] * 0.11448223


def _delta(p: tuple[int, ...], q: tuple[int, ...], y_only: bool = False) -> float:
    if p == q:
        return 0.0
    y1, y2 = _y(p), _y(q)
    y = y1 - y2
    if y_only:
        return y
    i = (
        p[0] * 0.59597799 - p[1] * 0.2741761 - p[2] * 0.32180189
        - (q[0] * 0.59597799 - q[1] * 0.2741761 - q[2] * 0.32180189)
    )  # fmt: skip
    qq = (
        p[0] * 0.21147017 - p[1] * 0.52261711 + p[2] * 0.31114694
        - (q[0] * 0.21147017 - q[1] * 0.52261711 + q[2] * 0.31114694)
    )  # fmt: skip
    d = 0.5053 * y * y + 0.299 * i * i + 0.1957 * qq * qq
    return -d if y1 > y2 else d


def _near(x: int, y: int, w: int, h: int) -> Iterator[tuple[int, int]]:
    for nx in range(max(x - 1, 0), min(x + 1, w - 1) + 1):
        for ny in range(max(y - 1, 0), min(y + 1, h - 1) + 1):
            if (nx, ny) != (x, y):
                yield nx, ny


def _edge(x: int, y: int, w: int, h: int) -> int:
    return 1 if x in (0, w - 1) or y in (0, h - 1) else 0


def _siblings(img: Any, x: int, y: int, w: int, h: int) -> bool:
    zeroes = _edge(x, y, w, h)
    for nx, ny in _near(x, y, w, h):
        zeroes += img[nx, ny] == img[x, y]
    return zeroes > 2


def _antialiased(img: Any, other: Any, x: int, y: int, w: int, h: int) -> bool:
    zeroes = _edge(x, y, w, h)
    lo = hi = 0.0
    lo_at = hi_at = (0, 0)
    for nx, ny in _near(x, y, w, h):
        d = _delta(img[x, y], img[nx, ny], y_only=True)
        if d == 0:
            zeroes += 1
            if zeroes > 2:
                return False
        elif d < lo:
            lo, lo_at = d, (nx, ny)
        elif d > hi:
            hi, hi_at = d, (nx, ny)
    if lo == 0 or hi == 0:
        return False
    return (_siblings(img, *lo_at, w, h) and _siblings(other, *lo_at, w, h)) or (
        _siblings(img, *hi_at, w, h) and _siblings(other, *hi_at, w, h)
    )


def _reference(a: Image.Image, b: Image.Image, threshold: float) -> tuple[set[Any], set[Any]]:
    """(changed, anti-aliased) pixel positions, as pixelmatch finds them."""
    pa, pb = a.load(), b.load()
    w, h = a.size
    limit = 35215 * threshold * threshold
    changed, aa = set(), set()
    for y in range(h):
        for x in range(w):
            if abs(_delta(pa[x, y], pb[x, y])) > limit:
                if _antialiased(pa, pb, x, y, w, h) or _antialiased(pb, pa, x, y, w, h):
                    aa.add((x, y))
                else:
                    changed.add((x, y))
    return changed, aa


def _positions(diff: Any, attr: str) -> set[tuple[int, int]]:
    out = set()
    for region in diff.regions:
        mask = getattr(region, attr)
        for y, x in zip(*mask.nonzero(), strict=True):
            out.add((int(x) + region.x, int(y) + region.y))
    return out


def _text_image(size: tuple[int, int], text: str, offset: tuple[int, int], scale: int = 4) -> Any:
    """Anti-aliased text: drawn 4x larger at a sub-pixel offset, then downsampled."""
    big = Image.new("RGB", (size[0] * scale, size[1] * scale), "white")
    draw = ImageDraw.Draw(big)
    draw.text((8 * scale + offset[0], 4 * scale + offset[1]), text, fill=(20, 20, 60),
              font_size=14 * scale)  # fmt: skip
    return big.resize(size, Image.Resampling.LANCZOS)


def _noise(size: tuple[int, int], seed: int) -> tuple[Image.Image, Image.Image]:
    """Blocks of flat colour (siblings) with a few random edits, some slight."""
    rnd = random.Random(seed)
    a = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(a)
    for _ in range(12):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        colour = tuple(rnd.randrange(256) for _ in range(3))
        draw.rectangle((x, y, x + rnd.randrange(2, 12), y + rnd.randrange(2, 12)), fill=colour)
    b = a.copy()
    pb = b.load()
    assert pb is not None
    for _ in range(60):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        r, g, bl = pb[x, y]  # type: ignore[misc]
        step = rnd.choice((1, 3, 40, 200))
        pb[x, y] = ((r + step) % 256, g, (bl + step) % 256)
    return a, b


CASES = (
    [pytest.param(*_noise((48, 40), seed), 0.1, id=f"noise-{seed}") for seed in range(4)]
    + [
        pytest.param(
            _text_image((160, 30), "Quarterly 2026", (0, 0)),
            _text_image((160, 30), "Quarterly 2026", (1, 0)),
            threshold,
            id=f"subpixel-text-{threshold}",
        )
        for threshold in (0.05, 0.1)
    ]
    + [
        pytest.param(
            _text_image((160, 30), "Price: 10 EUR", (0, 0)),
            _text_image((160, 30), "Price: 12 EUR", (0, 0)),
            threshold,
            id=f"text-edit-{threshold}",
        )
        for threshold in (0.1, 0.3)
    ]
)


@pytest.mark.parametrize(("a", "b", "threshold"), CASES)
def test_pixels_match_pixelmatch(a: Image.Image, b: Image.Image, threshold: float) -> None:
    changed, aa = _reference(a, b, threshold)
    assert changed or aa  # every case has something to find
    diff = compare_images(a, b, threshold=threshold)
    assert _positions(diff, "changed") == changed
    assert _positions(diff, "aa") == aa
    assert diff.changed_pixels == len(changed) and diff.aa_pixels == len(aa)


def test_identical_images_change_nothing() -> None:
    a = _text_image((64, 64), "x", (0, 0))
    diff = compare_images(a, a.copy())
    assert (diff.changed_pixels, diff.aa_pixels, diff.boxes, diff.share) == (0, 0, (), 0.0)


def test_boxes_are_the_exact_extents_of_separate_changes() -> None:
    a = Image.new("RGB", (400, 300), "white")
    b = a.copy()
    draw = ImageDraw.Draw(b)
    draw.rectangle((10, 20, 29, 24), fill="black")  # 20x5 = 100 px
    draw.rectangle((300, 250, 309, 259), fill="red")  # 10x10 = 100 px
    diff = compare_images(a, b)
    assert diff.changed_pixels == 200
    # Largest first; equal areas top to bottom.
    assert [box.to_json() for box in diff.boxes] == [
        {"x": 10, "y": 20, "width": 20, "height": 5},
        {"x": 300, "y": 250, "width": 10, "height": 10},
    ]
    assert diff.share == pytest.approx(200 / (400 * 300))


def test_pages_of_different_heights_compare_their_common_part() -> None:
    a = Image.new("RGB", (100, 50), "white")
    b = Image.new("RGB", (100, 80), "white")
    ImageDraw.Draw(b).rectangle((0, 0, 9, 0), fill="black")  # 10 px in the common part
    diff = compare_images(a, b)
    assert diff.changed_pixels == 10 + 100 * 30
    assert diff.boxes[0].to_json() == {"x": 0, "y": 50, "width": 100, "height": 30}
    assert diff.share == pytest.approx((10 + 3000) / (100 * 80))
    image = Image.open(io.BytesIO(diff_png(a, b, diff)))
    assert image.size == (100, 80) and image.mode == "P"
    assert image.getpixel((0, 0)) == RED and image.getpixel((5, 70)) == PINK
    assert image.getpixel((50, 20)) not in (RED, PINK)


def test_decode_flattens_transparency_and_refuses_garbage() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(out, format="PNG")
    assert decode(out.getvalue()).getpixel((1, 1)) == (255, 255, 255)
    with pytest.raises(InvalidArchive):
        decode(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InvalidArchive):
        decode(b"<svg xmlns='http://www.w3.org/2000/svg'/>")


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        DiffOptions(threshold=1.5)
    with pytest.raises(ValidationError):
        DiffOptions(min_change=-0.1)


# ---- archives made by hand: the manifest decides, not entry names ---------------------


def _png(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((8, 8, 40, 30), fill=colour)
    image.save(out, format="PNG")
    return out.getvalue()


def _make_zip(path: Path, pages: Mapping[str, tuple[str, bytes] | None]) -> Path:
    """A bulk ZIP: URL -> (entry, image) or None for a failed page."""
    rows = []
    with zipfile.ZipFile(path, "w") as zf:
        for seq, (url, page) in enumerate(pages.items(), 1):
            if page is None:
                rows.append({"seq": seq, "url": url, "entry": None, "status": "failed",
                             "error_code": "HTTP_ERROR"})  # fmt: skip
                continue
            entry, data = page
            zf.writestr(f"root/{entry}", data)
            rows.append({"seq": seq, "url": url, "entry": entry, "status": "ok",
                         "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        manifest = {"schema": "bulk.manifest/1", "job": {"site": "https://example.com"},
                    "urls": rows}  # fmt: skip
        zf.writestr("root/_manifest.json", json.dumps(manifest))
    return path


def test_pages_are_matched_by_url(tmp_path: Path) -> None:
    old = _make_zip(tmp_path / "old.zip", {
        "https://example.com/": ("index.png", _png("red")),
        "https://example.com/a": ("a.png", _png("green")),
        "https://example.com/b": ("b.png", _png("blue")),
        "https://example.com/gone": ("gone.png", _png("blue")),
        "https://example.com/broken": ("broken.png", _png("blue")),
        "https://example.com/was-failed": None,
    })  # fmt: skip
    new = _make_zip(tmp_path / "new.zip", {
        # Entry names swapped: a and b are the same pages as before.
        "https://example.com/": ("index.png", _png("black")),
        "https://example.com/a": ("b.png", _png("green")),
        "https://example.com/b": ("a.png", _png("blue")),
        "https://example.com/broken": None,
        "https://example.com/was-failed": ("was-failed.png", _png("blue")),
        "https://example.com/new": ("new.png", _png("blue")),
    })  # fmt: skip
    diff = compare_archives(old, new, files=tmp_path / "files")
    assert [c.url for c in diff.changed] == ["https://example.com/"]
    assert diff.added == ("https://example.com/was-failed", "https://example.com/new")
    assert diff.removed == ("https://example.com/gone",)
    assert diff.failed == ("https://example.com/broken",)
    assert (diff.unchanged, diff.decoded) == (2, 1)  # a and b: same sha256, not decoded
    change = diff.changed[0]
    assert change.changed_pixels == 33 * 23
    assert [b.to_json() for b in change.boxes] == [{"x": 8, "y": 8, "width": 33, "height": 23}]
    assert change.diff_entry == "files/000001-diff.png"
    assert (tmp_path / "files/000001-before.png").read_bytes() == _png("red")
    assert (tmp_path / "files/000001-after.png").read_bytes() == _png("black")
    # Below --min-change, the same page is unchanged. A report written again into the
    # same folder drops the images of the earlier one, and only those.
    (tmp_path / "files/notes.txt").write_text("mine")
    (tmp_path / "files/1234567-diff.png").write_bytes(b"an earlier report's")
    quiet = compare_archives(
        old, new, options=DiffOptions(min_change=0.5), files=tmp_path / "files"
    )
    assert (quiet.changed, quiet.unchanged) == ((), 3)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["notes.txt"]


NO_ENTRY = {
    "schema": "bulk.manifest/1",
    "job": {},
    "urls": [{"seq": 1, "url": "https://e.com/", "status": "ok"}],
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip at all", "not a readable ZIP"),
        ({"root/x.png": b"x"}, "no single _manifest.json"),
        ({"root/_manifest.json": b"{"}, "cannot be read"),
        ({"root/_manifest.json": b'{"schema": "other/1"}'}, "not a bulk.manifest/1"),
        (
            {"root/_manifest.json": json.dumps(NO_ENTRY).encode()},
            "an ok manifest row has no entry",
        ),
    ],
)
def test_what_is_not_a_bulk_archive(
    tmp_path: Path, content: bytes | dict[str, bytes], message: str
) -> None:
    path = tmp_path / "bad.zip"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in content.items():
                zf.writestr(name, data)
    with pytest.raises(InvalidArchive, match=message), open_snapshot(path):
        pass


def test_a_listed_image_that_is_missing(tmp_path: Path) -> None:
    old = _make_zip(tmp_path / "old.zip", {"https://e.com/": ("a.png", _png("red"))})
    new = tmp_path / "new.zip"
    with zipfile.ZipFile(new, "w") as zf:
        manifest = {"schema": "bulk.manifest/1", "job": {}, "urls": [
            {"seq": 1, "url": "https://e.com/", "entry": "../a.png", "status": "ok"}]}  # fmt: skip
        zf.writestr("root/_manifest.json", json.dumps(manifest))
        zf.writestr("a.png", _png("blue"))  # outside the root: never read
    with pytest.raises(InvalidArchive, match="listed but missing"):
        compare_archives(old, new)


def test_the_report_escapes_what_the_archives_say(tmp_path: Path) -> None:
    hostile = 'https://e.com/"><script>alert(1)</script>'
    old = _make_zip(tmp_path / "old.zip", {
        hostile: ("a.png", _png("red")),
        "javascript:alert(2)": ("b.png", _png("red")),
    })  # fmt: skip
    new = _make_zip(tmp_path / "new.zip", {
        hostile: ("a.png", _png("blue")),
        "https://e.com/<img src=x onerror=alert(3)>": ("c.png", _png("red")),
    })  # fmt: skip
    diff = compare_archives(old, new, files=tmp_path / "r_files")
    document = report_html(diff, lambda entry: entry)
    assert "<script>" not in document and "<img src=x" not in document
    assert 'href="javascript:' not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "script-src 'none'" in document  # and nothing could run anyway


def test_diff_report_into_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    old = _make_zip(tmp_path / "old.zip", {"https://e.com/": ("a.png", _png("red"))})
    new = _make_zip(tmp_path / "new.zip", {"https://e.com/": ("a.png", _png("blue"))})
    out = tmp_path / "no" / "such" / "folder" / "r.html"
    (tmp_path / "no").write_text("a file, not a folder")
    result = run_bulk("diff", old, new, "-o", out)
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("VALIDATION_ERROR: the report cannot be written")
    assert len(result.stderr.strip().splitlines()) == 1


# ---- real archives of a local site ---------------------------------------------------


def _site(root: Path, version: int) -> None:
    """The test site, as it is on the first (1) or the second (2) run."""
    for old in root.glob("*"):
        old.unlink()
    page = (
        '<!doctype html><html><head><meta charset="utf-8"></head>'
        '<body style="margin:40px;font:24px sans-serif">{}</body></html>'
    )
    heading = '<h1 id="t"{}>Quarterly report of the widget company</h1>'
    body = "<p>Some body text that stays as it is, with numbers 12345.</p>"
    files = {
        "index.html": page.format("<h1>Welcome</h1>" + body),
        "same.html": page.format("<h2>Nothing changes here</h2>"),
        "text.html": page.format(f"<p>Price: {10 if version == 1 else 12} EUR</p>" + body),
        "image.html": page.format('<img src="/pic.png" width="300" height="200">'),
        # Moved by a tenth of a pixel: other bytes, only anti-aliasing differs.
        "aa.html": page.format(
            heading.format("" if version == 1 else ' style="transform:translate(0.1px,0)"') + body
        ),
        ("gone.html" if version == 1 else "new.html"): page.format("<p>Here today</p>"),
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    image = Image.new("RGB", (300, 200), (200, 30, 30) if version == 1 else (30, 30, 200))
    image.save(root / "pic.png")
    paths = ["/", "/same", "/text", "/image", "/aa", "/gone" if version == 1 else "/new"]
    locs = "".join(f"<url><loc>{{origin}}{p}</loc></url>" for p in paths)
    (root / "sitemap.xml").write_text(f"<urlset>{locs}</urlset>", encoding="utf-8")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two real ``bulk archive`` runs of a site edited in between, the second with
    ``--compare-with`` the first."""
    tmp = tmp_path_factory.mktemp("runs")
    root = tmp / "site"
    root.mkdir()
    _site(root, 1)
    with SiteServer(root) as site:
        first = run_bulk(
            "archive", site.origin, "--allow", "127.0.0.0/8", "-q", "-o", tmp / "old.zip"
        )
        assert first.code == 0, first.stderr
        _site(root, 2)
        second = run_bulk(
            "archive", site.origin, "--allow", "127.0.0.0/8", "-q", "-o", tmp / "new.zip",
            "--compare-with", tmp / "old.zip",
        )  # fmt: skip
        assert second.code == 0, second.stderr
        yield {"tmp": tmp, "site": site, "second": second}


@pytest.mark.browser
def test_diff_of_two_real_archives(two_runs: dict[str, Any]) -> None:
    tmp, site = two_runs["tmp"], two_runs["site"]
    result = run_bulk("diff", tmp / "old.zip", tmp / "new.zip", "--json", "-o", tmp / "r.html")
    assert result.code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["added"] == [site.url("/new")]
    assert found["removed"] == [site.url("/gone")]
    assert {c["url"] for c in found["changed"]} == {site.url("/text"), site.url("/image")}
    assert found["unchanged"] == 3  # /, /same and /aa
    assert found["failed"] == []
    # The image swap (300x200 px) is a larger change than a two-digit price.
    image, text = found["changed"]
    assert image["url"] == site.url("/image") and image["changed_pixels"] == 300 * 200
    assert image["boxes"] == [{"x": 40, "y": 40, "width": 300, "height": 200}]
    assert 0 < text["changed_pixels"] < 2000 and image["share"] > text["share"] > 0
    for change in found["changed"]:
        for key in ("diff_entry", "before_entry", "after_entry"):
            assert (tmp / change[key]).is_file(), change[key]
    # /, /same are byte-identical (skipped by sha256); /aa differs in its bytes, and its
    # pixels only by anti-aliasing: decoded, compared, unchanged.
    assert " (3 pairs decoded) " in result.stderr
    aa = compare_archives(tmp / "old.zip", tmp / "new.zip", options=DiffOptions(min_change=0))
    assert site.url("/aa") in {c.url for c in aa.changed}  # a few pixels, not zero
    with open_snapshot(tmp / "old.zip") as old, open_snapshot(tmp / "new.zip") as new:
        pair = [decode(s.image(s.pages[site.url("/aa")])) for s in (old, new)]
    shifted = compare_images(*pair)
    assert shifted.aa_pixels > 100 * max(1, shifted.changed_pixels)

    lines = run_bulk("diff", tmp / "old.zip", tmp / "new.zip")
    assert lines.code == 0 and lines.stdout.splitlines()[2:] == [
        f"added {site.url('/new')}",
        f"removed {site.url('/gone')}",
    ]
    assert lines.stderr.startswith("bulk diff: 2 changed, 1 added, 1 removed, 3 unchanged")
    changed = run_bulk("diff", tmp / "old.zip", tmp / "new.zip", "--exit-code")
    assert changed.code == 5
    same = run_bulk("diff", tmp / "new.zip", tmp / "new.zip", "--exit-code", "--json")
    assert same.code == 0, same.stderr
    assert json.loads(same.stdout)["unchanged"] == 6 and "(0 pairs decoded)" in same.stderr


@pytest.mark.browser
def test_archive_compare_with(two_runs: dict[str, Any]) -> None:
    tmp, site, second = two_runs["tmp"], two_runs["site"], two_runs["second"]
    summary = json.loads(second.stdout)
    report = tmp / "new.changes.html"
    assert summary["changes"] == {
        "added": 1, "removed": 1, "changed": 2, "unchanged": 3, "failed": 0,
        "report": str(report),
    }  # fmt: skip
    lines = second.stderr.strip().splitlines()
    assert lines[-3] == (
        f"changes since old.zip: 2 changed, 1 added, 1 removed, 3 unchanged -> {report}"
    )
    assert lines[-2].endswith(f"% {site.url('/image')}") and lines[-1].endswith(site.url("/text"))
    assert report.is_file() and (tmp / "new.changes_files" / "000004-diff.png").is_file()


@pytest.mark.browser
def test_report_in_chromium(two_runs: dict[str, Any], chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    tmp, site = two_runs["tmp"], two_runs["site"]
    report = tmp / "new.changes.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(java_script_enabled=False)
            page.goto(report.as_uri())
            counts = page.locator("#summary .counts li").all_inner_texts()
            assert counts == ["2 changed", "1 added", "1 removed", "3 unchanged", "0 failed"]
            first = page.locator("article.page").first
            assert first.locator("h3").inner_text() == site.url("/image")
            diff = first.locator(".view.diff img")
            assert diff.is_visible() and not first.locator(".view.before img").is_visible()
            assert diff.evaluate("img => img.naturalWidth") == 1280
            first.locator("label", has_text="Before").click()
            assert first.locator(".view.before img").is_visible() and not diff.is_visible()
            first.locator("label", has_text="Slider").click()
            assert first.locator(".view.slider .reveal img").is_visible()
        finally:
            browser.close()


@pytest.mark.browser
def test_a_comparison_that_fails_leaves_the_archive_written(
    two_runs: dict[str, Any], tmp_path: Path
) -> None:
    # The previous archive passes the first check (its manifest is fine) but one of its
    # images cannot be decoded: the new archive is still written, with a warning.
    site = two_runs["site"]
    broken = _make_zip(tmp_path / "broken.zip", {site.url("/"): ("index.png", b"not a png")})
    out = tmp_path / "out.zip"
    result = run_bulk(
        "archive", site.origin, "--allow", "127.0.0.0/8", "-q", "-o", out, "--compare-with", broken
    )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] == 6 and summary["changes"] is None
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"warning: the comparison with {broken} failed: INVALID_ARCHIVE: ")
    )
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
    assert not (tmp_path / "out.changes.html").exists()


def test_compare_with_refuses_a_bad_previous_before_capturing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"nope")
    out = tmp_path / "out.zip"
    # No server at all: the check comes first, nothing is fetched.
    result = run_bulk("archive", "http://127.0.0.1:9/", "-o", out, "--compare-with", bad)
    assert result.code == 2 and result.stderr.startswith("INVALID_ARCHIVE: bad.zip")
    same = _make_zip(tmp_path / "same.zip", {"https://e.com/": ("a.png", _png("red"))})
    result = run_bulk("archive", "http://127.0.0.1:9/", "-o", same, "--compare-with", same)
    assert result.code == 2 and result.stderr.startswith("VALIDATION_ERROR: --compare-with")
    result = run_bulk("diff", bad, same)
    assert result.code == 2 and result.stderr.startswith("INVALID_ARCHIVE: bad.zip")
    assert not out.exists()


def test_the_help_states_the_real_default() -> None:
    from click.testing import CliRunner

    from bulk._cli import cli
    from bulk._diff import DEFAULT_MIN_CHANGE

    text = " ".join(CliRunner().invoke(cli, ["diff", "--help"]).output.split())
    assert f"[default: {DEFAULT_MIN_CHANGE:.5f}]" in text
