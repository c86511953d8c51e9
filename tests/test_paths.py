"""Tests for bulk._paths: URL -> ZIP entry names."""

from __future__ import annotations

import datetime
import hashlib
import re
import unicodedata
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk._exceptions import InvalidURL, ResumeMismatch, ValidationError
from bulk._paths import Layout, entry_name, is_safe_entry, root_folder
from bulk._urls import parse_http_url

# The archive's own entries at the root: files, then folders.
ARCHIVE_FILES = {"_manifest.json", "index.html"}
ARCHIVE_FOLDERS = {"_thumbs", "_long", "_conflicts"}
_DEVICE_KEYS = {
    *("con", "prn", "aux", "nul", "conin$", "conout$", "clock$"),
    *(f"{device}{digit}" for device in ("com", "lpt") for digit in "0123456789¹²³"),
}


def _opens_a_device(component: str) -> bool:
    """Whether Windows would open a device for this file or folder name."""
    return key(component.split(".", 1)[0].rstrip(" ")) in _DEVICE_KEYS


def _clashes_with_the_archive(name: str) -> bool:
    """Whether a page entry equals, or sits under, one of the archive's own entries."""
    parts = key(name).split("/")
    if parts[0] in ARCHIVE_FILES:
        return True  # the file itself, or a folder of the same name
    if parts[0] == "_thumbs":
        return True
    # The layout's own folders hold only its hash-named fallbacks.
    return parts[0] in {"_long", "_conflicts"} and not re.fullmatch(
        r"[0-9a-f]{16}(~[0-9a-f]{8}(-\d+)?)?\.(png|jpg|webp)", "/".join(parts[1:])
    )


SITE = "https://example.com"


def sha(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:digits]


def url_hex(url: str, digits: int) -> str:
    """The hash a layout uses for ``url``: SHA-256 of its canonical form."""
    return sha(parse_http_url(url).href, digits)


def key(name: str) -> str:
    """Names are compared after NFC + casefold, as the spec says."""
    return unicodedata.normalize("NFC", name).casefold()


def name_of(path: str, extension: str = "png") -> str:
    return entry_name(SITE + path, extension)


# --- Pixcap's layout ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "index.png"),
        ("", "index.png"),
        ("/about/", "about/index.png"),
        ("/blog/my-post", "blog/my-post.png"),
        ("/blog", "blog.png"),
        ("/blog/", "blog/index.png"),
        ("/about.html", "about.html.png"),
        ("/a/b/c/", "a/b/c/index.png"),
        ("/docs/v1.2/intro", "docs/v1.2/intro.png"),
        ("/.well-known/x", ".well-known/x.png"),
        ("/~user/", "~user/index.png"),
        ("/a@b", "a@b.png"),
        ("/index", "index.png"),
    ],
)
def test_pixcap_layout(path: str, expected: str) -> None:
    assert name_of(path) == expected


@pytest.mark.parametrize(
    ("extension", "expected"),
    [("png", "blog/x.png"), ("jpg", "blog/x.jpg"), ("jpeg", "blog/x.jpg"), ("webp", "blog/x.webp")],
)
def test_extension(extension: str, expected: str) -> None:
    assert name_of("/blog/x", extension) == expected
    assert Layout(extension).assign(SITE + "/blog/x") == expected


@pytest.mark.parametrize("extension", ["gif", "PNG", ".png", "", "png/..", "jpg "])
def test_bad_extension(extension: str) -> None:
    with pytest.raises(ValidationError) as info:
        name_of("/", extension)
    assert info.value.field == "format"
    with pytest.raises(ValidationError):
        Layout(extension)


# --- Canonicalisation and traversal ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/../b", "b.png"),
        ("/../../etc/passwd", "etc/passwd.png"),
        ("/a/./b", "a/b.png"),
        ("/a/%2e%2e/b", "b.png"),
        ("/a/%2E%2e/b", "b.png"),
        ("/a/.%2e/b", "b.png"),
        ("/a/%2e/b", "a/b.png"),
        ("/a/b/..", "a/index.png"),
        ("\\a\\b", "a/b.png"),
        ("/a\\..\\b", "b.png"),
        ("/a%2Fb", "a%2Fb.png"),
        ("/a%2fb", "a%2Fb.png"),
        ("/..%2F..%2Fetc", "..%2F..%2Fetc.png"),
        ("/..%2f", "..%2F.png"),
        ("/a%5Cb", "a%5Cb.png"),
        ("/%5C..%5C..", "%5C..%5C%2E%2E.png"),
        ("/%2e%2e%2e", "%2E%2E%2E.png"),
        ("/%2e%2e%2e/x", "%2E%2E%2E/x.png"),
        ("/.../x", "%2E%2E%2E/x.png"),
        ("/a/.../", "a/%2E%2E%2E/index.png"),
        ("/a/..../b", "a/%2E%2E%2E%2E/b.png"),
        ("/x#fragment", "x.png"),
        ("/x#!/route", "x.png"),
        ("/a\t\nb", "ab.png"),
    ],
)
def test_traversal_is_resolved_or_escaped(path: str, expected: str) -> None:
    name = name_of(path)
    assert name == expected
    assert is_safe_entry(name)


