"""``SitemapParser``: one document of any sitemap format, fed chunk by chunk.

It ties the stages of reading one document together: the prolog guard (``_prolog``:
encoding, DTD refusal, what the document is), then the XML reader (``_xml``) or the
plain-text reader (``_text``), under one byte budget. It does no I/O and undoes no
compression (``_inflate`` does that before feeding).
"""

from __future__ import annotations

from typing import Final, final

from .._exceptions import BulkError, ResponseTooLarge
from ._entry import Entry, Skipped
from ._prolog import Prolog, Start
from ._text import TextReader
from ._xml import XMLReader

__all__ = ["DEFAULT_MAX_BYTES", "SitemapParser"]

DEFAULT_MAX_BYTES: Final = 50 * 2**20
# Larger chunks are read in slices of this size (bounds the transient copies).
_SLICE: Final = 2**20

# Parser states.
_PROLOG: Final = 0  # encoding not chosen, or root element not found yet
_XML: Final = 1
_TEXT: Final = 2
_DONE: Final = 3  # nothing more to read (HTML, unknown, root element ended)


@final
class SitemapParser:
    """Incremental parser for one sitemap document (any format).

    Feed the document's (already inflated) bytes as they arrive, then call
    ``close``. Entries come back in document order as soon as their element is
    complete; the parser never dedupes (the caller does, across documents).

    Args:
        url: The document's final URL (after redirects): the base for relative
            RSS/Atom links (relative ``<loc>`` values are skipped and counted in
            ``skipped``).
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
        self._state = _PROLOG
        self._closed = False
        self._error: BulkError | None = None
        self._prolog = Prolog()
        self._xml: XMLReader | None = None
        self._text: TextReader | None = None
        self._skipped = Skipped()

    @property
    def kind(self) -> str:
        """``urlset``, ``sitemapindex``, ``rss``, ``atom``, ``text``, ``html`` or ``unknown``.

        The best knowledge so far; final after ``close``.
        """
        return self._xml.kind if self._xml is not None else self._kind

    @property
    def skipped(self) -> Skipped:
        """Values skipped so far for not being absolute URLs (``<loc>`` must be)."""
        return self._skipped

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
        self._close_xml(out)
        return out

    # --- plumbing --------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("SitemapParser used after close()")

    def _fail(self, error: BulkError) -> None:
        self._error = error
        self._close_xml([], failed=True)
        raise error

    def _close_xml(self, out: list[Entry], *, failed: bool = False) -> None:
        xml = self._xml
        if xml is not None:
            xml.close(out, failed=failed)
            self._kind = xml.kind
            self._xml = None
        if self._state == _XML:
            self._state = _DONE

    def _run(self, data: bytes, *, final: bool) -> list[Entry]:
        out: list[Entry] = []
        try:
            if self._state == _PROLOG:
                start = self._prolog.feed(data, final=final)
                if start is None:
                    return out
                text = self._begin(start)
            elif self._state == _DONE:
                return out
            else:
                text = self._prolog.decode(data, final=final)
            if self._xml is not None:
                self._xml.feed(text, out, final=final)
                if self._xml.done:
                    self._close_xml(out)
            elif self._text is not None:
                self._text.feed(text, out, final=final)
        except BulkError as exc:
            self._fail(exc)
        return out

    def _begin(self, start: Start) -> str:
        """Set up the reader for what the prolog found; the text it must read first."""
        if start.kind == "xml":
            self._xml = XMLReader(self._url, start.root, self._skipped)
            self._state = _XML
        elif start.kind == "text":
            self._kind = "text"
            self._text = TextReader(self._url)
            self._state = _TEXT
        else:
            self._kind = start.kind
            self._state = _DONE
        return start.text
