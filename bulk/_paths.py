"""Page URLs to ZIP entry names: Pixcap's layout, made total, safe and collision-free.

The layout follows Pixcap (``/`` -> ``index.png``, ``/about/`` -> ``about/index.png``,
``/blog/my-post`` -> ``blog/my-post.png``) under a root folder
``screenshots-<host>-<YYYY-MM-DD>/``. Every http(s) URL gets a name, and every name is
safe to extract on Linux, macOS and Windows:

* the URL is read the way Chromium reads it (WHATWG, via ``parse_http_url``), so ``..``,
  ``%2e%2e`` and ``\\`` have been resolved before a path segment is looked at;
* each segment is percent-decoded, NFC-normalised, then anything a file system or an
  unzip tool could misread is re-escaped as ``%XX``;
* every leaf gets the image extension appended, so the page ``/blog`` (``blog.png``)
  and the directory ``/blog/`` (``blog/``) never clash;
* a query string adds ``@`` + 8 hex of its SHA-256 to the leaf;
* over-long components are cut with a hash mark, over-long or over-deep names go to
  ``_long/``, and names that would need a file to also be a directory go to
  ``_conflicts/``;
* the archive's own entries are taken before any page: the root files
  ``_manifest.json`` and ``index.html`` (so ``/index.html/x`` goes to ``_conflicts/``)
  and the folders ``_thumbs/``, ``_long/`` and ``_conflicts/`` (a page folder of that
  name at the root gets a ``_`` prefix). They only exist at the root, the one depth
  where a page can clash with them.

A page's named intermediate screenshots (capture scripts' ``screenshot`` steps) are
named next to its own entry: ``<entry without extension>@<name>.<ext>``
(``blog/my-post.png`` -> ``blog/my-post@after.png``), the name escaped by the same
rules as a path segment. They are reserved when the page's entry is, so no later
page can take them, and a name that is taken gets the same ``~hash`` suffix.

``entry_name`` is the pure mapping of one URL. ``Layout`` assigns names online, in
sitemap order, and makes them unique after NFC + casefold (the way macOS and Windows
compare names): a name depends only on its URL and the URLs assigned before it, so
names can be fixed while URLs are still streaming in.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, final
from urllib.parse import unquote_to_bytes

import attrs

from ._exceptions import InvalidURL, ResumeMismatch, ValidationError
from ._urls import ParsedURL, parse_http_url

__all__ = [
    "SHOT_SEPARATOR",
    "Layout",
    "entry_name",
    "is_safe_entry",
    "root_folder",
]

# The extensions a layout can append (``jpeg``, the capture format's own name, is
# accepted as an alias of ``jpg``; ``pdf`` is the PDF output format).
_EXTENSIONS: Final = ("png", "jpg", "webp", "pdf")
_EXTENSION_ALIASES: Final = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "pdf": "pdf",
}
# What separates a page's name from the name of one of its intermediate screenshots
# (``blog/my-post.png`` -> ``blog/my-post@after.png``).
SHOT_SEPARATOR: Final = "@"

# Most file systems (ext4, APFS, NTFS) cap one name at 255 bytes or UTF-16 units.
_MAX_COMPONENT_BYTES: Final = 255
# Longer names go to ``_long/``: Windows' classic MAX_PATH is 260 and many unzip
# tools choke on very long names, so an archive stays extractable with some headroom.
_MAX_NAME_BYTES: Final = 1024
# Deeper names go to ``_long/``.
_MAX_DEPTH: Final = 32
# The ZIP writer's last check leaves room over _MAX_NAME_BYTES for the root folder.
_MAX_SAFE_NAME_BYTES: Final = 1100

#: The archive's own entries at its root (``_archive`` writes them under these names).
MANIFEST_NAME: Final = "_manifest.json"
GALLERY_NAME: Final = "index.html"
THUMBS_DIR: Final = "_thumbs"
_LONG_DIR: Final = "_long"
_CONFLICTS_DIR: Final = "_conflicts"
# Top-level directories bulk itself writes to; a page's first directory never uses them.
_RESERVED_TOP_DIRS: Final = frozenset({_LONG_DIR, _CONFLICTS_DIR, THUMBS_DIR})
# Files bulk writes at the root. Page entries always end in an image extension, so they
# never take these names as files; every layout starts with them taken, so a page
# that would need one as a directory (/index.html/, /_manifest.json/x) goes to
# _conflicts/ like any other file/directory clash.
_RESERVED_ROOT_FILES: Final = frozenset({MANIFEST_NAME, GALLERY_NAME})

_QUERY_HASH_HEX: Final = 8
_COLLISION_HASH_HEX: Final = 8
_CUT_HASH_HEX: Final = 10
_URL_HASH_HEX: Final = 16
# Idempotency is keyed on 128 bits of the URL's SHA-256 rather than the URL itself:
# a million URLs then cost a million small bytes objects, not a million long strings.
_IDENTITY_BYTES: Final = 16

# Characters Windows forbids in names, plus '%' so that escaping stays reversible.
_ESCAPED_CHARS: Final = frozenset('%/\\:*?"<>|')
# Controls, format characters (zero-width, bidi) and line/paragraph separators can
# hide or reorder what a user sees in a file manager (Trojan Source style spoofing).
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
# All Cf today; listed so the rule holds whatever Unicode version unicodedata has.
_BIDI_CONTROLS: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Windows maps these names to devices whatever extension follows them; it also
# accepts superscript digits (COM¹) as port numbers. CONIN$ and CONOUT$ open the
# console's input and output; CLOCK$ is the old clock device.
_WINDOWS_RESERVED: Final = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$"}
    | {f"{device}{digit}" for device in ("com", "lpt") for digit in "0123456789¹²³"}
)
# Path characters WHATWG leaves unencoded that need no decoding or escaping.
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9!#$&'()+,\-.;=@\[\]^_`{}~]*")
_ESCAPE_OR_CHAR: Final = re.compile(r"%[0-9A-F]{2}|.", re.DOTALL)
_HOST_UNSAFE: Final = re.compile(r"[^a-z0-9]")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_HOST_LABEL: Final = 200


@attrs.frozen
class _Plan:
    """A URL's name before its leaf is fitted: escaped directories and leaf stem."""

    dirs: tuple[str, ...]
    stem: str
    query_tag: str