def test_equivalent_spellings_share_a_name() -> None:
    layout = Layout("png")
    first = layout.assign("http://EXAMPLE.com:80/a/./b")
    assert layout.assign("http://example.com/a/c/../b") == first == "a/b.png"
    assert len(layout) == 1


# --- Segment encoding -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Percent-decoding to UTF-8, whatever the hex case.
        ("/caf%C3%A9", "café.png"),
        ("/caf%c3%a9", "café.png"),
        ("/café", "café.png"),
        ("/%E6%97%A5%E6%9C%AC", "日本.png"),
        ("/a%20b", "a b.png"),
        ("/a+b", "a+b.png"),
        # NFD input comes out NFC.
        ("/e%CC%81", "é.png"),
        ("/cafe\u0301", "café.png"),
        ("/%E1%84%80%E1%85%A1", "가.png"),
        # Invalid UTF-8 keeps its bytes as %XX.
        ("/%FF", "%FF.png"),
        ("/a%FFb", "a%FFb.png"),
        ("/%C3", "%C3.png"),
        ("/%C3%28", "%C3(.png"),
        ("/%C0%AF", "%C0%AF.png"),
        ("/%ED%A0%80", "%ED%A0%80.png"),
        ("/%F4%90%80%80", "%F4%90%80%80.png"),
        ("/%ff%c3%a9", "%FFé.png"),
        # '%' itself is escaped so that escapes stay unambiguous.
        ("/%25", "%25.png"),
        ("/%zz", "%25zz.png"),
        ("/100%", "100%25.png"),
        ("/%2", "%252.png"),
        # Characters Windows forbids.
        ("/a:b", "a%3Ab.png"),
        ("/a*b", "a%2Ab.png"),
        ("/a%3Fb", "a%3Fb.png"),
        ('/a"b', "a%22b.png"),
        ("/a<b>", "a%3Cb%3E.png"),
        ("/a|b", "a%7Cb.png"),
        ("/C:", "C%3A.png"),
        ("/C:/x", "C%3A/x.png"),
    ],
)
def test_segment_encoding(path: str, expected: str) -> None:
    assert name_of(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a%00b", "a%00b.png"),
        ("/a%0Ab", "a%0Ab.png"),
        ("/a%0D%0Ab", "a%0D%0Ab.png"),
        ("/a%7Fb", "a%7Fb.png"),
        ("/a%C2%85b", "a%C2%85b.png"),  # NEL (C1 control)
        ("/a%E2%80%AEb", "a%E2%80%AEb.png"),  # RIGHT-TO-LEFT OVERRIDE
        ("/a\u202eb", "a%E2%80%AEb.png"),
        ("/a%E2%81%A6b", "a%E2%81%A6b.png"),  # LEFT-TO-RIGHT ISOLATE
        ("/a%E2%80%8Fb", "a%E2%80%8Fb.png"),  # RIGHT-TO-LEFT MARK
        ("/a%D8%9Cb", "a%D8%9Cb.png"),  # ARABIC LETTER MARK
        ("/a%E2%80%8Bb", "a%E2%80%8Bb.png"),  # ZERO WIDTH SPACE
        ("/a%EF%BB%BFb", "a%EF%BB%BFb.png"),  # BOM
        ("/a%C2%ADb", "a%C2%ADb.png"),  # SOFT HYPHEN
        ("/a%E2%80%A8b", "a%E2%80%A8b.png"),  # LINE SEPARATOR
        ("/a%E2%80%A9b", "a%E2%80%A9b.png"),  # PARAGRAPH SEPARATOR
        ("/exe%E2%80%AEgnp.js", "exe%E2%80%AEgnp.js.png"),
    ],
)
def test_control_format_and_bidi_characters(path: str, expected: str) -> None:
    assert name_of(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a.", "a%2E.png"),
        ("/a..", "a%2E%2E.png"),
        ("/a%20", "a%20.png"),
        ("/a.%20.%20", "a%2E%20%2E%20.png"),
        ("/a.b", "a.b.png"),
        ("/%20a", " a.png"),
        ("/.a", ".a.png"),
        ("/a./b", "a%2E/b.png"),
        ("/a%20/", "a%20/index.png"),
        ("/.%20/x", "%2E%20/x.png"),
        ("/%20/x", "%20/x.png"),
    ],
)
def test_trailing_dots_and_spaces(path: str, expected: str) -> None:
    assert name_of(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("//", "_/index.png"),
        ("/a//b", "a/_/b.png"),
        ("///x", "_/_/x.png"),
    ],
)
def test_empty_segments(path: str, expected: str) -> None:
    assert name_of(path) == expected


