"""Tests for bulk._archive: the ZIP users keep, its manifest, gallery and thumbnails."""

from __future__ import annotations

import datetime
import hashlib
import html.parser
import io
import json
import os
import pathlib
import shutil
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import trio
import zipstream
from attrs import evolve
from PIL import Image

from bulk import _archive
from bulk._archive import (
    MANIFEST_SCHEMA,
    ArchiveInfo,
    PageRecord,
    build_zip,
    gallery_html,
    make_thumbnail,
    manifest_bytes,
    write_zip,
)
from bulk._exceptions import ArchiveError, BulkError
from bulk._paths import Layout

ROOT = "screenshots-example-com-2026-11-23"
UTC = datetime.UTC
STARTED = datetime.datetime(2026, 11, 23, 9, 30, 5, 123456, tzinfo=UTC)
FINISHED = datetime.datetime(2026, 11, 23, 10, 2, 0, tzinfo=UTC)

# Entry names as a caller may give them: ``_paths`` keeps '%', '#', '?', '@', '~' and
# spaces literally, so links to them must be percent-encoded.
OK_ENTRIES = (
    "index.png",
    "about/index.png",
    "blog/my-post.png",
    "café/ünïcode.png",
    "日本語/ページ.png",
    "q/search@1a2b3c4d.png",
    "pct/100%25 sure.png",
    "hash#frag.png",
    "what?.png",
    "with space/x y.png",
    "tilde~1/a~b.png",
)


def make_info(**changes: object) -> ArchiveInfo:
    fields: dict[str, object] = {
        "job_id": "f147c641-f644-429c-8395-2ed9cdf30154",
        "root": ROOT,
        "site": "https://example.com",
        "sitemap_urls": ("https://example.com/sitemap.xml",),
        "options": {"width": 1280, "format": "png", "headers": [["X-Token", "[redacted]"]]},
        "started_at": STARTED,
        "finished_at": FINISHED,
    }
    fields.update(changes)
    return ArchiveInfo(**fields)  # type: ignore[arg-type]


