"""Hardened HTTP GET for robots.txt and sitemaps (httpx, behind the egress policy).

httpx's automatic decompression runs out of memory on ``Content-Encoding: gzip, gzip``
of 24 KB and on a gzip-bomb redirect body, and its redirect following would skip our
per-hop checks. So this module reads raw bytes only (``aiter_raw``), undoes at most
one content encoding against a byte budget, follows redirects by hand (each hop
checked by the policy, connections made by the policy's transport), and caps the
size and time of every response.
"""

from __future__ import annotations

import email.utils
import math
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Final, final

import attrs
import httpx
import trio

from ._exceptions import BulkError, FetchError, InvalidURL, ResponseTooLarge, URLBlocked
from ._policy import EgressPolicy, policy_client
from ._sitemap._inflate import PIECE_BYTES, inflate_capped
from ._urls import parse_http_url

__all__ = ["FetchLimits", "Fetcher", "Response", "open_fetcher"]

USER_AGENT: Final = "bulk/0.1 (sitemap archiver; +https://github.com/bulk-archiver)"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_RETRYABLE: Final = frozenset({429, 502, 503, 504})


@attrs.frozen(kw_only=True)
class FetchLimits:
    """Bounds on one fetch. Defaults suit robots.txt and sitemaps."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    #: Wall-clock cap for one response, headers to last byte (slow-drip servers end here).
    total_timeout: float = 30.0
    max_redirects: int = 5
    #: Bytes read off the wire for one response body. The sitemap protocol's limit is
    #: 50 MB; like ultimate-sitemap-parser, twice that is accepted (bodies stream, so
    #: memory does not grow with it).
    max_raw_bytes: int = 100 * 2**20
    #: Bytes after undoing the content encoding.
    max_decoded_bytes: int = 100 * 2**20
    retries: int = 1
    retry_after_cap: float = 5.0


@final
class Response:
    """A response whose body is read incrementally, content-encoding already undone."""

    def __init__(
        self, raw: httpx.Response, url: str, chain: tuple[str, ...], limits: FetchLimits
    ) -> None:
        self._raw = raw
        self.url = url
        self.redirect_chain = chain
        self.status = raw.status_code
        self.headers = raw.headers
        self._limits = limits

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def chunks(self, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """The body, decoded from its content encoding, chunk by chunk.

        Args:
            limit: Decoded bytes accepted, if fewer than ``max_decoded_bytes``: a
                compressed body is never inflated much past it.

        Raises:
            ResponseTooLarge: Raw or decoded bytes went over the limits.
            FetchError: Unsupported or stacked encodings, a corrupt stream, a
                transport error, or the total time cap passed.
        """
        decoder = _decoder_for(self.headers.get("content-encoding", ""))
        raw_total = decoded_total = 0
        limits = self._limits
        max_decoded = (
            limits.max_decoded_bytes if limit is None else min(limit, limits.max_decoded_bytes)
        )
        raw_chunks = self._raw.aiter_raw()
        try:
            async for chunk in raw_chunks:
                raw_total += len(chunk)
                if raw_total > limits.max_raw_bytes:
                    raise ResponseTooLarge(f"response body over {limits.max_raw_bytes} bytes")
                # The decoder hands out bounded pieces: a bomb's chunk never comes
                # out as one huge bytes object.
                for out in decoder.feed(chunk, max_decoded - decoded_total):
                    decoded_total += len(out)
                    yield out
            tail = decoder.flush(max_decoded - decoded_total)
            if tail:
                yield tail
        except httpx.HTTPError as exc:
            raise FetchError(f"reading {self.url} failed: {_reason(exc)}") from None
        finally:
            with trio.CancelScope(shield=True):
                await _abandon(self._raw, raw_chunks)

    async def read(self, limit: int) -> bytes:
        """The whole decoded body, refusing more than ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        async with aclosing(self.chunks(limit)) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ResponseTooLarge(f"response body over {limit} bytes")
                parts.append(chunk)
        return b"".join(parts)


class _Identity:
    def feed(self, data: bytes, budget: int) -> Iterator[bytes]:
        if len(data) > budget:
            raise ResponseTooLarge("decoded response over its byte budget")
        return iter((data,) if data else ())

    def flush(self, budget: int) -> bytes:
        return b""


class _Inflate:
    """gzip/deflate against a budget, in pieces of at most ``PIECE_BYTES``."""

    def __init__(self, wbits: int) -> None:
        self._z = zlib.decompressobj(wbits)
        self._raw_deflate_fallback = wbits == zlib.MAX_WBITS  # 'deflate' is often raw

    def feed(self, data: bytes, budget: int) -> Iterator[bytes]:
        """The decoded output of ``data``, lazily, in bounded pieces.

        Raises:
            ResponseTooLarge: Over ``budget`` (while the pieces are taken).
            FetchError: Corrupt compressed data (while the pieces are taken).
        """
        pieces = inflate_capped(
            self._z,
            data,
            budget=budget,
            piece=PIECE_BYTES,
            too_large="decoded response over its byte budget",
        )
        try:
            for out in pieces:
                self._raw_deflate_fallback = False
                yield out
        except zlib.error:
            if self._raw_deflate_fallback:
                # Nothing came out yet: start over as raw deflate.
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._raw_deflate_fallback = False
                yield from self.feed(data, budget)
                return
            raise FetchError("corrupt compressed response") from None
        self._raw_deflate_fallback = False

    def flush(self, budget: int) -> bytes:
        out = self._z.flush()
        if len(out) > budget:
            raise ResponseTooLarge("decoded response over its byte budget")
        return out