# --- Reserved names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/con", "_con.png"),
        ("/CON", "_CON.png"),
        ("/Con.txt", "_Con.txt.png"),
        ("/aux.html", "_aux.html.png"),
        ("/prn", "_prn.png"),
        ("/nul.tar.gz", "_nul.tar.gz.png"),
        ("/com0", "_com0.png"),
        ("/COM1", "_COM1.png"),
        ("/lpt9", "_lpt9.png"),
        ("/COM%C2%B9", "_COM¹.png"),
        ("/lpt%C2%B2", "_lpt².png"),
        ("/com%C2%B3.x", "_com³.x.png"),
        ("/con%20.txt", "_con .txt.png"),
        ("/con/x", "_con/x.png"),
        ("/a/AUX/", "a/_AUX/index.png"),
        ("/con?x=1", f"_con@{sha('x=1', 8)}.png"),
        ("/CONIN$", "_CONIN$.png"),
        ("/conin$", "_conin$.png"),
        ("/CONOUT$.txt", "_CONOUT$.txt.png"),
        ("/Clock$", "_Clock$.png"),
        ("/clock$/x", "_clock$/x.png"),
        ("/conin%24", "_conin$.png"),  # the same name, escaped
        ("/a/CONOUT$%20.log/", "a/_CONOUT$ .log/index.png"),
        # Not reserved.
        ("/console", "console.png"),
        ("/com10", "com10.png"),
        ("/com%C2%B9%C2%B9", "com¹¹.png"),
        ("/xcon", "xcon.png"),
        ("/con.", "con%2E.png"),
        ("/%20con", " con.png"),
        ("/com4x.txt", "com4x.txt.png"),
        ("/conin", "conin.png"),
        ("/conin$$", "conin$$.png"),
        ("/clock", "clock.png"),
        ("/$con", "$con.png"),
    ],
)
def test_windows_reserved_names(path: str, expected: str) -> None:
    assert name_of(path) == expected


# Every name Windows reserves (Win32 device names, incl. the superscript-digit ports).
WINDOWS_DEVICES = [
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"{device}{digit}" for device in ("COM", "LPT") for digit in "0123456789¹²³"),
    "CONIN$",
    "CONOUT$",
    "CLOCK$",
]


def _spellings(name: str) -> list[str]:
    return sorted({name, name.lower(), name.capitalize(), name.swapcase()[:1] + name[1:].lower()})


@pytest.mark.parametrize("device", WINDOWS_DEVICES)
@pytest.mark.parametrize("tail", ["", ".txt", ".tar.gz", " .log", ".", "/", "/x"])
def test_every_windows_device_name_is_escaped(device: str, tail: str) -> None:
    for spelling in _spellings(device):
        raw = quote(spelling + tail, safe="/$")
        name = name_of("/" + raw)
        # Whatever follows, no component of the entry opens a device on Windows.
        assert all(not _opens_a_device(part) for part in name.split("/")), (raw, name)
        # Escaped with a "_" prefix, except "CON." whose escaped dot ("CON%2E")
        # already makes it an ordinary name.
        assert name.startswith("_" + spelling) or tail == ".", (raw, name)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/_long/x", "__long/x.png"),
        ("/_LONG/x", "__LONG/x.png"),
        ("/_conflicts/x", "__conflicts/x.png"),
        ("/_Conflicts/", "__Conflicts/index.png"),
        ("/_thumbs/a/b", "__thumbs/a/b.png"),
        ("/_thumb%C5%BF/x", "__thumbſ/x.png"),  # 'ſ' casefolds to 's'
        # Only a top-level directory is reserved.
        ("/_long", "_long.png"),
        ("/_conflicts", "_conflicts.png"),
        ("/a/_long/x", "a/_long/x.png"),
        ("/_longer/x", "_longer/x.png"),
        # Root files bulk writes: every page entry ends in the image extension.
        ("/_manifest.json", "_manifest.json.png"),
        ("/index.html", "index.html.png"),
    ],
)
def test_reserved_top_level_names(path: str, expected: str) -> None:
    assert name_of(path) == expected


