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

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, final

import attrs
import trio

from ._archive import ArchiveInfo, PageRecord, build_zip, make_thumbnail, write_zip
from ._capture import BrowserPool, CaptureSession, Screenshot
from ._discover import DiscoverLimits, Discovery, discover
from ._exceptions import BulkError, ResumeMismatch, SecretsUnavailable
from ._fetch import Fetcher
from ._ledger import Claim, JobRow, Ledger, NewJob, SecretBox, UrlResult, UrlRow, parse_iso
from ._options import CaptureOptions
from ._paths import Layout, root_folder
from ._policy import EgressPolicy
from ._results import failed_result, ok_result
from ._urls import site_candidates
from ._util import Contained, contained, hold_lock, open_owned_nursery

__all__ = [
    "ArchiveResult",
    "JobRunner",
    "Progress",
    "RunnerConfig",
    "archive_site",
    "job_dir",
    "lock_for",
    "work_dir_for",
]

log = logging.getLogger("bulk.jobs")

_IDLE_POLL: Final = 0.5


@attrs.frozen(kw_only=True)
class RunnerConfig:
    """Where job files live and how long leases and downloads last.

    Args:
        data_dir: Job files go in ``data_dir/jobs/<job id>/``.
        download_ttl: Seconds a completed job's ZIP stays downloadable.
        max_attempts: Claims of one URL that may end without an answer (crashes).
        thumbnails: Make gallery thumbnails (the ZIP's ``index.html``).
    """

    data_dir: Path
    download_ttl: int = 86400
    max_attempts: int = 3
    thumbnails: bool = True


@attrs.frozen
class Progress:
    """One URL finished: what the progress bar and logs are told."""

    job_id: str
    seq: int
    url: str
    ok: bool
    error_code: str | None
    total: int
    error_message: str | None = None


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def _write_image(path: Path, data: bytes) -> str:
    # Atomic: a crash leaves either no file or the whole image, never a torn one.
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


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
        lease = options.timeout / 1000 * 3 + 60
        event = self._url_events[job.id] = trio.Event()
        try:
            async with (
                self.pool.session(options, job.site) as session,
                trio.open_nursery() as nursery,
            ):
                for _ in range(self.pool.config.concurrency):
                    nursery.start_soon(self._worker, job.id, session, folder, lease)
        finally:
            if self._url_events.get(job.id) is event:
                del self._url_events[job.id]

    async def _worker(
        self, job_id: str, session: CaptureSession, folder: Path, lease: float
    ) -> None:
        while True:
            # The pool slot first, then the claim: a URL is leased (and its attempt
            # counted) only when its capture can start at once.
            async with session.slot():
                # Shielded: the ledger grants the lease even if we are cancelled
                # meanwhile, and a lease nobody knows about could only come back by
                # expiring.
                with trio.CancelScope(shield=True):
                    claims = await self.ledger.claim(
                        job_id, limit=1, lease_seconds=lease, max_attempts=self.config.max_attempts
                    )
                if claims:
                    claim = claims[0]
                    try:
                        with contained(
                            log, "capturing URL %d of job %s", claim.seq, job_id
                        ) as outcome:
                            result = await self._capture_one(claim, session, folder)
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await self.ledger.release([claim])
                        raise
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

    async def _capture_one(self, claim: Claim, session: CaptureSession, folder: Path) -> UrlResult:
        try:
            self.policy.check_url(claim.url)
            shot: Screenshot = await session.capture(claim.url)
        except BulkError as exc:
            return failed_result(exc)
        ext = session.options.extension
        # Named by the lease, unique per claim: a stale worker can never overwrite the
        # file a settled row points to.
        name = f"{claim.seq:06d}-{claim.lease}.{ext}"
        digest = await trio.to_thread.run_sync(_write_image, folder / "img" / name, shot.data)
        if self.config.thumbnails:
            thumb = folder / "thumbs" / f"{claim.seq:06d}.jpg"
            try:
                await trio.to_thread.run_sync(make_thumbnail, folder / "img" / name, thumb)
            except ValueError:
                log.warning("no thumbnail for %s", claim.url)
        return ok_result(shot, digest, f"img/{name}")

    # ---- packaging ---------------------------------------------------------------

    async def package(self, job_id: str, out: Path | None = None) -> JobRow:
        """Build the job's ZIP (``out``, or a file in the job's folder) and complete it.

        A job with no successful URL fails instead (every credit already refunded).
        So does a job whose packaging fails, whatever the cause (an entry that cannot
        be written, a full disk): it ends ``failed`` with every credit refunded and
        no ZIP, and this returns it rather than raising.
        """
        job = await self.ledger.job(job_id)
        rows = await self.ledger.urls(job_id)
        if not any(r.state == "ok" for r in rows):
            await self.ledger.fail_job(job_id, "NO_PAGES_CAPTURED", _no_pages_message(rows))
            return await self.ledger.job(job_id)
        with contained(log, "packaging job %s", job_id) as outcome:
            size, digest, target = await self._write_archive(job, rows, out)
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

    async def _write_archive(
        self, job: JobRow, rows: Sequence[UrlRow], out: Path | None
    ) -> tuple[int, str, Path]:
        folder = job_dir(self.config.data_dir, job.id)
        records = [_record(r, folder) for r in rows]
        info = ArchiveInfo(
            job_id=job.id,
            root=job.root,
            site=job.site,
            sitemap_urls=job.sitemap_urls,
            options=_public_options(job.options),
            started_at=parse_iso(job.started_at or job.created_at),
            finished_at=datetime.now(UTC),
        )
        target = out or folder / f"{job.root}.zip"
        stream = await trio.to_thread.run_sync(lambda: build_zip(info, records, work_dir=folder))
        size, digest = await write_zip(stream, target)
        return size, digest, target

    async def delete_files(self, job: JobRow) -> None:
        """Remove a job's folder (expiry)."""
        folder = job_dir(self.config.data_dir, job.id)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))


