"""Sans-IO sitemap reading: bytes in, page and sitemap URLs out.

``SitemapParser`` reads one document of any sitemap format (sitemaps.org ``urlset``
and ``sitemapindex`` in any namespace, plain text, RSS 2.0/1.0, Atom) fed chunk by
chunk as bytes arrive, and hands back each URL as soon as the element holding it is
complete. It does no I/O: ``_discover.py`` fetches, and undoes gzip with ``Inflater``
before feeding.

How one document is read:

    raw bytes -> encoding (BOM, UTF-16/32 sniffing, the XML declaration)
              -> decoded text -> prolog scan up to the root element
                   DOCTYPE / ENTITY / markup declarations: refused (InvalidSitemap)
                   ``<!DOCTYPE html>`` / ``<html>``: an HTML page, read no further
                   no markup at all: a plain-text sitemap, one URL per line
              -> text repaired for recovery (bare ``&`` escaped), re-encoded as
                 UTF-8 -> lxml ``XMLPullParser`` (recover, no DTD, no network,
                 no entity expansion) filtered to the few tags that carry URLs

Why it is shaped this way:

- lxml never sees a DTD. libxml2 decides the encoding itself when given raw bytes,
  so a scan over raw bytes can miss a DOCTYPE that libxml2 would find (UTF-16,
  UTF-7...). Every document is therefore decoded here, scanned as text, and handed
  to lxml as UTF-8 without its XML declaration: what was scanned is exactly what is
  parsed. (After the root element has started, a ``<!DOCTYPE``/``<!ENTITY`` is an
  error libxml2 does not recover from: reading stops there, keeping what came
  before, and lxml never sees it either.)
- libxml2's recovery mangles a bare ``&``: ``?a=1&b=2`` comes out as ``?a=1=2``
  and ``&b;c`` silently loses ``&b;c``; and a push parser stalls on ``&`` until it
  sees a ``;``. So every ``&`` that does not start one of XML's five predefined
  entities or a character reference is escaped before parsing (outside CDATA
  sections, where ``&`` is already literal). There is no DTD, so no other entity
  could ever be defined: the value is kept exactly as written.
- A URL is only taken from an element whose end tag was read. libxml2 closes
  open elements when the input ends, which would turn a truncated
  ``<loc>http://exa`` into a URL; events that only appear when the parser is closed
  are dropped for that reason.
- Memory stays flat: the tag filter keeps Python work to the URL-bearing elements,
  and after every chunk the finished elements along the open path are deleted, so
  the tree never holds more than about one chunk (whatever elements an attacker
  uses).
- Normalisation is ``bulk._urls.page_url``'s. Its full parse costs ~40 µs per URL,
  most of a sitemap's reading time, so ``_normalise`` recognises URLs that are
  already canonical (~0.8 µs) or asks ada for just the serialised URL (~3 µs),
  and leaves only fragments and failures to ``page_url`` itself.
"""

from __future__ import annotations

import codecs
import contextlib
import enum
import re
import zlib
from typing import Final, final

import attrs
from ada_url import join_url
from lxml import etree

from ._exceptions import BulkError, InvalidSitemap, InvalidURL, ResponseTooLarge
from ._urls import MAX_URL_LENGTH, page_url, parse_http_url

__all__ = ["Entry", "EntryKind", "Inflater", "SitemapParser", "parse_robots"]

DEFAULT_MAX_BYTES: Final = 50 * 2**20
#: Sitemap URLs taken from one robots.txt at most.
MAX_ROBOTS_SITEMAPS: Final = 500

# --- sniffing bounds (fixed prefixes, so any chunking decides the same way) ---------
# The XML declaration must end within this many bytes to be honoured.
_DECL_WINDOW: Final = 1024
# Text before the root element (comments, PIs) is read up to this many characters.
_PROLOG_WINDOW: Final = 2**20
# A document that does not start with markup is searched this far for a late
# ``<?xml``/``<urlset`` (PHP warnings printed before the sitemap) before it is
# taken for a plain-text sitemap.
_TEXT_WINDOW: Final = 4096
# Larger chunks are read in slices of this size (bounds the transient copies).
_SLICE: Final = 2**20
# A plain-text line longer than this cannot hold a usable URL; it is skipped
# without being buffered.
_MAX_LINE: Final = 4 * MAX_URL_LENGTH
# Nested gzip layers undone by one Inflater (gzip file sent with Content-Encoding gzip).
_MAX_GZIP_LAYERS: Final = 3
_GZIP_MAGIC: Final = b"\x1f\x8b"