def test_reserved_root_files_never_assigned() -> None:
    layout = Layout("png")
    for path in ["/_manifest.json", "/index.html", "/INDEX.HTML", "/_manifest.json/"]:
        for extension in ["png", "jpg", "webp"]:
            name = name_of(path, extension)
            assert key(name) not in {"_manifest.json", "index.html"}
        assert key(layout.assign(SITE + path)) not in {"_manifest.json", "index.html"}


@pytest.mark.parametrize(
    "path",
    [
        "/index.html/",
        "/index.html/x",
        "/INDEX.HTML/x/y",
        "/index.html/index.html",
        "/_manifest.json/",
        "/_manifest.json/x",
        "/_MANIFEST.JSON/x",
        "/_manife%C5%BFt.json/x",  # 'ſ' casefolds to 's'
        "/index%2Ehtml/x",
        "/index.html/?q=1",
    ],
)
def test_a_folder_named_like_a_root_file_goes_to_conflicts(path: str) -> None:
    # issue 11 item 3: the page would need the archive's own _manifest.json or
    # index.html to be a directory too.
    expected = f"_conflicts/{url_hex(SITE + path, 16)}.png"
    assert name_of(path) == expected
    layout = Layout("png")
    layout.assign(SITE + "/index.html")
    assert layout.assign(SITE + path) == expected


def test_root_file_names_are_free_below_the_root() -> None:
    for path in ("/a/index.html/x", "/a/_manifest.json/", "/a/_thumbs/1.jpg"):
        assert not name_of(path).startswith(("_", "index.html")), path


@pytest.mark.parametrize(
    "entry",
    [
        "index.html/x.png",
        "_manifest.json/index.png",
        "INDEX.HTML/a/b.png",
        "_thumbs/000001.png",
        "_THUMBS/x.png",
    ],
)
def test_restore_refuses_archive_own_names(entry: str) -> None:
    layout = Layout("png")
    with pytest.raises(ResumeMismatch):
        layout.restore(SITE + "/x", entry)
    assert len(layout) == 0


# --- Query strings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/search?q=a", f"search@{sha('q=a', 8)}.png"),
        ("/?x=1", f"index@{sha('x=1', 8)}.png"),
        ("/blog/?page=2", f"blog/index@{sha('page=2', 8)}.png"),
        ("/a.html?b=c&d", f"a.html@{sha('b=c&d', 8)}.png"),
        ("/s?q=%C3%A9", f"s@{sha('q=%C3%A9', 8)}.png"),
        # The raw query as the browser sends it: 'é' is sent percent-encoded.
        ("/s?q=é", f"s@{sha('q=%C3%A9', 8)}.png"),
        ("/s?q=a#frag", f"s@{sha('q=a', 8)}.png"),
        ("/s?q=a/b", f"s@{sha('q=a/b', 8)}.png"),
        ("/s?", "s.png"),
        ("/s#?q=a", "s.png"),
    ],
)
def test_query_string_hash(path: str, expected: str) -> None:
    assert name_of(path) == expected


# --- Long components, long names, deep paths ------------------------------------


@pytest.mark.parametrize(
    ("segment", "cut"),
    [
        ("x" * 251, None),  # 'x'*251 + '.png' is exactly 255 bytes
        ("x" * 252, "x" * 240),
        ("é" * 200, "é" * 120),  # 2 bytes each: cut on a character boundary
        ("日" * 100, "日" * 80),  # 3 bytes each
        ("%00" * 100, "%00" * 80),  # escapes are never split
        ("a" + "%00" * 100, "a" + "%00" * 79),
    ],
)
def test_long_leaf_is_cut(segment: str, cut: str | None) -> None:
    name = name_of("/" + segment)
    assert len(name.encode()) <= 255
    if cut is None:
        assert name == segment + ".png"
    else:
        # The mark hashes the full escaped component (here the same as the input).
        assert name == cut + "~" + sha(segment, 10) + ".png"


def test_long_leaf_with_query_keeps_tag() -> None:
    name = name_of("/" + "y" * 300 + "?q=1")
    assert name.endswith(f"~{sha('y' * 300, 10)}@{sha('q=1', 8)}.png")
    assert len(name.encode()) == 255


