"""The pipeline's wiring: ledger rows in, images captured, a ZIP out.

``JobRunner.run_job`` is the one way a job runs, for ``bulk archive`` and for the
service alike:

    ledger job (URL rows, leases) --claim--> capture workers (shared BrowserPool)
        -> image + thumbnail on disk -> ledger.finish (use / refund, exactly once)
    all URLs final -> packaging: manifest + gallery + images -> ZIP on disk -> completed

Workers of every job wait on the pool's one FIFO ``CapacityLimiter``, so jobs that run
at the same time take turns fairly. Files are named by (seq, attempt), never by the
URL: a late, stale worker can never overwrite the image a settled row points to.

Failures stay where they happen (``_util.contained``): an unexpected error while
capturing one URL fails that URL (refunded); one that escapes a job's stages
(discovery, capture, packaging) fails that job, refunding every credit; neither
stops another job, the runner or the service.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

from ._archive import ArchiveInfo, ExtraShot, PageRecord, build_zip, make_thumbnail, write_zip
from ._capture import BrowserPool, CaptureSession, Screenshot
from ._connector_hub import ROUTED_POLICY
from ._exceptions import (
    BulkError,
    SecretsUnavailable,
)
from ._ledger import (
    Claim,
    JobRow,
    Ledger,
    NewUrl,
    UrlResult,
    UrlRow,
    parse_iso,
)
from ._options import OPTION_SPECS, CaptureOptions, lease_seconds
from ._paths import Layout
from ._policy import EgressPolicy
from ._results import capture_facts, extra_shots, failed_result, ok_result
from ._urllist import UrlList, screenshot_names
from ._urls import parse_http_url
from ._util import Contained, contained

__all__ = [
    "JobRunner",
    "Progress",
    "RunnerConfig",
    "job_dir",
    "list_discovery",
    "release_blobs",
    "sweep_blobs",
    "url_rows",
]

log = logging.getLogger("bulk.jobs")

_IDLE_POLL: Final = 0.5
# URL rows read at a time while a job is packaged.
_PACKAGE_BATCH: Final = 2000
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
# The longest per-URL timeout an option set can ask for (ms): the lease of a URL
# whose own options may raise the job's timeout must outlast it.
_MAX_TIMEOUT_MS: Final = next(int(s.maximum or 0) for s in OPTION_SPECS if s.name == "timeout")


@attrs.frozen(kw_only=True)
class RunnerConfig:
    """Where job files live and how long leases and downloads last.

    Args:
        data_dir: Job files go in ``data_dir/jobs/<job id>/``.
        download_ttl: Seconds a completed job's ZIP stays downloadable.
        max_attempts: Claims of one URL that may end without an answer (crashes).
        thumbnails: Make gallery thumbnails (the ZIP's ``index.html``).
        blobs: Store images once by content here (``_write_image``; the service's
            ``data_dir/blobs``); None: every job file is its own copy.
    """

    data_dir: Path
    download_ttl: int = 86400
    max_attempts: int = 3
    thumbnails: bool = True
    blobs: Path | None = None


@attrs.frozen
class Progress:
    """One URL finished: what the progress bar and logs are told.

    ``done``/``ok_count`` count the job's settled URLs (an earlier, interrupted run's
    included); ``elapsed_ms`` is this capture's wall time, ``bytes`` its file size.
    """

    job_id: str
    seq: int
    url: str
    ok: bool
    error_code: str | None
    total: int
    error_message: str | None = None
    http_status: int | None = None
    elapsed_ms: int | None = None
    bytes: int | None = None
    done: int = 0
    ok_count: int = 0


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def _write_image(path: Path, data: bytes, blobs: Path | None = None) -> str:
    """Write an image to ``path`` and return its sha256.

    With ``blobs`` (the service's ``data_dir/blobs``), images are stored once by
    content: ``blobs/<sha256[:2]>/<sha256>`` is the stored copy and ``path`` is one
    more hard link to it, so the file system's link count is the reference count
    (the store's own name plus one per job file). ``path`` gets this moment as its
    modification time, what a ZIP entry's date is read from, as a file written now
    would. Where links cannot be made, ``path`` is a copy of its own.
    """
    # Atomic: a crash leaves either no file or the whole image, never a torn one.
    digest = hashlib.sha256(data).hexdigest()
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    if blobs is not None:
        blob = blobs / digest[:2] / digest
        try:
            os.link(blob, tmp)  # stored already: one more name for it
        except FileNotFoundError:
            _write_file(tmp, data)
            blob.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # stored meanwhile: ours stays apart
                os.link(tmp, blob)
        except OSError:  # no links here (another file system, a link limit)
            _write_file(tmp, data)
        else:
            os.utime(tmp)
    else:
        _write_file(tmp, data)
    os.replace(tmp, path)
    return digest


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def release_blobs(blobs: Path, digests: Iterable[str]) -> int:
    """Delete the stored images of ``digests`` that no job file links to any more
    (a link count of 1: only the store's own name). Returns how many were deleted.

    A job that links one of them at the same moment keeps its own name for the data
    (the unlink only removes the store's): nothing a job holds is ever lost.
    """
    deleted = 0
    for digest in set(digests):
        if not _DIGEST.fullmatch(digest):
            continue
        blob = blobs / digest[:2] / digest
        try:
            if os.stat(blob).st_nlink <= 1:
                os.unlink(blob)
                deleted += 1
        except FileNotFoundError:
            continue
    return deleted


def sweep_blobs(blobs: Path) -> int:
    """``release_blobs`` for every stored image (at start: what a crash between a
    job's deletion and its release, or an abandoned capture attempt, left)."""
    if not blobs.is_dir():
        return 0
    return release_blobs(
        blobs, (p.name for shard in blobs.iterdir() if shard.is_dir() for p in shard.iterdir())
    )


def _is_url_list(job: JobRow) -> bool:
    return bool(job.discovery) and (job.discovery or {}).get("source") == "urls"


@final
class _Session:
    """One open capture session of a job and how many captures use it now."""

    def __init__(self, session: CaptureSession, stack: contextlib.AsyncExitStack) -> None:
        self.session = session
        self.stack = stack
        self.users = 0


# An option set (as its JSON text: options may hold unhashable values) and, for
# domain-less cookies in a URL list, the origin they are for.
_SessionKey = tuple[str, str | None]


@final
class _Sessions:
    """A job's capture sessions: its own, and one per distinct per-URL option set.

    A URL-list item with its own options is captured in a browser context made for
    those options, opened when first needed and shared by every URL with the same
    ones. Contexts not in use are closed, least recently used first, while more
    than the pool's concurrency are open, so a list of thousands of distinct option
    sets holds a bounded number of contexts. The workers stay the same in number
    and take the pool's slots one at a time, so jobs sharing the pool still take
    turns fairly.

    Cookies given without a domain belong to the page they are set for: in a URL
    list (whose URLs may be on any host) a context for such options is opened per
    origin, for that origin; a sitemap job's belong to its site, as always.
    """

    def __init__(self, pool: BrowserPool, job: JobRow, options: CaptureOptions) -> None:
        self._pool = pool
        self._site = job.site
        self._list = _is_url_list(job)
        # A job routed to a connector captures only there (``BrowserPool`` routes).
        self.route = job.connector_id
        self.base_options = options
        self._base_json = options.to_json()
        self._limit = max(2, pool.slots)
        self._open: collections.OrderedDict[_SessionKey, _Session] = collections.OrderedDict()
        self._lock = trio.Lock()
        self._base: _Session | None = None
        self._parsed: dict[str, CaptureOptions] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, pool: BrowserPool, job: JobRow, options: CaptureOptions
    ) -> AsyncIterator[_Sessions]:
        """The job's sessions for the block; every one is closed when it ends."""
        sessions = cls(pool, job, options)
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                pool.session(options, job.site, route=job.connector_id)
            )
            sessions._base = _Session(session, stack)
            try:
                yield sessions
            finally:
                with trio.CancelScope(shield=True):
                    for entry in list(sessions._open.values()):
                        await entry.stack.aclose()
                    sessions._open.clear()

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One of the pool's slots (FIFO, shared by every job)."""
        assert self._base is not None
        return self._base.session.slot()

    def options_for(self, claim: Claim) -> CaptureOptions:
        """The options ``claim`` is captured with: the job's, or its own override's.

        Raises:
            ValidationError: The stored override no longer makes valid options.
        """
        if claim.options is None:
            return self.base_options
        key = repr(sorted(claim.options.items()))
        known = self._parsed.get(key)
        if known is None:
            known = CaptureOptions.from_mapping({**self._base_json, **claim.options})
            if len(self._parsed) < 1024:  # a cache, not a copy of the list
                self._parsed[key] = known
        return known

    @contextlib.asynccontextmanager
    async def session_for(self, options: CaptureOptions, url: str) -> AsyncIterator[CaptureSession]:
        """The session that captures ``url`` with ``options``, held for the block."""
        assert self._base is not None
        origin: str | None = None
        if self._list and any(c.domain is None for c in options.cookies):
            origin = parse_http_url(url).origin
        if options == self.base_options and origin is None:
            yield self._base.session
            return
        key: _SessionKey = (json.dumps(options.to_json(), sort_keys=True), origin)
        async with self._lock:
            entry = self._open.get(key)
            if entry is None:
                stack = contextlib.AsyncExitStack()
                try:
                    session = await stack.enter_async_context(
                        self._pool.session(
                            options, url if origin is not None else None, route=self.route
                        )
                    )
                except BaseException:
                    await stack.aclose()
                    raise
                entry = self._open[key] = _Session(session, stack)
            self._open.move_to_end(key)
            entry.users += 1
        try:
            yield entry.session
        finally:
            entry.users -= 1
            with trio.CancelScope(shield=True):
                await self._trim()

    async def _trim(self) -> None:
        async with self._lock:
            for key in list(self._open):
                if len(self._open) <= self._limit:
                    break
                entry = self._open[key]
                if entry.users == 0:
                    del self._open[key]
                    await entry.stack.aclose()


@final
class JobRunner:
    """Runs ledger jobs on a shared ``BrowserPool``.

    Args:
        ledger: The ledger (the only writer of job and credit state).
        pool: The capture pool every job shares.
        policy: The egress policy; URLs it refuses statically fail as ``URL_BLOCKED``
            without reaching Chromium.
        config: Files, TTLs, attempts.
        on_progress: Called after each URL settles (for the CLI's progress bar).
    """

    def __init__(
        self,
        ledger: Ledger,
        pool: BrowserPool,
        policy: EgressPolicy,
        config: RunnerConfig,
        *,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.policy = policy
        self.config = config
        self.on_progress = on_progress
        self._url_events: dict[str, trio.Event] = {}
        self._running: set[str] = set()
        self._wake = trio.Event()

    # ---- the service loop ------------------------------------------------------------

    def wake(self) -> None:
        """A job was created: look for work now rather than at the next poll."""
        self._wake.set()

    def urls_added(self, job_id: str) -> None:
        """More URL rows were appended to an open job (streaming discovery)."""
        event = self._url_events.get(job_id)
        if event is not None:
            event.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every unfinished bulk job, picking new ones up as they are created.

        On start, leases of dead processes return to the queue, and single-shot jobs a
        crash interrupted fail (their credit refunded): their HTTP caller is gone.

        Cancellation: workers give their leases back (shielded) and stop; the jobs
        stay unfinished in the ledger and resume at the next start.
        """
        with contained(log, "recovering leases"):
            requeued = await self.ledger.recover()
            if requeued:
                log.info("recovered %d URL leases from an earlier process", requeued)
        with contained(log, "failing interrupted single captures"):
            for job in await self.ledger.jobs(
                statuses=("pending", "processing", "packaging"), kinds=("shot",)
            ):
                await self.ledger.fail_job(job.id, "CAPTURE_ERROR", "interrupted by a restart")
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                with contained(log, "looking for jobs to run"):
                    for job in await self.ledger.jobs(
                        statuses=("pending", "processing", "packaging"), kinds=("bulk",)
                    ):
                        if job.id not in self._running:
                            self._running.add(job.id)
                            nursery.start_soon(self._run_guarded, job.id)
                with trio.move_on_after(5):
                    await self._wake.wait()

    async def _run_guarded(self, job_id: str) -> None:
        # One job is one item: whatever escapes it fails it (every credit refunded)
        # and is logged without its message; the runner goes on.
        try:
            with contained(log, "job %s", job_id) as outcome:
                await self.run_job(job_id)
            if outcome.failed:
                await self._fail_contained(job_id, outcome, "the job failed unexpectedly")
        finally:
            self._running.discard(job_id)

    async def _fail_contained(self, job_id: str, outcome: Contained, message: str) -> None:
        with trio.CancelScope(shield=True), contained(log, "failing job %s", job_id):
            await self.ledger.fail_job(job_id, outcome.code, message)

    # ---- one job -----------------------------------------------------------------

    async def run_job(self, job_id: str, *, out: Path | None = None) -> JobRow:
        """Capture a job's unfinished URLs, then package its ZIP.

        Args:
            job_id: A job in ``pending``, ``processing`` or ``packaging``.
            out: Where the ZIP goes (default: ``<root>.zip`` in the job's folder).

        Returns:
            The job as it ended (``completed`` or ``failed``; a packaging failure
            fails the job with every credit refunded, it does not raise).

        Cancellation:
            Leases held by this job's workers are released; nothing is packaged.
        """
        job = await self.ledger.job(job_id)
        if job.status in ("pending", "processing"):
            await self.ledger.set_status(job_id, "processing", expect=("pending", "processing"))
            try:
                if job.secrets_unreadable:
                    raise SecretsUnavailable(
                        "the job's cookie and header values cannot be decrypted "
                        "(the key file changed); it was not run"
                    )
                options = CaptureOptions.from_mapping(job.options)
            except BulkError as exc:
                await self.ledger.fail_job(job_id, exc.code, exc.message)
                return await self.ledger.job(job_id)
            await self._capture_all(job, options)
            job = await self.ledger.job(job_id)
            if job.status in ("completed", "failed", "expired"):
                return job
            await self.ledger.set_status(job_id, "packaging", expect=("processing",))
        return await self.package(job_id, out)

    async def _capture_all(self, job: JobRow, options: CaptureOptions) -> None:
        folder = job_dir(self.config.data_dir, job.id)
        for sub in ("img", "thumbs"):
            await trio.Path(folder / sub).mkdir(parents=True, exist_ok=True)
        # A URL list's own options may raise the timeout: its leases outlast any.
        timeout = _MAX_TIMEOUT_MS if _is_url_list(job) else options.timeout
        lease = lease_seconds(timeout)
        event = self._url_events[job.id] = trio.Event()
        try:
            async with (
                _Sessions.open(self.pool, job, options) as sessions,
                trio.open_nursery() as nursery,
            ):
                for _ in range(self.pool.slots):
                    nursery.start_soon(self._worker, job.id, sessions, folder, lease)
        finally:
            if self._url_events.get(job.id) is event:
                del self._url_events[job.id]

    async def _worker(self, job_id: str, sessions: _Sessions, folder: Path, lease: float) -> None:
        while True:
            # The pool slot first, then the claim: a URL is leased (and its attempt
            # counted) only when its capture can start at once.
            async with sessions.slot():
                # Shielded: the ledger grants the lease even if we are cancelled
                # meanwhile, and a lease nobody knows about could only come back by
                # expiring.
                with trio.CancelScope(shield=True):
                    claims = await self.ledger.claim(
                        job_id, limit=1, lease_seconds=lease, max_attempts=self.config.max_attempts
                    )
                if claims:
                    claim = claims[0]
                    started = trio.current_time()
                    try:
                        with contained(
                            log, "capturing URL %d of job %s", claim.seq, job_id
                        ) as outcome:
                            result = await self._capture_one(claim, sessions, folder)
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await self.ledger.release([claim])
                        raise
                    elapsed = trio.current_time() - started
                    if outcome.failed:
                        # An unforeseen error fails this URL only (refunded).
                        result = UrlResult(
                            ok=False,
                            error_code=outcome.code,
                            error_message="capturing this page failed unexpectedly",
                        )
                    # Shielded: a capture that is done is recorded, whatever comes
                    # next. Still holding the slot: the next claim waits until this
                    # lease is settled, so no more URLs are leased than there are
                    # slots, even for a moment.
                    with trio.CancelScope(shield=True):
                        settled = await self.ledger.finish(claim, result)
            if claims:
                if settled and self.on_progress is not None:
                    job = await self.ledger.job(job_id)
                    self.on_progress(
                        Progress(
                            job_id,
                            claim.seq,
                            claim.url,
                            result.ok,
                            result.error_code,
                            job.total,
                            result.error_message,
                            http_status=result.http_status,
                            elapsed_ms=round(elapsed * 1000),
                            bytes=result.bytes,
                            done=job.processed,
                            ok_count=job.ok,
                        )
                    )
                continue
            job = await self.ledger.job(job_id)
            if job.urls_complete and not job.queued:
                if not job.leased:
                    return
                # Another worker holds the last URLs; one of them may come back
                # (released), so keep looking until they are settled.
                await trio.sleep(_IDLE_POLL)
                continue
            if job.status not in ("pending", "processing"):
                return
            event = self._url_events.get(job_id)
            with trio.move_on_after(_IDLE_POLL):
                if event is not None:
                    await event.wait()
            if event is not None and event.is_set():
                self._url_events[job_id] = trio.Event()

    async def _capture_one(self, claim: Claim, sessions: _Sessions, folder: Path) -> UrlResult:
        try:
            # Routed to a connector: syntax and scheme only (its own policy rules there).
            (ROUTED_POLICY if sessions.route is not None else self.policy).check_url(claim.url)
            options = sessions.options_for(claim)
            async with sessions.session_for(options, claim.url) as session:
                shot: Screenshot = await session.capture(claim.url)
        except BulkError as exc:
            return failed_result(exc)
        ext = options.extension
        # Named by the lease, unique per claim: a stale worker can never overwrite the
        # file a settled row points to.
        name = f"{claim.seq:06d}-{claim.lease}.{ext}"
        digest = await trio.to_thread.run_sync(
            _write_image, folder / "img" / name, shot.data, self.config.blobs
        )
        facts = capture_facts(shot)
        extras = await self._write_extras(claim, shot, folder)
        if extras:
            facts["extras"] = extras
        if self.config.thumbnails and ext != "pdf":
            # A PDF has no thumbnail: the gallery shows a tile for it.
            thumb = folder / "thumbs" / f"{claim.seq:06d}.jpg"
            try:
                await trio.to_thread.run_sync(make_thumbnail, folder / "img" / name, thumb)
            except ValueError:
                log.warning("no thumbnail for URL %d of job %s", claim.seq, claim.job_id)
        return ok_result(shot, digest, f"img/{name}", facts)

    async def _write_extras(
        self, claim: Claim, shot: Screenshot, folder: Path
    ) -> list[dict[str, Any]]:
        """Write a capture script's named intermediate screenshots next to the image.

        Only names reserved for the URL when it was added (``Claim.extra_entries``)
        can go into the ZIP; another is dropped with a log line.
        """
        written: list[dict[str, Any]] = []
        for index, extra in enumerate(extra_shots(shot), 1):
            label = str(getattr(extra, "name", ""))
            entry = claim.extra_entries.get(label)
            data = getattr(extra, "data", None)
            if entry is None or not isinstance(data, bytes):
                log.warning(
                    "URL %d of job %s: unreserved screenshot dropped", claim.seq, claim.job_id
                )
                continue
            ext = entry.rsplit(".", 1)[-1]
            name = f"{claim.seq:06d}-{claim.lease}@{index}.{ext}"
            digest = await trio.to_thread.run_sync(
                _write_image, folder / "img" / name, data, self.config.blobs
            )
            written.append(
                {
                    "name": label,
                    "entry": entry,
                    "file": f"img/{name}",
                    "width": getattr(extra, "width", None),
                    "height": getattr(extra, "height", None),
                    "bytes": len(data),
                    "sha256": digest,
                }
            )
        return written

    # ---- packaging ---------------------------------------------------------------

    async def package(self, job_id: str, out: Path | None = None) -> JobRow:
        """Build the job's ZIP (``out``, or a file in the job's folder) and complete it.

        A job with no successful URL fails instead (every credit already refunded).
        So does a job whose packaging fails, whatever the cause (an entry that cannot
        be written, a full disk): it ends ``failed`` with every credit refunded and
        no ZIP, and this returns it rather than raising.
        """
        job = await self.ledger.job(job_id)
        folder = job_dir(self.config.data_dir, job.id)
        records, codes = await self._records(job_id, folder)
        if not any(r.status == "ok" for r in records):
            await self.ledger.fail_job(job_id, "NO_PAGES_CAPTURED", _no_pages_message(codes))
            return await self.ledger.job(job_id)
        with contained(log, "packaging job %s", job_id) as outcome:
            size, digest, target = await self._write_archive(job, records, folder, out)
        if outcome.failed:
            await self._fail_contained(job_id, outcome, _packaging_message(outcome))
            return await self.ledger.job(job_id)
        expires = self.ledger.clock() + self.config.download_ttl
        await self.ledger.set_status(
            job_id,
            "completed",
            expect=("packaging",),
            zip_path=str(target),
            zip_size=size,
            zip_sha256=digest,
            expires_at=expires,
        )
        return await self.ledger.job(job_id)

    async def _records(
        self, job_id: str, folder: Path
    ) -> tuple[list[PageRecord], collections.Counter[str]]:
        """Every row of the job as the manifest's record, and its error codes counted.

        The rows are read ``_PACKAGE_BATCH`` at a time and each batch is dropped once
        made into records: a 100,000-URL job never holds its rows and its records
        side by side (``scripts/bench-memory`` measures the packaging's peak).
        """
        records: list[PageRecord] = []
        codes: collections.Counter[str] = collections.Counter()
        after = 0
        while True:
            batch = await self.ledger.urls(job_id, after=after, limit=_PACKAGE_BATCH)
            if not batch:
                return records, codes
            for row in batch:
                records.append(_record(row, folder))
                if row.error_code:
                    codes[row.error_code] += 1
            after = batch[-1].seq

    async def _write_archive(
        self, job: JobRow, records: Sequence[PageRecord], folder: Path, out: Path | None
    ) -> tuple[int, str, Path]:
        found = job.discovery or {}
        info = ArchiveInfo(
            job_id=job.id,
            root=job.root,
            site=job.site,
            sitemap_urls=job.sitemap_urls,
            options=_public_options(job.options),
            started_at=parse_iso(job.started_at or job.created_at),
            finished_at=datetime.now(UTC),
            truncated=bool(found.get("truncated")),
            found=found.get("found") if isinstance(found.get("found"), int) else None,
            reasons=tuple(str(r) for r in found.get("reasons") or ()),
            source="urls" if _is_url_list(job) else "sitemap",
            deduplicated=int(found.get("deduplicated") or 0),
        )
        target = out or folder / f"{job.root}.zip"
        stream = await trio.to_thread.run_sync(lambda: build_zip(info, records, work_dir=folder))
        size, digest = await write_zip(stream, target)
        return size, digest, target

    async def delete_files(self, job: JobRow) -> None:
        """Remove a job's folder (expiry), then the stored images no other job's
        files link to any more."""
        folder = job_dir(self.config.data_dir, job.id)
        digests: list[str] = []
        if self.config.blobs is not None:
            for row in await self.ledger.urls(job.id):
                if row.sha256:
                    digests.append(row.sha256)
                for extra in row.facts.get("extras") or ():
                    if isinstance(extra, Mapping) and isinstance(extra.get("sha256"), str):
                        digests.append(extra["sha256"])
        await trio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
        if self.config.blobs is not None:
            await trio.to_thread.run_sync(release_blobs, self.config.blobs, digests)


def _packaging_message(outcome: Contained) -> str:
    if isinstance(outcome.error, BulkError):
        return f"the ZIP could not be made: {outcome.error.message}"
    if isinstance(outcome.error, OSError):
        return "the ZIP could not be written (a file could not be read or written)"
    return "the ZIP could not be made"


def _no_pages_message(codes: Mapping[str, int]) -> str:
    summary = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1]))
    return f"no page could be captured ({summary})" if summary else "no page could be captured"


def _record(row: UrlRow, folder: Path) -> PageRecord:
    ok = row.state == "ok"
    thumb = folder / "thumbs" / f"{row.seq:06d}.jpg"
    facts = row.facts if ok else {}
    extras = [
        ExtraShot(
            name=str(e["name"]),
            entry=str(e["entry"]),
            path=folder / str(e["file"]),
            width=e.get("width"),
            height=e.get("height"),
            bytes=e.get("bytes"),
            sha256=e.get("sha256"),
        )
        for e in facts.get("extras") or ()
        if isinstance(e, Mapping)
    ]
    pages = facts.get("pdf_pages")
    blocked = row.facts.get("blocked_requests")
    return PageRecord(
        seq=row.seq,
        url=row.url,
        entry=row.entry if ok else None,
        status="ok" if ok else "failed",
        error_code=row.error_code,
        error_message=row.error_message,
        http_status=row.http_status,
        final_url=row.final_url,
        width=row.width,
        height=row.height,
        bytes=row.bytes,
        sha256=row.sha256,
        image_path=folder / row.file if ok and row.file else None,
        thumb_path=thumb if ok and thumb.exists() else None,
        truncated_height=facts.get("truncated_height") is True,
        load="partial" if facts.get("load") == "partial" else None,
        pending_hosts=tuple(str(h) for h in facts.get("pending_hosts") or ()),
        pdf_pages=pages if isinstance(pages, int) else None,
        blocked_requests=blocked if isinstance(blocked, int) else None,
        extras=extras,
        options=_masked(row.options) if row.options is not None else None,
    )


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    """A URL's own options as the manifest may show them (cookie and header values,
    and text a capture script types, masked, as in the job's options)."""
    out = dict(options)
    if isinstance(out.get("actions"), list):
        # Text typed into a page may be a password.
        out["actions"] = [
            {"type": {**a["type"], "text": "***"}}
            if isinstance(a, dict) and isinstance(a.get("type"), dict)
            else a
            for a in out["actions"]
        ]
    if isinstance(out.get("cookies"), list):
        out["cookies"] = [
            {**c, "value": "***"} if isinstance(c, dict) else "***" for c in out["cookies"]
        ]
    if isinstance(out.get("headers"), dict):
        out["headers"] = dict.fromkeys(out["headers"], "***")
    return out


def _public_options(options: object) -> dict[str, object]:
    try:
        assert isinstance(options, dict)
        return CaptureOptions.from_mapping(options).public_json()
    except (BulkError, AssertionError):
        return {}


# ---- the rows of a job (both fronts) ------------------------------------------------


def list_discovery(urls: UrlList, *, kept: int, truncated: bool) -> dict[str, Any]:
    """What a URL-list job records where a sitemap job keeps its ``Discovery``.

    Args:
        urls: The checked list.
        kept: How many of its distinct URLs the job captures.
        truncated: A limit cut the list to ``kept``.
    """
    return {
        "source": "urls",
        "items": urls.given,
        "pages": kept,
        "found": len(urls.items),
        "deduplicated": urls.deduplicated,
        "truncated": truncated,
        "reasons": ["max_pages"] if truncated else [],
        "list_sha256": urls.signature(),
    }


def url_rows(urls: UrlList, layout: Layout, limit: int | None = None) -> list[NewUrl]:
    """The ledger rows of a URL list, entry names (and screenshot entries) fixed."""
    rows: list[NewUrl] = []
    for item in urls.items[:limit]:
        entry, shots = layout.assign_shots(
            item.url, screenshot_names(item.options), extension=item.options.extension
        )
        rows.append(
            NewUrl(url=item.url, entry=entry, options=item.override, extra_entries=shots or None)
        )
    return rows
