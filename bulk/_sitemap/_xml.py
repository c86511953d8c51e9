"""The XML reader: urlset, sitemapindex, RSS 2.0/1.0 and Atom, from decoded text.

``XMLReader`` is handed the text of a document from its root element on (the prolog
guard in ``_prolog`` has already refused DTDs and chosen the encoding), repairs it for
recovery, and feeds it as UTF-8 to an lxml ``XMLPullParser`` (recover, no DTD, no
network, no entity expansion) filtered to the few tags that carry URLs.

Why it is shaped this way:

- libxml2's recovery mangles a bare ``&``: ``?a=1&b=2`` comes out as ``?a=1=2``
  and ``&b;c`` silently loses ``&b;c``; and a push parser stalls on ``&`` until it
  sees a ``;``. So every ``&`` that does not start one of XML's five predefined
  entities or a character reference is escaped before parsing (outside CDATA
  sections, where ``&`` is already literal). There is no DTD, so no other entity
  could ever be defined: the value is kept exactly as written.
- After the root element has started, a ``<!DOCTYPE``/``<!ENTITY`` is an error
  libxml2 does not recover from: reading stops there, keeping what came before, and
  lxml never sees it either.
- A URL is only taken from an element whose end tag was read. libxml2 closes open
  elements when the input ends, which would turn a truncated ``<loc>http://exa``
  into a URL; events that only appear when the parser is closed are dropped.
- Memory stays flat: the tag filter keeps Python work to the URL-bearing elements,
  and after every chunk the finished elements along the open path are deleted, so
  the tree never holds more than about one chunk (whatever elements an attacker
  uses).
- ``<loc>`` values must be absolute URLs (the protocol says so); relative ones are
  skipped and counted in ``skipped``. RSS and Atom links resolve against the
  document's URL (and ``xml:base``), as those formats allow.
"""

from __future__ import annotations

import contextlib
import re
from typing import Final, final

from ada_url import join_url
from lxml import etree

from ._entry import Entry, EntryKind, Skipped, is_relative, normalise

__all__ = ["XMLReader"]

_XML_BASE: Final = "{http://www.w3.org/XML/1998/namespace}base"
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


@final
class XMLReader:
    """Reads the URLs of one XML document, from its root element on (sans-IO).

    Args:
        url: The document's final URL: the base for RSS/Atom links.
        root: The root element's qualified name, as the prolog scan found it.
        skipped: Counts the ``<loc>`` values skipped as relative.

    Resource handling:
        Finished elements are dropped after every chunk; ``close`` releases lxml's
        parser (call it exactly once, also after an error).
    """

    def __init__(self, url: str, root: str, skipped: Skipped) -> None:
        self._url = url
        self._skipped = skipped
        local = root.rpartition(":")[2]
        self.kind = _ROOT_KINDS.get(local.lower(), "unknown")
        #: Whether reading has ended (root element closed, or an unrecoverable error).
        self.done = False
        self._pull: etree.XMLPullParser | None = etree.XMLPullParser(
            events=("start", "end"),
            tag=_tag_filter(local, self.kind),
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

    def feed(self, text: str, out: list[Entry], *, final: bool) -> None:
        """Read the next text; append the entries it completed to ``out``."""
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
        self._drain(out, accept=True)
        if stop:
            self.done = True
        if self.done:
            self.close(out)
        elif self._root is not None:
            self._prune()

    def close(self, out: list[Entry], *, failed: bool = False) -> None:
        """Close lxml; anything only its end-of-input recovery produced is dropped.

        Args:
            out: Receives what text held back for the next chunk completed.
            failed: The document failed: held-back text is dropped, not read.
        """
        pull = self._pull
        if pull is None:
            return
        if self._carry and not self.done and not failed:
            text, _ = self._repair(self._carry)
            self._carry = ""
            with contextlib.suppress(etree.XMLSyntaxError):
                pull.feed(text.encode("utf-8", "replace"))
            self._drain(out, accept=True)
        # Raised when nothing usable was parsed at all: the entries read stand.
        with contextlib.suppress(etree.XMLSyntaxError):
            pull.close()
        self._drain(out, accept=False)
        self._pull = self._root = self._record = None
        self._record_link = self._record_guid = None
        self._carry = ""
        self.done = True

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

    def _drain(self, out: list[Entry], *, accept: bool) -> None:
        """Turn the parser's pending events into entries (or drop them)."""
        pull = self._pull
        if pull is None:
            return
        roles = self._roles
        pairs = self._pairs
        base = self._url
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
                    self.done = True
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
                url = normalise(text, base, absolute=True)
                if url is None:
                    if is_relative(text):
                        self._skipped.add_relative(text)
                    continue
                if pair == _PAIR_PAGE_LOC:
                    out.append(Entry(EntryKind.PAGE, url))
                    if self.kind == "unknown":
                        self.kind = "urlset"
                else:
                    out.append(Entry(EntryKind.SITEMAP, url))
                    if self.kind == "unknown":
                        self.kind = "sitemapindex"
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
            url = normalise(*link)
        elif guid is not None:
            url = normalise(guid, self._url)
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
