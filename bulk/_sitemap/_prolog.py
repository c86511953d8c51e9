"""The prolog guard: a document's encoding, and what it is, decided before any parsing.

``Prolog`` reads a document's first bytes and text up to its root element:

    raw bytes -> encoding (BOM, UTF-16/32 sniffing, the XML declaration)
              -> decoded text -> scan up to the root element
                   DOCTYPE / ENTITY / markup declarations: refused (InvalidSitemap)
                   ``<!DOCTYPE html>`` / ``<html>``: an HTML page, read no further
                   no markup at all: a plain-text sitemap, one URL per line

Why here and not in lxml: libxml2 decides the encoding itself when given raw bytes,
so a scan over raw bytes can miss a DOCTYPE that libxml2 would find (UTF-16,
UTF-7...). Every document is therefore decoded here and scanned as text, and the XML
reader is handed exactly the text that was scanned (as UTF-8, without its XML
declaration): what was scanned is what is parsed. Every decision is made on fixed
prefixes (``_DECL_WINDOW``, ``_PROLOG_WINDOW``, ``_TEXT_WINDOW``), so any chunking
of the same bytes decides the same way.

Why not defusedxml: its lxml support is deprecated (0.7.1 warns on import) and only
inspects a tree after the whole document was parsed, which a streaming reader never
has; its other parsers wrap the stdlib's expat, which cannot recover from the
malformed sitemaps found in the wild. This guard refuses the same things (DTDs,
entity and markup declarations, external references) before any parser runs.
"""

from __future__ import annotations

import codecs
import re
from typing import Final, final

import attrs

from .._exceptions import InvalidSitemap

__all__ = ["Prolog", "Start"]

# The XML declaration must end within this many bytes to be honoured.
_DECL_WINDOW: Final = 1024
# Text before the root element (comments, PIs) is read up to this many characters.
_PROLOG_WINDOW: Final = 2**20
# A document that does not start with markup is searched this far for a late
# ``<?xml``/``<urlset`` (PHP warnings printed before the sitemap) before it is
# taken for a plain-text sitemap.
_TEXT_WINDOW: Final = 4096

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


@final
@attrs.frozen
class Start:
    """What a document turned out to be, once its prolog was read.

    Args:
        kind: ``xml`` (a root element was found), ``text`` (no markup: one URL per
            line), ``html`` or ``unknown`` (nothing to read).
        text: The decoded text from the root element's ``<`` on (``xml``) or from
            the start of the document (``text``).
        root: The root element's qualified name (``xml``).
    """

    kind: str
    text: str = ""
    root: str = ""


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
class Prolog:
    """Decodes one document and finds where its content starts (sans-IO).

    Feed bytes until ``feed`` returns a ``Start``; from then on, ``decode`` turns the
    rest of the document into text with the encoding that was chosen.

    Resource handling:
        Holds at most ``_PROLOG_WINDOW`` characters of text (plus the bytes of an
        unfinished XML declaration) before deciding.
    """

    def __init__(self) -> None:
        self._head = b""
        self._decoder: codecs.IncrementalDecoder | None = None
        self._text = ""

    def feed(self, data: bytes, *, final: bool) -> Start | None:
        """Read more of the document's beginning.

        Args:
            data: The next bytes.
            final: No more bytes will come (the decision is forced).

        Returns:
            What the document is and where its content starts, or ``None`` while
            more bytes are needed to decide.

        Raises:
            InvalidSitemap: A DOCTYPE or an entity/markup declaration before the
                root element (refused, never parsed).
        """
        if self._decoder is None:
            self._head += data
            if not self._choose_encoding(final=final):
                return None
            data, self._head = self._head, b""
        assert self._decoder is not None
        self._text += self._decoder.decode(data, final)
        return self._read(final=final)

    def decode(self, data: bytes, *, final: bool) -> str:
        """The text of the next bytes after a ``Start`` (the chosen encoding)."""
        assert self._decoder is not None
        return self._decoder.decode(data, final)

    # --- encoding ----------------------------------------------------------------------

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
        return True

    # --- prolog ------------------------------------------------------------------------

    def _read(self, *, final: bool) -> Start | None:
        """Scan up to the root element; ``None`` while more text is needed to decide."""
        text = self._text
        size = len(text)
        limit = min(size, _PROLOG_WINDOW)
        i = 0
        while True:
            while i < size and text[i] in _XML_SPACE:
                i += 1
            if i >= limit:
                if final or size >= _PROLOG_WINDOW:
                    return self._settle("unknown")
                return None
            if text[i] != "<":
                return self._no_markup(i, final=final)
            nxt = text[i + 1 : i + 2]
            if not nxt:
                return self._settle("unknown") if final else None
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
                    return None  # the name may go on
                return self._root(match.group(), i)

    def _incomplete(self, *, final: bool) -> Start | None:
        """A comment or PI not closed (yet): wait, unless it can no longer close."""
        if final or len(self._text) >= _PROLOG_WINDOW:
            return self._settle("unknown")
        return None

    def _settle(self, kind: str, text: str = "", root: str = "") -> Start:
        self._text = ""
        return Start(kind, text, root)

    def _declaration(self, i: int, *, final: bool) -> Start | None:
        """``<!`` before the root element: HTML's DOCTYPE, or refused."""
        window = self._text[i : i + 256]
        if not final and len(window) < 256 and ">" not in window and "[" not in window:
            return None
        match = _DOCTYPE_NAME.match(window)
        if match is not None and match.group(1).lower() == "html":
            return self._settle("html")
        if match is not None or window[2:8].upper() == "DOCTYP":
            raise InvalidSitemap("sitemap refused: it has a DOCTYPE (DTDs are not accepted)")
        if _DECLARATION.match(window):
            raise InvalidSitemap("sitemap refused: it has a markup declaration (<!ENTITY...)")
        return self._settle("unknown")

    def _no_markup(self, i: int, *, final: bool) -> Start | None:
        """The document does not start with an element: junk first, or plain text."""
        text = self._text
        if len(text) < _TEXT_WINDOW and not final:
            return None
        match = _LATE_START.search(text, i, _TEXT_WINDOW)
        if match is not None:
            if match.group("html"):
                return self._settle("html")
            # A sitemap after some junk: read it from there (its prolog included).
            # The junk is never parsed, but a DTD in it is refused all the same.
            if _JUNK_DECLARATION.search(text, i, match.start()):
                raise InvalidSitemap("sitemap refused: it has a DOCTYPE (DTDs are not accepted)")
            self._text = text[match.start() :]
            return self._read(final=final)
        sample = text[:_TEXT_WINDOW]
        if "\x00" in sample or sample.count("\ufffd") * 20 > len(sample):
            return self._settle("unknown")  # binary, not text
        return self._settle("text", text)

    def _root(self, qname: str, i: int) -> Start:
        if qname.rpartition(":")[2].lower() == "html":
            return self._settle("html")
        return self._settle("xml", self._text[i:], qname)
