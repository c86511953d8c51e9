"""Inflation: gzip undone by magic bytes, in bounded pieces, against a byte budget.

Sitemaps are often gzipped files (``sitemap.xml.gz``), served with or without a
``Content-Encoding``, sometimes both at once; some are named ``.gz`` and are not.
``Inflater`` decides on the bytes alone.

Two bounds, both inside the inflater (so no caller has to feed it small slices):

- the budget (``max_output``): a gzip bomb fails after at most one budget's worth
  of work, having materialised at most one byte over it;
- the piece (``max_piece``): one step of the output is never larger than this,
  however well the input compresses (deflate reaches ~1,000:1, so a 64 KiB network
  chunk could otherwise come out as 64 MiB at once). Compressed input not inflated
  yet waits in zlib's ``unconsumed_tail`` until the next piece is taken.

``inflate_capped`` is that loop over one zlib stream; ``bulk._fetch`` uses it for
``Content-Encoding`` too.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final, final

from .._exceptions import InvalidSitemap, ResponseTooLarge
from ._parser import DEFAULT_MAX_BYTES

__all__ = ["PIECE_BYTES", "Inflater", "inflate_capped"]

#: Largest piece of output one step of inflation makes.
PIECE_BYTES: Final = 256 * 1024
# Nested gzip layers undone by one Inflater (gzip file sent with Content-Encoding gzip).
_MAX_GZIP_LAYERS: Final = 3
_GZIP_MAGIC: Final = b"\x1f\x8b"


def inflate_capped(
    z: zlib._Decompress, data: bytes, *, budget: int, piece: int, too_large: str
) -> Iterator[bytes]:
    """Inflate ``data`` with ``z``, one piece of at most ``piece`` bytes at a time.

    Lazy: each piece is inflated when it is taken. Stops when ``data`` is used up
    or the compressed stream ends (what follows it is then in ``z.unused_data``).

    Args:
        z: The decompressor (its state carries over between calls).
        data: Compressed bytes.
        budget: Output bytes allowed from this call.
        piece: Largest piece yielded.
        too_large: The message of the error raised over the budget.

    Raises:
        ResponseTooLarge: The output would exceed ``budget`` (at most ``budget`` + 1
            bytes were inflated).
        zlib.error: The data is corrupt (the caller says what that means).
    """
    while True:
        # Never more than budget + 1: one byte over proves the overflow.
        limit = min(piece, budget + 1)
        out = z.decompress(data, limit)
        data = z.unconsumed_tail
        if len(out) > budget:
            raise ResponseTooLarge(too_large)
        budget -= len(out)
        if out:
            yield out
        # Output shorter than the room it had means zlib needs more input.
        if z.eof or (not data and len(out) < limit):
            return


@final
class Inflater:
    """Undoes gzip by magic bytes against a byte budget, incrementally (sans-IO).

    A stream that starts with ``1f 8b`` is inflated (several gzip members are read
    in a row, trailing garbage after a member is ignored, and a gzip stream inside
    a gzip stream is undone too, up to three layers: a ``.gz`` file sent with
    ``Content-Encoding: gzip``); anything else passes through unchanged. The name
    and the content type of a response are irrelevant: only the bytes decide.

    ``feed`` and ``close`` return the output as an iterator of pieces; take every
    piece of one call before the next call.

    Args:
        max_output: Bytes this inflater may return in all.
        max_piece: Largest piece of output returned at once (plain data passing
            through is cut to this size too).

    Resource handling:
        Holds at most one piece of output, the compressed input not inflated yet
        and a few bytes of gzip header: a gzip bomb fails after at most
        ``max_output`` + 1 inflated bytes, made one piece at a time.
    """

    def __init__(
        self, *, max_output: int = DEFAULT_MAX_BYTES, max_piece: int = PIECE_BYTES
    ) -> None:
        if max_piece < 1:
            raise ValueError("max_piece must be at least 1")
        self._max = max_output
        self._piece = max_piece
        self._produced = 0
        self._head = b""
        self._gzip: bool | None = None  # None until the first two bytes are in
        self._z: zlib._Decompress | None = None
        self._between = b""  # bytes after a finished member, before the next magic
        self._trailing = False  # garbage after the last member: ignored
        self._inner: Inflater | None = None
        self._layer = 1

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Inflate (or pass through) the next chunk.

        Returns:
            The output this chunk produces, in pieces of at most ``max_piece`` bytes
            (none while the first two bytes are not in yet).

        Raises:
            ResponseTooLarge: The output would exceed ``max_output`` (while the
                pieces are taken).
            InvalidSitemap: The gzip data is corrupt (while the pieces are taken).
        """
        if self._gzip is None:
            self._head += data
            if len(self._head) < 2:
                return iter(())
            data, self._head = self._head, b""
            self._gzip = data.startswith(_GZIP_MAGIC)
        if not self._gzip:
            return self._pass(data)
        return self._pass_on(self._inflate(data))

    def close(self) -> Iterator[bytes]:
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
            return self._pass(data)
        if not self._gzip:
            return iter(())
        if self._z is not None:
            raise InvalidSitemap("gzip data is truncated")
        if self._inner is None:
            return iter(())
        return self._inner.close()

    def _count(self, data: bytes) -> bytes:
        self._produced += len(data)
        if self._produced > self._max:
            raise ResponseTooLarge(f"decompressed sitemap larger than {self._max} bytes")
        return data

    def _pass(self, data: bytes) -> Iterator[bytes]:
        """Plain data, unchanged, in pieces."""
        step = self._piece
        if len(data) <= step:
            if data:
                yield self._count(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), step):
            yield self._count(bytes(view[start : start + step]))

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while data and not self._trailing:
            if self._z is None:
                data = self._between + data
                self._between = b""
                if len(data) < 2:
                    self._between = data
                    return
                if not data.startswith(_GZIP_MAGIC):
                    self._trailing = True
                    return
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            z = self._z
            pieces = inflate_capped(
                z,
                data,
                budget=self._max - self._produced,
                piece=self._piece,
                too_large=f"decompressed sitemap larger than {self._max} bytes",
            )
            try:
                for out in pieces:
                    self._produced += len(out)
                    yield out
            except zlib.error:
                raise InvalidSitemap("corrupt gzip data") from None
            if z.eof:
                data = z.unused_data
                self._z = None
            else:
                data = b""

    def _pass_on(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """Hand inflated bytes to the next layer, which undoes gzip inside gzip."""
        if self._layer >= _MAX_GZIP_LAYERS:
            yield from pieces
            return
        for data in pieces:
            if self._inner is None:
                self._inner = Inflater(max_output=self._max, max_piece=self._piece)
                self._inner._layer = self._layer + 1
            yield from self._inner.feed(data)