def test_long_directory_is_cut() -> None:
    name = name_of("/" + "d" * 300 + "/leaf")
    directory, leaf = name.split("/")
    assert leaf == "leaf.png"
    assert directory == "d" * 244 + "~" + sha("d" * 300, 10)
    assert len(directory.encode()) == 255


def test_long_component_never_splits_multibyte_or_escapes() -> None:
    for segment in ["é" * 150 + "x", "x" + "日" * 90, "%ED%A0%80" * 40, "a%00" * 90]:
        name = name_of("/" + segment + "/" + segment)
        assert name.count("~") == 2
        for part in name.split("/"):
            assert len(part.encode()) <= 255
            # Every '%' still starts a complete escape.
            assert not re.search(r"%(?![0-9A-F]{2})", part)


@pytest.mark.parametrize(
    ("path", "long"),
    [
        ("/a" * 31 + "/", False),  # 31 directories + index = 32 levels
        ("/a" * 32, False),
        ("/a" * 33, True),
        ("/a" * 32 + "/", True),
        ("/" + "/".join(["d" * 250] * 4), False),  # 4 * 250 + 3 + 4 = 1007 bytes
        ("/" + "/".join(["d" * 250] * 5), True),
        ("/" + "/".join(["é" * 150] * 2) + "/x", False),
        ("/" + "/".join(["d" * 300] * 4), False),  # cut to 4 * 255 + 3 = 1023 bytes
        ("/" + "/".join(["d" * 300] * 5), True),
    ],
)
def test_long_or_deep_names_go_to_long(path: str, long: bool) -> None:
    name = name_of(path)
    if long:
        assert name == f"_long/{url_hex(SITE + path, 16)}.png"
    else:
        assert not name.startswith("_long/")
        assert len(name.encode()) <= 1024
        assert name.count("/") < 32
    assert is_safe_entry(name)


# --- Collisions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected_second"),
    [
        ("/about", "/About", "About~{h}.png"),
        ("/About", "/about", "about~{h}.png"),
        ("/%C3%A9", "/e%CC%81", "é~{h}.png"),  # NFC vs NFD
        ("/e%CC%81", "/%C3%89", "É~{h}.png"),
        ("/stra%C3%9Fe", "/STRASSE", "STRASSE~{h}.png"),  # casefold: ß -> ss
        ("/", "/index", "index~{h}.png"),
        ("/blog/", "/blog/index", "blog/index~{h}.png"),
        ("/a//b", "/a/_/b", "a/_/b~{h}.png"),
        ("/_long/x", "/__long/x", "__long/x~{h}.png"),
        ("/s?q=1", "/s?q=1#top", "s@" + sha("q=1", 8) + "~{h}.png"),
        ("/x", "http://other.example/x", "x~{h}.png"),
        ("/x", "http://example.com/x", "x~{h}.png"),
        ("/Blog/post", "/blog/POST", "blog/POST~{h}.png"),
    ],
)
def test_collisions(first: str, second: str, expected_second: str) -> None:
    second_url = second if second.startswith("http") else SITE + second
    layout = Layout("png")
    plain = layout.assign(SITE + first)
    assert plain == name_of(first)
    assert layout.assign(second_url) == expected_second.format(h=url_hex(second_url, 8))
    assert len(layout) == 2


def test_same_directory_in_another_case_is_not_a_collision() -> None:
    layout = Layout("png")
    assert layout.assign(SITE + "/Blog/a") == "Blog/a.png"
    assert layout.assign(SITE + "/blog/b") == "blog/b.png"


def test_collision_suffix_keeps_leaf_within_255_bytes() -> None:
    layout = Layout("webp")
    url = SITE + "/" + "x" * 246
    assert layout.assign(url) == "x" * 246 + ".webp"  # 251 bytes: no cut
    other = SITE + "/" + "X" * 246
    name = layout.assign(other)
    assert len(name.encode()) <= 255
    assert name.endswith(f"~{sha('X' * 246, 10)}~{url_hex(other, 8)}.webp")


def test_hash_suffix_already_taken() -> None:
    layout = Layout("png")
    third = SITE + "/ABOUT"
    taken = f"ABOUT~{url_hex(third, 8)}"
    assert layout.assign(SITE + "/about") == "about.png"
    assert layout.assign(SITE + "/" + taken) == taken + ".png"
    assert layout.assign(third) == f"{taken}-2.png"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/a", "/a.png/x"),  # file first, then a directory of the same name
        ("/a.png/x", "/a"),  # directory first, then a file of the same name
        ("/A", "/a.PNG/x/y/"),
        ("/a.png/b.png/c", "/a.png/b"),
        ("/a.png/b", "/a.png/b.png/c"),
        ("/%C3%A9", "/e%CC%81.png/x"),
    ],
)
def test_file_versus_directory(first: str, second: str) -> None:
    layout = Layout("png")
    assert layout.assign(SITE + first) == name_of(first)
    assert layout.assign(SITE + second) == f"_conflicts/{url_hex(SITE + second, 16)}.png"


