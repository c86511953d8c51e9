"""Make the web fonts of the bench's heavy site (fixtures/bench/fonts/*.woff2).

Run once, by hand, when the fonts need to change; the bench itself only reads the
files. Needs fontTools and brotli, which are not bulk's dependencies::

    python3 -m venv /tmp/fonttools && /tmp/fonttools/bin/pip install fonttools brotli
    /tmp/fonttools/bin/python scripts/benchkit/make_fonts.py [/usr/share/fonts/truetype/dejavu]

The sources are DejaVu fonts (Bitstream Vera licence, DejaVu changes public domain;
Debian's fonts-dejavu-core). Each is cut to Latin-1 plus common punctuation,
unhinted, renamed (that licence requires a modified font to drop the names
"Bitstream" and "Vera") and written as WOFF2: 10-20 KB each, the size of a real
site's subset web fonts.
"""

from __future__ import annotations

import pathlib
import sys

from fontTools import subset
from fontTools.ttLib import TTFont

OUT = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "bench" / "fonts"
#: (source file, family, style, output name)
FONTS = (
    ("DejaVuSans.ttf", "Bench Sans", "Regular", "bench-sans-regular.woff2"),
    ("DejaVuSans-Bold.ttf", "Bench Sans", "Bold", "bench-sans-bold.woff2"),
    ("DejaVuSerif.ttf", "Bench Serif", "Regular", "bench-serif-regular.woff2"),
    ("DejaVuSansMono.ttf", "Bench Mono", "Regular", "bench-mono-regular.woff2"),
)
UNICODES = "U+0020-007E,U+00A0-00FF,U+2013-2014,U+2018-201D,U+2022,U+2026,U+20AC"


def _rename(font: TTFont, family: str, style: str) -> None:
    names = {
        1: family,
        2: style,
        3: f"{family} {style}; bulk bench subset of DejaVu",
        4: f"{family} {style}",
        6: f"{family.replace(' ', '')}-{style}",
        16: family,
        17: style,
    }
    table = font["name"]
    for record in list(table.names):
        if record.nameID in names:
            table.removeNames(nameID=record.nameID)
    for name_id, text in names.items():
        table.setName(text, name_id, 3, 1, 0x409)
    notice = "Derived from DejaVu (Bitstream Vera licence; DejaVu changes public domain)."
    table.setName(notice, 0, 3, 1, 0x409)


def main() -> int:
    source = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu")
    OUT.mkdir(parents=True, exist_ok=True)
    options = subset.Options()
    options.flavor = "woff2"
    options.hinting = False
    options.desubroutinize = True
    options.layout_features = ["kern", "liga"]
    options.name_IDs = ["*"]
    unicodes = subset.parse_unicodes(UNICODES)
    for filename, family, style, out_name in FONTS:
        font = TTFont(source / filename)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=unicodes)
        subsetter.subset(font)
        _rename(font, family, style)
        target = OUT / out_name
        subset.save_font(font, str(target), options)
        print(f"{target.relative_to(OUT.parents[2])}: {target.stat().st_size / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
