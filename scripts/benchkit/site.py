"""The bench site: a deterministic (seeded) website written into a directory.

Two variants, both listed in a ``sitemap.xml`` with a ``robots.txt`` pointing to it:

- **light** (``generate``): text articles, galleries of images, data tables and long
  guides (several screens), 20-60 KB of HTML each, one stylesheet, one small deferred
  script, 48 JPEG photos and 24 PNG icons made with Pillow (below-the-fold images are
  ``loading="lazy"``, as on real sites). The same seed gives the same bytes on every
  run, so images of it can be compared across runs.
- **heavy** (``generate(..., heavy=True)``): the same pages with real-world weight on
  top: 20-60 sub-resources per page, galleries up to about 80 (counted in the HTML:
  stylesheets, scripts, web fonts, icons, and the page's images, each at a URL of the
  page's own, so the browser's cache does not absorb them), four WOFF2 web fonts
  (``fixtures/bench/fonts``) and a "vendor" stylesheet and script from a second host
  (a CDN, ``{cdn}``), and on a few
  pages assets from a slow third-party host (``{slow}``) that answers only after a
  delay of several seconds (an analytics tag that holds the ``load`` event; a beacon
  fetched after ``load`` that does not). Every delay is bounded (``MAX_DELAY_MS``):
  no page waits on it forever.

Files may hold the placeholders ``{origin}``, ``{cdn}`` and ``{slow}``; the server
(``benchkit.server``) replaces them with the origins it serves, and serves a
``?delay=MS`` query after that many milliseconds.
"""

from __future__ import annotations

import html
import io
import pathlib
import random
import re
from typing import Any

SEED = 20240601
REPO = pathlib.Path(__file__).resolve().parents[2]
FONTS_DIR = REPO / "fixtures" / "bench" / "fonts"
#: Longest delay a page of the heavy site asks of the slow host.
MAX_DELAY_MS = 8000

_WORDS = (  # noqa: SIM905 (one string reads better than 120)
    "the of and to in a is that for it as was with be by on not he this are or his from at"
    " which but have an they you were her she there been one all we their has would when"
    " what will more if no out so said can who about up its into than them only other new"
    " some could time these two may then do first any my now such like our over man me"
    " even most made after also did many before must through back years where much your"
    " way well down should because each just those people how too little state good very"
    " make world still own see men work long get here between both life being under never"
    " day same another know while last might us great old year off come since against go"
    " came right used take three garden harbor market river winter summer village engine"
    " library window kitchen mountain station bridge forest coffee bicycle journal museum"
).split()
_TOPICS = (
    "alpine",
    "basalt",
    "cedar",
    "cobalt",
    "copper",
    "coral",
    "ember",
    "fern",
    "flint",
    "garnet",
    "granite",
    "harbor",
    "hazel",
    "indigo",
    "jade",
    "juniper",
    "lagoon",
    "maple",
    "marble",
    "meadow",
    "ochre",
    "onyx",
    "orchid",
    "quartz",
    "raven",
    "ridge",
    "sage",
    "slate",
    "spruce",
    "summit",
    "thistle",
    "timber",
    "umber",
    "velvet",
    "willow",
)
_SECTIONS = ("blog", "gallery", "data", "guides", "news", "shop", "help", "about")
_PALETTE = (
    (31, 78, 121),
    (200, 80, 60),
    (60, 140, 90),
    (230, 180, 60),
    (120, 70, 150),
    (40, 160, 170),
    (220, 120, 150),
    (90, 90, 90),
    (170, 110, 60),
    (70, 120, 200),
)
PHOTOS = 48
ICONS = 24