def test_file_versus_directory_depends_on_extension() -> None:
    layout = Layout("jpg")
    assert layout.assign(SITE + "/a") == "a.jpg"
    assert layout.assign(SITE + "/a.png/x") == "a.png/x.jpg"


def test_long_names_are_unique_too() -> None:
    layout = Layout("png")
    deep = SITE + "/a" * 40
    assert layout.assign(deep) == f"_long/{url_hex(deep, 16)}.png"
    assert layout.assign(deep + "/") == f"_long/{url_hex(deep + '/', 16)}.png"


# --- Idempotency and restore ----------------------------------------------------

SEQUENCE = [
    "/",
    "/about",
    "/About",
    "/a",
    "/a.png/x",
    "/blog/",
    "/blog/index",
    "/search?q=1",
    "/_long/x",
    "/con",
    "/" + "z" * 400,
    "/d" * 40,
    "/%C3%A9",
    "/e%CC%81",
]


def test_assign_is_idempotent() -> None:
    layout = Layout("png")
    names = [layout.assign(SITE + path) for path in SEQUENCE]
    assert [layout.assign(SITE + path) for path in SEQUENCE] == names
    assert [layout.assign(SITE + path) for path in reversed(SEQUENCE)] == names[::-1]
    assert len(layout) == len(SEQUENCE)
    assert len({key(name) for name in names}) == len(SEQUENCE)


@pytest.mark.parametrize("split", [0, 1, 3, 5, len(SEQUENCE)])
def test_restore_equals_assign(split: int) -> None:
    later = ["/ABOUT", "/a", "/A.png/y", "/Blog/Index", "/CON", "/new", "/search?q=1"]
    original = Layout("png")
    names = [original.assign(SITE + path) for path in SEQUENCE]
    restored = Layout("png")
    for path, name in zip(SEQUENCE[:split], names[:split], strict=True):
        restored.restore(SITE + path, name)
    for path in SEQUENCE[split:]:
        restored.assign(SITE + path)
    assert len(restored) == len(original)
    assert [restored.assign(SITE + p) for p in SEQUENCE] == names
    assert [restored.assign(SITE + p) for p in later] == [original.assign(SITE + p) for p in later]


def test_restore_same_pair_twice() -> None:
    layout = Layout("png")
    layout.restore(SITE + "/a", "a.png")
    layout.restore(SITE + "/a", "a.png")
    assert len(layout) == 1
    assert layout.assign(SITE + "/a") == "a.png"


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("/a", "b.png"),  # /a already has a.png
        ("/b", "A.png"),  # taken (casefold)
        ("/c", "a.png/c.png"),  # a.png is a file
        ("/d", "dir.png"),  # dir.png/ is a directory
        ("/d", "dir"),  # no extension
        ("/e", "e.jpg"),  # another extension
        ("/f", "../f.png"),
        ("/g", "/g.png"),
        ("/h", "h\x00.png"),
        ("/i", "C:/i.png"),
    ],
)
def test_restore_refuses_inconsistent_entries(url: str, entry: str) -> None:
    layout = Layout("png")
    layout.restore(SITE + "/a", "a.png")
    layout.restore(SITE + "/x", "dir.png/x.png")
    with pytest.raises(ResumeMismatch):
        layout.restore(SITE + url, entry)
    assert len(layout) == 2


# --- Invalid URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/relative",
        "example.com/x",
        "ftp://example.com/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/html,x",
        "http://",
        "http://exa mple.com/",
        "http://example.com/\ud800",
        "http://example.com/" + "a" * 3000,
    ],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        entry_name(url, "png")
    layout = Layout("png")
    with pytest.raises(InvalidURL):
        layout.assign(url)
    with pytest.raises(InvalidURL):
        layout.restore(url, "x.png")
    assert len(layout) == 0


