"""Chromium's isolation: which user it runs as, what it can reach, how much memory.

A page is hostile input run by a browser. bulk does not trust the browser to keep it
in, so around Chromium's own sandbox it adds what the machine allows:

- **user**: run as root, bulk starts Chromium as an unprivileged user
  (``BULK_CHROMIUM_USER``, default ``bulk-chromium``, made by ``scripts/_bootstrap.sh``)
  so ``chromium_sandbox=True`` works (Chromium refuses its sandbox as root) and a
  compromised browser owns that user, not root;
- **sandbox**: Chromium's own (seccomp-bpf, namespaces) on every renderer; it needs
  user namespaces for unprivileged users;
- **private network**: Chromium lives in a network namespace of its own, where the
  only listener is the egress proxy's, handed to bulk by the launcher: no other
  local process can use the proxy, and Chromium has no resolver to ask;
- **memory**: a cgroup bounds each renderer and the whole capture side
  (``_memory.py``), so a page that eats memory fails alone as ``PAGE_TOO_LARGE``.

``plan_isolation`` finds out what holds here (a probe runs the launcher's steps
without Chromium), warns about what does not (or refuses, with
``BULK_SANDBOX=require``); ``open_launch`` prepares one pool's launches: the
launcher and its settings (``_launcher.py``), the channel the launcher hands the
proxy's listener back on, and the memory cgroups with their renderer placement.

What holds where (the README's Security section says the same):

=====================  =========================  =====================================
                       root                       not root
=====================  =========================  =====================================
user                   BULK_CHROMIUM_USER         bulk's own
sandbox                yes (userns for the user)  yes (unprivileged user namespaces)
private network        yes                        yes (inside a user namespace)
memory cgroup          yes (v1, or delegated v2)  only with a delegated v2 cgroup;
                                                  else RLIMIT_DATA per process
=====================  =========================  =====================================
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

from ._exceptions import BrowserUnavailable, ValidationError
from ._memory import MIB, MemoryBound, MemoryBoundUnavailable
from ._proxy import EgressProxy

__all__ = [
    "DEFAULT_RENDERER_MEMORY",
    "DEFAULT_USER",
    "Isolation",
    "Launch",
    "SandboxConfig",
    "open_launch",
    "plan_isolation",
]

log = logging.getLogger("bulk.capture")

MODES: Final = ("auto", "require", "off")
DEFAULT_USER: Final = "bulk-chromium"
DEFAULT_RENDERER_MEMORY: Final = 1024 * MIB
_MIN_MEMORY: Final = 128 * MIB
_LAUNCHER: Final = Path(__file__).with_name("_launcher.py")
_PROBE_TIMEOUT: Final = 10.0
# Chromium's own resolver answers "not found" for every name: names are resolved by
# the egress policy (the proxy gets them unresolved), never by the browser.
NO_RESOLVER_ARG: Final = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
# The JavaScript heap limit; dropped when memory cgroups bound the renderer, so a
# page over its memory is killed by the kernel and reported as PAGE_TOO_LARGE.
JS_HEAP_ARG: Final = "--js-flags=--max-old-space-size=512"
_TICK: Final = 0.1


def _check_memory(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < _MIN_MEMORY:
        raise ValidationError(
            f"{attribute.name} must be at least {_MIN_MEMORY // MIB} MB", field=attribute.name
        )


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """How Chromium is isolated (``BULK_SANDBOX``, ``BULK_CHROMIUM_USER``,
    ``BULK_RENDERER_MEMORY_MB``, ``BULK_CAPTURE_MEMORY_MB``; see ``_config.py``).

    Args:
        mode: ``auto``: everything this machine allows, a warning for the rest;
            ``require``: refuse to start Chromium unless everything holds; ``off``:
            Chromium as Playwright starts it (no sandbox as root; a warning says so).
        user: As root, the user Chromium runs as (a name or a uid).
        renderer_memory: Bytes one renderer may use.
        capture_memory: Bytes the whole capture side may use (None: every slot's
            renderer plus 1 GiB for the browser, at most 3/4 of the memory).
    """

    mode: str = attrs.field(default="auto", validator=attrs.validators.in_(MODES))
    user: str = DEFAULT_USER
    renderer_memory: int = attrs.field(default=DEFAULT_RENDERER_MEMORY, validator=_check_memory)
    capture_memory: int | None = attrs.field(default=None, validator=_check_memory)


@attrs.frozen(kw_only=True)
class Isolation:
    """What holds for the browsers of one pool (made by ``plan_isolation``).

    Attributes:
        user: The user Chromium runs as when bulk is root (None: bulk's own user).
        uid, gid: Its ids.
        sandbox: Chromium's own sandbox is on (``chromium_sandbox=True``).
        private_network: Chromium runs in a network namespace of its own whose only
            listener is the egress proxy's.
        userns: The network namespace is made inside a user namespace (not root).
        memory_cgroup: Renderers and the capture side are bounded by memory cgroups.
        rlimit_data: Without cgroups, the data limit of every Chromium process.
        warnings: One line per guarantee that does not hold here (logged once).
        launcher: Whether Chromium is started through ``_launcher.py``.
    """

    user: str | None = None
    uid: int | None = None
    gid: int | None = None
    sandbox: bool = False
    private_network: bool = False
    userns: bool = False
    memory_cgroup: bool = False
    rlimit_data: int | None = None
    warnings: tuple[str, ...] = ()
    launcher: bool = False


def _resolve_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


async def _probe(settings: dict[str, object]) -> dict[str, str]:
    """Run the launcher's steps in ``--probe`` mode; what failed and why."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bulk-probe-") as f:
        json.dump(settings, f)
        f.flush()
        with trio.fail_after(_PROBE_TIMEOUT):
            result = await trio.run_process(
                [sys.executable, "-I", "-S", str(_LAUNCHER), "--probe", f.name],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise BrowserUnavailable(
            "the Chromium launcher failed its probe: "
            + (message[-1] if message else f"exit {result.returncode}")
        )
    answer: dict[str, str] = json.loads(result.stdout)
    return answer


async def plan_isolation(
    config: SandboxConfig, executable: str, *, proxied: bool, slots: int
) -> Isolation:
    """Find out how Chromium can be isolated here; warn about what cannot hold.

    Args:
        config: What is asked for.
        executable: The Chromium binary.
        proxied: Whether Chromium goes through the egress proxy (without one, no
            private network: it would have no way out at all).
        slots: Pages captured at once (for the memory cgroup's default total).

    Returns:
        What holds. Each guarantee that does not is one of ``warnings``, also logged
        on ``bulk.capture`` at WARNING level.

    Raises:
        BrowserUnavailable: ``mode="require"`` and something does not hold; or
            Chromium cannot be run by the user it would run as.
        ValidationError: ``config.user`` is root.
    """
    if config.mode == "off":
        iso = Isolation(
            warnings=(
                "BULK_SANDBOX=off: Chromium runs as Playwright starts it"
                + (" (as root, without its sandbox)" if os.geteuid() == 0 else "")
                + ", the egress proxy is open to every local process and no memory "
                "cgroup bounds its pages",
            )
        )
        _warn(iso.warnings)
        return iso
    if not sys.platform.startswith("linux"):
        return _finish(
            config,
            Isolation(warnings=("Chromium's isolation by bulk is Linux-only",)),
        )
    warnings: list[str] = []
    root = os.geteuid() == 0
    entry = None
    if root:
        entry = _resolve_user(config.user)
        if entry is None:
            warnings.append(
                f"user {config.user!r} does not exist (scripts/_bootstrap.sh makes it: "
                f"useradd --system --no-create-home --shell /usr/sbin/nologin "
                f"{DEFAULT_USER}; or set BULK_CHROMIUM_USER): Chromium runs as nobody, "
                "shared with other services"
            )
            entry = _resolve_user("nobody")
        if entry is not None and entry.pw_uid == 0:
            raise ValidationError(
                "BULK_CHROMIUM_USER must not be root", field="BULK_CHROMIUM_USER"
            )
    user = (
        {"uid": entry.pw_uid, "gid": entry.pw_gid, "name": entry.pw_name}
        if entry is not None
        else None
    )
    answer = await _probe(
        {"netns": proxied, "userns": not root, "port": 0, "user": user, "chromium": executable}
    )
    if answer.get("user"):
        warnings.append(
            f"cannot switch to user {config.user!r} ({answer['user']}): Chromium runs as "
            "root, without its sandbox"
        )
        user, entry = None, None
    if answer.get("executable"):
        raise BrowserUnavailable(
            f"{answer['executable']}"
            + (f" (user {user['name']})" if user is not None else "")
            + ": install Chromium where every user can read it (Debian: "
            "apt-get install chromium; Playwright: PLAYWRIGHT_BROWSERS_PATH=/opt/ms-playwright)"
            " or set BULK_CHROMIUM"
        )
    private_network = proxied and not answer.get("netns")
    if proxied and answer.get("netns"):
        warnings.append(
            f"no network namespace for Chromium ({answer['netns']}): the egress proxy "
            "listens on 127.0.0.1, where every local process can use it"
        )
    sandbox = not answer.get("sandbox") and (user is not None or not root)
    if not sandbox:
        why = answer.get("sandbox") or "as root it needs a user to switch to"
        warnings.append(f"Chromium runs without its sandbox ({why})")
    memory_cgroup = False
    rlimit = None
    try:
        MemoryBound.create(config.renderer_memory, config.capture_memory, slots).close()
        memory_cgroup = True
    except MemoryBoundUnavailable as exc:
        rlimit = config.renderer_memory
        warnings.append(
            f"no memory cgroup ({exc}): every Chromium process is limited to "
            f"{rlimit // MIB} MB of data (RLIMIT_DATA); a page over it loses what it "
            "could not allocate rather than failing as PAGE_TOO_LARGE, and the capture "
            "side's total is not bounded"
        )
    iso = Isolation(
        user=entry.pw_name if entry is not None else None,
        uid=entry.pw_uid if entry is not None else None,
        gid=entry.pw_gid if entry is not None else None,
        sandbox=sandbox,
        private_network=private_network,
        userns=private_network and not root,
        memory_cgroup=memory_cgroup,
        rlimit_data=rlimit,
        warnings=tuple(warnings),
        launcher=True,
    )
    return _finish(config, iso)


def _finish(config: SandboxConfig, iso: Isolation) -> Isolation:
    if config.mode == "require" and iso.warnings:
        raise BrowserUnavailable("BULK_SANDBOX=require: " + "; ".join(iso.warnings))
    _warn(iso.warnings)
    return iso


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        log.warning("%s", warning)


@final
@attrs.define(eq=False)
class Launch:
    """How one pool launches Chromium (made by ``open_launch``).

    Attributes:
        isolation: What holds.
        executable_path: What Playwright starts (the launcher's wrapper, or Chromium).
        chromium_sandbox: Playwright's ``chromium_sandbox``.
        args: Switches on top of bulk's usual ones.
        dropped_args: bulk's usual switches not to pass (they would defeat a bound).
        memory: The memory cgroups, when they bound the pages.
        listeners: How many proxy listeners Chromium handed over (one per launch).
    """

    isolation: Isolation
    executable_path: str
    chromium_sandbox: bool
    args: tuple[str, ...] = ()
    dropped_args: tuple[str, ...] = ()
    memory: MemoryBound | None = None
    listeners: int = 0

    def memory_mark(self) -> int:
        """A mark for ``killed_for_memory`` (no I/O: taken at every capture)."""
        return self.memory.cached_kills if self.memory is not None else 0

    def killed_for_memory(self, mark: int) -> bool:
        """Whether a renderer was killed for going over its memory since ``mark``."""
        return self.memory is not None and self.memory.oom_kills() > mark

    def reap(self) -> None:
        """SIGKILL every process left of the browsers launched so far."""
        if self.memory is not None:
            self.memory.kill_all()


def write_wrapper(directory: Path, settings: dict[str, object]) -> Path:
    """Write the launcher's settings and the executable Playwright starts.

    The wrapper is ``sh`` running this Python with ``-I -S`` (no environment, no
    site-packages) on ``_launcher.py``: a second program, not a shebang, because a
    shebang takes one argument only.
    """
    config = directory / "launch.json"
    config.write_text(json.dumps(settings))
    wrapper = directory / "chromium"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -I -S {shlex.quote(str(_LAUNCHER))} "
        f'{shlex.quote(str(config))} "$@"\n'
    )
    wrapper.chmod(0o700)
    return wrapper


@asynccontextmanager
async def open_launch(
    isolation: Isolation,
    executable: str,
    proxy: EgressProxy | None,
    *,
    config: SandboxConfig,
    slots: int,
) -> AsyncIterator[Launch]:
    """Prepare one pool's launches of Chromium under ``isolation``.

    Args:
        isolation: From ``plan_isolation``.
        executable: The real Chromium.
        proxy: The egress proxy (opened with ``listen=not isolation.private_network``).
        config: The memory limits.
        slots: Pages captured at once.

    Yields:
        The ``Launch`` to give Playwright.

    Raises:
        BrowserUnavailable: The memory cgroup planned could not be made.

    Resource handling:
        A private directory (launcher, settings, the hand-over socket), a task that
        serves each listener handed over on ``proxy`` (the previous one is closed)
        and, with memory cgroups, a task placing renderers every 0.1 s. Leaving the
        block stops them, kills what is left in the cgroups and removes them and the
        directory (shielded).
    """
    if not isolation.launcher:
        yield Launch(
            isolation=isolation,
            executable_path=executable,
            chromium_sandbox=False,
            args=(NO_RESOLVER_ARG,) if proxy is not None else (),
        )
        return
    directory = Path(tempfile.mkdtemp(prefix="bulk-launch-"))
    memory: MemoryBound | None = None
    try:
        if isolation.memory_cgroup:
            try:
                memory = MemoryBound.create(
                    config.renderer_memory, config.capture_memory, slots
                )
            except MemoryBoundUnavailable as exc:
                raise BrowserUnavailable(f"no memory cgroup for Chromium: {exc}") from None
        control = directory / "control.sock"
        settings: dict[str, object] = {
            "chromium": executable,
            "netns": isolation.private_network,
            "userns": isolation.userns,
            "port": proxy.port if proxy is not None else 0,
            "control": str(control),
            "user": (
                {"uid": isolation.uid, "gid": isolation.gid, "name": isolation.user}
                if isolation.user is not None
                else None
            ),
            "cgroup": str(memory.launch_group) if memory is not None else None,
            "rlimit_data": isolation.rlimit_data,
            "no_sandbox": not isolation.sandbox,
        }
        wrapper = write_wrapper(directory, settings)
        launch = Launch(
            isolation=isolation,
            executable_path=str(wrapper),
            chromium_sandbox=True,  # the launcher adds --no-sandbox when it must
            args=(NO_RESOLVER_ARG,) if proxy is not None else (),
            dropped_args=(JS_HEAP_ARG,) if memory is not None else (),
            memory=memory,
        )
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if isolation.private_network:
                assert proxy is not None
                await nursery.start(_take_listeners, control, proxy, launch)
            if memory is not None:
                nursery.start_soon(_place_renderers, memory)
            try:
                yield launch
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller's own exception
                # (or cancellation) is not wrapped in an ExceptionGroup.
                body_error = exc
            finally:
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
    finally:
        with trio.CancelScope(shield=True):
            if memory is not None:
                await trio.to_thread.run_sync(memory.close)
            shutil.rmtree(directory, ignore_errors=True)


async def _place_renderers(memory: MemoryBound) -> None:
    while True:
        if memory.needs_tick():
            await trio.to_thread.run_sync(memory.tick)
        await trio.sleep(_TICK)


async def _take_listeners(
    path: Path,
    proxy: EgressProxy,
    launch: Launch,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept the launcher's hand-overs on ``path``; serve each listener on ``proxy``.

    Only a peer running as bulk's own user or root is heard (the directory is
    bulk's, mode 0700, too). A new listener replaces the previous one: a launch
    happens only once the previous browser is gone.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.bind(str(path))
        sock.listen(8)
        task_status.started()
        current: trio.CancelScope | None = None
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                with conn:
                    listener = await _receive_listener(conn)
                if listener is None:
                    continue
                if current is not None:
                    current.cancel()
                current = await nursery.start(_serve_one, proxy, listener)
                launch.listeners += 1


async def _receive_listener(conn: trio.socket.SocketType) -> trio.SocketListener | None:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid not in (0, os.getuid()):
        return None
    with trio.move_on_after(5):
        _data, ancillary, _flags, _address = await conn.recvmsg(
            1, socket.CMSG_SPACE(struct.calcsize("i")), socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and payload:
                (fd,) = struct.unpack("i", payload[: struct.calcsize("i")])
                std = socket.socket(fileno=fd)
                try:
                    if std.family != socket.AF_INET or std.type != socket.SOCK_STREAM:
                        raise ValueError("not a TCP socket")
                    return trio.SocketListener(trio.socket.from_stdlib_socket(std))
                except ValueError:  # not listening, or not TCP: not a launcher's
                    std.close()
    return None


async def _serve_one(
    proxy: EgressProxy,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await proxy.serve(listener)
    with suppress(trio.ClosedResourceError):
        await listener.aclose()