def _sentence(rng: random.Random, lo: int = 8, hi: int = 22) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(_TOPICS))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def _para(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
    parts = []
    for _ in range(rng.randint(lo, hi)):
        s = html.escape(_sentence(rng))
        r = rng.random()
        if r < 0.12:
            w = s.split(" ", 3)
            s = f'{w[0]} <a href="/{rng.choice(_SECTIONS)}/">{" ".join(w[1:3])}</a> ' + (
                w[3] if len(w) > 3 else ""
            )
        elif r < 0.2:
            w = s.split(" ", 2)
            s = f"<strong>{w[0]} {w[1] if len(w) > 1 else ''}</strong> " + (
                w[2] if len(w) > 2 else ""
            )
        parts.append(s)
    return "<p>" + " ".join(parts) + "</p>\n"


def _title(rng: random.Random) -> str:
    words = [rng.choice(_TOPICS).title()] + [rng.choice(_WORDS) for _ in range(rng.randint(2, 6))]
    return " ".join(words).capitalize() if rng.random() < 0.3 else " ".join(words).title()


def _photo(rng: random.Random, index: int) -> bytes:
    from PIL import Image, ImageDraw, ImageFilter, ImageOps

    w, h = rng.choice(((480, 320), (640, 400), (800, 500), (400, 400), (600, 360)))
    c1, c2 = rng.sample(_PALETTE, 2)
    base = ImageOps.colorize(Image.linear_gradient("L").resize((w, h)), c1, c2)
    if rng.random() < 0.5:
        base = base.rotate(90 * rng.randint(1, 3), expand=False)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(6, 16)):
        color = (*rng.choice(_PALETTE), rng.randint(60, 200))
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2)
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            points = [(rng.randrange(w), rng.randrange(h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(points, fill=color)
    img = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    img = img.filter(ImageFilter.GaussianBlur(rng.choice((0, 1, 2))))
    # Film grain (seeded bytes, so the file is the same on every run): photos are
    # not flat colours, and their size and decode cost should look like photos'.
    grain = Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert("RGB")
    img = Image.blend(img, grain, 0.06)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def _icon(rng: random.Random) -> bytes:
    from PIL import Image, ImageDraw

    size = rng.choice((64, 96, 128))
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    color = rng.choice(_PALETTE)
    draw.rounded_rectangle((2, 2, size - 3, size - 3), radius=size // 5, fill=(*color, 255))
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
        draw.ellipse(
            (x0, y0, x0 + rng.randint(8, size // 2), y0 + rng.randint(8, size // 2)),
            fill=(255, 255, 255, rng.randint(120, 255)),
        )
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def _css(rng: random.Random) -> str:
    rules = [
        ":root{--fg:#1d2330;--muted:#5b6475;--accent:#1f4e79;--bg:#fbfbfd;--card:#fff;"
        "--border:#e3e6ee}",
        "*{box-sizing:border-box}",
        "html{font-size:17px}",
        "body{margin:0;font-family:'DejaVu Sans','Liberation Sans',Arial,sans-serif;"
        "color:var(--fg);background:var(--bg);line-height:1.6}",
        "a{color:var(--accent);text-decoration:underline;text-underline-offset:2px}",
        "header.site{background:linear-gradient(90deg,#1f4e79,#2d6ca8);color:#fff;"
        "padding:14px 32px;display:flex;align-items:center;gap:28px;"
        "box-shadow:0 2px 8px rgba(0,0,0,.15)}",
        "header.site .logo{font-weight:700;font-size:1.4rem;letter-spacing:.02em}",
        "header.site nav a{color:#fff;text-decoration:none;margin-right:18px;opacity:.9}",
        ".crumbs{font-size:.85rem;color:var(--muted);margin:18px 0 0}",
        ".wrap{max-width:1180px;margin:0 auto;padding:0 28px}",
        ".layout{display:grid;grid-template-columns:minmax(0,1fr) 300px;gap:40px}",
        "main h1{font-size:2.3rem;line-height:1.2;margin:.6em 0 .3em}",
        "main h2{font-size:1.5rem;margin:1.6em 0 .5em;border-bottom:1px solid var(--border)}",
        "main h3{font-size:1.15rem;margin:1.2em 0 .4em}",
        ".byline{color:var(--muted);font-size:.9rem}",
        ".hero{width:100%;height:auto;border-radius:10px;margin:12px 0 20px;"
        "aspect-ratio:16/10;object-fit:cover}",
        "figure{margin:24px 0}figure img{max-width:100%;height:auto;border-radius:8px}",
        "figcaption{font-size:.85rem;color:var(--muted)}",
        "blockquote{margin:24px 0;padding:12px 20px;border-left:4px solid var(--accent);"
        "background:#eef3f9;font-style:italic}",
        "aside{font-size:.92rem}aside section{background:var(--card);"
        "border:1px solid var(--border);border-radius:10px;padding:16px 18px;margin:22px 0}",
        "aside ul{padding-left:18px}aside img{width:40px;height:40px;vertical-align:middle;"
        "margin-right:8px}",
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:22px}",
        ".card{background:var(--card);border:1px solid var(--border);border-radius:12px;"
        "overflow:hidden;box-shadow:0 1px 3px rgba(0,0,0,.06)}",
        ".card img{width:100%;aspect-ratio:4/3;object-fit:cover;display:block}",
        ".card .body{padding:12px 14px}.card .price{font-weight:700;color:#2c7a3f}",
        ".card p{font-size:.85rem;color:var(--muted);margin:.3em 0}",
        "table{border-collapse:collapse;width:100%;font-size:.88rem;margin:18px 0}",
        "th{background:#1f4e79;color:#fff;text-align:left;position:sticky;top:0}",
        "th,td{padding:6px 10px;border-bottom:1px solid var(--border)}",
        "tbody tr:nth-child(even){background:#f2f5fa}",
        "td.num{text-align:right;font-variant-numeric:tabular-nums}",
        ".toc{background:#fff8e6;border:1px solid #f0dca8;border-radius:8px;padding:12px 22px}",
        "pre{background:#1e2330;color:#e6e9ef;padding:14px 16px;border-radius:8px;"
        "overflow:auto;font-size:.85rem;line-height:1.45}",
        ".note{border:1px solid #b8d8c0;background:#eef8f0;border-radius:8px;padding:10px 16px}",
        "footer.site{margin-top:60px;background:#1d2330;color:#c9cfdb;padding:36px 0;"
        "font-size:.9rem}",
        "footer.site .cols{display:grid;grid-template-columns:repeat(4,1fr);gap:24px}",
        "footer.site a{color:#c9cfdb;text-decoration:none;display:block;margin:3px 0}",
        ".btn{display:inline-block;padding:8px 16px;border-radius:6px;background:var(--accent);"
        "color:#fff;text-decoration:none}",
        ".badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#e8eef6;"
        "font-size:.75rem;margin-right:6px}",
        "@media (max-width:900px){.layout{grid-template-columns:1fr}}",
    ]
    # A real site's stylesheet is mostly rules for pages not on screen.
    for i in range(180):
        red, green, blue = rng.choice(_PALETTE)
        color = f"#{red:02x}{green:02x}{blue:02x}"
        rules.append(
            f".c-{rng.choice(_TOPICS)}-{i}{{color:{color};margin:{rng.randint(0, 24)}px;"
            f"padding:{rng.randint(0, 16)}px {rng.randint(0, 16)}px;"
            f"border-radius:{rng.randint(0, 12)}px}}"
        )
    return "\n".join(rules) + "\n"


_JS = """\
// Small, like most sites' own code: marks JS on, adds reading time and a back-to-top link.
document.documentElement.classList.add('js');
document.addEventListener('DOMContentLoaded', () => {
  const main = document.querySelector('main');
  if (!main) return;
  const words = (main.textContent || '').split(/\\s+/).length;
  const by = document.querySelector('.byline');
  if (by) by.textContent += ' \\u00b7 ' + Math.max(1, Math.round(words / 230)) + ' min read';
  const top = document.createElement('a');
  top.href = '#'; top.className = 'btn'; top.textContent = 'Back to top';
  top.style.cssText = 'position:fixed;right:24px;bottom:24px;opacity:.85';
  document.body.appendChild(top);
  for (const t of document.querySelectorAll('table')) t.dataset.rows = t.rows.length;
});
"""


def _frame(rng: random.Random, title: str, section: str, aside: str) -> tuple[str, str]:
    """The page around its ``<main>``: (before, after)."""
    nav = "".join(f'<a href="/{s}/">{s.title()}</a>' for s in _SECTIONS)
    cols = "".join(
        "<div><h4>"
        + rng.choice(_TOPICS).title()
        + "</h4>"
        + "".join(
            f'<a href="/{rng.choice(_SECTIONS)}/{rng.choice(_TOPICS)}-{rng.randint(1, 999)}/">'
            f"{html.escape(_title(rng))}</a>"
            for _ in range(6)
        )
        + "</div>"
        for _ in range(4)
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)} | Example Site</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="description" content="{html.escape(_sentence(rng))}">\n'
        '<link rel="stylesheet" href="/assets/site.css">\n'
        '<script src="/assets/site.js" defer></script>\n'
        "<style>.layout main{min-height:60vh}</style>\n"
        "</head>\n<body>\n"
        f'<header class="site"><span class="logo">Example Site</span><nav>{nav}</nav></header>\n'
        f'<div class="wrap"><p class="crumbs"><a href="/">Home</a> / '
        f'<a href="/{section}/">{section.title()}</a> / {html.escape(title)}</p>\n'
        '<div class="layout"><main>\n',
        f"</main>\n<aside>{aside}</aside></div></div>\n"
        f'<footer class="site"><div class="wrap cols">{cols}</div></footer>\n'
        "</body>\n</html>\n",
    )


def _img(src: str, alt: str, lazy: bool, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    loading = ' loading="lazy"' if lazy else ""
    return f'<img{c} src="{src}" alt="{html.escape(alt)}"{loading}>'


def _aside(rng: random.Random) -> str:
    items = "".join(
        f"<li>{_img(f'/img/icon-{rng.randrange(ICONS):02d}.png', '', False)}"
        f'<a href="/{rng.choice(_SECTIONS)}/{rng.choice(_TOPICS)}-{rng.randint(1, 999)}/">'
        f"{html.escape(_title(rng))}</a></li>"
        for _ in range(rng.randint(5, 9))
    )
    tags = "".join(f'<span class="badge">{t}</span>' for t in rng.sample(_TOPICS, 8))
    return (
        f"<section><h3>Related</h3><ul>{items}</ul></section>"
        f"<section><h3>Topics</h3>{tags}</section>"
        f"<section><h3>Newsletter</h3>{_para(rng, 2, 3)}"
        '<a class="btn" href="/subscribe/">Subscribe</a></section>'
    )


def _page(rng: random.Random, kind: str, seq: int) -> tuple[str, str]:
    """(path, html) of page ``seq`` of layout ``kind``, 20-60 KB."""
    title = _title(rng)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:48] + f"-{seq}"
    section = {"article": "blog", "gallery": "gallery", "table": "data", "long": "guides"}[kind]
    target = rng.randint(20_500, 58_000)

    def photo() -> str:
        return f"/img/photo-{rng.randrange(PHOTOS):02d}.jpg"

    parts: list[str] = [f"<h1>{html.escape(title)}</h1>\n"]
    parts.append(
        f'<p class="byline">By {rng.choice(_TOPICS).title()} {rng.choice(_TOPICS).title()}'
        f" \u00b7 {rng.randint(1, 28)} {rng.choice(('March', 'June', 'October'))} 2024</p>\n"
    )
    before, after = _frame(rng, title, section, _aside(rng))
    size = len(before) + len(after) + sum(map(len, parts))
    n = 0

    def figure(lazy: bool) -> str:
        caption = html.escape(_sentence(rng))
        return f"<figure>{_img(photo(), title, lazy)}<figcaption>{caption}</figcaption></figure>\n"

    def filler() -> str:
        nonlocal n
        n += 1
        if kind == "article":
            if n % 6 == 0:
                return figure(True)
            if n % 9 == 0:
                return f"<blockquote>{html.escape(_sentence(rng, 14, 30))}</blockquote>\n"
            if n % 4 == 0:
                return f"<h2>{html.escape(_title(rng))}</h2>\n"
            return _para(rng)
        if kind == "gallery":
            price = f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}"
            return (
                f'<div class="card">{_img(photo(), title, n > 8)}<div class="body">'
                f"<strong>{html.escape(_title(rng))}</strong>"
                f'<p>{html.escape(_sentence(rng, 10, 30))}</p><span class="price">{price}</span>'
                "</div></div>\n"
            )
        if kind == "table":
            cells = [
                f"<td>{html.escape(rng.choice(_TOPICS).title())} {rng.randint(100, 999)}</td>",
                f"<td>{html.escape(_title(rng))}</td>",
                f'<td class="num">{rng.randint(0, 99999):,}</td>',
                f'<td class="num">{rng.uniform(-50, 50):.2f}%</td>',
                f'<td class="num">{rng.uniform(0, 1e6):,.2f}</td>',
                f"<td>{rng.choice(('open', 'closed', 'pending', 'archived'))}</td>",
                f"<td>2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}</td>",
            ]
            return "<tr>" + "".join(cells) + "</tr>\n"
        # long guide: several screens of mixed blocks
        r = n % 10
        if r == 3:
            return f'<h2 id="s{n}">{html.escape(_title(rng))}</h2>\n'
        if r == 5:
            code = "\n".join(
                f"{rng.choice(_WORDS)}_{rng.choice(_TOPICS)} ="
                f" {rng.choice(('load', 'parse', 'fetch'))}({rng.randint(0, 99)})"
                for _ in range(rng.randint(4, 10))
            )
            return f"<pre><code>{html.escape(code)}</code></pre>\n"
        if r == 7:
            return figure(n > 4)
        if r == 8:
            return (
                "<ul>"
                + "".join(
                    f"<li>{html.escape(_sentence(rng, 5, 12))}</li>"
                    for _ in range(rng.randint(3, 7))
                )
                + "</ul>\n"
            )
        if r == 9:
            return f'<div class="note">{_para(rng, 1, 3)}</div>\n'
        return _para(rng, 4, 9)

    if kind == "article":
        parts.append(_img(photo(), title, False, "hero") + "\n")
    elif kind == "gallery":
        parts.append(_para(rng, 2, 4) + '<div class="grid">\n')
    elif kind == "table":
        parts.append(
            _para(rng, 2, 5)
            + "<table><thead><tr>"
            + "".join(
                f"<th>{h}</th>"
                for h in ("Code", "Name", "Units", "Change", "Value", "Status", "Date")
            )
            + "</tr></thead><tbody>\n"
        )
    else:
        toc = "".join(f"<li>{html.escape(_title(rng))}</li>" for _ in range(rng.randint(5, 9)))
        parts.append(f'<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>\n')
        parts.append(f"<figure>{_img(photo(), title, False)}</figure>\n")
    # Long guides are the pages that are several screens tall whatever their size.
    lo = max(target, 45_000) if kind == "long" else target
    while size < lo:
        block = filler()
        parts.append(block)
        size += len(block)
    if kind == "gallery":
        parts.append("</div>\n" + _para(rng))
    elif kind == "table":
        parts.append("</tbody></table>\n" + _para(rng, 1, 3))
    return f"/{section}/{slug}/", before + "".join(parts) + after


def generate(
    root: pathlib.Path, pages: int, seed: int = SEED, heavy: bool = False
) -> dict[str, Any]:
    """Write the site into ``root``; return its URL paths and sizes.

    Args:
        root: A directory that does not exist yet; the site's own files go here.
        pages: Pages in the site (and its sitemap).
        seed: Everything random comes from this seed.
        heavy: Write the heavy variant: its CDN's files go to ``<root>.cdn`` and
            the slow host's to ``<root>.slow`` (both named in ``hosts``).

    Returns:
        JSON-ready facts: ``paths``, ``kinds``, HTML sizes, ``image_bytes``, and for
        the heavy variant ``hosts`` (name -> directory) and ``subresources`` (per page:
        URLs referenced by the HTML, fonts included).
    """
    rng = random.Random(seed)
    (root / "assets").mkdir(parents=True)
    (root / "img").mkdir()
    (root / "assets" / "site.css").write_text(_css(rng))
    (root / "assets" / "site.js").write_text(_JS)
    image_bytes = 0
    for i in range(PHOTOS):
        data = _photo(rng, i)
        (root / "img" / f"photo-{i:02d}.jpg").write_bytes(data)
        image_bytes += len(data)
    for i in range(ICONS):
        data = _icon(rng)
        (root / "img" / f"icon-{i:02d}.png").write_bytes(data)
        image_bytes += len(data)
    kinds = ["article"] * 35 + ["gallery"] * 20 + ["table"] * 20 + ["long"] * 25
    paths: list[str] = []
    sizes: list[int] = []
    counts: dict[str, int] = {}
    subresources: list[int] = []
    for seq in range(1, pages + 1):
        kind = kinds[rng.randrange(len(kinds))]
        counts[kind] = counts.get(kind, 0) + 1
        path, text = _page(rng, kind, seq)
        if heavy:
            # Its own generator: the pages' text stays that of the light site.
            text, count = _heavy_page(random.Random(seed * 1_000_003 + seq), text, kind, seq)
            subresources.append(count)
        data = text.encode()
        target = root / path.strip("/") / "index.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        paths.append(path)
        sizes.append(len(data))
    entries = "".join(
        f"<url><loc>{{origin}}{p}</loc><lastmod>2024-06-{1 + i % 28:02d}</lastmod></url>\n"
        for i, p in enumerate(paths)
    )
    (root / "sitemap.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n' + entries + "</urlset>\n"
    )
    (root / "robots.txt").write_text(
        "User-agent: *\nAllow: /\nDisallow: /private/\n\nSitemap: {origin}/sitemap.xml\n"
    )
    info: dict[str, Any] = {
        "paths": paths,
        "kinds": counts,
        "html_min": min(sizes),
        "html_max": max(sizes),
        "html_total": sum(sizes),
        "image_bytes": image_bytes,
    }
    if heavy:
        info["hosts"] = _write_heavy_assets(root, random.Random(seed + 1))
        info["subresources"] = subresources
    return info


# --- the heavy variant ------------------------------------------------------------------

FONTS = (  # (family, weight, file): the files of fixtures/bench/fonts
    ("Bench Sans", 400, "bench-sans-regular.woff2"),
    ("Bench Sans", 700, "bench-sans-bold.woff2"),
    ("Bench Serif", 400, "bench-serif-regular.woff2"),
    ("Bench Mono", 400, "bench-mono-regular.woff2"),
)
_KINDS = ("article", "gallery", "table", "long")
# A 1x1 transparent GIF, what tracking pixels are.
_PIXEL_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
_SUBRESOURCE = re.compile(r'<link rel="stylesheet" href="([^"]+)"|\bsrc="([^"]+)"')

_HEAVY_CSS = """\
body{font-family:'Bench Sans',sans-serif}
h1,h2,h3,h4{font-family:'Bench Serif',serif;font-weight:400}
strong,b,th,.logo,.btn{font-family:'Bench Sans',sans-serif;font-weight:700}
pre,code,td.num{font-family:'Bench Mono',monospace}
header.site .social{margin-left:auto;display:flex;gap:8px}
header.site .social img{width:22px;height:22px;border-radius:4px}
.more .thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.more .thumbs img{width:100%;height:96px;object-fit:cover;border-radius:6px;display:block}
.meta{color:var(--muted);font-size:.8rem}
.share{display:flex;gap:8px;margin:12px 0}
"""

_WIDGETS_JS = """\
// Share buttons and a table-of-contents highlighter, as sites' own widgets do.
document.addEventListener('DOMContentLoaded', () => {
  const h1 = document.querySelector('main h1');
  if (h1) {
    const bar = document.createElement('div');
    bar.className = 'share';
    for (const name of ['Share', 'Save', 'Print']) {
      const a = document.createElement('a');
      a.className = 'btn'; a.href = '#'; a.textContent = name;
      bar.appendChild(a);
    }
    h1.after(bar);
  }
  for (const li of document.querySelectorAll('.toc li')) li.dataset.seen = '0';
});
"""

_TAG_JS = """\
// A third-party tag: reads the page, sends nothing (the bench has no collector).
window.__benchTag = {loaded: true, title: document.title.length};
"""


def _fonts_css() -> str:
    return "".join(
        f"@font-face{{font-family:'{family}';font-style:normal;font-weight:{weight};"
        f"font-display:swap;src:url({{cdn}}/fonts/{file}) format('woff2')}}\n"
        for family, weight, file in FONTS
    )


def _vendor_css(rng: random.Random) -> str:
    """About 70 KB of a CSS framework's rules, almost none of which match."""
    rules = []
    for i in range(900):
        red, green, blue = rng.choice(_PALETTE)
        rules.append(
            f".v-{rng.choice(_TOPICS)}-{i},.v-{rng.choice(_WORDS)}-{i}>a:hover"
            f"{{color:#{red:02x}{green:02x}{blue:02x};margin:{rng.randint(0, 24)}px;"
            f"transition:opacity .{rng.randint(1, 9)}s}}"
        )
    return "\n".join(rules) + "\n"


def _vendor_js(rng: random.Random) -> str:
    """About 90 KB of library code: parsed on every page, a little of it run."""
    parts = ["(function(){'use strict';var lib={};"]
    for i in range(700):
        a, b = rng.randint(1, 97), rng.randint(1, 89)
        parts.append(
            f"lib.f{i}=function(x,y){{var t=(x*{a}+y*{b})%{a + b + 7};"
            f"for(var k=0;k<3;k++){{t=(t*31+k)%1000003}}return t+'{rng.choice(_WORDS)}'}};"
        )
    parts.append(
        "var acc=0;for(var n=0;n<2000;n++){acc+=lib['f'+(n%700)](n,acc%97).length}"
        "window.__vendor={ready:true,acc:acc};})();\n"
    )
    return "\n".join(parts)


def _kind_css(kind: str) -> str:
    return f"/* {kind} pages */\nmain.{kind}-page h1{{letter-spacing:-.01em}}\n"


def _kind_js(kind: str) -> str:
    return (
        f"// {kind} pages\ndocument.addEventListener('DOMContentLoaded', () =>"
        f" document.body.classList.add('kind-{kind}'));\n"
    )


def _heavy_page(rng: random.Random, text: str, kind: str, seq: int) -> tuple[str, int]:
    """A light page plus the heavy variant's head, header icons, page-specific
    thumbnails and third-party tags; returns it with its sub-resource count."""
    head = [
        '<link rel="preconnect" href="{cdn}">',
        '<link rel="stylesheet" href="{cdn}/css/fonts.css">',
        '<link rel="stylesheet" href="{cdn}/css/vendor.css">',
        '<link rel="stylesheet" href="/assets/heavy.css">',
        f'<link rel="stylesheet" href="/assets/{kind}.css">',
        '<script src="{cdn}/js/vendor.js" defer></script>',
        '<script src="/assets/widgets.js" defer></script>',
        f'<script src="/assets/{kind}.js" defer></script>',
    ]
    tail = []
    roll = rng.random()
    if roll < 0.06:
        # The analytics tag that answers late: ``load`` waits for it.
        delay = rng.randint(3000, 6000)
        head.append(f'<script async src="{{slow}}/tag.js?delay={delay}&amp;p={seq}"></script>')
    elif roll < 0.16:
        # A beacon sent after load and answered late: nothing should wait for it.
        tail.append(
            "<script>addEventListener('load', () => fetch("
            f"'{{slow}}/beacon?delay={MAX_DELAY_MS}&p={seq}', {{mode: 'no-cors'}}))</script>"
        )
    if rng.random() < 0.25:
        delay = rng.randint(50, 400)
        tail.append(
            f'<img src="{{slow}}/pixel.gif?delay={delay}&amp;p={seq}" width="1" height="1"'
            ' alt="" style="position:absolute;left:0;top:0">'
        )
    icons = "".join(
        f'<img src="/img/icon-{i:02d}.png" alt="">' for i in rng.sample(range(ICONS), 5)
    )
    text = text.replace("</head>", "\n".join(head) + "\n</head>", 1)
    text = text.replace(
        '<span class="logo">Example Site</span>',
        f'<span class="logo">Example Site</span><span class="social">{icons}</span>',
        1,
    )
    text = text.replace("</body>", "".join(tail) + "\n</body>", 1)
    # Every page has photos of its own (a URL of its own: the cache cannot absorb them).
    text = re.sub(r'src="(/img/photo-\d+\.jpg)"', rf'src="\1?v={seq}"', text)
    # Page-specific thumbnails bring the page to 20-60 sub-resources, fonts and the
    # beacon included (galleries, with their many cards, have more).
    present = {a or b for a, b in _SUBRESOURCE.findall(text)}
    extra = 1 if tail and "beacon" in tail[0] else 0
    fixed = len(present) + len(FONTS) + extra
    thumbs = max(4, rng.randint(20, 60) - fixed)
    eager = thumbs - thumbs // 3
    items = "".join(
        _img(f"/img/photo-{rng.randrange(PHOTOS):02d}.jpg?v={seq}-{i}", "", i >= eager)
        for i in range(thumbs)
    )
    more = (
        f'<section class="more"><h2>More from Example Site</h2><div class="thumbs">{items}'
        f'</div></section>\n<p class="meta">Build <code>{rng.randbytes(4).hex()}</code></p>\n'
    )
    text = text.replace("</main>", more + "</main>", 1)
    return text, fixed + thumbs


def _write_heavy_assets(root: pathlib.Path, rng: random.Random) -> dict[str, str]:
    """The heavy site's extra files: its own, its CDN's and the slow host's."""
    (root / "assets" / "heavy.css").write_text(_HEAVY_CSS)
    (root / "assets" / "widgets.js").write_text(_WIDGETS_JS)
    for kind in _KINDS:
        (root / "assets" / f"{kind}.css").write_text(_kind_css(kind))
        (root / "assets" / f"{kind}.js").write_text(_kind_js(kind))
    cdn = root.with_name(root.name + ".cdn")
    for sub in ("css", "js", "fonts"):
        (cdn / sub).mkdir(parents=True)
    (cdn / "css" / "fonts.css").write_text(_fonts_css())
    (cdn / "css" / "vendor.css").write_text(_vendor_css(rng))
    (cdn / "js" / "vendor.js").write_text(_vendor_js(rng))
    for _, _, file in FONTS:
        (cdn / "fonts" / file).write_bytes((FONTS_DIR / file).read_bytes())
    slow = root.with_name(root.name + ".slow")
    slow.mkdir()
    (slow / "tag.js").write_text(_TAG_JS)
    (slow / "pixel.gif").write_bytes(_PIXEL_GIF)
    (slow / "beacon").write_bytes(b"")
    return {"cdn": str(cdn), "slow": str(slow)}