def _packaging_message(outcome: Contained) -> str:
    if isinstance(outcome.error, BulkError):
        return f"the ZIP could not be made: {outcome.error.message}"
    if isinstance(outcome.error, OSError):
        return "the ZIP could not be written (a file could not be read or written)"
    return "the ZIP could not be made"


def _no_pages_message(rows: Sequence[UrlRow]) -> str:
    codes: dict[str, int] = {}
    for r in rows:
        if r.error_code:
            codes[r.error_code] = codes.get(r.error_code, 0) + 1
    summary = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1]))
    return f"no page could be captured ({summary})" if summary else "no page could be captured"


def _record(row: UrlRow, folder: Path) -> PageRecord:
    ok = row.state == "ok"
    thumb = folder / "thumbs" / f"{row.seq:06d}.jpg"
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
    )


def _public_options(options: object) -> dict[str, object]:
    try:
        assert isinstance(options, dict)
        return CaptureOptions.from_mapping(options).public_json()
    except (BulkError, AssertionError):
        return {}


# ---- offline runs (``bulk archive``) -------------------------------------------------


@attrs.frozen(kw_only=True)
class ArchiveResult:
    """How an offline archive run ended."""

    job: JobRow
    out: Path | None
    elapsed: float
    discovery: Discovery | None
    resumed: bool


def work_dir_for(out: Path) -> Path:
    """Where an offline run keeps its ledger and images until the ZIP is written."""
    return out.with_name(out.name + ".work")


def lock_for(out: Path) -> Path:
    """The lock file of the runs writing ``out`` (there while one runs)."""
    return out.with_name(out.name + ".lock")