# --- Root folder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ("https://example.com", "screenshots-example-com-2024-03-09"),
        ("https://Example.COM/blog/?x=1#y", "screenshots-example-com-2024-03-09"),
        ("https://example.com:443/", "screenshots-example-com-2024-03-09"),
        ("http://example.com:80/", "screenshots-example-com-2024-03-09"),
        ("https://example.com:8443/", "screenshots-example-com-8443-2024-03-09"),
        ("http://example.com:443/", "screenshots-example-com-443-2024-03-09"),
        ("http://127.0.0.1:8000/", "screenshots-127-0-0-1-8000-2024-03-09"),
        ("http://[::1]/", "screenshots-0-0-0-0-0-0-0-1-2024-03-09"),
        ("http://[2001:DB8::1]:81/", "screenshots-2001-db8-0-0-0-0-0-1-81-2024-03-09"),
        ("https://bücher.de/", "screenshots-xn--bcher-kva-de-2024-03-09"),
        ("https://example.com./", "screenshots-example-com-2024-03-09"),
        ("https://my_host.example/", "screenshots-my-host-example-2024-03-09"),
        ("http://user:pw@example.com/", "screenshots-example-com-2024-03-09"),
    ],
)
def test_root_folder(site: str, expected: str) -> None:
    folder = root_folder(site, datetime.date(2024, 3, 9))
    assert folder == expected
    assert is_safe_entry(folder)


def test_root_folder_date_and_long_host() -> None:
    assert root_folder(SITE, datetime.date(999, 1, 2)) == "screenshots-example-com-0999-01-02"
    assert root_folder(SITE, datetime.datetime(2024, 1, 2, 23, 59)).endswith("-2024-01-02")
    host = ".".join(["a" * 60] * 4)
    folder = root_folder(f"https://{host}:8080/", datetime.date(2024, 1, 2))
    assert len(folder) <= 255
    assert folder.endswith("-8080-2024-01-02")
    assert set(folder) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


@pytest.mark.parametrize("site", ["ftp://example.com/", "example.com", ""])
def test_root_folder_invalid(site: str) -> None:
    with pytest.raises(InvalidURL):
        root_folder(site, datetime.date(2024, 1, 1))


# --- is_safe_entry --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("index.png", True),
        ("blog/my-post.png", True),
        ("_long/0123456789abcdef.png", True),
        ("café/日本.webp", True),
        (".well-known/x.png", True),
        ("a b/c.png", True),
        ("x" * 255, True),
        ("/".join(["x" * 255] * 4) + "/" + "y" * 76, True),  # 1100 bytes
        ("", False),
        ("/abs.png", False),
        ("a//b.png", False),
        ("a/", False),
        ("./a.png", False),
        ("a/../b.png", False),
        ("..", False),
        ("a/.. /b.png", False),
        ("a./b.png", False),
        ("a\\b.png", False),
        ("C:/x.png", False),
        ("C:x.png", False),
        ("a:b.png", False),
        ("a\x00b.png", False),
        ("a\nb.png", False),
        ("a\x7fb.png", False),
        ("a\u202eb.png", False),
        ("a\u2028b.png", False),
        ("a\ud800b.png", False),
        ("x" * 256, False),
        ("é" * 128, False),
        ("/".join(["x" * 255] * 4) + "/" + "y" * 77, False),
    ],
)
def test_is_safe_entry(name: str, safe: bool) -> None:
    assert is_safe_entry(name) is safe


# --- Properties -----------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        "/",
        "/",
        "index.html",
        "INDEX.HTML/",
        "_manifest.json",
        "_thumbs",
        "_conflicts/",
        "_long",
        "CONIN$",
        "clock$.x",
        "conout%24",
        ".",
        "..",
        "%",
        "\\",
        ":",
        "?",
        "#",
        "a",
        "A",
        "b",
        ".png",
        ".PNG",
        "~",
        "@",
        "_",
        "_long",
        "index",
        "con",
        "COM¹",
        "%2e",
        "%2F",
        "%5c",
        "%FF",
        "%C3",
        "%00",
        "%20",
        " ",
        "é",
        "e\u0301",
        "É",
        "ß",
        "SS",
        "ſ",
        "İ",
        "ǰ",
        "\u202e",
        "\u200b",
        "\u2028",
        "\ufeff",
        "\x00",
        "\t",
        "\n",
        "\x7f",
        "日本",
        "🙂",
    ]
)
_LONG = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["x", "é", "%00", "日", "/a", "a/"]),
    st.integers(min_value=30, max_value=400),
)
_PATHS = st.lists(st.one_of(_TOKENS, _TOKENS, _TOKENS, st.text(max_size=4), _LONG), max_size=24)
_URLS = st.builds(
    lambda origin, parts: origin + "".join(parts),
    st.sampled_from(["https://example.com/", "http://EXAMPLE.com:8080/", "http://a/"]),
    _PATHS,
)
# A tiny alphabet, so that names collide and files meet directories of the same name.
_CLASHING_URLS = st.builds(
    lambda parts: SITE + "/" + "".join(parts),
    st.lists(st.sampled_from(["a", "A", "a.png/", "A.PNG/", "b", "e\u0301", "é.png/"]), max_size=4),
)
_FAST = settings(max_examples=150, deadline=None)