_XML_BASE: Final = "{http://www.w3.org/XML/1998/namespace}base"
_XML_SPACE: Final = " \t\r\n\ufeff"

_BOMS: Final = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_DECL_ENCODING: Final = re.compile(
    rb"""<\?xml\s[^>]*?\bencoding\s*=\s*["']\s*([A-Za-z][A-Za-z0-9._:\-]{0,39})\s*["']""",
    re.IGNORECASE,
)
_NAME: Final = re.compile(r"[^\W\d][\w.:\-]*")
_DOCTYPE_NAME: Final = re.compile(r"<!doctype\s+([^\s\[>]+)", re.IGNORECASE)
_DECLARATION: Final = re.compile(r"<![A-Za-z]")
_JUNK_DECLARATION: Final = re.compile(r"<!(?:doctype|entity)", re.IGNORECASE)
# Where a sitemap starts after junk (a PHP warning), or proof that it is an HTML page.
_LATE_START: Final = re.compile(
    r"<\?xml[\s?]|<(?:[^\W\d][\w.\-]*:)?(?:urlset|sitemapindex|rss|feed)[\s>/]"
    r"|(?P<html><!doctype\s+html|<html[\s>])",
    re.IGNORECASE,
)
# After the root element starts: CDATA sections and comments (whose content is
# literal) and declarations, which cannot legally appear there: libxml2 gives up
# on them, and so do we.
_SPECIAL: Final = re.compile(
    r"<!(?:(\[CDATA\[)|(--)|[Dd][Oo][Cc][Tt][Yy][Pp][Ee]|[Ee][Nn][Tt][Ii][Tt][Yy])"
)
_BARE_AMP: Final = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")
# Longest construct that must not be split between two feeds to lxml ("<!DOCTYPE",
# "&#x10FFFF;"): a chunk's last few characters wait for the next chunk from a "<",
# "&", "]" or "-" on.
_HOLD_BACK: Final = 11

# An absolute http(s) URL that WHATWG parsing leaves exactly as it is (see
# ``_normalise``; tests compare it with ``page_url`` on generated URLs).
_CANONICAL: Final = re.compile(
    # Host: lower-case labels; the last one must not read as a number (IPv4).
    r"https?://(?:[a-z0-9-]++\.)*+(?!0x)[a-z0-9-]*?[a-z][a-z0-9-]*+"
    # Path: segments that are neither "." nor ".." (nor their %2e spellings).
    r"(?:/(?!\.|%2[eE])[A-Za-z0-9\-._~!$&'()*+,;=:@%]*+)++"
    r"(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%/?]++)?"
)
_ROBOTS_SITEMAP: Final = re.compile(r"^[ \t\ufeff]*sitemap[ \t]*:[ \t]*([^\n#]*)", re.I | re.M)

_ROOT_KINDS: Final = {
    "urlset": "urlset",
    "sitemapindex": "sitemapindex",
    "rss": "rss",
    "rdf": "rss",
    "feed": "atom",
}
_LOC_TAGS: Final = ("loc",)
_RSS_TAGS: Final = ("item", "link", "guid")
_ATOM_TAGS: Final = ("entry", "link")
_FILTERS: Final = {
    "urlset": _LOC_TAGS,
    "sitemapindex": _LOC_TAGS,
    "rss": _RSS_TAGS,
    "atom": _ATOM_TAGS,
    "unknown": (*_LOC_TAGS, *_RSS_TAGS, "entry"),
}

# Parser states.
_HEAD: Final = 0  # raw bytes, encoding not chosen yet
_PROLOG: Final = 1  # decoded, looking for the root element
_XML: Final = 2
_TEXT: Final = 3
_DONE: Final = 4  # nothing more to read (HTML, unknown, root element ended)

# What a URL-bearing element means, from (its tag, its parent's tag).
_PAIR_NONE: Final = 0
_PAIR_PAGE_LOC: Final = 1
_PAIR_SITEMAP_LOC: Final = 2
_PAIR_RSS_LINK: Final = 3
_PAIR_RSS_GUID: Final = 4
_PAIR_ATOM_LINK: Final = 5
# What an element is, from its tag alone.
_ROLE_OTHER: Final = 0
_ROLE_LOC: Final = 1
_ROLE_CHILD: Final = 2  # link or guid: meaning depends on the parent
_ROLE_RECORD: Final = 3  # RSS item or Atom entry


class EntryKind(enum.Enum):
    """What an entry's URL points at."""

    PAGE = "page"
    SITEMAP = "sitemap"