async def archive_site(
    site: str,
    out: Path,
    *,
    options: CaptureOptions,
    limits: DiscoverLimits,
    pool: BrowserPool,
    fetcher: Fetcher,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    today: date | None = None,
) -> ArchiveResult:
    """Archive a whole site into ``out``: discover, capture, package (``bulk archive``).

    Capture starts as soon as discovery has sent the first URLs. State lives in
    ``work_dir_for(out)`` (a ledger and the images) so an interrupted run can go on
    with ``resume=True`` without recapturing what is done; it is removed once the run
    has ended (``out`` written, or nothing to capture). ``out`` only ever appears
    complete: it is written as ``.partial`` and renamed.

    Returns:
        The result; ``out`` is ``None`` when no page could be captured (the job is
        ``failed`` with ``NO_PAGES_CAPTURED`` and no ZIP is written).

    Raises:
        LockHeld: Another ``bulk archive`` is writing ``out`` (nothing was touched).
        ResumeMismatch: ``resume`` on a work directory of another site/options.
        DiscoveryError / FetchError / URLBlocked / InvalidURL: Nothing to capture.

    Cancellation:
        Leases are released and the work directory is kept for ``--resume``.
    """
    note = on_note or (lambda _m: None)
    started = trio.current_time()
    work = work_dir_for(out)
    # The lock comes first: until it is held, nothing of OUT, OUT.partial or OUT.work
    # is touched (a second run to the same OUT must not wreck the first one).
    with hold_lock(lock_for(out), remove=True, held=f"another bulk archive is writing {out}"):
        if work.exists() and not resume:
            note(f"discarding the unfinished run in {work} (use --resume to continue it)")
            await trio.to_thread.run_sync(lambda: shutil.rmtree(work))
        elif resume and not work.exists():
            note(f"nothing to resume in {work}: starting a new run")
        resumed = work.exists()
        work.mkdir(parents=True, exist_ok=True)
        finished = False
        try:
            # The run's cookies and headers are sealed with a key of its own, kept
            # beside its ledger for --resume and removed with it.
            box = await trio.to_thread.run_sync(SecretBox.from_key_file, work / "secrets.key")
            async with Ledger.open(work / "ledger.db", secrets=box) as ledger:
                runner = JobRunner(
                    ledger,
                    pool,
                    fetcher.policy,
                    RunnerConfig(data_dir=work),
                    on_progress=on_progress,
                )
                # We hold the lock: any lease in the work directory belongs to a run
                # that is gone (Ctrl-C, SIGKILL), so it goes back to the queue now.
                await ledger.recover()
                job, layout, known = await _open_offline_job(
                    ledger, site, options, today or date.today(), resumed
                )
                found: list[Discovery] = []
                try:
                    async with open_owned_nursery() as nursery:
                        if not job.urls_complete:
                            send, recv = trio.open_memory_channel[str](math.inf)
                            nursery.start_soon(
                                _feed_job, ledger, runner, job.id, recv, layout, known
                            )
                            nursery.start_soon(
                                _discover_job, site, fetcher, send, limits, ledger, job.id, found
                            )
                        final = await runner.run_job(job.id, out=out)
                except BulkError:
                    # Nothing to resume after an error (only an interruption keeps
                    # the work directory).
                    finished = True
                    raise
                finished = True
                return ArchiveResult(
                    job=final,
                    out=out if final.status == "completed" else None,
                    elapsed=trio.current_time() - started,
                    discovery=found[0] if found else None,
                    resumed=resumed,
                )
        finally:
            if finished:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        lambda: shutil.rmtree(work, ignore_errors=True)
                    )


async def _open_offline_job(
    ledger: Ledger, site: str, options: CaptureOptions, today: date, resumed: bool
) -> tuple[JobRow, Layout, set[str]]:
    layout = Layout(options.extension)
    if resumed:
        jobs = await ledger.jobs(kinds=("offline",))
        if jobs:
            job = jobs[-1]
            if job.site != site or dict(job.options) != options.to_json():
                raise ResumeMismatch(
                    "--resume: the unfinished run was for another site or other capture "
                    f"options (site {job.site!r}); run without --resume to start over"
                )
            known: set[str] = set()
            for row in await ledger.urls(job.id):
                if row.entry is not None:
                    layout.restore(row.url, row.entry)
                known.add(row.url)
            if job.status == "failed":
                raise ResumeMismatch("--resume: the earlier run ended with nothing to capture")
            if job.status == "completed":
                # The ZIP was written but the run was cut off before cleaning up:
                # package again (cheap) rather than leave the user without a file.
                await ledger.set_status(job.id, "packaging", expect=("completed",))
                job = await ledger.job(job.id)
            return job, layout, known
    root = root_folder(site_candidates(site)[0].href, today)
    job = await ledger.create_job(
        NewJob(
            kind="offline",
            site=site,
            urls=[],
            options=options.to_json(),
            root=root,
            urls_complete=False,
        )
    )
    return job, layout, set()


async def _discover_job(
    site: str,
    fetcher: Fetcher,
    send: trio.MemorySendChannel[str],
    limits: DiscoverLimits,
    ledger: Ledger,
    job_id: str,
    found: list[Discovery],
) -> None:
    result = await discover(site, fetcher, send, limits)
    await ledger.set_status(job_id, None, sitemap_urls=result.sitemaps)
    found.append(result)


async def _feed_job(
    ledger: Ledger,
    runner: JobRunner,
    job_id: str,
    recv: trio.MemoryReceiveChannel[str],
    layout: Layout,
    known: set[str],
) -> None:
    """Append discovered URLs to the job in batches: whatever has arrived, at once."""
    async with recv:
        ended = False
        while not ended:
            batch: list[tuple[str, str | None]] = []
            try:
                url = await recv.receive()
            except trio.EndOfChannel:
                break
            pending = [url]
            while len(pending) < 1000:
                try:
                    pending.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    ended = True
                    break
            for u in pending:
                if u not in known:
                    known.add(u)
                    batch.append((u, layout.assign(u)))
            if batch:
                await ledger.append_urls(job_id, batch)
                runner.urls_added(job_id)
    await ledger.append_urls(job_id, [], complete=True)
    runner.urls_added(job_id)
