"""What the picture of a page looks like: glyphs, animations, scrollbars, the height cap.

Real Chromium, pages served on 127.0.0.1, every claim read back from the pixels:

- Emoji and CJK text render as glyphs (the fonts the bootstrap installs), not as
  empty boxes: two different characters give two different images, and the emoji
  is in colour.
- ``freeze_animations`` shows animations at their end and transitions finished, and
  the page sees ``prefers-reduced-motion: reduce``.
- A page that reserves a scrollbar gutter has no empty strip at the right edge.
- A full page cut at the height cap says so (``truncated_height``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image, ImageChops

from bulk._capture import BrowserPool, PoolConfig, Screenshot
from bulk._options import FULL_PAGE_MAX_HEIGHT, CaptureOptions
from bulk._policy import EgressPolicy
from tests.sitekit import Route, SiteServer

pytestmark = pytest.mark.browser

POLICY = EgressPolicy(allow=("127.0.0.1/32",))

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def image(shot: Screenshot) -> Image.Image:
    with Image.open(io.BytesIO(shot.data)) as img:
        return img.convert("RGB")


def near(got: object, want: tuple[int, int, int], tol: int = 24) -> bool:
    assert isinstance(got, tuple)
    return all(abs(a - b) <= tol for a, b in zip(got[:3], want, strict=True))


def page(body: str, style: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8><style>"
        f"html,body{{margin:0;padding:0;background:#fff}} {style}</style></head>"
        f"<body>{body}</body></html>"
    )


GLYPH = "position:absolute;top:0;font-size:120px;line-height:1;width:150px;height:150px;"

FONTS = page(
    f'<span id=a style="{GLYPH}left:0">漢</span>'
    f'<span id=b style="{GLYPH}left:200px">字</span>'
    f'<span id=c style="{GLYPH}left:400px">😀</span>'
    f'<span id=d style="{GLYPH}left:600px">한</span>'
)

ANIMATED = page(
    "<div id=anim></div><div id=trans></div><div id=motion></div><div id=loop></div>",
    "@keyframes go { from { background: rgb(255,0,0) } to { background: rgb(0,255,0) } }"
    "@keyframes spin { from { background: rgb(0,0,255) } to { background: rgb(255,0,0) } }"
    "div { position:absolute; top:0; width:100px; height:100px }"
    "#anim { left:0; animation: go 1000s linear forwards }"
    "#trans { left:150px; background: rgb(255,0,0); transition: background 1000s linear }"
    "#trans.on { background: rgb(0,255,0) }"
    "#motion { left:300px; background: rgb(255,0,0) }"
    "@media (prefers-reduced-motion: reduce) { #motion { background: rgb(0,255,0) } }"
    "#loop { left:450px; animation: spin 1000s linear infinite }",
) + "<script>requestAnimationFrame(() => requestAnimationFrame(() =>" + (
    " document.getElementById('trans').classList.add('on')))</script>"
)

GUTTER = page(
    "<div style='height:3000px'></div>",
    "html { scrollbar-gutter: stable; overflow-y: scroll } html, body { background: rgb(0,255,0) }"
    "::-webkit-scrollbar { width: 15px; background: #fff }",
)
# The same page, whose script replaces the document's adopted style sheets once loaded
# (bulk adopts its page style at the document's start: it must come back). The system
# Chromium's --hide-scrollbars alone already leaves no strip here; the style is for
# builds where it does not, and this checks the outcome whichever does the work.
GUTTER_REPLACED = GUTTER.replace(
    "</body>",
    "<script>addEventListener('load', () => { document.adoptedStyleSheets = []; })</script>"
    "</body>",
)


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        server.routes["/fonts"] = Route(body=FONTS)
        server.routes["/animated"] = Route(body=ANIMATED)
        server.routes["/gutter"] = Route(body=GUTTER)
        server.routes["/gutter-replaced"] = Route(body=GUTTER_REPLACED)
        server.routes["/tall"] = Route(body=page("<div style='height:40000px'></div>"))
        server.routes["/short"] = Route(body=page("<div style='height:1000px'></div>"))
        yield server


def ink(img: Image.Image, left: int) -> Image.Image:
    return img.crop((left, 0, left + 150, 150))


def is_blank(img: Image.Image) -> bool:
    return ImageChops.difference(img, Image.new("RGB", img.size, (255, 255, 255))).getbbox() is None


def colourful(img: Image.Image) -> bool:
    # Some pixel far from grey: a colour glyph, not black text or an outline box.
    data = img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata()
    return any(max(p) - min(p) > 80 for p in data)


async def test_emoji_and_cjk_render_as_glyphs(chromium: str, site: SiteServer) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        shot = await pool.capture(site.url("/fonts"), CaptureOptions())
    img = image(shot)
    han, zi, emoji, hangul = (ink(img, x) for x in (0, 200, 400, 600))
    for glyph in (han, zi, emoji, hangul):
        assert not is_blank(glyph)
    # Missing glyphs are all the same box: real ones differ from each other.
    assert ImageChops.difference(han, zi).getbbox() is not None
    assert ImageChops.difference(zi, hangul).getbbox() is not None
    assert colourful(emoji) and not colourful(han)


async def test_freeze_animations_shows_the_end_state(chromium: str, site: SiteServer) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        moving = await pool.capture(site.url("/animated"), CaptureOptions())
        frozen = await pool.capture(site.url("/animated"), CaptureOptions(freeze_animations=True))
    still, done = image(moving), image(frozen)
    # Without freezing: a 1000 s animation and transition have barely started.
    for x in (50, 200, 350):
        assert near(still.getpixel((x, 50)), RED, tol=40), x
    assert near(done.getpixel((50, 50)), GREEN)  # animation finished
    assert near(done.getpixel((200, 50)), GREEN)  # transition finished
    assert near(done.getpixel((350, 50)), GREEN)  # prefers-reduced-motion: reduce
    assert near(done.getpixel((500, 50)), BLUE)  # endless: its first frame


async def test_scrollbar_gutter_leaves_no_strip(chromium: str, site: SiteServer) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        shots = [
            await pool.capture(site.url(path), CaptureOptions(width=800, height=600))
            for path in ("/gutter", "/gutter-replaced")
        ]
    for shot in shots:
        img = image(shot)
        assert img.size == (800, 600)
        for x in (795, 799):
            assert near(img.getpixel((x, 300)), GREEN), (shot.final_url, x)


async def test_small_png_compression_keeps_the_pixels_in_fewer_bytes(
    chromium: str, site: SiteServer
) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=1), POLICY) as pool:
        fast = await pool.capture(site.url("/fonts"), CaptureOptions())
        small = await pool.capture(site.url("/fonts"), CaptureOptions(png_compression="small"))
    assert fast.format == small.format == "png"
    assert len(small.data) < len(fast.data)
    assert ImageChops.difference(image(fast), image(small)).getbbox() is None


async def test_a_page_cut_at_the_cap_says_so(chromium: str, site: SiteServer) -> None:
    async with BrowserPool.open(PoolConfig(executable=chromium, concurrency=2), POLICY) as pool:
        tall = await pool.capture(site.url("/tall"), CaptureOptions(full_page=True, width=320))
        short = await pool.capture(site.url("/short"), CaptureOptions(full_page=True))
        viewport = await pool.capture(site.url("/tall"), CaptureOptions())
    assert tall.truncated_height and tall.height == FULL_PAGE_MAX_HEIGHT
    assert not short.truncated_height and short.height == 1000
    assert not viewport.truncated_height
