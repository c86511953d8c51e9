"""Sitemap discovery and expansion: SITE -> page URLs, streamed in document order.

    robots.txt ``Sitemap:`` lines
      -> (only if none) the common paths, probed at once
      -> each sitemap fetched, inflated and parsed incrementally (``_sitemap``)
      -> sitemap indexes expanded depth-first, loop-safe on final URLs
      -> unique page URLs sent on as soon as they are read

Documents are fetched a few ahead of the one being read (``lookahead``) so a site with
an index of 20 children costs about one round trip per 4 children, yet the output
keeps the sitemaps' own order. Each document streams into its own small channel, so
memory stays bounded.

Entries cross that channel in batches (what one network chunk completed, split at
``_BATCH_ENTRIES``, so a well-compressed chunk cannot make one batch huge), and page
URLs go out with ``send_nowait`` while the receiver keeps up: a trio checkpoint costs
~10 µs (a scheduler pass and an epoll call), several times the parse of one URL, so
one per URL would make a sitemap of 50,000 URLs take seconds instead of a fraction.
A full channel still blocks (``send``), so a slow receiver holds discovery back, and
at most ``lookahead`` x (``_CHANNEL_BATCHES`` + 1) batches per index level being read
are in flight.

Budgets (a hostile site cannot make one discovery unbounded), and what is skipped:

- ``max_sitemaps`` documents are fetched in all (the library's and the API's default
  is 100; the CLI scales it with ``--max-pages``, see ``max_sitemaps_for``), index
  nesting is followed ``max_depth`` levels deep, and the whole takes at most
  ``total_timeout``. Expansion is depth-first, so nesting is read to its full depth
  before later siblings spend the budget.
- A child sitemap on another host than its index is not fetched (sitemaps.org: an
  index lists sitemaps of its own site); robots.txt ``Sitemap:`` lines may point
  anywhere, as Google allows, within the same budget.
- Relative ``<loc>`` values are skipped (``_sitemap``), and a child that cannot be
  read is skipped: both are counted (``Discovery.skipped``), never fatal.
- Once ``max_pages`` URLs are sent, the output channel is closed and reading goes on
  for a moment, counting (``count_limit`` URLs, ``count_timeout`` seconds), so that
  ``Discovery.found`` can say how many URLs the sitemaps list in all.

Every limit that cut the list is named in ``Discovery.reasons`` (``truncated`` is then
true); ``warnings`` says what happened in words.

When nothing is found, the error says why, most informative first: a sitemap that
lists no usable page (NO_URLS_FOUND), a sitemap refused as hostile (INVALID_SITEMAP),
the failure of a document that was asked for by name (the user's sitemap URL, a
robots.txt ``Sitemap:`` line or an index entry: its own error, such as
RESPONSE_TOO_LARGE or FETCH_ERROR), else NO_SITEMAP_FOUND (only guesses, which missed).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import aclosing
from typing import Final, TypeVar, final

import attrs
import trio

from ._discovery import (
    DEFAULT_MAX_SITEMAPS,
    SKIPPED_CROSS_HOST,
    SKIPPED_FAILED,
    SKIPPED_RELATIVE,
    DiscoverLimits,
    Discovery,
    StopReason,
    max_sitemaps_for,
)
from ._exceptions import (
    BulkError,
    FetchError,
    InvalidSitemap,
    InvalidURL,
    NoSitemapFound,
    NoURLsFound,
    URLBlocked,
)
from ._fetch import Fetcher, Response
from ._sitemap import Entry, EntryKind, Inflater, SitemapParser, parse_robots
from ._urls import ParsedURL, parse_http_url, site_candidates
from ._util import open_owned_nursery

__all__ = [
    "DEFAULT_MAX_SITEMAPS",
    "DiscoverLimits",
    "Discovery",
    "StopReason",
    "discover",
    "discover_all",
    "is_sitemap_url",
    "max_sitemaps_for",
    "same_host_key",
]

COMMON_PATHS: Final = (
    "sitemap.xml",
    "sitemap_index.xml",
    "sitemap-index.xml",
    "sitemap.xml.gz",
    "wp-sitemap.xml",
)
log = logging.getLogger("bulk.discover")

_SITEMAP_SUFFIXES: Final = (".xml", ".xml.gz", ".gz", ".txt", ".rss", ".atom")
_ROBOTS_LIMIT: Final = 512 * 1024
# Batches of entries a document may read ahead of its turn.
_CHANNEL_BATCHES: Final = 4
# Inflated bytes parsed at a time (the inflater's largest piece), and entries per
# batch (about): what one document holds in memory besides its channel.
_FEED_BYTES: Final = 256 * 1024
_BATCH_ENTRIES: Final = 4096
# Parsed formats that list pages (an index lists only sitemaps).
_PAGE_KINDS: Final = frozenset({"urlset", "rss", "atom", "text"})


def is_sitemap_url(url: ParsedURL) -> bool:
    """Whether a SITE argument names a sitemap document rather than a site."""
    leaf = url.path.rsplit("/", 1)[-1].lower()
    return bool(leaf) and ("sitemap" in leaf or leaf.endswith(_SITEMAP_SUFFIXES))


_E = TypeVar("_E", bound=BulkError)


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (short), for a warning about ``exc``."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _naming(url: str, exc: _E) -> _E:
    """``exc`` with the document's URL in its message (the one line a user sees)."""
    if url in exc.message:
        return exc
    return type(exc)(f"{url}: {exc.message}", details=exc.details)


