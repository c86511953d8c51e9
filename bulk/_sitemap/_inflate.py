"""Inflation: gzip undone by magic bytes, against a byte budget (sans-IO).

Sitemaps are often gzipped files (``sitemap.xml.gz``), served with or without a
``Content-Encoding``, sometimes both at once; some are named ``.gz`` and are not.
``Inflater`` decides on the bytes alone, and a gzip bomb fails after at most one
budget's worth of work.
"""

from __future__ import annotations

import zlib
from typing import Final, final

from .._exceptions import InvalidSitemap, ResponseTooLarge
from ._parser import DEFAULT_MAX_BYTES

__all__ = ["Inflater"]

# Nested gzip layers undone by one Inflater (gzip file sent with Content-Encoding gzip).
_MAX_GZIP_LAYERS: Final = 3
_GZIP_MAGIC: Final = b"\x1f\x8b"


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
