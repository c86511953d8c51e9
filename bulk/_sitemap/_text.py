"""The plain-text sitemap reader: one absolute http(s) URL per line."""

from __future__ import annotations

from typing import Final, final

from .._urls import MAX_URL_LENGTH
from ._entry import Entry, EntryKind, normalise

__all__ = ["TextReader"]

# A line longer than this cannot hold a usable URL; it is skipped without being
# buffered.
_MAX_LINE: Final = 4 * MAX_URL_LENGTH


@final
class TextReader:
    """Reads the URLs of a plain-text sitemap, from decoded text (sans-IO).

    Lines that do not start with ``http://`` or ``https://`` are ignored; ``\\r\\n``,
    ``\\n`` and old Mac ``\\r`` line ends are all accepted.

    Args:
        url: The document's final URL (normalisation's base).

    Resource handling:
        Holds at most one unfinished line of ``_MAX_LINE`` characters.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._line = ""
        self._skip_line = False

    def feed(self, text: str, out: list[Entry], *, final: bool) -> None:
        """Read the next text; append the entries of its complete lines to ``out``."""
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
        base = self._url
        for line in parts:
            value = line.strip()
            if value[:8].lower().startswith(("http://", "https://")):
                url = normalise(value, base)
                if url is not None:
                    out.append(Entry(EntryKind.PAGE, url))