async def _abandon(raw: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Stop reading a body early without leaving httpx's generators half-run.

    httpx nests async generators (aiter_raw -> stream -> httpcore stream) and closing
    the outer one does not close the inner ones; trio would later finalize them with
    a ResourceWarning. Closing the response first makes the inner generators end
    (with an error) on their next step, so draining the outer one finishes them all.
    """
    await raw.aclose()
    with trio.move_on_after(1):
        try:
            async for _ in chunks:
                pass
        except (httpx.HTTPError, RuntimeError):
            pass


def _decoder_for(header: str) -> _Identity | _Inflate:
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) > 1:
        raise FetchError(f"stacked content encodings refused: {header[:60]!r}")
    if codings[0] in ("gzip", "x-gzip"):
        return _Inflate(16 + zlib.MAX_WBITS)
    if codings[0] == "deflate":
        return _Inflate(zlib.MAX_WBITS)
    raise FetchError(f"unsupported content encoding {codings[0][:30]!r}")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _policy_error(exc: BaseException) -> BulkError | None:
    """The policy's own error if one caused this transport exception."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, BulkError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _retry_after(headers: httpx.Headers, cap: float) -> float:
    """Seconds to wait before retrying, from ``Retry-After``, always within ``[0, cap]``.

    The header is delay-seconds or an HTTP date; anything else (``soon``, a date
    out of range, digits that are not ASCII) means the default of one second: a
    server's malformed header is never an error of ours.
    """
    default = min(1.0, cap)
    value = headers.get("retry-after", "").strip()
    if not value:
        return default
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError, OSError):
        return default
    if math.isnan(seconds):
        return default
    return max(0.0, min(seconds, cap))


@final
class Fetcher:
    """GETs URLs under the egress policy. Made by ``open_fetcher``."""

    def __init__(
        self, client: httpx.AsyncClient, policy: EgressPolicy, limits: FetchLimits
    ) -> None:
        self._client = client
        self.policy = policy
        self.limits = limits
        self.requests = 0

    @asynccontextmanager
    async def get(self, url: str, *, retry: bool = True) -> AsyncIterator[Response]:
        """GET ``url``, following up to ``max_redirects`` redirects by hand.

        Args:
            url: An absolute http(s) URL.
            retry: Retry once on a connection error, 429 or 502/503/504 (honouring
                ``Retry-After`` up to ``retry_after_cap``).

        Yields:
            The final response (any status; the caller decides what an error status
            means and must not parse its body).

        Raises:
            URLBlocked / InvalidURL: The URL is refused by the policy, or cannot be
                requested at all (a host httpx's IDNA rules refuse).
            FetchError: Transport failure, a bad redirect, too many redirects, or the
                time cap passed.
        """
        limits = self.limits
        attempts = 1 + (limits.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            with trio.move_on_after(limits.total_timeout) as scope:
                try:
                    raw, final, chain = await self._follow(url)
                except FetchError:
                    if last:
                        raise
                    await trio.sleep(min(0.5, limits.retry_after_cap))
                    continue
                try:
                    if raw.status_code in _RETRYABLE and not last:
                        delay = _retry_after(raw.headers, limits.retry_after_cap)
                        await raw.aclose()
                        await trio.sleep(delay)
                        continue
                    yield Response(raw, final, chain, limits)
                    return
                finally:
                    with trio.CancelScope(shield=True):
                        await raw.aclose()
            if scope.cancelled_caught:
                raise FetchError(f"{url} took longer than {limits.total_timeout:g} s")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _follow(self, url: str) -> tuple[httpx.Response, str, tuple[str, ...]]:
        chain: list[str] = []
        current = self.policy.check_url(url).href
        for _ in range(self.limits.max_redirects + 1):
            try:
                # httpx parses the URL again (its own IDNA rules): a host the policy's
                # parser accepts may still be refused here, before any I/O.
                request = self._client.build_request("GET", current)
            except (httpx.InvalidURL, ValueError) as exc:  # idna.IDNAError is a ValueError
                if chain:
                    raise FetchError(
                        f"bad redirect from {chain[-1]}: {_reason(exc)}",
                        details={"location": current[:200]},
                    ) from None
                raise InvalidURL(f"cannot request {current[:200]}: {_reason(exc)}") from None
            self.requests += 1
            try:
                raw = await self._client.send(request, stream=True)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                blocked = _policy_error(exc)
                if blocked is not None:
                    raise blocked from None
                raise FetchError(f"GET {current} failed: {_reason(exc)}") from None
            location = raw.headers.get("location")
            if raw.status_code not in _REDIRECTS or not location:
                return raw, current, tuple(chain)
            await raw.aclose()
            chain.append(current)
            try:
                # Resolved by ada, like Chromium would: httpx's own join re-parses
                # (and IDNA-encodes) with other rules.
                current = self.policy.check_url(parse_http_url(location, current)).href
            except URLBlocked:
                raise
            except BulkError:
                raise FetchError(f"bad redirect from {current}") from None
        raise FetchError(f"more than {self.limits.max_redirects} redirects from {url}")


@asynccontextmanager
async def open_fetcher(
    policy: EgressPolicy, limits: FetchLimits | None = None, *, max_connections: int = 16
) -> AsyncIterator[Fetcher]:
    """An httpx client whose every request and connection passes ``policy``.

    Resource handling: the client and its connections close when the context exits.
    """
    limits = limits or FetchLimits()
    timeout = httpx.Timeout(
        connect=limits.connect_timeout, read=limits.read_timeout, write=10.0, pool=30.0
    )
    async with policy_client(
        policy,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=8),
    ) as client:
        yield Fetcher(client, policy, limits)
