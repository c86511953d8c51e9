"""How one capture ended, as the ledger records it: shared by the job runner
(``_jobs``) and the single-shot endpoints (``_api``), so neither imports the other.

Besides the image, a capture may report (attributes of ``Screenshot``, read with a
default so an engine without them still works): ``load`` (``"partial"`` when it was
taken before the page's ``load`` event) with ``pending_hosts``, ``truncated_height``
(a full page cut at the height cap), ``pdf_pages`` (a PDF's page count),
``blocked_requests`` (requests ``block_ads``/``block_media`` stopped) and ``shots``
(the named intermediate screenshots of a capture script, each with ``name``,
``data``, ``width``, ``height``). ``capture_facts`` turns the scalar ones into the
JSON the ledger keeps per URL and the manifest shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._exceptions import BulkError
from ._ledger import UrlResult

__all__ = ["CapturedImage", "capture_facts", "extra_shots", "failed_result", "ok_result"]


class CapturedImage(Protocol):
    """What ``ok_result`` reads from a capture (``Screenshot`` has it)."""

    @property
    def data(self) -> bytes: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def final_url(self) -> str: ...

    @property
    def http_status(self) -> int | None: ...


def capture_facts(shot: object) -> dict[str, Any]:
    """What ``shot`` reports beyond its image, as JSON values (only what applies)."""
    facts: dict[str, Any] = {}
    if getattr(shot, "truncated_height", False) is True:
        facts["truncated_height"] = True
    if getattr(shot, "load", None) == "partial":
        facts["load"] = "partial"
        facts["pending_hosts"] = [str(h) for h in getattr(shot, "pending_hosts", ()) or ()]
    pages = getattr(shot, "pdf_pages", None)
    if isinstance(pages, int) and not isinstance(pages, bool):
        facts["pdf_pages"] = pages
    blocked = getattr(shot, "blocked_requests", None)
    if isinstance(blocked, int) and not isinstance(blocked, bool):
        facts["blocked_requests"] = blocked
    return facts


def extra_shots(shot: object) -> Sequence[Any]:
    """The named intermediate screenshots of ``shot`` (``()`` when it has none)."""
    # ``shots`` is the engine's name; ``extra`` an older spelling.
    extra = getattr(shot, "shots", None) or getattr(shot, "extra", None)
    return tuple(extra) if extra else ()


def ok_result(
    shot: CapturedImage, sha256: str, file: str, facts: Mapping[str, Any] | None = None
) -> UrlResult:
    """The ledger's record of a capture that worked (``file``: where its image is;
    ``facts``: ``capture_facts`` and the runner's own, e.g. the extra images)."""
    return UrlResult(
        ok=True,
        http_status=shot.http_status,
        final_url=shot.final_url,
        width=shot.width,
        height=shot.height,
        bytes=len(shot.data),
        sha256=sha256,
        file=file,
        facts=dict(facts) if facts else None,
    )


def failed_result(exc: BulkError) -> UrlResult:
    """The ledger's record of a capture that failed with ``exc``."""
    return UrlResult(
        ok=False,
        error_code=exc.code,
        error_message=exc.message,
        http_status=getattr(exc, "http_status", None),
        final_url=getattr(exc, "final_url", None),
    )