def _assign_all(layout: Layout, urls: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for url in urls:
        try:
            pairs.append((url, layout.assign(url)))
        except InvalidURL:
            continue
    return pairs


@_FAST
@given(_URLS, st.sampled_from(["png", "jpg", "webp"]))
def test_entry_name_is_total_and_safe(url: str, extension: str) -> None:
    try:
        name = entry_name(url, extension)
    except InvalidURL:
        return
    assert is_safe_entry(name), name
    assert name.endswith("." + extension)
    assert len(name.encode()) <= 1024
    assert not _clashes_with_the_archive(name), name
    assert not any(_opens_a_device(part) for part in name.split("/")), name
    assert entry_name(url, extension) == name
    assert Layout(extension).assign(url) == name  # the first URL keeps the plain name


@_FAST
@given(st.lists(st.one_of(_URLS, _CLASHING_URLS), max_size=30))
def test_layout_properties(urls: list[str]) -> None:
    layout = Layout("png")
    pairs = _assign_all(layout, urls)
    by_url = {parse_http_url(url).href: name for url, name in pairs}
    names = list(by_url.values())
    assert len(layout) == len(by_url)
    # Safe, and unique after NFC + casefold for distinct URLs.
    assert all(is_safe_entry(name) for name in names)
    keys = [key(name) for name in names]
    assert len(set(keys)) == len(keys)
    # No entry is a directory of another.
    directories = {k[:i] for k in keys for i, char in enumerate(k) if char == "/"}
    assert directories.isdisjoint(keys)
    # No entry is, or sits under, one of the archive's own names; none opens a device.
    assert not any(_clashes_with_the_archive(name) for name in names)
    assert not any(_opens_a_device(part) for name in names for part in name.split("/"))
    # Idempotent: the same URL (in any spelling) keeps its name.
    for url, name in pairs:
        assert layout.assign(url) == name
        assert by_url[parse_http_url(url).href] == name
    # Stable: the same list gives the same names.
    assert _assign_all(Layout("png"), urls) == pairs
    # Restoring the run, then continuing, behaves like the original layout.
    restored = Layout("png")
    for url, name in pairs[: len(pairs) // 2]:
        restored.restore(url, name)
    assert _assign_all(restored, urls) == pairs
    extra = [url + "x" for url in urls] + [url.upper() for url in urls]
    assert _assign_all(restored, extra) == _assign_all(layout, extra)


@_FAST
@given(
    st.lists(
        st.sampled_from(["/a", "/A", "/a.png", "/a.png/", "/a.png/b", "/A.PNG/b.png/c"]),
        max_size=12,
    )
)
def test_file_and_directory_never_clash(paths: list[str]) -> None:
    layout = Layout("png")
    keys = [key(layout.assign(SITE + path)) for path in paths]
    unique = set(keys)
    directories = {k[:i] for k in unique for i, char in enumerate(k) if char == "/"}
    assert directories.isdisjoint(unique)
    assert len(unique) == len({parse_http_url(SITE + path).href for path in paths})


def test_intermediate_screenshots_sit_next_to_their_page() -> None:
    layout = Layout("png")
    entry, shots = layout.assign_shots(
        "https://example.com/blog/post", ["after", "../../evil", "after", "dialog open"]
    )
    assert entry == "blog/post.png"
    assert shots["after"] == "blog/post@after.png"
    assert set(shots) == {"after", "../../evil", "dialog open"}
    for name in shots.values():
        assert is_safe_entry(name) and name.startswith("blog/post@") and name.endswith(".png")
    assert len(set(shots.values()) | {entry}) == 4
    # a PDF page's screenshots are images; a page with its own format keeps it
    pdf, pdf_shots = Layout("png").assign_shots("https://example.com/", ["first"], extension="pdf")
    assert pdf == "index.pdf" and pdf_shots == {"first": "index@first.png"}
    # reserved names are never given to another URL, and come back on --resume
    clash, _ = layout.assign_shots("https://example.com/blog/post@after")
    assert clash not in shots.values()
    again = Layout("png")
    again.restore("https://example.com/blog/post", entry, shots)
    other, _ = again.assign_shots("https://example.com/blog/post@after")
    assert other == clash