@final
@attrs.frozen
class Entry:
    """One URL read from a sitemap.

    Args:
        kind: A page to capture, or another sitemap to read.
        url: Absolute http(s) URL, normalised by ``bulk._urls.page_url``.
    """

    kind: EntryKind
    url: str


def _normalise(raw: str, base: str) -> str | None:
    """``page_url(raw, base)``, without its full parse where the result is known.

    ``page_url`` reads a dozen properties off an ada URL (~40 µs, most of a
    sitemap's reading time). Two shortcuts give the same answer for almost every
    URL a sitemap holds:

    - A URL already in WHATWG canonical form (``_CANONICAL``: lower-case scheme
      and ASCII host that is neither punycode nor numeric, no port, userinfo,
      dot segment, fragment, or character the parser would percent-encode) is
      returned as is (~0.8 µs).
    - Otherwise ``join_url`` (the same ada parse ``page_url`` starts with, ~3 µs)
      gives the serialised URL; without a fragment, every later step of
      ``page_url`` returns it unchanged (an http(s) URL that parses has a host).

    Anything else (fragments, failures) goes through ``page_url`` itself.
    """
    text = raw.strip()
    if not text or len(text) > MAX_URL_LENGTH:
        return None
    if "xn--" not in text and _CANONICAL.fullmatch(text) is not None:
        return text
    try:
        href = join_url(base, text)
    except ValueError:
        return None
    if href.startswith(("https://", "http://")) and "#" not in href and len(href) <= MAX_URL_LENGTH:
        return href
    return page_url(raw, base)


def _split_tag(tag: str) -> tuple[str, str]:
    """``(namespace part, local name)`` of an lxml tag.

    A prefix that recovery left unbound (``sm:loc``) stands in for the namespace.
    """
    cut = max(tag.rfind("}"), tag.rfind(":"))
    return tag[: cut + 1], tag[cut + 1 :]


def _classify_pair(tag: str, parent_tag: str) -> int:
    ns, local = _split_tag(tag)
    parent_ns, parent_local = _split_tag(parent_tag)
    # An element only counts in its parent's namespace, so a stray <image:loc>
    # directly inside <url> is not taken for the page.
    if ns != parent_ns:
        return _PAIR_NONE
    local = local.lower()
    parent_local = parent_local.lower()
    if local == "loc":
        if parent_local == "url":
            return _PAIR_PAGE_LOC
        if parent_local == "sitemap":
            return _PAIR_SITEMAP_LOC
    elif local == "link":
        if parent_local == "item":
            return _PAIR_RSS_LINK
        if parent_local == "entry":
            return _PAIR_ATOM_LINK
    elif local == "guid" and parent_local == "item":
        return _PAIR_RSS_GUID
    return _PAIR_NONE


def _classify_tag(tag: str) -> int:
    local = _split_tag(tag)[1].lower()
    if local == "loc":
        return _ROLE_LOC
    if local in ("link", "guid"):
        return _ROLE_CHILD
    if local in ("item", "entry"):
        return _ROLE_RECORD
    return _ROLE_OTHER


def _tag_filter(root_local: str, kind: str) -> list[str] | None:
    """lxml ``tag=`` filter for a document, or ``None`` for every element.

    Tags are matched in the common spellings (``loc``, ``LOC``, ``Loc``); a root
    element in any other case (``urlSet``) means anything goes, and every element
    is looked at.
    """
    if root_local not in (root_local.lower(), root_local.upper(), root_local.capitalize()):
        return None
    names = {root_local}
    for name in _FILTERS[kind]:
        names.update((name, name.upper(), name.capitalize()))
    return sorted("{*}" + name for name in names)


def _codec_for(declared: bytes | None) -> str:
    """The Python codec for an 8-bit document's declared encoding (UTF-8 if unusable).

    A declared UTF-16/32 on a document without a BOM whose declaration reads as
    ASCII is a mislabel (libxml2 ignores it too).
    """
    if not declared:
        return "utf-8"
    name = declared.decode("ascii", "replace")
    try:
        codec = codecs.lookup(name).name
        probe = '<?xml encoding="">'
        # bytes.decode refuses codecs that are not text encodings (rot13, base64).
        if probe.encode("ascii").decode(codec) != probe:
            return "utf-8"
    except (LookupError, ValueError):
        return "utf-8"
    if codec.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        return "utf-8"
    return codec


