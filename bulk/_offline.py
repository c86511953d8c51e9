"""The offline front: ``bulk archive`` on one machine.

A run keeps a ledger and the images in ``OUT.work`` next to the output, runs the job
with the same ``JobRunner`` as the service (``_jobs``), and renames the ZIP into place
only once it is complete. ``OUT.lock`` is taken first: a second run to the same
output gets ``LOCKED`` and touches nothing; earlier work is replaced only with
``--force`` and continued with ``--resume``.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ._capture import BrowserPool
from ._discover import DiscoverLimits, Discovery, discover
from ._exceptions import (
    BulkError,
    OutputExists,
    ResumeMismatch,
    ValidationError,
)
from ._fetch import Fetcher
from ._jobs import JobRunner, Progress, RunnerConfig, list_discovery, url_rows
from ._ledger import (
    JobRow,
    Ledger,
    NewJob,
    NewUrl,
    SecretBox,
)
from ._options import OPTION_SPECS, CaptureOptions
from ._paths import Layout, root_folder
from ._policy import EgressPolicy
from ._urllist import UrlList, screenshot_names
from ._urls import parse_http_url, site_candidates
from ._util import hold_lock, open_owned_nursery, receive_batch

__all__ = [
    "ROOT_NAME_PATTERN",
    "ArchiveResult",
    "archive_site",
    "archive_urls",
    "check_root_name",
    "lock_for",
    "work_dir_for",
]

log = logging.getLogger("bulk.jobs")

#: What ``--name`` (the archive's root folder) may be: what ``_paths.root_folder`` makes.
ROOT_NAME_PATTERN: Final = r"[a-z0-9][a-z0-9-]{0,199}"


# ---- offline runs (``bulk archive``) -------------------------------------------------


@attrs.frozen(kw_only=True)
class ArchiveResult:
    """How an offline archive run ended.

    ``captured`` counts the URLs this run settled (an interrupted run's earlier ones
    are in ``job`` but not here: a rate is ``captured / elapsed``).
    """

    job: JobRow
    out: Path | None
    elapsed: float
    discovery: Discovery | None
    resumed: bool
    captured: int = 0


def work_dir_for(out: Path) -> Path:
    """Where an offline run keeps its ledger and images until the ZIP is written."""
    return out.with_name(out.name + ".work")


def lock_for(out: Path) -> Path:
    """The lock file of the runs writing ``out`` (there while one runs)."""
    return out.with_name(out.name + ".lock")


def check_root_name(name: str) -> str:
    """``--name``: the archive's root folder, in the form bulk itself gives it.

    Raises:
        ValidationError: Not 1 to 200 of ``a-z 0-9 -``, starting with a letter or digit.
    """
    if not re.fullmatch(ROOT_NAME_PATTERN, name):
        raise ValidationError(
            f"--name {name[:80]!r}: use 1 to 200 lowercase letters, digits and '-' "
            "(it names the ZIP's root folder)",
            field="name",
        )
    return name




def _counting(
    on_progress: Callable[[Progress], None] | None, seen: list[int]
) -> Callable[[Progress], None]:
    def count(p: Progress) -> None:
        seen[0] += 1
        if on_progress is not None:
            on_progress(p)

    return count


def _refuse_overwrite(out: Path, work: Path, resume: bool, force: bool) -> None:
    """Earlier work is never thrown away without being asked (exit 2, touching nothing)."""
    if force:
        return
    if work.exists() and not resume:
        raise OutputExists(
            f"{work} holds an unfinished run: --resume continues it, --force discards it"
        )
    if out.exists() and not (resume and work.exists()):
        raise OutputExists(f"{out} exists: --force replaces it")


async def _run_offline(
    out: Path,
    *,
    pool: BrowserPool,
    policy: EgressPolicy,
    resume: bool,
    force: bool,
    note: Callable[[str], None],
    open_job: Callable[[Ledger, bool], Any],
    run: Callable[[Ledger, JobRunner, Any], Any],
    on_progress: Callable[[Progress], None] | None,
) -> tuple[Any, bool, int]:
    """The frame of an offline run: lock, work directory, ledger, runner.

    ``open_job(ledger, resumed)`` makes (or finds) the job; its errors keep the work
    directory (a mismatched ``--resume`` leaves the earlier run as it was).
    ``run(ledger, runner, opened)`` does the work; once it returns or raises a
    ``BulkError`` the work directory goes; an interruption keeps it for ``--resume``.

    Returns:
        What ``run`` returned, whether this resumed a run, URLs settled by this run.
    """
    work = work_dir_for(out)
    # The lock comes first: until it is held, nothing of OUT, OUT.partial or OUT.work
    # is touched (a second run to the same OUT must not wreck the first one).
    with hold_lock(lock_for(out), remove=True, held=f"another bulk archive is writing {out}"):
        _refuse_overwrite(out, work, resume, force)
        if work.exists() and not resume:
            note(f"discarding the unfinished run in {work} (--force)")
            await trio.to_thread.run_sync(lambda: shutil.rmtree(work))
        elif resume and not work.exists():
            note(f"nothing to resume in {work}: starting a new run")
        resumed = work.exists()
        work.mkdir(parents=True, exist_ok=True)
        finished = False
        settled = [0]
        try:
            # The run's cookies and headers are sealed with a key of its own, kept
            # beside its ledger for --resume and removed with it.
            box = await trio.to_thread.run_sync(SecretBox.from_key_file, work / "secrets.key")
            async with Ledger.open(work / "ledger.db", secrets=box) as ledger:
                runner = JobRunner(
                    ledger,
                    pool,
                    policy,
                    RunnerConfig(data_dir=work),
                    on_progress=_counting(on_progress, settled),
                )
                # We hold the lock: any lease in the work directory belongs to a run
                # that is gone (Ctrl-C, SIGKILL), so it goes back to the queue now.
                await ledger.recover()
                opened = await open_job(ledger, resumed)
                try:
                    value = await run(ledger, runner, opened)
                except BulkError:
                    # Nothing to resume after an error (only an interruption keeps
                    # the work directory).
                    finished = True
                    raise
                finished = True
                return value, resumed, settled[0]
        finally:
            if finished:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        lambda: shutil.rmtree(work, ignore_errors=True)
                    )


async def archive_site(
    site: str,
    out: Path,
    *,
    options: CaptureOptions,
    limits: DiscoverLimits,
    pool: BrowserPool,
    fetcher: Fetcher,
    resume: bool = False,
    force: bool = False,
    name: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    on_discovered: Callable[[Discovery, Mapping[str, int]], None] | None = None,
    today: date | None = None,
) -> ArchiveResult:
    """Archive a whole site into ``out``: discover, capture, package (``bulk archive``).

    Capture starts as soon as discovery has sent the first URLs. State lives in
    ``work_dir_for(out)`` (a ledger and the images) so an interrupted run can go on
    with ``resume=True`` without recapturing what is done; it is removed once the run
    has ended (``out`` written, or nothing to capture). ``out`` only ever appears
    complete: it is written as ``.partial`` and renamed.

    Args:
        name: The ZIP's root folder (default ``screenshots-<host>-<date>``).
        force: Replace an existing ``out``, discard an unfinished run of it.
        on_discovered: Called once discovery has ended and every URL it found is in
            the job, with its report and how many URLs each host (``host[:port]``)
            has (the CLI's warnings).

    Returns:
        The result; ``out`` is ``None`` when no page could be captured (the job is
        ``failed`` with ``NO_PAGES_CAPTURED`` and no ZIP is written).

    Raises:
        LockHeld: Another ``bulk archive`` is writing ``out`` (nothing was touched).
        OutputExists: ``out`` exists, or an unfinished run of it, and neither
            ``force`` nor (for the latter) ``resume`` says what to do with it.
        ResumeMismatch: ``resume`` on a work directory of another site/options.
        DiscoveryError / FetchError / URLBlocked / InvalidURL: Nothing to capture.

    Cancellation:
        Leases are released and the work directory is kept for ``--resume``.
    """
    note = on_note or (lambda _m: None)
    started = trio.current_time()
    found: list[Discovery] = []
    root = name or root_folder(site_candidates(site)[0].href, today or date.today())

    async def open_job(ledger: Ledger, resumed: bool) -> tuple[JobRow, Layout, set[str]]:
        return await _open_offline_job(ledger, site, options, root, resumed)

    async def run(ledger: Ledger, runner: JobRunner, opened: Any) -> JobRow:
        job, layout, known = opened
        async with open_owned_nursery() as nursery:
            if not job.urls_complete:
                nursery.start_soon(
                    _discover_into_job,
                    site,
                    fetcher,
                    limits,
                    ledger,
                    runner,
                    job.id,
                    layout,
                    known,
                    found,
                    on_discovered,
                )
            return await runner.run_job(job.id, out=out)

    final, resumed, captured = await _run_offline(
        out,
        pool=pool,
        policy=fetcher.policy,
        resume=resume,
        force=force,
        note=note,
        open_job=open_job,
        run=run,
        on_progress=on_progress,
    )
    return ArchiveResult(
        job=final,
        out=out if final.status == "completed" else None,
        elapsed=trio.current_time() - started,
        discovery=found[0] if found else None,
        resumed=resumed,
        captured=captured,
    )


async def archive_urls(
    urls: UrlList,
    out: Path,
    *,
    options: CaptureOptions,
    pool: BrowserPool,
    policy: EgressPolicy,
    limit: int | None = None,
    resume: bool = False,
    force: bool = False,
    name: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    today: date | None = None,
) -> ArchiveResult:
    """Archive a checked URL list into ``out`` (``bulk archive --urls``).

    The same run as ``archive_site`` (work directory, ``--resume``, ``--force``,
    the same ZIP layout) with the list in place of discovery: the root folder is
    named after the first URL's host unless ``name`` is given, and each URL is
    captured with its own options where the list gave some.

    Args:
        urls: The list (``_urllist.prepare_url_list``).
        limit: Capture at most this many of its URLs (the rest is reported cut).

    Raises:
        As ``archive_site``; ``ResumeMismatch`` when the unfinished run was for
        another list or other options.
    """
    note = on_note or (lambda _m: None)
    started = trio.current_time()
    truncated = limit is not None and len(urls.items) > limit
    kept = min(len(urls.items), limit) if limit is not None else len(urls.items)
    root = name or root_folder(urls.first_url, today or date.today())

    async def open_job(ledger: Ledger, resumed: bool) -> JobRow:
        if resumed:
            jobs = await ledger.jobs(kinds=("offline",))
            if jobs:
                job = jobs[-1]
                if (job.discovery or {}).get("list_sha256") != urls.signature():
                    raise ResumeMismatch(
                        "--resume: the unfinished run was for another URL list "
                        f"({job.site}); --force discards it"
                    )
                _same_options(job, options)
                return await _packaged_again(ledger, job)
        layout = Layout(options.extension)
        return await ledger.create_job(
            NewJob(
                kind="offline",
                site=urls.first_url,
                urls=url_rows(urls, layout, kept),
                options=options.to_json(),
                root=root,
                discovery=list_discovery(urls, kept=kept, truncated=truncated),
            )
        )

    async def run(ledger: Ledger, runner: JobRunner, job: Any) -> JobRow:
        return await runner.run_job(job.id, out=out)

    final, resumed, captured = await _run_offline(
        out,
        pool=pool,
        policy=policy,
        resume=resume,
        force=force,
        note=note,
        open_job=open_job,
        run=run,
        on_progress=on_progress,
    )
    return ArchiveResult(
        job=final,
        out=out if final.status == "completed" else None,
        elapsed=trio.current_time() - started,
        discovery=None,
        resumed=resumed,
        captured=captured,
    )


def _option_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first capture option two runs disagree on, in the CLI's words."""
    for spec in OPTION_SPECS:
        before, after = old.get(spec.name), new.get(spec.name)
        if before == after:
            continue
        if spec.kind in ("cookies", "headers"):
            # Never echo a cookie or header value.
            return f"{spec.flag} differs"
        return f"{spec.flag} was {_shown(before)}, now {_shown(after)}"
    return None


def _shown(value: Any) -> str:
    if value is None or value == [] or value is False:
        return "not given"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _same_options(job: JobRow, options: CaptureOptions) -> None:
    differs = _option_difference(dict(job.options), options.to_json())
    if differs is not None:
        raise ResumeMismatch(
            f"--resume: the unfinished run used other capture options ({differs}); "
            "give the same options, or --force to discard it",
            details={"option": differs.split(" ", 1)[0]},
        )


async def _packaged_again(ledger: Ledger, job: JobRow) -> JobRow:
    if job.status == "failed":
        raise ResumeMismatch("--resume: the earlier run ended with nothing to capture")
    if job.status == "completed":
        # The ZIP was written but the run was cut off before cleaning up:
        # package again (cheap) rather than leave the user without a file.
        await ledger.set_status(job.id, "packaging", expect=("completed",))
        job = await ledger.job(job.id)
    return job


async def _open_offline_job(
    ledger: Ledger, site: str, options: CaptureOptions, root: str, resumed: bool
) -> tuple[JobRow, Layout, set[str]]:
    layout = Layout(options.extension)
    if resumed:
        jobs = await ledger.jobs(kinds=("offline",))
        if jobs:
            job = jobs[-1]
            if job.site != site:
                raise ResumeMismatch(
                    f"--resume: the unfinished run was for {job.site!r}, not {site!r}; "
                    "--force discards it",
                    details={"option": "SITE"},
                )
            _same_options(job, options)
            known: set[str] = set()
            for row in await ledger.urls(job.id):
                if row.entry is not None:
                    layout.restore(row.url, row.entry, row.extra_entries)
                known.add(row.url)
            return await _packaged_again(ledger, job), layout, known
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


def _authority(url: str) -> str:
    try:
        return parse_http_url(url).authority
    except BulkError:
        return "?"


async def _discover_into_job(
    site: str,
    fetcher: Fetcher,
    limits: DiscoverLimits,
    ledger: Ledger,
    runner: JobRunner,
    job_id: str,
    layout: Layout,
    known: set[str],
    found: list[Discovery],
    on_discovered: Callable[[Discovery, Mapping[str, int]], None] | None,
) -> None:
    """Discover ``site`` into the job, then record what discovery found and cut.

    The job's list is marked complete only after the report is stored, so the
    packaging that follows always sees it (the manifest says when a limit cut it).
    """
    send, recv = trio.open_memory_channel[str](math.inf)
    hosts: collections.Counter[str] = collections.Counter()
    shots = screenshot_names(CaptureOptions.from_mapping((await ledger.job(job_id)).options))
    async with open_owned_nursery() as nursery:
        nursery.start_soon(_feed_job, ledger, runner, job_id, recv, layout, known, hosts, shots)
        result = await discover(site, fetcher, send, limits)
    await ledger.set_status(
        job_id, None, sitemap_urls=result.sitemaps, discovery=result.to_json()
    )
    await ledger.append_urls(job_id, [], complete=True)
    runner.urls_added(job_id)
    found.append(result)
    if on_discovered is not None:
        on_discovered(result, hosts)


async def _feed_job(
    ledger: Ledger,
    runner: JobRunner,
    job_id: str,
    recv: trio.MemoryReceiveChannel[str],
    layout: Layout,
    known: set[str],
    hosts: collections.Counter[str],
    shots: Sequence[str],
) -> None:
    """Append discovered URLs to the job in batches: whatever has arrived, at once."""
    async with recv:
        while pending := await receive_batch(recv, 1000):
            batch: list[NewUrl] = []
            for u in pending:
                hosts[_authority(u)] += 1
                if u not in known:
                    known.add(u)
                    entry, extra = layout.assign_shots(u, shots)
                    batch.append(NewUrl(url=u, entry=entry, extra_entries=extra or None))
            if batch:
                await ledger.append_urls(job_id, batch)
                runner.urls_added(job_id)