class _Enough(Exception):
    """Counting went as far as allowed: unwinds the expansion (caught in ``discover``)."""


@final
@attrs.define
class _Doc:
    """One document being read: where it was asked for, where it answered from."""

    url: str
    #: Hosts its children may be on: the one asked, every redirect hop's, the final one.
    hosts: set[str] = attrs.field(factory=set)


def same_host_key(hostname: str) -> str:
    """What ``--same-host`` compares: the host name, the names of this machine as one.

    ``localhost`` (and ``*.localhost``), ``127.0.0.1`` and ``::1`` all mean "this
    machine": a sitemap generated on ``127.0.0.1`` lists the pages the user reached
    as ``localhost``. Other loopback addresses (``127.0.0.2``) stay hosts of their own.
    """
    host = hostname.lower().strip("[]").rstrip(".")
    if host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost"):
        return "localhost"
    try:
        if ipaddress.ip_address(host) == ipaddress.ip_address("::1"):
            return "localhost"
    except ValueError:
        pass
    return host


def _hostname(url: str) -> str | None:
    try:
        return parse_http_url(url).hostname
    except InvalidURL:
        return None


@final
class _Run:
    def __init__(
        self,
        fetcher: Fetcher,
        limits: DiscoverLimits,
        send: trio.MemorySendChannel[str],
        result: Discovery,
    ) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.send = send
        self.result = result
        self.seen_pages: set[str] = set()
        self.visited: set[str] = set()
        self.documents = 0
        self.hosts: set[str] = set()
        # Hosts (``same_host_key``) of the site, and the pages --same-host left out.
        self.host_keys: set[str] = set()
        self.other_hosts: Counter[str] = Counter()
        # Guessed URLs (the common paths): their failures are expected, not errors.
        self.probes: frozenset[str] = frozenset()
        # The sitemap URL the user gave (its own InvalidURL is theirs to hear about).
        self.given: frozenset[str] = frozenset()
        # Documents that turned out to be sitemaps (any recognised format), and
        # whether one of them lists pages rather than sitemaps only.
        self.found_sitemap = False
        self.found_page_list = False
        # Why documents gave nothing, for the error when no page is found.
        self.refusals: list[InvalidSitemap] = []
        self.failures: list[BulkError] = []
        # Requests that got no response at all (a bare domain then tries http).
        self.unreachable: list[FetchError] = []
        # max_pages URLs were sent: the rest is only counted (see the module doc).
        self.counting = False
        self.scope: trio.CancelScope | None = None
        # The first value skipped of each kind, and where, for the warnings.
        self.first_relative: tuple[str, str] | None = None
        self.first_cross_host: tuple[str, str] | None = None

    def add_host(self, hostname: str) -> None:
        """``hostname`` is the site's own (``--same-host`` keeps its pages)."""
        self.hosts.add(hostname)
        self.host_keys.add(same_host_key(hostname))

    def warn(self, url: str, exc: BulkError, note: str = "") -> None:
        self.result.warnings.append(f"{url}: {exc.code}: {exc.message}{note}")

    def failed(self, url: str) -> None:
        """A document asked for by name (not a guess) could not be read."""
        if url not in self.probes:
            self.result.skipped[SKIPPED_FAILED] += 1

    def no_pages_error(self, site: str) -> BulkError:
        """The most informative reason why no page URL was found (see the module doc)."""
        if self.found_page_list and self.other_hosts:
            listed = ", ".join(f"{h} ({n})" for h, n in self.other_hosts.most_common(5))
            more = len(self.other_hosts) - 5
            if more > 0:
                listed += f" and {more} more"
            expected = ", ".join(sorted(self.hosts))
            return NoURLsFound(
                f"--same-host: the sitemaps of {site} list pages only on other hosts: "
                f"{listed}; expected {expected} (archive one of those hosts, or drop "
                "--same-host)"
            )
        if self.found_page_list:
            return NoURLsFound(f"the sitemaps of {site} list no usable page URL")
        if self.refusals:
            return self.refusals[0]
        if self.failures:
            return self.failures[0]
        if self.found_sitemap:
            return NoURLsFound(f"the sitemap indexes of {site} lead to no usable page URL")
        return NoSitemapFound(f"no sitemap found for {site}")

    def summarise_skipped(self) -> None:
        """One warning per kind of value skipped (the counts are in ``skipped``)."""
        skipped = self.result.skipped
        count = skipped[SKIPPED_RELATIVE]
        if count and self.first_relative is not None:
            value, url = self.first_relative
            self.result.warnings.append(
                f"{count} <loc> value{'s' if count > 1 else ''} skipped: not an absolute URL "
                f"(the first: {value!r} in {url})"
            )
        count = skipped[SKIPPED_CROSS_HOST]
        if count and self.first_cross_host is not None:
            child, url = self.first_cross_host
            self.result.warnings.append(
                f"{count} child sitemap{'s' if count > 1 else ''} skipped: not on the host of "
                f"their index (the first: {child} in {url})"
            )

    async def emit(self, entries: list[Entry], children: list[str]) -> None:
        """Send the new page URLs of ``entries`` on; collect the sitemaps in ``children``."""
        seen = self.seen_pages
        send = self.send
        result = self.result
        same_host = self.limits.same_host
        max_pages = self.limits.max_pages
        for entry in entries:
            url = entry.url
            if entry.kind is not EntryKind.PAGE:
                children.append(url)
                continue
            if url in seen:
                continue
            if same_host:
                host = parse_http_url(url).hostname
                if host not in self.hosts and same_host_key(host) not in self.host_keys:
                    if len(self.other_hosts) < 1000 or host in self.other_hosts:
                        self.other_hosts[host] += 1
                    continue
            seen.add(url)
            if self.counting:
                self.count_one_more()
                continue
            result.pages += 1
            # No checkpoint per URL while the receiver keeps up (see the module doc);
            # a full channel still blocks, so a slow consumer still holds discovery back.
            try:
                send.send_nowait(url)
            except trio.WouldBlock:
                await send.send(url)
            if result.pages >= max_pages:
                self.start_counting()

    def start_counting(self) -> None:
        """``max_pages`` URLs sent: the receiver is done; go on only to count."""
        self.counting = True
        self.send.close()
        limits = self.limits
        if limits.count_timeout <= 0:
            # Not counting: whether more URLs were listed is unknown; say it may be so.
            self.result.stop("max_pages")
            raise _Enough
        assert self.scope is not None
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + limits.count_timeout)

    def count_one_more(self) -> None:
        """One unique URL past ``max_pages``: the limit did cut the list."""
        self.result.stop("max_pages")
        if len(self.seen_pages) >= self.limits.count_limit:
            raise _Enough

    def children_on_host(self, doc: _Doc, children: list[str]) -> list[str]:
        """The children of an index that are on its host (the others skipped, counted)."""
        kept: list[str] = []
        for child in children:
            if _hostname(child) in doc.hosts:
                kept.append(child)
                continue
            self.result.skipped[SKIPPED_CROSS_HOST] += 1
            if self.first_cross_host is None:
                self.first_cross_host = (child, doc.url)
        return kept

    async def expand(self, urls: list[str], depth: int) -> None:
        """Read ``urls`` (siblings) in order, fetching up to ``lookahead`` ahead."""
        limits = self.limits
        async with open_owned_nursery() as nursery:
            pending: deque[tuple[_Doc, trio.MemoryReceiveChannel[list[Entry]]]] = deque()
            queue = deque(urls)

            def start_next() -> None:
                while queue and len(pending) < limits.lookahead:
                    url = queue.popleft()
                    if url in self.visited:
                        continue
                    if self.documents >= limits.max_sitemaps:
                        self.result.stop(
                            "max_sitemaps",
                            f"stopped after {limits.max_sitemaps} sitemap documents "
                            "(max_sitemaps); the sitemaps listed after that were not read",
                        )
                        queue.clear()
                        return
                    self.documents += 1
                    self.visited.add(url)
                    doc = _Doc(url)
                    send, recv = trio.open_memory_channel[list[Entry]](_CHANNEL_BATCHES)
                    nursery.start_soon(self.read_document, doc, send)
                    pending.append((doc, recv))

            start_next()
            while pending:
                doc, recv = pending.popleft()
                children: list[str] = []
                async with recv:
                    async for entries in recv:
                        await self.emit(entries, children)
                start_next()
                if children:
                    children = self.children_on_host(doc, children)
                if not children:
                    continue
                if depth >= limits.max_depth:
                    self.result.stop(
                        "max_depth",
                        f"sitemap index nesting deeper than {limits.max_depth} levels not read",
                    )
                else:
                    await self.expand(children, depth + 1)

    async def read_document(self, doc: _Doc, send: trio.MemorySendChannel[list[Entry]]) -> None:
        """Fetch and parse one document into ``send``; its failure is noted, not raised."""
        url = doc.url
        async with send:
            responded = False
            try:
                async with self.fetcher.get(url) as response:
                    responded = True
                    self.result.requests = self.fetcher.requests
                    for hop in (url, *response.redirect_chain, response.url):
                        host = _hostname(hop)
                        if host is not None:
                            doc.hosts.add(host)
                    await self._read_response(url, response, send)
            except InvalidSitemap as exc:
                self.result.refused += 1
                self.refusals.append(_naming(url, exc))
                self.warn(url, exc)
                self.failed(url)
            except InvalidURL as exc:
                # A malformed entry of the site's own is never the user's usage error;
                # the sitemap URL the user gave is.
                self.warn(url, exc)
                self.failed(url)
                if url in self.given:
                    self.failures.append(exc)
            except BulkError as exc:  # FetchError (ResponseTooLarge...), URLBlocked
                self.warn(url, exc)
                self.failed(url)
                if url not in self.probes:
                    self.failures.append(_naming(url, exc))
                if not responded and isinstance(exc, FetchError):
                    self.unreachable.append(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the reader is gone (enough pages): nobody wants the rest
            except Exception as exc:
                # Whatever went wrong in one document (a parser, httpx or idna
                # disagreeing with the policy, a bug), discovery goes on without it.
                log.warning("reading %s failed", url, exc_info=True)
                failure = FetchError(f"{url}: could not be read ({_describe(exc)})")
                self.warn(url, failure)
                self.failed(url)
                if url not in self.probes:
                    self.failures.append(failure)

    async def _read_response(
        self, url: str, response: Response, send: trio.MemorySendChannel[list[Entry]]
    ) -> None:
        if response.url != url:
            if response.url in self.visited:
                return  # a redirect to a sitemap already read (YoAST's /sitemap.xml)
            self.visited.add(response.url)
        if not response.ok:
            # The body of an error response is never parsed.
            self.result.warnings.append(f"{url}: HTTP {response.status}")
            self.failed(url)
            return
        limit = self.limits.max_document_bytes
        # Pieces of at most _FEED_BYTES: one parse call completes a few thousand
        # entries at most, however well the document was compressed.
        inflater = Inflater(max_output=limit, max_piece=_FEED_BYTES)
        parser = SitemapParser(response.url, max_bytes=limit)
        batch: list[Entry] = []
        sent = False

        async def flush() -> None:
            nonlocal batch, sent
            if batch:
                if not sent:
                    sent = True
                    self._count_sitemap(response.url, parser.kind)
                await send.send(batch)
                batch = []

        async def parse(pieces: Iterator[bytes]) -> None:
            for piece in pieces:
                batch.extend(parser.feed(piece))
                if len(batch) >= _BATCH_ENTRIES:
                    await flush()

        try:
            # The document's budget bounds a Content-Encoding's inflation too.
            async with aclosing(response.chunks(limit)) as chunks:
                async for chunk in chunks:
                    await parse(inflater.feed(chunk))
                    await flush()  # what this chunk completed goes on at once
            await parse(inflater.close())
            batch.extend(parser.close())
            await flush()
        except BulkError as exc:
            await flush()  # entries read before the error are whole: they count
            if not sent:
                raise  # nothing read: the document failed (refused, too large...)
            # Over a limit or cut off: what was read counts, and the loss is said.
            self.result.stop("incomplete_document")
            self.warn(url, exc, "; the rest of this sitemap was not read")
            return
        finally:
            self._count_skipped(response.url, parser)
        if not sent and parser.kind in ("urlset", "sitemapindex", "rss", "atom"):
            self._count_sitemap(response.url, parser.kind)

    def _count_skipped(self, url: str, parser: SitemapParser) -> None:
        skipped = parser.skipped
        if skipped.relative:
            self.result.skipped[SKIPPED_RELATIVE] += skipped.relative
            if self.first_relative is None and skipped.first_relative is not None:
                self.first_relative = (skipped.first_relative, url)

    def _count_sitemap(self, url: str, kind: str) -> None:
        self.found_sitemap = True
        if kind in _PAGE_KINDS:
            self.found_page_list = True
        self.result.sitemaps.append(url)


async def _robots_sitemaps(run: _Run, origin: str) -> list[str] | None:
    """Sitemap URLs robots.txt lists; ``None`` when the origin could not be reached.

    Once the origin has answered, a robots.txt that cannot be read (too large, a
    gzip bomb, a corrupt or unsupported encoding, cut off) is an empty one.
    """
    robots_url = origin + "/robots.txt"
    responded = False
    try:
        async with run.fetcher.get(robots_url) as response:
            responded = True
            run.result.requests = run.fetcher.requests
            run.visited.add(robots_url)
            # A robots.txt that redirects to www. (or https) tells where the site lives.
            run.add_host(parse_http_url(response.url).hostname)
            if not response.ok:
                return []
            body = await response.read(_ROBOTS_LIMIT)
            final = response.url
    except FetchError as exc:
        if not responded:
            run.unreachable.append(exc)  # why, for the error if no origin answers
            return None
        run.warn(robots_url, exc, "; robots.txt ignored")
        return []
    except (InvalidURL, URLBlocked):
        raise  # the site itself (or where its robots.txt redirects) is refused
    except Exception as exc:
        # Never an uncoded error out of discovery: an unreadable robots.txt is an
        # empty one (an origin that never answered: unreachable).
        log.warning("reading %s failed", robots_url, exc_info=True)
        if not responded:
            return None
        run.warn(robots_url, FetchError(_describe(exc)), "; robots.txt ignored")
        return []
    text = body.decode("utf-8", errors="replace")
    return parse_robots(text, final)


def _probe_urls(start: ParsedURL) -> list[str]:
    urls = [f"{start.origin}/{p}" for p in COMMON_PATHS]
    base = start.path if start.path.endswith("/") else start.path.rsplit("/", 1)[0] + "/"
    if base != "/":
        urls += [f"{start.origin}{base}{p}" for p in COMMON_PATHS]
    return urls


async def discover(
    site: str,
    fetcher: Fetcher,
    send: trio.MemorySendChannel[str],
    limits: DiscoverLimits | None = None,
    *,
    sitemap: bool | None = None,
) -> Discovery:
    """Find a site's sitemaps and send its unique page URLs, in document order.

    Args:
        site: A bare domain (``example.com``), an origin with an optional path, or a
            sitemap URL (then that sitemap is the whole scope).
        sitemap: True: ``site`` is a sitemap URL whatever it looks like (the API's
            ``sitemap_url``); False: it is a site; None: judged by its path.
        fetcher: Fetches under the egress policy (``_fetch.open_fetcher``).
        send: Receives each page URL as soon as it is read; closed on return.
        limits: Bounds; defaults to ``DiscoverLimits()``.

    Returns:
        The report: sitemaps read, pages sent, ``found`` (how many the sitemaps list,
        when known), what cut the list (``reasons``), what was skipped, warnings.

    Raises:
        InvalidURL: ``site`` is not a usable URL.
        URLBlocked: The site is refused by the egress policy (or, when no page is
            found, a sitemap asked for by name redirects where it may not go).
        FetchError: The site could not be reached at all, or no page was found and a
            sitemap asked for by name could not be read (``ResponseTooLarge`` for
            one over its byte budget).
        NoURLsFound / InvalidSitemap / NoSitemapFound: Nothing to capture, and why
            (the module doc gives the order).
    """
    limits = limits or DiscoverLimits()
    result = Discovery()
    async with send:
        run = _Run(fetcher, limits, send, result)
        candidates = site_candidates(site)
        for cand in candidates:
            fetcher.policy.check_url(cand)  # URL_BLOCKED before any request
        with trio.move_on_after(limits.total_timeout) as scope:
            run.scope = scope
            try:
                await _discover(run, candidates, sitemap)
            except _Enough:
                pass  # counted as far as allowed: how many there are is not known
            else:
                result.found = len(run.seen_pages)
        if scope.cancelled_caught and not run.counting:
            result.stop("timeout", f"discovery stopped after {limits.total_timeout:g} s")
            if result.pages == 0:
                raise FetchError(f"discovery took longer than {limits.total_timeout:g} s")
    result.requests = fetcher.requests
    run.summarise_skipped()
    if result.pages == 0:
        raise run.no_pages_error(site)
    return result


async def _discover(run: _Run, candidates: list[ParsedURL], sitemap: bool | None) -> None:
    first = candidates[0]
    run.hosts.clear()
    run.host_keys.clear()
    for cand in candidates:
        run.add_host(cand.hostname)
    if sitemap or (sitemap is None and is_sitemap_url(first)):
        # The sitemap is the whole scope; a bare domain tries https, then http.
        for cand in candidates:
            run.result.site = cand.origin
            run.given = frozenset({cand.href})
            run.unreachable.clear()
            run.failures.clear()
            run.result.skipped[SKIPPED_FAILED] = 0
            await run.expand([cand.href], 1)
            if run.found_sitemap or not run.unreachable:
                return
            run.visited.discard(cand.href)
        raise run.unreachable[-1]
    sitemaps: list[str] | None = None
    origin = first
    for cand in candidates:
        sitemaps = await _robots_sitemaps(run, cand.origin)
        if sitemaps is not None:
            origin = cand
            break
    if sitemaps is None:
        why = f": {run.unreachable[-1].message}" if run.unreachable else ""
        raise FetchError(f"could not reach {first.authority}{why}")
    run.result.site = origin.origin
    if not sitemaps:
        sitemaps = _probe_urls(origin)
        run.probes = frozenset(sitemaps)
        # Probes that miss are expected: only keep their warnings if nothing is found.
        before = len(run.result.warnings)
        await run.expand(sitemaps, 1)
        if run.found_sitemap:
            del run.result.warnings[before:]
        return
    await run.expand(sitemaps, 1)


async def discover_all(
    site: str,
    fetcher: Fetcher,
    limits: DiscoverLimits | None = None,
    *,
    sitemap: bool | None = None,
) -> tuple[list[str], Discovery]:
    """``discover`` collected into a list (for the API)."""
    urls: list[str] = []
    found: list[Discovery] = []
    send, recv = trio.open_memory_channel[str](math.inf)

    async def run() -> None:
        found.append(await discover(site, fetcher, send, limits, sitemap=sitemap))

    async with open_owned_nursery() as nursery:
        nursery.start_soon(run)
        # Collected as it arrives (the channel never holds the whole list), taking
        # everything buffered at each wake-up: one checkpoint per batch, not per URL.
        async with recv:
            while True:
                try:
                    urls.append(await recv.receive())
                except trio.EndOfChannel:
                    break
                while True:
                    try:
                        urls.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        break
    return urls, found[0]