@final
class SitemapParser:
    """Incremental parser for one sitemap document (any format).

    Feed the document's (already inflated) bytes as they arrive, then call
    ``close``. Entries come back in document order as soon as their element is
    complete; the parser never dedupes (the caller does, across documents).

    Args:
        url: The document's final URL (after redirects): the base for relative
            values.
        max_bytes: Bytes this parser accepts in all.

    Resource handling:
        Memory stays flat however large the document: finished elements are
        dropped after every chunk and at most a few KiB of text are held between
        chunks.
    """

    def __init__(self, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._url = url
        self._max_bytes = max_bytes
        self._bytes_read = 0
        self._kind = "unknown"
        self._state = _HEAD
        self._closed = False
        self._error: BulkError | None = None
        self._out: list[Entry] = []
        # Before the encoding is chosen / before the root element is found.
        self._head = b""
        self._decoder: codecs.IncrementalDecoder | None = None
        self._prolog = ""
        # XML.
        self._pull: etree.XMLPullParser | None = None
        self._root: etree._Element | None = None
        self._carry = ""
        # "]]>" or "-->" while inside a CDATA section or a comment.
        self._literal_end: str | None = None
        self._roles: dict[str, int] = {}
        self._pairs: dict[tuple[str, str], int] = {}
        # The RSS item / Atom entry being read, and what it said so far.
        self._record: etree._Element | None = None
        self._record_link: tuple[str, str] | None = None
        self._record_guid: str | None = None
        # Plain text.
        self._line = ""
        self._skip_line = False

    @property
    def kind(self) -> str:
        """``urlset``, ``sitemapindex``, ``rss``, ``atom``, ``text``, ``html`` or ``unknown``.

        The best knowledge so far; final after ``close``.
        """
        return self._kind

    @property
    def bytes_read(self) -> int:
        """Bytes fed so far."""
        return self._bytes_read

    def feed(self, data: bytes) -> list[Entry]:
        """Read the next chunk of the document.

        Args:
            data: The next bytes, in order (any size, even one byte).

        Returns:
            The entries this chunk completed, in document order.

        Raises:
            ResponseTooLarge: More than ``max_bytes`` bytes were fed.
            InvalidSitemap: The document has a DOCTYPE or an entity/markup
                declaration before its root element (refused, never parsed).
        """
        self._check_usable()
        self._bytes_read += len(data)
        if self._bytes_read > self._max_bytes:
            self._fail(ResponseTooLarge(f"sitemap larger than {self._max_bytes} bytes"))
        if not data or self._state == _DONE:
            return []
        if len(data) <= _SLICE:
            return self._run(data, final=False)
        # A large chunk (a well-compressed sitemap inflates ~50x) is read in
        # slices, so the text copies made on the way stay small.
        out: list[Entry] = []
        view = memoryview(data)
        for start in range(0, len(data), _SLICE):
            out += self._run(bytes(view[start : start + _SLICE]), final=False)
            if self._state == _DONE:
                break
        return out

    def close(self) -> list[Entry]:
        """Finish the document.

        Returns:
            The entries completed by the end of the input. An element cut off by
            the end of the input is not one of them.

        Raises:
            InvalidSitemap: As for ``feed`` (a document shorter than a chunk is
                only judged here).
        """
        self._check_usable()
        self._closed = True
        out = self._run(b"", final=True)
        self._finish_xml()
        self._decoder = None
        return out

    # --- plumbing --------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("SitemapParser used after close()")

    def _fail(self, error: BulkError) -> None:
        self._error = error
        self._finish_xml()
        raise error

    def _run(self, data: bytes, *, final: bool) -> list[Entry]:
        out: list[Entry] = []
        self._out = out
        try:
            if self._state == _HEAD:
                self._head += data
                if not self._choose_encoding(final=final):
                    return out
                data, self._head = self._head, b""
            if self._state == _DONE:
                return out
            assert self._decoder is not None
            text = self._decoder.decode(data, final)
            if self._state == _PROLOG:
                self._prolog += text
                text = self._read_prolog(final=final)
            if self._state == _XML:
                self._feed_xml(text, final=final)
            elif self._state == _TEXT:
                self._feed_lines(text, final=final)
        except BulkError as exc:
            self._fail(exc)
        return out

    # --- encoding and prolog ---------------------------------------------------------

    def _choose_encoding(self, *, final: bool) -> bool:
        """Pick the codec from the first bytes; ``False`` while more are needed."""
        head = self._head
        if len(head) < 4 and not final:
            return False
        codec = None
        for bom, name in _BOMS:
            if head.startswith(bom):
                head = head[len(bom) :]
                codec = name
                break
        if codec is None:
            # No BOM: XML 1.0 appendix F, from how "<" or whitespace is laid out.
            b = head[:4].ljust(4, b"\x01")
            if b[0] == 0 and b[1] == 0 and b[2] == 0 and b[3]:
                codec = "utf-32-be"
            elif b[0] and b[1] == 0 and b[2] == 0 and b[3] == 0:
                codec = "utf-32-le"
            elif b[0] == 0 and b[1] and b[2] == 0 and b[3]:
                codec = "utf-16-be"
            elif b[0] and b[1] == 0 and b[2] and b[3] == 0:
                codec = "utf-16-le"
        if codec is None:
            # The declaration is honoured only if it ends within the first
            # _DECL_WINDOW bytes, whatever the chunking.
            more = not final and len(head) < _DECL_WINDOW
            skip = len(head) - len(head.lstrip(b" \t\r\n"))
            start = head[skip : skip + 5].lower()
            declared = None
            if len(start) < 5 and b"<?xml".startswith(start):
                if more:
                    return False
            elif start == b"<?xml":
                end = head.find(b"?>", skip, _DECL_WINDOW)
                if end < 0 and more:
                    return False
                if end >= 0:
                    match = _DECL_ENCODING.match(head, skip, end)
                    declared = match.group(1) if match else None
            codec = _codec_for(declared)
        self._decoder = codecs.getincrementaldecoder(codec)(errors="replace")
        self._head = head
        self._state = _PROLOG
        return True

    def _read_prolog(self, *, final: bool) -> str:
        """Scan up to the root element; returns the text from there on.

        Sets the state: XML (root element found), TEXT (no markup), or DONE
        (HTML page, or nothing usable). Returns ``""`` with the state unchanged
        while more text is needed to decide.
        """
        text = self._prolog
        size = len(text)
        limit = min(size, _PROLOG_WINDOW)
        i = 0
        while True:
            while i < size and text[i] in _XML_SPACE:
                i += 1
            if i >= limit:
                if final or size >= _PROLOG_WINDOW:
                    return self._settle("unknown")
                return ""
            if text[i] != "<":
                return self._no_markup(i, final=final)
            nxt = text[i + 1 : i + 2]
            if not nxt:
                return self._settle("unknown") if final else ""
            if nxt == "?":  # XML declaration or processing instruction
                end = text.find("?>", i + 2, limit)
                if end < 0:
                    return self._incomplete(final=final)
                i = end + 2
            elif text.startswith("<!--", i):
                end = text.find("-->", i + 4, limit)
                if end < 0:
                    return self._incomplete(final=final)
                i = end + 3
            elif nxt == "!":
                return self._declaration(i, final=final)
            else:
                match = _NAME.match(text, i + 1, limit)
                if match is None:
                    return self._no_markup(i, final=final)
                if match.end() >= size and not final:
                    return ""  # the name may go on
                return self._start_xml(match.group(), i)

    def _incomplete(self, *, final: bool) -> str:
        """A comment or PI not closed (yet): wait, unless it can no longer close."""
        if final or len(self._prolog) >= _PROLOG_WINDOW:
            return self._settle("unknown")
        return ""

    def _settle(self, kind: str) -> str:
        """Nothing (more) to read in this document."""
        self._kind = kind
        self._state = _DONE
        self._prolog = ""
        return ""

    def _declaration(self, i: int, *, final: bool) -> str:
        """``<!`` before the root element: HTML's DOCTYPE, or refused."""
        text = self._prolog
        window = text[i : i + 256]
        if not final and len(window) < 256 and ">" not in window and "[" not in window:
            return ""
        match = _DOCTYPE_NAME.match(window)
        if match is not None and match.group(1).lower() == "html":
            return self._settle("html")
        if match is not None or window[2:8].upper() == "DOCTYP":
            raise InvalidSitemap("sitemap refused: it has a DOCTYPE (DTDs are not accepted)")
        if _DECLARATION.match(window):
            raise InvalidSitemap("sitemap refused: it has a markup declaration (<!ENTITY...)")
        return self._settle("unknown")

    def _no_markup(self, i: int, *, final: bool) -> str:
        """The document does not start with an element: junk first, or plain text."""
        text = self._prolog
        if len(text) < _TEXT_WINDOW and not final:
            return ""
        match = _LATE_START.search(text, i, _TEXT_WINDOW)
        if match is not None:
            if match.group("html"):
                return self._settle("html")
            # A sitemap after some junk: read it from there (its prolog included).
            # The junk is never parsed, but a DTD in it is refused all the same.
            if _JUNK_DECLARATION.search(text, i, match.start()):
                raise InvalidSitemap("sitemap refused: it has a DOCTYPE (DTDs are not accepted)")
            self._prolog = text[match.start() :]
            return self._read_prolog(final=final)
        sample = text[:_TEXT_WINDOW]
        if "\x00" in sample or sample.count("\ufffd") * 20 > len(sample):
            return self._settle("unknown")  # binary, not text
        self._kind = "text"
        self._state = _TEXT
        self._prolog = ""
        return text

    def _start_xml(self, qname: str, i: int) -> str:
        local = qname.rpartition(":")[2]
        lower = local.lower()
        if lower == "html":
            return self._settle("html")
        kind = _ROOT_KINDS.get(lower, "unknown")
        self._kind = kind
        self._pull = etree.XMLPullParser(
            events=("start", "end"),
            tag=_tag_filter(local, kind),
            recover=True,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=True,
            collect_ids=False,
        )
        self._state = _XML
        text = self._prolog[i:]
        self._prolog = ""
        return text

    # --- XML -------------------------------------------------------------------------

    def _feed_xml(self, text: str, *, final: bool) -> None:
        if self._carry:
            text = self._carry + text
            self._carry = ""
        if not final and text:
            # Keep a construct that may continue in the next chunk ("<!DOC", "&am",
            # "]]") whole, so the repairs below see it in one piece.
            size = len(text)
            low = max(0, size - _HOLD_BACK)
            cut = size
            for ch in "<&]-":
                pos = text.find(ch, low)
                if 0 <= pos < cut:
                    cut = pos
            if cut < size:
                self._carry = text[cut:]
                text = text[:cut]
        if not text:
            return
        text, stop = self._repair(text)
        pull = self._pull
        assert pull is not None
        try:
            pull.feed(text.encode("utf-8", "replace"))
        except etree.XMLSyntaxError:
            stop = True
        self._drain(accept=True)
        if stop:
            self._state = _DONE
        if self._state == _DONE:
            self._finish_xml()
        elif self._root is not None:
            self._prune()

    def _repair(self, text: str) -> tuple[str, bool]:
        """Escape bare ``&`` outside CDATA; cut at a declaration after the root.

        CDATA sections and comments are tracked the way libxml2 reads them, so a
        ``<!DOCTYPE`` inside one is text, and an ``&`` inside CDATA stays literal.

        Returns:
            The text to parse, and whether reading must stop after it.
        """
        if self._literal_end is None and "<!" not in text:
            return (_BARE_AMP.sub("&amp;", text) if "&" in text else text), False
        parts: list[str] = []
        pos = 0
        size = len(text)
        while pos < size:
            if self._literal_end is not None:
                end = text.find(self._literal_end, pos)
                if end < 0:
                    parts.append(text[pos:])
                    break
                parts.append(text[pos : end + 3])
                pos = end + 3
                self._literal_end = None
                continue
            match = _SPECIAL.search(text, pos)
            end = match.start() if match is not None else size
            segment = text[pos:end]
            parts.append(_BARE_AMP.sub("&amp;", segment) if "&" in segment else segment)
            if match is None:
                break
            if match.group(1) is None and match.group(2) is None:
                # A DOCTYPE or ENTITY inside the document is an error libxml2 does not
                # recover from; what came before it stands, nothing after is read.
                return "".join(parts), True
            parts.append(match.group())
            pos = match.end()
            self._literal_end = "]]>" if match.group(1) else "-->"
        return "".join(parts), False

    def _drain(self, *, accept: bool) -> None:
        """Turn the parser's pending events into entries (or drop them)."""
        pull = self._pull
        if pull is None:
            return
        roles = self._roles
        pairs = self._pairs
        base = self._url
        out = self._out
        for event, elem in pull.read_events():
            if event == "start":
                if self._root is None:
                    self._root = elem.getroottree().getroot()
                continue
            tag = elem.tag
            role = roles.get(tag)
            if role is None:
                role = roles[tag] = _classify_tag(tag)
            if role == _ROLE_OTHER:
                if elem is self._root:
                    # libxml2 reads nothing after the root element; neither do we.
                    self._state = _DONE
                continue
            if not accept:
                continue
            if role == _ROLE_RECORD:
                if elem is self._record:
                    self._end_record(out)
                continue
            parent = elem.getparent()
            if parent is None:
                continue
            key = (tag, parent.tag)
            pair = pairs.get(key)
            if pair is None:
                pair = pairs[key] = _classify_pair(*key)
            if pair in (_PAIR_PAGE_LOC, _PAIR_SITEMAP_LOC):
                text = elem.text
                if text is None:
                    continue
                url = _normalise(text, base)
                if url is None:
                    continue
                if pair == _PAIR_PAGE_LOC:
                    out.append(Entry(EntryKind.PAGE, url))
                    if self._kind == "unknown":
                        self._kind = "urlset"
                else:
                    out.append(Entry(EntryKind.SITEMAP, url))
                    if self._kind == "unknown":
                        self._kind = "sitemapindex"
            elif pair != _PAIR_NONE:
                self._record_child(pair, elem, parent)

    def _record_child(self, pair: int, elem: etree._Element, parent: etree._Element) -> None:
        """Remember what a link/guid says about the RSS item or Atom entry it is in."""
        if parent is not self._record:
            self._record = parent
            self._record_link = None
            self._record_guid = None
        if pair == _PAIR_RSS_LINK:
            text = elem.text
            if self._record_link is None and text is not None and text.strip():
                self._record_link = (text, self._url)
        elif pair == _PAIR_RSS_GUID:
            # RSS 2.0: isPermaLink defaults to true; "false" means an opaque id.
            perma = elem.get("isPermaLink")
            text = elem.text
            if (
                self._record_guid is None
                and text is not None
                and (perma is None or perma.strip().lower() == "true")
            ):
                self._record_guid = text
        elif self._record_link is None:  # Atom link
            rel = (elem.get("rel") or "alternate").strip().lower()
            media = (elem.get("type") or "html").lower()
            href = elem.get("href")
            if (
                href is not None
                and rel in ("alternate", "http://www.iana.org/assignments/relation/alternate")
                and "html" in media
            ):
                self._record_link = (href, self._xml_base(elem))

    def _end_record(self, out: list[Entry]) -> None:
        link, guid = self._record_link, self._record_guid
        self._record = self._record_link = self._record_guid = None
        if link is not None:
            url = _normalise(*link)
        elif guid is not None:
            url = _normalise(guid, self._url)
        else:
            return
        if url is not None:
            out.append(Entry(EntryKind.PAGE, url))

    def _xml_base(self, elem: etree._Element) -> str:
        """The base URL in scope at ``elem`` (xml:base on it and its ancestors)."""
        bases: list[str] = []
        node: etree._Element | None = elem
        while node is not None:
            value = node.get(_XML_BASE)
            if value is not None:
                bases.append(value.strip())
            node = node.getparent()
        base = self._url
        for value in reversed(bases):
            # An unusable xml:base leaves the outer base in force.
            with contextlib.suppress(ValueError):
                base = join_url(base, value)
        return base

    def _prune(self) -> None:
        """Delete finished elements along the open path (the tree stays ~one chunk).

        At every level only the last child can still be open; libxml2 appends to
        it and to its trailing text, so it is kept and everything before it goes.
        """
        node = self._root
        while node is not None:
            count = len(node)
            if count == 0:
                return
            if count > 1:
                del node[: count - 1]
            node = node[0]

    def _finish_xml(self) -> None:
        """Close lxml; anything only its end-of-input recovery produced is dropped."""
        pull = self._pull
        if pull is None:
            return
        if self._carry and self._state == _XML and self._error is None:
            text, _ = self._repair(self._carry)
            self._carry = ""
            with contextlib.suppress(etree.XMLSyntaxError):
                pull.feed(text.encode("utf-8", "replace"))
            self._drain(accept=True)
        # Raised when nothing usable was parsed at all: the entries read stand.
        with contextlib.suppress(etree.XMLSyntaxError):
            pull.close()
        self._drain(accept=False)
        self._pull = self._root = self._record = None
        self._record_link = self._record_guid = None
        self._carry = ""
        if self._state == _XML:
            self._state = _DONE

    # --- plain text ------------------------------------------------------------------

    def _feed_lines(self, text: str, *, final: bool) -> None:
        if "\r" in text:
            text = text.replace("\r", "\n")  # old Mac line ends; "\r\n" is a blank line
        parts = text.split("\n")
        if self._skip_line:
            if len(parts) == 1 and not final:
                return
            parts[0] = ""  # the rest of an overlong line
            self._skip_line = False
        elif self._line:
            parts[0] = self._line + parts[0]
        self._line = ""
        if not final:
            pending = parts.pop()
            if len(pending) > _MAX_LINE:
                self._skip_line = True
            else:
                self._line = pending
        out = self._out
        base = self._url
        for line in parts:
            value = line.strip()
            if value[:8].lower().startswith(("http://", "https://")):
                url = _normalise(value, base)
                if url is not None:
                    out.append(Entry(EntryKind.PAGE, url))


@final
class Inflater:
    """Undoes gzip by magic bytes against a byte budget, incrementally (sans-IO).

    A stream that starts with ``1f 8b`` is inflated (several gzip members are read
    in a row, trailing garbage after a member is ignored, and a gzip stream inside
    a gzip stream is undone too, up to three layers: a ``.gz`` file sent with
    ``Content-Encoding: gzip``); anything else passes through unchanged. The name
    and the content type of a response are irrelevant: only the bytes decide.

    Args:
        max_output: Bytes this inflater may return in all.

    Resource handling:
        Never holds more than ``max_output`` + 1 inflated bytes: every
        ``decompress`` call is capped to what is left of the budget, so a gzip bomb
        fails after at most one budget's worth of work.
    """

    def __init__(self, *, max_output: int = DEFAULT_MAX_BYTES) -> None:
        self._max = max_output
        self._produced = 0
        self._head = b""
        self._gzip: bool | None = None  # None until the first two bytes are in
        self._z: zlib._Decompress | None = None
        self._between = b""  # bytes after a finished member, before the next magic
        self._trailing = False  # garbage after the last member: ignored
        self._inner: Inflater | None = None
        self._layer = 1

    def feed(self, data: bytes) -> bytes:
        """Inflate (or pass through) the next chunk.

        Returns:
            The output this chunk produced (possibly empty).

        Raises:
            ResponseTooLarge: The output would exceed ``max_output``.
            InvalidSitemap: The gzip data is corrupt.
        """
        if self._gzip is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            self._gzip = data.startswith(_GZIP_MAGIC)
        if not self._gzip:
            return self._count(data)
        return self._pass_on(self._inflate(data))

    def close(self) -> bytes:
        """Finish the stream.

        Returns:
            The last output (a stream too short to be gzip, passed through).

        Raises:
            InvalidSitemap: The gzip stream was cut off before its end.
            ResponseTooLarge: As for ``feed``.
        """
        if self._gzip is None:
            self._gzip = False
            data, self._head = self._head, b""
            return self._count(data)
        if not self._gzip:
            return b""
        if self._z is not None:
            raise InvalidSitemap("gzip data is truncated")
        if self._inner is None:
            return b""
        return self._inner.close()

    def _count(self, data: bytes) -> bytes:
        self._produced += len(data)
        if self._produced > self._max:
            raise ResponseTooLarge(f"decompressed sitemap larger than {self._max} bytes")
        return data

    def _inflate(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data and not self._trailing:
            if self._z is None:
                data = self._between + data
                self._between = b""
                if len(data) < 2:
                    self._between = data
                    break
                if not data.startswith(_GZIP_MAGIC):
                    self._trailing = True
                    break
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            z = self._z
            try:
                # max_length caps the output of this call to the budget left + 1, so a
                # bomb is caught after materialising at most one byte over budget.
                chunk = z.decompress(data, self._max - self._produced + 1)
            except zlib.error:
                raise InvalidSitemap("corrupt gzip data") from None
            out.append(self._count(chunk))
            if z.eof:
                data = z.unused_data
                self._z = None
            else:
                data = z.unconsumed_tail
        return b"".join(out)

    def _pass_on(self, data: bytes) -> bytes:
        """Hand inflated bytes to the next layer, which undoes gzip inside gzip."""
        if self._layer >= _MAX_GZIP_LAYERS:
            return data
        if self._inner is None:
            if not data:
                return b""
            self._inner = Inflater(max_output=self._max)
            self._inner._layer = self._layer + 1
        return self._inner.feed(data)


def parse_robots(text: str, robots_url: str) -> list[str]:
    """The sitemap URLs a robots.txt lists, in order, without duplicates.

    ``Sitemap:`` lines match in any case with optional blanks before the colon;
    ``#`` starts a comment; relative values resolve against ``robots_url``; anything
    that is not an http(s) URL is dropped. Only line starts are looked at (in C,
    by one regex pass), so a huge or binary robots.txt costs one scan.

    Args:
        text: The robots.txt body, decoded.
        robots_url: Its final URL (after redirects).

    Returns:
        At most ``MAX_ROBOTS_SITEMAPS`` absolute URLs.
    """
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")  # old Mac line ends
    found: dict[str, None] = {}
    for match in _ROBOTS_SITEMAP.finditer(text):
        value = match.group(1).strip()
        if not value:
            continue
        try:
            url = parse_http_url(value, robots_url).without_fragment()
        except InvalidURL:
            continue
        found[url] = None
        if len(found) >= MAX_ROBOTS_SITEMAPS:
            break
    return list(found)
