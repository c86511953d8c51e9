"""Reading a bulk ZIP for comparison: its manifest, and its images on demand.

Only what the manifest lists is read, by the exact member name ``<root>/<entry>``
(looked up in the ZIP's directory, never joined onto a filesystem path), under hard
limits: the manifest's size, each image's size. Nothing is extracted.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, final

import attrs

from .._exceptions import InvalidArchive

__all__ = ["MAX_IMAGE_BYTES", "MAX_MANIFEST_BYTES", "Page", "Snapshot", "open_snapshot"]

#: A manifest over this is refused (10 million rows fit well under it).
MAX_MANIFEST_BYTES: Final = 1 << 30
#: An image entry over this is refused (a 16384-row PNG is a few MB).
MAX_IMAGE_BYTES: Final = 256 << 20
_SCHEMA: Final = "bulk.manifest/1"


@final
@attrs.frozen(kw_only=True)
class Page:
    """One row of a manifest, as the comparison needs it."""

    seq: int
    url: str
    ok: bool
    entry: str | None
    sha256: str | None
    width: int | None
    height: int | None
    error_code: str | None


@final
@attrs.frozen(kw_only=True)
class Snapshot:
    """An opened bulk ZIP: its manifest's pages by URL, and a reader of their images.

    Args:
        path: The ZIP.
        root: Its root folder.
        job: The manifest's ``job`` object (site, dates, options).
        pages: Every manifest row by URL (the first row of a URL listed twice).
    """

    path: Path
    root: str
    job: Mapping[str, Any]
    pages: Mapping[str, Page]
    _zip: zipfile.ZipFile = attrs.field(alias="zip", repr=False)

    def image(self, page: Page) -> bytes:
        """The image bytes of an ok page.

        Raises:
            InvalidArchive: The entry is missing, over ``MAX_IMAGE_BYTES`` or unreadable.
        """
        if page.entry is None:
            raise InvalidArchive(f"{self.path.name}: page {page.seq} has no image")
        name = f"{self.root}/{page.entry}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise InvalidArchive(f"{self.path.name}: {name} is listed but missing") from None
        if info.file_size > MAX_IMAGE_BYTES:
            raise InvalidArchive(f"{self.path.name}: {name} is over {MAX_IMAGE_BYTES} bytes")
        try:
            with self._zip.open(info) as member:
                data = member.read(MAX_IMAGE_BYTES + 1)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
            raise InvalidArchive(f"{self.path.name}: {name} cannot be read: {exc}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidArchive(f"{self.path.name}: {name} is over {MAX_IMAGE_BYTES} bytes")
        return data

    @property
    def label(self) -> str:
        """How the report names this archive: file name and capture date."""
        finished = str(self.job.get("finished_at") or "")[:16].replace("T", " ")
        return f"{self.path.name} ({finished} UTC)" if finished else self.path.name


@contextmanager
def open_snapshot(path: Path) -> Iterator[Snapshot]:
    """Open a bulk ZIP for comparison (closed when the block ends).

    Raises:
        InvalidArchive: Not a ZIP, no single ``<root>/_manifest.json``, a manifest
            that is over ``MAX_MANIFEST_BYTES`` or not bulk's schema.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidArchive(f"{path.name} is not a readable ZIP: {exc}") from None
    try:
        yield _read(path, archive)
    finally:
        archive.close()


def _read(path: Path, archive: zipfile.ZipFile) -> Snapshot:
    manifests = [
        info
        for info in archive.infolist()
        if info.filename.count("/") == 1 and info.filename.endswith("/_manifest.json")
    ]
    if len(manifests) != 1:
        raise InvalidArchive(f"{path.name} is not a bulk archive (no single _manifest.json)")
    info = manifests[0]
    if info.file_size > MAX_MANIFEST_BYTES:
        raise InvalidArchive(f"{path.name}: _manifest.json is over {MAX_MANIFEST_BYTES} bytes")
    try:
        with archive.open(info) as member:
            raw = member.read(MAX_MANIFEST_BYTES + 1)
        document = json.loads(raw)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        raise InvalidArchive(f"{path.name}: _manifest.json cannot be read: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != _SCHEMA:
        raise InvalidArchive(f"{path.name}: _manifest.json is not a {_SCHEMA} manifest")
    rows = document.get("urls")
    job = document.get("job")
    if not isinstance(rows, list) or not isinstance(job, dict):
        raise InvalidArchive(f"{path.name}: _manifest.json has no urls list")
    pages: dict[str, Page] = {}
    for row in rows:
        page = _page(path, row)
        pages.setdefault(page.url, page)
    return Snapshot(
        path=path, root=info.filename.split("/", 1)[0], job=job, pages=pages, zip=archive
    )


def _page(path: Path, row: Any) -> Page:
    if not isinstance(row, dict) or not isinstance(row.get("url"), str):
        raise InvalidArchive(f"{path.name}: a manifest row has no url")
    ok = row.get("status") == "ok"
    entry = row.get("entry")
    if ok and (not isinstance(entry, str) or not entry):
        raise InvalidArchive(f"{path.name}: an ok manifest row has no entry")

    def number(key: str) -> int | None:
        value = row.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    sha = row.get("sha256")
    code = row.get("error_code")
    return Page(
        seq=number("seq") or 0,
        url=row["url"],
        ok=ok,
        entry=entry if ok else None,
        sha256=sha if isinstance(sha, str) else None,
        width=number("width"),
        height=number("height"),
        error_code=code if isinstance(code, str) else None,
    )
