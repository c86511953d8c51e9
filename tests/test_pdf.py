"""PDF output and HTML input, against real Chromium and a local site.

PDFs are read back with pypdf: page size in points, page count, and whether the
page's background colour was printed (a fill in that colour in the content stream).
HTML input is proven by its pixels, and by its sub-resources: allowed ones load from
the local site, refused ones never leave (the egress policy stands for HTML too).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image
from pypdf import PdfReader

from bulk._capture import BrowserPool, PoolConfig, Screenshot
from bulk._exceptions import ValidationError
from bulk._options import MAX_HTML_BYTES, CaptureOptions
from bulk._policy import EgressPolicy
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

POLICY = EgressPolicy(allow=("127.0.0.1/32",))

# Ten blocks of one inch each, on a red background.
TALL = (
    "<!doctype html><html><head><style>"
    "html,body{margin:0;background:rgb(255,0,0)} div{height:1in;break-inside:avoid}"
    "</style></head><body>" + "<div>block</div>" * 10 + "</body></html>"
)


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        server.routes["/"] = Route(body=TALL)
        server.routes["/dot.png"] = Route(body=_png((0, 0, 255)), content_type="image/png")
        yield server


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100, 100), color).save(out, "PNG")
    return out.getvalue()


def pdf(shot: Screenshot) -> PdfReader:
    assert shot.format == "pdf" and shot.data.startswith(b"%PDF-")
    return PdfReader(io.BytesIO(shot.data))


def size(reader: PdfReader) -> tuple[int, int]:
    box = reader.pages[0].mediabox
    return round(float(box.width)), round(float(box.height))


def close(got: tuple[int, int], want: tuple[int, int]) -> bool:
    return abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1


def paints_red(reader: PdfReader) -> bool:
    contents = reader.pages[0].get_contents()
    assert contents is not None
    return b"1 0 0 rg" in contents.get_data()


async def test_pdf_paper_orientation_background_margins_and_page_count(
    chromium: str, site: SiteServer
) -> None:
    url = site.url("/")
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        a4 = await pool.capture(url, CaptureOptions(format="pdf"))
        letter = await pool.capture(
            url, CaptureOptions(format="pdf", pdf_format="Letter", pdf_landscape=True)
        )
        plain = await pool.capture(url, CaptureOptions(format="pdf", pdf_print_background=False))
        margins = await pool.capture(url, CaptureOptions(format="pdf", pdf_margin="3in 1cm"))
    # Chromium rounds paper sizes to whole CSS pixels: within a point of the standard.
    assert close(size(pdf(a4)), (595, 842)) and close((a4.width, a4.height), (595, 842))
    assert close(size(pdf(letter)), (792, 612))
    assert close((letter.width, letter.height), (792, 612))
    # Ten inches of blocks: one A4 page (11.7 in) without margins, two with 6 in of them.
    assert a4.pdf_pages == len(pdf(a4).pages) == 1
    assert margins.pdf_pages == len(pdf(margins).pages) == 2
    assert paints_red(pdf(a4)) and not paints_red(pdf(plain))


def test_pdf_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        CaptureOptions(format="pdf", pdf_margin="1 cm")
    with pytest.raises(ValidationError):
        CaptureOptions.from_mapping({"format": "pdf", "pdf_format": "A5"})
    with pytest.raises(ValidationError):
        CaptureOptions(format="pdf", selector="#x")
    assert CaptureOptions(format="pdf").mime_type == "application/pdf"


async def test_html_input_renders_and_its_sub_resources_pass_the_policy(
    chromium: str, site: SiteServer
) -> None:
    canary = SiteServer(host="127.0.0.2")
    canary.routes["/dot.png"] = Route(body=_png((0, 255, 0)), content_type="image/png")
    doc = (
        "<!doctype html><body style='margin:0;background:rgb(255,0,0)'>"
        f"<img src='{site.url('/dot.png')}' style='position:absolute;left:0;top:0'>"
        f"<img src='{canary.url('/dot.png')}' style='position:absolute;left:200px;top:0'>"
        "</body>"
    )
    with canary:
        async with BrowserPool.open(
            PoolConfig(executable=chromium, concurrency=1), POLICY
        ) as pool:
            shot = await pool.capture_html(doc, CaptureOptions())
            with pytest.raises(ValidationError):
                await pool.capture_html("x" * (MAX_HTML_BYTES + 1), CaptureOptions())
        assert canary.hits("/dot.png") == []
    with Image.open(io.BytesIO(shot.data)) as img:
        rgb = img.convert("RGB")
        assert rgb.getpixel((50, 50)) == (0, 0, 255)  # the allowed image
        assert rgb.getpixel((250, 50)) != (0, 255, 0)  # the refused one is not there
        assert rgb.getpixel((600, 400)) == (255, 0, 0)
    assert shot.http_status is None and shot.final_url == "about:blank"
    assert len(site.hits("/dot.png")) == 1