def save_image(path: pathlib.Path, size: tuple[int, int], fmt: str = "PNG", **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = sum(path.name.encode())
    Image.new("RGB", size, (seed % 256, 90, 160)).save(path, format=fmt, **kw)


def sha256_of(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ok_record(seq: int, entry: str, images: pathlib.Path, *, thumb: bool = True) -> PageRecord:
    image = images / f"{seq:06d}.png"
    save_image(image, (400, 300 + seq))
    thumb_path = None
    if thumb:
        thumb_path = images / "thumbs" / f"{seq:06d}.jpg"
        make_thumbnail(image, thumb_path)
    url = "https://example.com/" + entry.removesuffix(".png")
    return PageRecord(
        seq=seq,
        url=url,
        entry=entry,
        status="ok",
        http_status=200,
        final_url=url,
        width=400,
        height=300 + seq,
        bytes=image.stat().st_size,
        sha256=sha256_of(image),
        image_path=image,
        thumb_path=thumb_path,
    )


def failed_record(seq: int, url: str, code: str = "HTTP_ERROR", message: str = "404") -> PageRecord:
    return PageRecord(
        seq=seq,
        url=url,
        entry=None,
        status="failed",
        error_code=code,
        error_message=message,
        http_status=404 if code == "HTTP_ERROR" else None,
    )


@pytest.fixture
def images(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "images"
    path.mkdir()
    return path


@pytest.fixture
def work_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def records(images: pathlib.Path) -> list[PageRecord]:
    rows = [ok_record(seq, entry, images) for seq, entry in enumerate(OK_ENTRIES, start=1)]
    n = len(rows)
    # One ok row without a thumbnail: the gallery shows a placeholder.
    rows.append(ok_record(n + 1, "no-thumb.png", images, thumb=False))
    rows.append(failed_record(n + 2, "https://example.com/missing"))
    rows.append(failed_record(n + 3, "https://example.com/slow", "CAPTURE_TIMEOUT", "too slow"))
    return rows


# --- records ------------------------------------------------------------------------


def test_page_record_invariants() -> None:
    with pytest.raises(ArchiveError, match="entry"):
        PageRecord(seq=1, url="https://e.com/", entry=None, status="ok")
    with pytest.raises(ArchiveError, match="entry"):
        PageRecord(seq=1, url="https://e.com/", entry="index.png", status="failed")
    with pytest.raises(ArchiveError, match="seq"):
        PageRecord(seq=0, url="https://e.com/", entry="index.png", status="ok")
    with pytest.raises(ArchiveError, match="status"):
        PageRecord(seq=1, url="https://e.com/", entry="x.png", status="done")  # type: ignore[arg-type]


def test_archive_info_needs_aware_timestamps() -> None:
    with pytest.raises(ArchiveError, match="timezone"):
        make_info(started_at=datetime.datetime(2026, 11, 23, 9, 30))


# --- manifest -----------------------------------------------------------------------


def test_manifest_lists_every_record(records: list[PageRecord]) -> None:
    data = manifest_bytes(make_info(), records)
    doc = json.loads(data)
    assert doc["schema"] == MANIFEST_SCHEMA
    job = doc["job"]
    assert job["id"] == "f147c641-f644-429c-8395-2ed9cdf30154"
    assert job["root"] == ROOT
    assert job["site"] == "https://example.com"
    assert job["sitemap_urls"] == ["https://example.com/sitemap.xml"]
    assert job["options"] == {
        "width": 1280,
        "format": "png",
        "headers": [["X-Token", "[redacted]"]],
    }
    assert job["tool"] == "bulk 0.1.0"
    ok = len(OK_ENTRIES) + 1
    assert job["counts"] == {"total": len(records), "ok": ok, "failed": 2}
    assert job["started_at"] == "2026-11-23T09:30:05.123Z"
    assert job["finished_at"] == "2026-11-23T10:02:00.000Z"
    assert datetime.datetime.fromisoformat(job["started_at"]) == STARTED.replace(microsecond=123000)

    rows = doc["urls"]
    assert [row["seq"] for row in rows] == [record.seq for record in records]
    assert [row["url"] for row in rows] == [record.url for record in records]
    for row, record in zip(rows, records, strict=True):
        assert list(row) == [
            "seq",
            "url",
            "entry",
            "status",
            "error_code",
            "error_message",
            "http_status",
            "final_url",
            "width",
            "height",
            "bytes",
            "sha256",
        ]
        assert row["status"] == record.status
        assert row["entry"] == record.entry
        assert row["sha256"] == record.sha256
    failed = [row for row in rows if row["status"] == "failed"]
    assert [row["entry"] for row in failed] == [None, None]
    assert failed[0]["error_code"] == "HTTP_ERROR"
    assert failed[0]["http_status"] == 404
    assert failed[1]["error_message"] == "too slow"
    # Round-trips, and one row per line.
    assert json.loads(json.dumps(doc)) == doc
    assert data.count(b'{"seq": ') == len(records)
    assert data.endswith(b"\n")


def test_manifest_keeps_non_ascii_as_utf8() -> None:
    url = "https://exämple.com/日本語?q=café"
    record = failed_record(1, url, "NAVIGATION_ERROR", "connexion refusée")
    data = manifest_bytes(make_info(site="https://exämple.com"), [record])
    assert url.encode("utf-8") in data
    assert "connexion refusée".encode() in data
    assert b"\\u" not in data
    assert json.loads(data.decode("utf-8"))["urls"][0]["url"] == url


def test_manifest_sorts_by_seq_and_refuses_duplicates(images: pathlib.Path) -> None:
    a = failed_record(2, "https://example.com/b")
    b = failed_record(1, "https://example.com/a")
    doc = json.loads(manifest_bytes(make_info(), [a, b]))
    assert [row["seq"] for row in doc["urls"]] == [1, 2]
    with pytest.raises(ArchiveError, match="seq 1"):
        manifest_bytes(make_info(), [b, failed_record(1, "https://example.com/c")])


def test_manifest_of_no_records_is_valid_json() -> None:
    doc = json.loads(manifest_bytes(make_info(), []))
    assert doc["urls"] == []
    assert doc["job"]["counts"] == {"total": 0, "ok": 0, "failed": 0}


def test_manifest_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ArchiveError):
        manifest_bytes(make_info(options={"delay": float("nan")}), [])
    with pytest.raises(ArchiveError, match="not JSON"):
        manifest_bytes(make_info(options={"when": datetime.date(2026, 1, 1)}), [])
    with pytest.raises(ArchiveError, match="Unicode"):
        manifest_bytes(make_info(), [failed_record(1, "https://example.com/\udcff")])


# --- gallery ------------------------------------------------------------------------


class _Collector(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(document: bytes) -> _Collector:
    collector = _Collector()
    collector.feed(document.decode("utf-8"))
    collector.close()
    return collector


HOSTILE_URL = 'https://example.com/"><img/src=x/onerror=alert(1)><script>alert(2)</script>'
HOSTILE_MESSAGE = "<script>alert(3)</script> & \"quoted\" '<b>'"
SPOOF_URL = "https://example.com/\u202egnp.exe"


def hostile_records() -> list[PageRecord]:
    return [
        PageRecord(
            seq=1,
            url=HOSTILE_URL,
            entry="evil/index.png",
            status="ok",
            final_url="javascript:alert(4)",
            thumb_path=pathlib.Path("t.jpg"),
        ),
        PageRecord(seq=2, url="javascript:alert(5)", entry="js.png", status="ok"),
        PageRecord(seq=3, url=" javascript:alert(6)", entry="js2.png", status="ok"),
        PageRecord(seq=4, url="java\tscript:alert(7)", entry="js3.png", status="ok"),
        PageRecord(seq=5, url=SPOOF_URL, entry="spoof.png", status="ok"),
        failed_record(6, "data:text/html,<script>alert(8)</script>", "INVALID_URL", "no"),
        failed_record(7, "https://example.com/x", "NAVIGATION_ERROR", HOSTILE_MESSAGE),
        failed_record(8, "https://example.com/y", "<b>CODE</b>", "m"),
    ]


def test_gallery_escapes_hostile_input() -> None:
    document = gallery_html(make_info(site='"><script>alert(9)</script>'), hostile_records())
    text = document.decode("utf-8")
    assert "<script" not in text.lower()
    collector = parse(document)
    allowed = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p"}
    allowed |= {"main", "ul", "ol", "li", "a", "img", "span", "code"}
    assert {tag for tag, _ in collector.tags} <= allowed
    for tag, attributes in collector.tags:
        assert not [name for name in attributes if name.startswith("on")], (tag, attributes)
        href = attributes.get("href") or ""
        assert not href.lower().lstrip().startswith(("javascript", "data", "java")), href
        if tag == "img":
            assert attributes["src"] == "_thumbs/000001.jpg"
            assert attributes["loading"] == "lazy"
    # The hostile strings are shown, as text.
    page_text = "".join(collector.text)
    assert HOSTILE_URL in page_text
    assert HOSTILE_MESSAGE in page_text
    assert "javascript:alert(5)" in page_text
    assert "<b>CODE</b>" in page_text
    # The bidi override is made visible instead of reversing the text.
    assert "\u202e" not in text
    assert "\\u202e" in page_text
    # Only http(s) URLs are linked, and only with rel=noopener noreferrer nofollow.
    external = [
        attrs for tag, attrs in collector.tags if tag == "a" and "://" in (attrs.get("href") or "")
    ]
    assert external
    for attrs in external:
        assert (attrs.get("href") or "").startswith("https://")
        assert attrs.get("rel") == "noopener noreferrer nofollow"
    assert any(attrs.get("href") == HOSTILE_URL for attrs in external)


def test_gallery_head_forbids_scripts() -> None:
    collector = parse(gallery_html(make_info(), []))
    metas = [attrs for tag, attrs in collector.tags if tag == "meta"]
    assert {"charset": "utf-8"} in metas
    csp = [m["content"] for m in metas if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["script-src 'none'; object-src 'none'; base-uri 'none'"]


def test_gallery_header_and_failed_list(records: list[PageRecord]) -> None:
    document = gallery_html(make_info(), records)
    collector = parse(document)
    page_text = "".join(collector.text)
    assert "2026-11-23" in page_text
    assert f"{len(records)} pages: {len(OK_ENTRIES) + 1} captured, 2 failed" in page_text
    # The failed count leads to the failed list.
    links = [attrs.get("href") for tag, attrs in collector.tags if tag == "a"]
    assert "#failed" in links
    assert ("h2", {"id": "failed"}) in collector.tags
    assert "CAPTURE_TIMEOUT" in page_text and "too slow" in page_text
    imgs = [attrs["src"] for tag, attrs in collector.tags if tag == "img"]
    # One thumbnail per ok row that has one; none for failed rows or data: URIs.
    assert imgs == [f"_thumbs/{seq:06d}.jpg" for seq in range(1, len(OK_ENTRIES) + 1)]
    assert "no preview" in page_text


def test_gallery_hrefs_are_percent_encoded() -> None:
    rows = [
        PageRecord(seq=i, url=f"https://e.com/{i}", entry=entry, status="ok")
        for i, entry in enumerate(OK_ENTRIES, start=1)
    ]
    collector = parse(gallery_html(make_info(), rows))
    hrefs = {
        attrs["href"]
        for tag, attrs in collector.tags
        if tag == "a" and attrs.get("href") and "://" not in (attrs["href"] or "")
    }
    assert "hash%23frag.png" in hrefs
    assert "what%3F.png" in hrefs
    assert "pct/100%2525%20sure.png" in hrefs
    assert "_manifest.json" in hrefs
    assert {unquote(href or "") for href in hrefs} == {*OK_ENTRIES, "_manifest.json"}


def test_gallery_stays_light_for_10000_records() -> None:
    rows = [
        PageRecord(
            seq=i,
            url=f"https://example.com/page/{i}",
            entry=f"page/{i}.png",
            status="ok",
            thumb_path=pathlib.Path("x.jpg"),
        )
        for i in range(1, 10_001)
    ]
    document = gallery_html(make_info(), rows)
    assert len(document) < 600 * 10_000
    assert document.count(b'loading="lazy"') == 10_000
    assert b"data:" not in document


# --- thumbnails ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("JPEG", "RGB"), ("WEBP", "RGB")],
)
def test_thumbnail_of_each_format(tmp_path: pathlib.Path, fmt: str, mode: str) -> None:
    source = tmp_path / f"shot.{fmt.lower()}"
    Image.new("RGB", (1280, 800), (200, 30, 30)).convert(mode).save(source, format=fmt)
    thumb = tmp_path / "thumbs" / "000001.jpg"
    make_thumbnail(source, thumb)
    with Image.open(thumb) as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
        assert im.size == (320, 200)
    assert stat.S_IMODE(thumb.stat().st_mode) == 0o644
    assert sorted(p.name for p in thumb.parent.iterdir()) == ["000001.jpg"]


def test_thumbnail_flattens_transparency_onto_white(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "clear.png"
    Image.new("RGBA", (640, 400), (255, 0, 0, 0)).save(source)
    make_thumbnail(source, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as im:
        assert all(channel > 245 for channel in im.convert("RGB").getpixel((10, 10)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_tall_page_is_cut_to_its_top(tmp_path: pathlib.Path, fmt: str) -> None:
    # Top 3000 rows red, the rest blue: a squashed full page would end in blue.
    source = tmp_path / f"tall.{fmt.lower()}"
    tall = Image.new("RGB", (1280, 9000), (0, 0, 255))
    tall.paste((255, 0, 0), (0, 0, 1280, 3000))
    tall.save(source, format=fmt)
    make_thumbnail(source, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as im:
        assert im.size == (320, 480)
        red, _green, blue = im.convert("RGB").getpixel((160, 475))
        assert red > 200 and blue < 60


def test_thumbnail_size_is_configurable_and_short_pages_are_not_padded(
    tmp_path: pathlib.Path,
) -> None:
    source = tmp_path / "s.png"
    save_image(source, (1000, 3000))
    make_thumbnail(source, tmp_path / "a.jpg", width=100, max_height=120)
    make_thumbnail(source, tmp_path / "b.jpg", width=200, max_height=5000)
    with Image.open(tmp_path / "a.jpg") as a, Image.open(tmp_path / "b.jpg") as b:
        assert a.size == (100, 120)
        assert b.size == (200, 600)


def test_partial_png_decode_matches_full_decode(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "gradient.png"
    Image.linear_gradient("L").resize((1280, 8000)).convert("RGB").save(source)
    with open(source, "rb") as fp:
        trimmed = _archive._render_thumbnail(fp, 320, 480, trim=True)
        fp.seek(0)
        full = _archive._render_thumbnail(fp, 320, 480, trim=False)
    assert trimmed is not None and full is not None
    assert trimmed.tobytes() == full.tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="GIF")
    return buffer.getvalue()


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((400, 400), 50).save(buffer, format="PNG")
    return buffer.getvalue()[:200]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(os.urandom(5000), id="garbage"),
        pytest.param(_truncated_png(), id="truncated-png"),
        pytest.param(_png_header_only(20_000, 20_000), id="decompression-bomb"),
        pytest.param(_gif(), id="gif"),
    ],
)
def test_bad_image_raises_and_leaves_no_file(tmp_path: pathlib.Path, content: bytes) -> None:
    source = tmp_path / "bad.png"
    source.write_bytes(content)
    out_dir = tmp_path / "thumbs"
    out_dir.mkdir()
    with pytest.raises(ArchiveError, match=r"bad\.png"):
        make_thumbnail(source, out_dir / "t.jpg")
    assert list(out_dir.iterdir()) == []


def test_missing_image_is_an_os_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_thumbnail(tmp_path / "nope.png", tmp_path / "t.jpg")
    assert not (tmp_path / "t.jpg").exists()


# --- build_zip + write_zip ----------------------------------------------------------


def _raw_local_flags(zip_path: pathlib.Path, info: zipfile.ZipInfo) -> int:
    with open(zip_path, "rb") as fp:
        fp.seek(info.header_offset)
        signature, _version, flags = struct.unpack("<4sHH", fp.read(8))
    assert signature == b"PK\x03\x04"
    return int(flags)


def _files_under(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    found: dict[str, pathlib.Path] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(directory.resolve()), path
        for name in filenames:
            path = pathlib.Path(dirpath, name)
            found[path.relative_to(directory).as_posix()] = path
    return found


def _check_extracted(sandbox: pathlib.Path, target: pathlib.Path, zip_names: set[str]) -> None:
    """The tree in ``target`` is exactly the ZIP's, and nothing else was written."""
    assert [p.name for p in sandbox.iterdir()] == [target.name]
    files = _files_under(target)
    assert set(files) == zip_names
    root = target / ROOT
    manifest = json.loads((root / "_manifest.json").read_bytes())
    ok_rows = [row for row in manifest["urls"] if row["status"] == "ok"]
    image_files = {
        name.removeprefix(ROOT + "/")
        for name in files
        if name.endswith(".png") and not name.startswith(f"{ROOT}/_thumbs/")
    }
    # ok rows <-> image files is a bijection, and each file is the one described.
    assert sorted(row["entry"] for row in ok_rows) == sorted(image_files)
    for row in ok_rows:
        path = root / row["entry"]
        assert sha256_of(path) == row["sha256"]
        assert path.stat().st_size == row["bytes"]
        with Image.open(path) as im:
            im.verify()
    for row in manifest["urls"]:
        if row["status"] == "failed":
            assert row["entry"] is None
    for thumb in (root / "_thumbs").iterdir():
        with Image.open(thumb) as im:
            assert im.format == "JPEG"
    # Every relative link in the gallery resolves to a real file.
    collector = parse((root / "index.html").read_bytes())
    links = [attrs.get("href") for tag, attrs in collector.tags if tag == "a"]
    links += [attrs.get("src") for tag, attrs in collector.tags if tag == "img"]
    relative = [link for link in links if link and "://" not in link]
    assert len(relative) > 2 * len(OK_ENTRIES)
    anchors = {attrs["id"] for _, attrs in collector.tags if attrs.get("id")}
    for link in relative:
        if link.startswith("#"):  # within the page: the element exists
            assert link[1:] in anchors, link
            continue
        assert (root / unquote(link)).is_file(), link


async def test_zip_end_to_end(
    tmp_path: pathlib.Path, records: list[PageRecord], work_dir: pathlib.Path
) -> None:
    info = make_info()
    zs = build_zip(info, records, work_dir=work_dir)
    announced = len(zs)
    out = tmp_path / "out" / "archive.zip"
    out.parent.mkdir()
    size, digest = await write_zip(zs, out)
    assert size == announced == out.stat().st_size
    assert digest == sha256_of(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["archive.zip"]

    ok_rows = [r for r in records if r.status == "ok"]
    expected_order = [f"{ROOT}/_manifest.json", f"{ROOT}/index.html"]
    expected_order += [f"{ROOT}/{r.entry}" for r in ok_rows]
    expected_order += [f"{ROOT}/_thumbs/{r.seq:06d}.jpg" for r in ok_rows if r.thumb_path]
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [zi.filename for zi in infos] == expected_order
        for zi in infos:
            assert zi.compress_type == zipfile.ZIP_STORED
            assert stat.S_ISREG(zi.external_attr >> 16), zi.filename
            local = _raw_local_flags(out, zi)
            if zi.filename.isascii():
                assert not zi.flag_bits & 0x800 and not local & 0x800, zi.filename
            else:
                assert zi.flag_bits & 0x800 and local & 0x800, zi.filename
        assert zf.read(f"{ROOT}/_manifest.json") == (work_dir / "_manifest.json").read_bytes()
        assert zf.read(f"{ROOT}/_manifest.json") == manifest_bytes(info, records)
        assert zf.read(f"{ROOT}/index.html") == gallery_html(info, records)
        names = set(zf.namelist())

        sandbox = tmp_path / "py"
        (sandbox / "x").mkdir(parents=True)
        zf.extractall(sandbox / "x")
    _check_extracted(sandbox, sandbox / "x", names)

    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    if shutil.which("unzip"):
        sandbox = tmp_path / "unzip"
        (sandbox / "x").mkdir(parents=True)
        await trio.run_process(["unzip", "-q", str(out), "-d", str(sandbox / "x")], env=env)
        _check_extracted(sandbox, sandbox / "x", names)
    if shutil.which("bsdtar"):
        sandbox = tmp_path / "bsdtar"
        (sandbox / "x").mkdir(parents=True)
        await trio.run_process(["bsdtar", "-xf", str(out), "-C", str(sandbox / "x")], env=env)
        _check_extracted(sandbox, sandbox / "x", names)


async def test_zip_of_only_failures(tmp_path: pathlib.Path, work_dir: pathlib.Path) -> None:
    zs = build_zip(make_info(), [failed_record(1, "https://e.com/")], work_dir=work_dir)
    size, _ = await write_zip(zs, tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == [f"{ROOT}/_manifest.json", f"{ROOT}/index.html"]
    assert size == (tmp_path / "a.zip").stat().st_size


@pytest.mark.slow
def test_len_is_exact_at_65535_entries(
    tmp_path: pathlib.Path, images: pathlib.Path, work_dir: pathlib.Path
) -> None:
    # zipstream-ng miscounts by 76 bytes at exactly 65535 entries; build_zip steps off it.
    image = images / "one.png"
    save_image(image, (4, 4))
    rows = [
        PageRecord(seq=i, url=f"https://e.com/{i}", entry=f"{i}.png", status="ok", image_path=image)
        for i in range(1, 32768)
    ]
    # 2 + 32767 images + 32766 thumbnails = 65535 entries.
    rows = [evolve(row, thumb_path=image) for row in rows[:-1]] + rows[-1:]
    zs = build_zip(make_info(), rows, work_dir=work_dir)
    assert zs.num_queued() == 65536
    assert len(zs) == sum(len(chunk) for chunk in zs)


# --- defence in depth ---------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "../evil.png",
        "a/../../evil.png",
        "/abs.png",
        "C:/x.png",
        "c:x.png",
        "a\\b.png",
        "a/./b.png",
        "./a.png",
        "a//b.png",
        "dir/",
        "",
        "nul\x00.png",
        "new\nline.png",
        "x" * 256 + ".png",
    ],
)
def test_unsafe_entry_is_refused_before_writing(
    images: pathlib.Path, work_dir: pathlib.Path, entry: str
) -> None:
    good = ok_record(1, "index.png", images)
    bad = evolve(good, seq=2, entry=entry, thumb_path=None)
    with pytest.raises(ArchiveError, match="unsafe"):
        build_zip(make_info(), [good, bad], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("root", ["", "../x", "a/b", "Screenshots", "x.y", "é", "-" * 256])
def test_unsafe_root_is_refused(images: pathlib.Path, work_dir: pathlib.Path, root: str) -> None:
    with pytest.raises(ArchiveError, match="root"):
        build_zip(make_info(root=root), [ok_record(1, "a.png", images)], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        ("a.png", "a.png", "two entries"),
        ("A.png", "a.png", "case"),
        ("caf\u00e9.png", "cafe\u0301.png", "case"),
        ("a.png", "a.png/b.png", "both a file and a directory"),
        ("x/b.png", "X", "both a file and a directory"),
        ("index.html", "_manifest.json", "two entries"),
        ("_thumbs/000001.jpg", "b.png", "two entries"),
    ],
)
def test_colliding_names_are_refused(
    images: pathlib.Path, work_dir: pathlib.Path, first: str, second: str, match: str
) -> None:
    one = ok_record(1, first, images)
    two = evolve(ok_record(2, second, images), thumb_path=None)
    with pytest.raises(ArchiveError, match=match):
        build_zip(make_info(), [one, two], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


def test_duplicate_seq_is_refused(images: pathlib.Path, work_dir: pathlib.Path) -> None:
    one = ok_record(1, "a.png", images)
    with pytest.raises(ArchiveError, match="seq"):
        build_zip(make_info(), [one, evolve(one, entry="b.png")], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


def test_symlinked_image_is_refused(
    tmp_path: pathlib.Path, images: pathlib.Path, work_dir: pathlib.Path
) -> None:
    record = ok_record(1, "a.png", images)
    link = tmp_path / "link.png"
    link.symlink_to(record.image_path or "")
    with pytest.raises(ArchiveError, match="symlink"):
        build_zip(make_info(), [evolve(record, image_path=link)], work_dir=work_dir)
    with pytest.raises(ArchiveError, match="symlink"):
        build_zip(make_info(), [evolve(record, thumb_path=link)], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


def test_non_regular_image_is_refused(
    tmp_path: pathlib.Path, images: pathlib.Path, work_dir: pathlib.Path
) -> None:
    record = ok_record(1, "a.png", images)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(ArchiveError, match="not a regular file"):
            build_zip(make_info(), [evolve(record, image_path=path)], work_dir=work_dir)
    with pytest.raises(ArchiveError, match="image_path"):
        build_zip(make_info(), [evolve(record, image_path=None)], work_dir=work_dir)
    assert list(work_dir.iterdir()) == []


# Page URLs that want the archive's own names, at the root and below it.
CLASHING_PATHS = [
    "/",
    "/index.html",
    "/index.html/",
    "/index.html/x",
    "/INDEX.HTML/y/z",
    "/_manifest.json",
    "/_manifest.json/x",
    "/_manifeſt.json/x",  # 'ſ' casefolds to 's'
    "/_thumbs/000001.jpg",
    "/_thumbs/",
    "/_long/x",
    "/_conflicts/x",
    "/CONIN$",
    "/conout$.txt/x",
    "/a/index.html/b",
]


async def test_layout_names_never_clash_with_the_archive(
    tmp_path: pathlib.Path, images: pathlib.Path, work_dir: pathlib.Path
) -> None:
    # issue 11 item 3: /index.html/x made build_zip raise after every page was captured.
    layout = Layout("png")
    records = []
    for seq, path in enumerate(CLASHING_PATHS, start=1):
        entry = layout.assign("https://example.com" + path)
        records.append(evolve(ok_record(seq, entry, images), url="https://example.com" + path))
    zs = build_zip(make_info(), records, work_dir=work_dir)
    out = tmp_path / "a.zip"
    await write_zip(zs, out)
    with zipfile.ZipFile(out) as zf:
        names = [info.filename.removeprefix(ROOT + "/") for info in zf.infolist()]
        zf.extractall(tmp_path / "x")
        manifest = json.loads(zf.read(f"{ROOT}/_manifest.json"))
    entries = [row["entry"] for row in manifest["urls"]]
    assert len(set(entries)) == len(CLASHING_PATHS)
    assert set(entries) <= set(names)
    assert sorted(names) == sorted(
        [*entries, "_manifest.json", "index.html"]
        + [f"_thumbs/{seq:06d}.jpg" for seq in range(1, len(CLASHING_PATHS) + 1)]
    )
    by_path = dict(zip(CLASHING_PATHS, entries, strict=True))
    assert by_path["/index.html"] == "index.html.png"
    for path in ("/index.html/", "/index.html/x", "/INDEX.HTML/y/z", "/_manifest.json/x"):
        assert by_path[path].startswith("_conflicts/"), path
    assert by_path["/_thumbs/000001.jpg"] == "__thumbs/000001.jpg.png"
    assert by_path["/CONIN$"] == "_CONIN$.png"
    assert by_path["/a/index.html/b"] == "a/index.html/b.png"  # no clash below the root
    assert (tmp_path / "x" / ROOT / "index.html").read_text().startswith("<!doctype html>")


@pytest.mark.parametrize(
    "entry", ["index.html/x.png", "_manifest.json/x.png", "INDEX.HTML/x.png", "_thumbs/000001.jpg"]
)
def test_build_zip_refuses_archive_names_with_a_bulk_error(
    images: pathlib.Path, work_dir: pathlib.Path, entry: str
) -> None:
    # The last line of defence (Layout never gives these): a coded BulkError, still a
    # ValueError for older callers.
    record = ok_record(1, entry, images)
    with pytest.raises(BulkError) as info:
        build_zip(make_info(), [record], work_dir=work_dir)
    assert isinstance(info.value, ArchiveError) and isinstance(info.value, ValueError)
    assert info.value.code == "ARCHIVE_ERROR"
    assert list(work_dir.iterdir()) == []


# --- interrupted writes -------------------------------------------------------------


def _leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def big_zip(tmp_path: pathlib.Path, work_dir: pathlib.Path) -> zipstream.ZipStream:
    # A sparse 200 MB "image": big enough to be cancelled mid-way, instant to create.
    big = tmp_path / "big.png"
    with open(big, "wb") as fp:
        fp.truncate(200 * 1024 * 1024)
    record = PageRecord(seq=1, url="https://e.com/", entry="index.png", status="ok", image_path=big)
    return build_zip(make_info(), [record], work_dir=work_dir)


async def test_cancelled_write_leaves_nothing(
    tmp_path: pathlib.Path, big_zip: zipstream.ZipStream
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "a.zip"
    partial = out_dir / "a.zip.partial"
    seen_partial = 0

    async def cancel_mid_way(scope: trio.CancelScope) -> None:
        nonlocal seen_partial
        # Polling: the file grows in a worker thread, there is no event to wait on.
        while not partial.exists() or partial.stat().st_size < 8 * 1024 * 1024:  # noqa: ASYNC110
            await trio.sleep(0.001)
        seen_partial = partial.stat().st_size
        scope.cancel()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_mid_way, scope)
            await write_zip(big_zip, out)
            pytest.fail("write_zip finished despite the cancel")
    assert scope.cancelled_caught
    assert 0 < seen_partial < len(big_zip)
    assert _leftovers(out_dir) == []


async def test_cancelled_write_keeps_the_previous_archive(
    tmp_path: pathlib.Path, big_zip: zipstream.ZipStream
) -> None:
    out = tmp_path / "a.zip"
    out.write_bytes(b"previous archive")
    with trio.move_on_after(0.05) as scope:
        await write_zip(big_zip, out)
    assert scope.cancelled_caught
    assert out.read_bytes() == b"previous archive"
    assert not (tmp_path / "a.zip.partial").exists()


async def test_cancel_before_start_writes_nothing(
    tmp_path: pathlib.Path, big_zip: zipstream.ZipStream
) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await write_zip(big_zip, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()
    assert not (tmp_path / "a.zip.partial").exists()


async def test_cancel_reaches_a_slow_stream(tmp_path: pathlib.Path) -> None:
    def slow() -> Iterator[bytes]:
        for _ in range(10_000):
            time.sleep(0.005)
            yield b"\0" * 1024

    zs = zipstream.ZipStream(sized=True)
    zs.add(slow(), "root/slow.bin", size=10_000 * 1024)
    started = time.monotonic()
    with trio.move_on_after(0.2) as scope:
        await write_zip(zs, tmp_path / "a.zip")
    assert scope.cancelled_caught
    # The thread noticed between chunks: it did not run the 50 s stream to its end.
    assert time.monotonic() - started < 5
    assert _leftovers(tmp_path) == []


async def test_image_deleted_mid_stream(
    tmp_path: pathlib.Path, records: list[PageRecord], work_dir: pathlib.Path
) -> None:
    zs = build_zip(make_info(), records, work_dir=work_dir)
    last = [r for r in records if r.image_path][-1].image_path
    assert last is not None
    last.unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(FileNotFoundError):
        await write_zip(zs, out_dir / "a.zip")
    assert _leftovers(out_dir) == []


async def test_image_grown_mid_stream(
    tmp_path: pathlib.Path, records: list[PageRecord], work_dir: pathlib.Path
) -> None:
    zs = build_zip(make_info(), records, work_dir=work_dir)
    image = records[0].image_path
    assert image is not None
    async with await trio.open_file(image, "ab") as fp:
        await fp.write(b"more")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(RuntimeError, match="size"):
        await write_zip(zs, out_dir / "a.zip")
    assert _leftovers(out_dir) == []


async def test_stream_cannot_be_written_twice(
    tmp_path: pathlib.Path, records: list[PageRecord], work_dir: pathlib.Path
) -> None:
    zs = build_zip(make_info(), records, work_dir=work_dir)
    await write_zip(zs, tmp_path / "a.zip")
    with pytest.raises(RuntimeError, match="announced"):
        await write_zip(zs, tmp_path / "b.zip")
    assert not (tmp_path / "b.zip").exists()
    assert not (tmp_path / "b.zip.partial").exists()


async def test_partial_symlink_is_not_followed(
    tmp_path: pathlib.Path, records: list[PageRecord], work_dir: pathlib.Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "a.zip.partial").symlink_to(victim)
    zs = build_zip(make_info(), records, work_dir=work_dir)
    with pytest.raises(OSError):
        await write_zip(zs, tmp_path / "a.zip")
    assert victim.read_bytes() == b"keep me"
    assert not (tmp_path / "a.zip").exists()


# --- cut lists, PDFs, intermediate screenshots ---------------------------------------


def test_manifest_and_gallery_say_when_a_limit_cut_the_list(records: list[PageRecord]) -> None:
    info = make_info(truncated=True, found=155, reasons=("max_pages",))
    job = json.loads(manifest_bytes(info, records))["job"]
    assert (job["truncated"], job["found"], job["reasons"]) == (True, 155, ["max_pages"])
    assert job["source"] == "sitemap" and "deduplicated" not in job
    text = "".join(parse(gallery_html(info, records)).text)
    assert f"Not the whole site: the sitemaps list 155 URLs; {len(records)} were selected" in text
    # unknown total: still said
    unknown = "".join(parse(gallery_html(make_info(truncated=True), records)).text)
    assert f"the sitemaps list more than {len(records)} URLs" in unknown
    # an uncut list says nothing of the kind
    plain = json.loads(manifest_bytes(make_info(), records))["job"]
    assert plain["truncated"] is False and plain["found"] is None
    assert "Not the whole site" not in "".join(parse(gallery_html(make_info(), records)).text)


def test_failed_row_names_the_http_status_once() -> None:
    rows = [
        failed_record(1, "https://example.com/gone", message="HTTP 404"),
        failed_record(2, "https://example.com/odd", message="the server said no"),
    ]
    document = gallery_html(make_info(), rows).decode()
    failed = document[document.index('id="failed"') :]
    first, second = failed.split("<li")[1:3]
    assert first.count("404") == 1, first
    assert "(HTTP 404)" in second  # a message that does not say it gets it


async def test_pdfs_and_intermediate_screenshots_go_into_the_archive(
    tmp_path: pathlib.Path, images: pathlib.Path, work_dir: pathlib.Path
) -> None:
    pdf = images / "000001.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% a two-page document\n%%EOF\n")
    after = images / "000002@1.png"
    save_image(after, (320, 200))
    page = ok_record(2, "about/index.png", images)
    rows = [
        PageRecord(
            seq=1,
            url="https://example.com/",
            entry="index.pdf",
            status="ok",
            http_status=200,
            final_url="https://example.com/",
            width=595,
            height=842,
            bytes=pdf.stat().st_size,
            sha256=sha256_of(pdf),
            image_path=pdf,
            pdf_pages=2,
        ),
        evolve(
            page,
            extras=[
                _archive.ExtraShot(
                    name="after <click>",
                    entry="about/index@after.png",
                    path=after,
                    width=320,
                    height=200,
                    bytes=after.stat().st_size,
                    sha256=sha256_of(after),
                )
            ],
            options={"width": 400, "headers": {"X-Token": "***"}},
        ),
    ]
    out = tmp_path / "a.zip"
    await write_zip(build_zip(make_info(), rows, work_dir=work_dir), out)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names[2:5] == [
            f"{ROOT}/index.pdf",
            f"{ROOT}/about/index.png",
            f"{ROOT}/about/index@after.png",
        ]
        assert zf.read(f"{ROOT}/index.pdf") == pdf.read_bytes()
        assert zf.read(f"{ROOT}/about/index@after.png") == after.read_bytes()
        manifest = json.loads(zf.read(f"{ROOT}/_manifest.json"))
        gallery = zf.read(f"{ROOT}/index.html").decode()
    first, second = manifest["urls"]
    assert first["pdf_pages"] == 2 and first["entry"] == "index.pdf"
    assert "screenshots" not in first and "options" not in first
    assert second["screenshots"] == [
        {
            "name": "after <click>",
            "entry": "about/index@after.png",
            "width": 320,
            "height": 200,
            "bytes": after.stat().st_size,
            "sha256": sha256_of(after),
        }
    ]
    assert second["options"] == {"width": 400, "headers": {"X-Token": "***"}}
    # the PDF has a tile and a link, the screenshot a link by its (escaped) name
    assert 'href="index.pdf"' in gallery and "PDF \u00b7 2 pages" in gallery
    assert '<a href="about/index%40after.png">after &lt;click&gt;</a>' in gallery
    assert "<click>" not in gallery