@final
class Layout:
    """Assigns entry names online, in order; remembers what it gave.

    The first URL to want a name gets it; a later URL whose name is already taken
    (after NFC + casefold) gets ``~`` + 8 hex of its URL's SHA-256 before the
    extension. A name that would put a file where a directory already is, or a
    directory where a file already is, goes to ``_conflicts/<16 hex>.<ext>``. The
    archive's root files (``_manifest.json``, ``index.html``) and its ``_thumbs/``
    folder are taken from the start.

    Args:
        extension: ``png``, ``jpg``, ``webp`` or ``pdf`` (``jpeg`` means ``jpg``): the
            pages' (one may have its own, ``assign_shots``); intermediate
            screenshots take their page's (``png`` for a PDF page).

    Raises:
        ValidationError: ``extension`` is not one of those.
    """

    __slots__ = ("_by_url", "_dirs", "_extension", "_files")

    def __init__(self, extension: str) -> None:
        self._extension = _check_extension(extension)
        # Comparison keys (NFC + casefold) of every entry and of every directory
        # prefix of an entry: all the state later assignments depend on. The
        # archive's own entries come first.
        self._files: set[str] = set(_RESERVED_ROOT_FILES)
        self._dirs: set[str] = {THUMBS_DIR}
        self._by_url: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._by_url)

    def assign(self, url: str) -> str:
        """Give ``url`` its entry name, or return the one it was given before.

        Args:
            url: An absolute http(s) URL; it is identified by its WHATWG canonical form,
                so spellings Chromium treats as the same page get the same name.

        Returns:
            The entry name relative to the root folder, e.g. ``blog/my-post.png``;
            it always satisfies ``is_safe_entry``.

        Raises:
            InvalidURL: ``url`` is not a parseable http(s) URL.
        """
        parsed = _parse(url)
        url_hash = _url_hash(parsed)
        identity = url_hash[:_IDENTITY_BYTES]
        known = self._by_url.get(identity)
        if known is not None:
            return known
        name, key = self._choose(_plan(parsed), url_hash.hex(), self._extension)
        self._register(identity, name, key)
        return name

    def assign_shots(
        self, url: str, shots: Iterable[str] = (), *, extension: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """Give ``url`` its entry and reserve those of its intermediate screenshots.

        Args:
            url: As for ``assign``.
            shots: The names of the page's intermediate screenshots, in order.
            extension: This page's own extension, when it differs from the
                layout's (a URL list item with its own ``format``).

        Returns:
            The page's entry and ``{name: entry}`` for ``shots``. A URL that has
            its entry already gets it again, and no new reservation: its shots
            were reserved with it (this returns ``{}`` for them then).

        Raises:
            InvalidURL: ``url`` is not a parseable http(s) URL.
        """
        parsed = _parse(url)
        url_hash = _url_hash(parsed)
        identity = url_hash[:_IDENTITY_BYTES]
        known = self._by_url.get(identity)
        if known is not None:
            return known, {}
        url_hex = url_hash.hex()
        ext = self._extension if extension is None else _check_extension(extension)
        name, key = self._choose(_plan(parsed), url_hex, ext)
        self._register(identity, name, key)
        extras: dict[str, str] = {}
        for shot in shots:
            if shot in extras:
                continue
            shot_name, shot_key = self._choose_shot(name, shot, url_hex)
            self._register_file(shot_name, shot_key)
            extras[shot] = shot_name
        return name, extras

    def _choose_shot(self, page: str, shot: str, url_hex: str) -> tuple[str, str]:
        *dirs, leaf = page.split("/")
        stem, ext = leaf.rsplit(".", 1)
        plan = _Plan(
            dirs=tuple(dirs), stem=f"{stem}{SHOT_SEPARATOR}{_escape_label(shot)}", query_tag=""
        )
        shot_hex = hashlib.sha256(f"{url_hex}{SHOT_SEPARATOR}{shot}".encode()).hexdigest()
        # Screenshots taken on the way to a PDF are PNG images.
        return self._choose(plan, shot_hex, "png" if ext == "pdf" else ext)

    def restore(
        self,
        url: str,
        entry: str,
        shots: Mapping[str, str] | None = None,
        *,
        extension: str | None = None,
    ) -> None:
        """Re-register an entry given to ``url`` by an earlier run (``--resume``).

        Restoring a run's entries in their original order leaves the layout exactly
        as the original ``assign`` calls did, so later URLs get the names they would
        have got.

        Args:
            url: The URL the entry was assigned to.
            entry: The entry name it was given.
            shots: The entries reserved for its intermediate screenshots
                (``assign_shots``), restored after it in their order.
            extension: The page's own extension, when it had one (``assign_shots``).

        Raises:
            InvalidURL: ``url`` is not a parseable http(s) URL.
            ResumeMismatch: ``entry`` is not a name this layout could have given
                (unsafe, another extension, taken by another URL or by the archive
                itself, a file/directory clash) or ``url`` already has a different
                entry.
        """
        parsed = _parse(url)
        identity = _url_hash(parsed)[:_IDENTITY_BYTES]
        known = self._by_url.get(identity)
        if known is not None:
            if known == entry:
                return
            raise ResumeMismatch(f"{parsed.href} was restored as both {known!r} and {entry!r}")
        ext = self._extension if extension is None else _check_extension(extension)
        if not is_safe_entry(entry) or not entry.endswith("." + ext):
            raise ResumeMismatch(f"{entry!r} is not a {ext} entry bulk could have made")
        key = _key(entry)
        if key.split("/", 1)[0] == THUMBS_DIR:
            raise ResumeMismatch(f"{entry!r} is inside the archive's own {THUMBS_DIR}/")
        if key in self._files or key in self._dirs or self._prefix_is_file(key):
            raise ResumeMismatch(f"{entry!r} clashes with an entry taken before it")
        self._register(identity, entry, key)
        for shot_entry in (shots or {}).values():
            shot_key = _key(shot_entry)
            if (
                not is_safe_entry(shot_entry)
                or not shot_entry.endswith("." + ("png" if ext == "pdf" else ext))
                or shot_key.split("/", 1)[0] == THUMBS_DIR
                or not self._is_free(shot_key)
                or self._prefix_is_file(shot_key)
            ):
                raise ResumeMismatch(
                    f"{shot_entry!r} is not a screenshot entry bulk could have made"
                )
            self._register_file(shot_entry, shot_key)

    def _choose(self, plan: _Plan, url_hex: str, extension: str) -> tuple[str, str]:
        """The name for a new URL (or screenshot), and its key."""
        plain = _render(plan, extension, "")
        if plain is None:
            return self._fallback(_LONG_DIR, url_hex, extension)
        key = _key(plain)
        if key in self._dirs or self._prefix_is_file(key):
            return self._fallback(_CONFLICTS_DIR, url_hex, extension)
        if key not in self._files:
            return plain, key
        # Suffixed names share the plain name's directories, so only the name itself
        # can still be taken.
        for suffix in _suffixes(url_hex):
            name = _render(plan, extension, suffix)
            if name is None:
                return self._fallback(_LONG_DIR, url_hex, extension)
            key = _key(name)
            if self._is_free(key):
                return name, key
        raise AssertionError("unreachable: _suffixes() is endless")  # pragma: no cover

    def _fallback(self, folder: str, url_hex: str, extension: str) -> tuple[str, str]:
        # Files always end in an extension, so a bare ``_long`` or ``_conflicts``
        # can never be a file and these names can never be blocked.
        plan = _Plan(dirs=(folder,), stem=url_hex[:_URL_HASH_HEX], query_tag="")
        for suffix in itertools.chain([""], _suffixes(url_hex)):
            name = _render(plan, extension, suffix)
            assert name is not None
            key = _key(name)
            if self._is_free(key):
                return name, key
        raise AssertionError("unreachable: _suffixes() is endless")  # pragma: no cover

    def _is_free(self, key: str) -> bool:
        return key not in self._files and key not in self._dirs

    def _prefix_is_file(self, key: str) -> bool:
        return any(prefix in self._files for prefix in _prefixes(key))

    def _register(self, identity: bytes, name: str, key: str) -> None:
        self._register_file(name, key)
        self._by_url[identity] = name

    def _register_file(self, name: str, key: str) -> None:
        # Every entry ends in an extension, so bulk's own root files are safe.
        assert key not in _RESERVED_ROOT_FILES, name
        # Share the string when the key is the name (the common, ASCII lowercase case).
        self._files.add(name if key == name else key)
        for prefix in reversed(list(_prefixes(key))):
            if prefix in self._dirs:
                break  # its own prefixes were added with it
            self._dirs.add(prefix)


def entry_name(url: str, extension: str) -> str:
    """The plain entry name of one URL, before collision handling.

    Args:
        url: An absolute http(s) URL.
        extension: ``png``, ``jpg``, ``webp`` or ``pdf`` (``jpeg`` means ``jpg``).

    Returns:
        The name relative to the root folder (``blog/my-post.png``), the one a fresh
        ``Layout`` gives; always satisfies ``is_safe_entry``. Names over 1024 bytes
        or 32 levels are ``_long/<16 hex of the URL's SHA-256>.<ext>``; names under
        one of the archive's root files (``index.html/x.png``) are
        ``_conflicts/<16 hex>.<ext>``.

    Raises:
        InvalidURL: ``url`` is not a parseable http(s) URL.
        ValidationError: ``extension`` is not one of the accepted ones.
    """
    return Layout(extension).assign(url)


def root_folder(site_url: str, day: datetime.date) -> str:
    """The archive's root folder: ``screenshots-<host>-<YYYY-MM-DD>``.

    The host is lowercase ASCII (punycode for IDNs) with every other character as
    ``-``: ``example.com`` -> ``example-com``, ``[::1]`` -> ``0-0-0-0-0-0-0-1``; a
    non-default port is appended as ``-<port>``.

    Args:
        site_url: The site's URL (only its host and port matter).
        day: The date the archive is made.

    Returns:
        A single path component made of ``[a-z0-9-]``.

    Raises:
        InvalidURL: ``site_url`` is not a parseable http(s) URL.
    """
    site = _parse(site_url)
    host = site.hostname.lower()
    if site.host.startswith("["):
        # Expanded groups keep distinct addresses distinct once ':' becomes '-'
        # ('::1' would be '--1').
        host = ":".join(f"{int(group, 16):x}" for group in _ipv6_groups(host))
    label = _HOST_UNSAFE.sub("-", host).strip("-") or "site"
    if len(label) > _MAX_HOST_LABEL:
        mark = hashlib.sha256(label.encode("ascii")).hexdigest()[:_CUT_HASH_HEX]
        label = f"{label[: _MAX_HOST_LABEL - _CUT_HASH_HEX - 1]}-{mark}"
    if site.port != _DEFAULT_PORTS[site.scheme]:
        label = f"{label}-{site.port}"
    # Not strftime: it does not zero-pad years before 1000 on every platform.
    return f"screenshots-{label}-{day.year:04d}-{day.month:02d}-{day.day:02d}"


def is_safe_entry(name: str) -> bool:
    """Whether ``name`` can be written to a ZIP and extracted anywhere without harm.

    The ZIP writer's last guard: the name must be relative and ``/``-separated, with
    no empty, ``.`` or ``..`` component (nor one ending in a dot or space, which
    Windows strips, turning ``.. `` into ``..``), no backslash, no ``:`` (so no drive
    letter or NTFS stream), no control, format or separator character, components of
    at most 255 bytes and at most 1100 bytes in all (UTF-8).

    Args:
        name: A candidate entry name.

    Returns:
        ``True`` when it is safe.
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates cannot be stored in a ZIP
        return False
    if not name or size > _MAX_SAFE_NAME_BYTES:
        return False
    if name.startswith("/") or "\\" in name or ":" in name:
        return False
    if any(unicodedata.category(char) in _ESCAPED_CATEGORIES for char in name):
        return False
    return all(
        part and not part.endswith((".", " ")) and _nbytes(part) <= _MAX_COMPONENT_BYTES
        for part in name.split("/")
    )


def _check_extension(extension: str) -> str:
    try:
        return _EXTENSION_ALIASES[extension]
    except KeyError:
        raise ValidationError(
            f"the image extension must be one of {', '.join(_EXTENSIONS)}, not {extension!r}",
            field="format",
        ) from None


def _parse(url: str) -> ParsedURL:
    # ada hands the text to C++ as UTF-8 and raises UnicodeEncodeError, not ValueError,
    # on a lone surrogate.
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidURL("the URL contains a lone surrogate") from None
    return parse_http_url(url)


def _url_hash(parsed: ParsedURL) -> bytes:
    # The fragment stays: page_url keeps '#!' and '#/' routes because they are
    # distinct pages, and distinct pages must not share a hash.
    return hashlib.sha256(parsed.href.encode("utf-8")).digest()


def _plan(parsed: ParsedURL) -> _Plan:
    # An http(s) pathname always starts with '/'; '/' alone is [''] -> index.
    *raw_dirs, raw_leaf = parsed.path[1:].split("/")
    dirs: list[str] = []
    for depth, raw in enumerate(raw_dirs):
        segment = _unreserve_windows(_escape_segment(raw) or "_")
        if depth == 0 and _key(segment) in _RESERVED_TOP_DIRS:
            segment = "_" + segment
        dirs.append(_fit(segment, ""))
    stem = _unreserve_windows(_escape_segment(raw_leaf) or "index")
    query_tag = ""
    if parsed.query:
        digest = hashlib.sha256(parsed.query.encode("utf-8")).hexdigest()
        query_tag = "@" + digest[:_QUERY_HASH_HEX]
    return _Plan(dirs=tuple(dirs), stem=stem, query_tag=query_tag)


def _render(plan: _Plan, extension: str, suffix: str) -> str | None:
    """The name for ``plan`` with ``suffix`` before the extension; ``None`` if too long."""
    if len(plan.dirs) + 1 > _MAX_DEPTH:
        return None
    leaf = _fit(plan.stem, f"{plan.query_tag}{suffix}.{extension}")
    name = "/".join((*plan.dirs, leaf))
    if _nbytes(name) > _MAX_NAME_BYTES:
        return None
    return name


def _suffixes(url_hex: str) -> Iterator[str]:
    # The counter only matters if two URLs' hashes share a prefix, or a restored
    # entry happens to hold the hashed name: names must be unique even then.
    mark = "~" + url_hex[:_COLLISION_HASH_HEX]
    yield mark
    for n in itertools.count(2):
        yield f"{mark}-{n}"


def _escape_label(name: str) -> str:
    """A screenshot's name as a file-name part: taken literally (not percent-decoded),
    NFC-normalised, escaped like a path segment's characters."""
    text = unicodedata.normalize("NFC", name)
    core = text.rstrip(". ")
    return "".join(map(_escape_char, core)) + "".join(map(_percent, text[len(core) :]))


def _escape_segment(raw: str) -> str:
    """Decode one path segment and re-escape what is unsafe in a file name."""
    # Windows strips trailing dots and spaces: 'a.' would become 'a', and '..' or
    # '. .' would climb out of the directory; so they are escaped too.
    if _PLAIN_SEGMENT.fullmatch(raw):
        # The common case, kept fast: nothing to decode, normalise or escape inside.
        core = raw.rstrip(".")
        return core + "%2E" * (len(raw) - len(core))
    # Bytes that are not valid UTF-8 survive as U+DC80..U+DCFF and go back to %XX.
    text = unicodedata.normalize(
        "NFC", unquote_to_bytes(raw).decode("utf-8", errors="surrogateescape")
    )
    core = text.rstrip(". ")
    return "".join(map(_escape_char, core)) + "".join(map(_percent, text[len(core) :]))


@functools.lru_cache(maxsize=4096)
def _escape_char(char: str) -> str:
    if "\udc80" <= char <= "\udcff":
        return f"%{ord(char) - 0xDC00:02X}"
    if (
        char in _ESCAPED_CHARS
        or char in _BIDI_CONTROLS
        or unicodedata.category(char) in _ESCAPED_CATEGORIES
    ):
        return _percent(char)
    return char


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _unreserve_windows(segment: str) -> str:
    # Windows judges the part before the first dot, ignoring trailing spaces, so
    # 'CON.txt' and 'con .png' open the console device too.
    base = segment.split(".", 1)[0].rstrip(" ")
    return "_" + segment if _key(base) in _WINDOWS_RESERVED else segment


def _fit(text: str, tail: str) -> str:
    """``text + tail``, with ``text`` cut and hash-marked if over 255 bytes in all."""
    room = _MAX_COMPONENT_BYTES - _nbytes(tail)
    if _nbytes(text) <= room:
        return text + tail
    mark = "~" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:_CUT_HASH_HEX]
    return _cut(text, room - len(mark)) + mark + tail


def _cut(text: str, budget: int) -> str:
    """The longest prefix of ``text`` within ``budget`` bytes, not splitting a ``%XX``."""
    used = 0
    end = 0
    for match in _ESCAPE_OR_CHAR.finditer(text):
        size = _nbytes(match.group())
        if used + size > budget:
            break
        used += size
        end = match.end()
    return text[:end]


def _key(name: str) -> str:
    """How macOS/Windows-like file systems compare names: NFC, casefolded, NFC again."""
    if name.isascii():
        return name.lower()  # the same as the general case, for a fraction of the cost
    # casefold() can un-normalise (U+01F0 'ǰ' folds to 'j' + U+030C), hence the second NFC.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def _prefixes(key: str) -> Iterator[str]:
    """``a``, ``a/b`` for ``a/b/c.png``: the directories a name needs."""
    end = key.find("/")
    while end != -1:
        yield key[:end]
        end = key.find("/", end + 1)


def _ipv6_groups(address: str) -> list[str]:
    return ipaddress.IPv6Address(address).exploded.split(":")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))
