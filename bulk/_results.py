"""How one capture ended, as the ledger records it: shared by the job runner
(``_jobs``) and the single-shot endpoints (``_api``), so neither imports the other.
"""

from __future__ import annotations

from typing import Protocol

from ._exceptions import BulkError
from ._ledger import UrlResult

__all__ = ["CapturedImage", "failed_result", "ok_result"]


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


def ok_result(shot: CapturedImage, sha256: str, file: str) -> UrlResult:
    """The ledger's record of a capture that worked (``file``: where its image is)."""
    return UrlResult(
        ok=True,
        http_status=shot.http_status,
        final_url=shot.final_url,
        width=shot.width,
        height=shot.height,
        bytes=len(shot.data),
        sha256=sha256,
        file=file,
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
