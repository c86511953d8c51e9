"""The browser's isolation, with the real Chromium: its renderers run sandboxed as an
unprivileged user, nothing but that Chromium can use the egress proxy, Chromium asks
no resolver for any name, a page that eats memory fails alone as PAGE_TOO_LARGE, and
signalling bulk's process group leaves nothing of Chromium.

Run as root (as CI does) every guarantee is checked; not root, the tests check what
the README promises there (the same, but the memory bound, which is then a per-process
data limit with a warning).
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from bulk._capture import BrowserPool, PoolConfig, Screenshot
from bulk._exceptions import BulkError
from bulk._memory import MIB, MemoryBoundUnavailable, find_memory_cgroup
from bulk._options import CaptureOptions
from bulk._policy import EgressPolicy, IPAddress
from bulk._sandbox import DEFAULT_USER, SandboxConfig
from tests.conftest import BULK
from tests.sitekit import ROOT, Route, SiteServer

pytestmark = pytest.mark.browser

AS_ROOT = os.geteuid() == 0
POLICY = EgressPolicy(allow=("127.0.0.1/32",))
GREEN_PAGE = "<body style='background:#0a0'><h1>ok</h1></body>"


@asynccontextmanager
async def open_pool(
    chromium: str, policy: EgressPolicy = POLICY, **kw: Any
) -> AsyncIterator[BrowserPool]:
    async with BrowserPool.open(PoolConfig(executable=chromium, **kw), policy) as pool:
        yield pool


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def descendants(pid: int) -> set[int]:
    """``pid`` and every process under it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


def status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def process_type(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    start = cmdline.find(b"--type=")
    return "browser" if start < 0 else cmdline[start + 7 :].split(b"\0")[0].split()[0].decode()


def _seccomp(pid: int) -> str | None:
    """The ``Seccomp:`` mode of ``pid`` (None: gone meanwhile)."""
    try:
        return status(pid).get("Seccomp")
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        yield server


# -- item 10: the sandbox ---------------------------------------------------------------------


async def test_renderers_run_sandboxed_as_an_unprivileged_user(
    chromium: str, site: SiteServer
) -> None:
    site.routes["/a"] = Route(body=GREEN_PAGE)
    kinds: dict[int, str] = {}
    async with open_pool(chromium, concurrency=2) as pool, trio.open_nursery() as nursery:
        # Looked at while the page is open (a renderer lives as long as its page).
        nursery.start_soon(pool.capture, site.url("/a"), CaptureOptions(delay=3000))
        assert pool.browser_pid is not None
        # A renderer is forked from the zygote and engages seccomp-bpf first thing,
        # before it is given any page: one caught in that first instant still shows
        # "Seccomp: 0". So: wait until the page was served (its renderer exists) and
        # every renderer has engaged it; one that never does fails the wait.
        deadline = trio.current_time() + 30
        while True:
            family = descendants(pool.browser_pid)
            kinds = {pid: process_type(pid) for pid in family if alive(pid)}
            modes = {pid: _seccomp(pid) for pid, kind in kinds.items() if kind == "renderer"}
            served = any(r.path == "/a" for r in site.requests)
            if served and modes and all(mode in ("2", None) for mode in modes.values()):
                break
            assert trio.current_time() < deadline, f"renderers' seccomp modes: {modes}"
            await trio.sleep(0.1)
        seen, userns = {}, {}
        for pid in kinds:
            try:
                seen[pid] = status(pid)
                userns[pid] = os.readlink(f"/proc/{pid}/ns/user")
            except OSError:
                continue  # gone meanwhile
        browser_userns = userns[pool.browser_pid]
    renderers = [pid for pid, kind in kinds.items() if kind == "renderer" and pid in seen]
    assert renderers, kinds
    for pid in renderers:
        uids = seen[pid]["Uid"].split()
        assert "0" not in uids, (pid, seen[pid]["Uid"])
        assert seen[pid]["Seccomp"] == "2", (pid, seen[pid]["Seccomp"])  # seccomp-bpf
        assert seen[pid]["NoNewPrivs"] == "1"
    want = pwd.getpwnam(DEFAULT_USER).pw_uid if AS_ROOT else os.getuid()
    for pid, fields in seen.items():  # the browser and every helper too
        assert fields["Uid"].split() == [str(want)] * 4, (kinds[pid], fields["Uid"])
        if userns[pid] == browser_userns:
            # (The sandbox's zygotes hold capabilities in user namespaces of their
            # own, over nothing but themselves.)
            assert int(fields["CapEff"], 16) == 0, (kinds[pid], fields["CapEff"])


# -- item 11: nobody else uses the proxy; no resolver ---------------------------------------------

# A plain local process speaking HTTP proxy to 127.0.0.1:PORT (bash's /dev/tcp, so it
# can run as any user); prints what it got, or that it could not connect.
_PROXY_CLIENT = r"""
exec 3<>/dev/tcp/127.0.0.1/$1 || { echo refused; exit 0; }
printf 'GET http://127.0.0.1:%s/secret HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
timeout 5 cat <&3 | head -c 200
"""


async def test_no_other_local_process_can_use_the_proxy(
    chromium: str, site: SiteServer
) -> None:
    site.routes["/ok"] = Route(body=GREEN_PAGE)
    site.routes["/secret"] = Route(body="secret")
    async with open_pool(chromium, concurrency=2) as pool:
        shot = await pool.capture(site.url("/ok"), CaptureOptions())
        assert isinstance(shot, Screenshot)  # Chromium itself goes through the proxy
        proxy = pool._proxy
        assert proxy is not None and proxy.stats.allowed >= 1
        before = proxy.stats.connections
        users: list[int | None] = [None]
        if AS_ROOT:  # the browser's own user, outside its namespace, neither
            users.append(pwd.getpwnam(DEFAULT_USER).pw_uid)
        for user in users:
            result = await trio.run_process(
                ["bash", "-c", _PROXY_CLIENT, "client", str(proxy.port), str(site.port)],
                capture_stdout=True,
                check=False,
                user=user,
            )
            assert b"secret" not in result.stdout, result.stdout
        assert proxy.stats.connections == before
    assert site.hits("/secret") == []


_DNS_PAGE = """<!doctype html><html><head>
<link rel="dns-prefetch" href="//prefetch-{t}.example.com">
<link rel="dns-prefetch" href="https://prefetch2-{t}.example.com">
<link rel="preconnect" href="https://preconnect-{t}.example.com">
<link rel="prefetch" href="http://prefetched-{t}.example.com:{port}/x">
</head><body style="background:#0a0"><h1>names</h1>
<img src="http://img-{t}.example.com:{port}/img.png">
<iframe src="http://frame-{t}.example.com:{port}/x"></iframe>
<script>
fetch("http://fetch-{t}.example.com:{port}/x").catch(() => {{}});
try {{ new WebSocket("ws://ws-{t}.example.com:{port}/"); }} catch (e) {{}}
try {{
  const pc = new RTCPeerConnection({{iceServers: [
    {{urls: "stun:stun-{t}.example.com:3478"}},
    {{urls: "turn:turn-{t}.example.com:3478", username: "u", credential: "c"}},
    {{urls: "turns:turns-{t}.example.com:443?transport=tcp", username: "u", credential: "c"}}],
    iceTransportPolicy: "all"}});
  pc.createDataChannel("x");
  pc.createOffer().then(o => pc.setLocalDescription(o)).catch(() => {{}});
}} catch (e) {{}}
</script></body></html>"""
# Names only a path around the proxy would resolve: nobody may ever ask for them.
# (TURN servers are left out: over TCP, Chromium reaches them through the proxy,
# whose policy then resolves them, as it should.)
_UNPROXIED = ("prefetch-", "prefetch2-", "stun-")
# Names that go through the proxy: the policy, and only the policy, resolves them.
_PROXIED = ("img-", "fetch-", "frame-")

# Net log event types of Chromium asking a resolver (its own DNS client, getaddrinfo).
_RESOLVER_EVENTS = ("DNS_TRANSACTION", "HOST_RESOLVER_SYSTEM_TASK", "HOST_RESOLVER_DNS_TASK")


def _asked_a_resolver(netlog: Path) -> list[str]:
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    out = []
    for event in log["events"]:
        kind = names.get(event["type"], "")
        if kind.startswith(_RESOLVER_EVENTS):
            out.append(f"{kind} {json.dumps(event.get('params', {}))[:200]}")
    return out


@contextmanager
def world_writable_dir() -> Iterator[Path]:
    """A directory the Chromium user can write to (``tmp_path`` is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="bulk-netlog-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_chromium_asks_no_resolver_names_go_to_the_policy(
    chromium: str, site: SiteServer
) -> None:
    token = f"n{os.getpid()}"
    site.routes["/names"] = Route(body=_DNS_PAGE.format(t=token, port=site.port))
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    with world_writable_dir() as directory:
        netlog = directory / "netlog.json"
        args = (f"--log-net-log={netlog}", "--net-log-capture-mode=Everything")
        async with open_pool(chromium, policy, concurrency=1, extra_args=args) as pool:
            await pool.capture(site.url("/names"), CaptureOptions(delay=2000))
        asked_chromium = _asked_a_resolver(netlog)  # written out when Chromium exits
    assert asked_chromium == []
    assert {p for p in _PROXIED if any(h.startswith(p + token) for h in asked)} == set(_PROXIED)
    assert [h for h in asked if h.startswith(tuple(p + token for p in _UNPROXIED))] == []


@dataclass
class DnsCanary:
    """A DNS server on a loopback address of its own, port 53, answering NXDOMAIN;
    each question is recorded with the process that asked (found from the source
    port while the asker waits for the answer)."""

    address: str = ""
    questions: list[tuple[str, str]] = field(default_factory=list)


def _question(data: bytes) -> str:
    i, labels = 12, []
    while i < len(data) and data[i]:
        labels.append(data[i + 1 : i + 1 + data[i]].decode(errors="replace"))
        i += 1 + data[i]
    return ".".join(labels)


def _owner(port: int) -> str:
    """The executable of the process whose UDP socket has local port ``port``."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
    return "?"


@contextmanager
def dns_canary() -> Iterator[DnsCanary]:
    canary = DnsCanary(address=f"127.53.{os.getpid() % 250}.{1 + os.getpid() // 250 % 250}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((canary.address, 53))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, address = sock.recvfrom(4096)
            except TimeoutError:
                continue
            canary.questions.append((_question(data), _owner(address[1])))
            answer = data[:2] + b"\x81\x83" + data[4:6] + b"\0" * 6 + data[12:]
            sock.sendto(answer, address)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield canary
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def test_dns_canary_hears_nothing_from_chromium(tmp_path: Path, site: SiteServer) -> None:
    """``bulk shot`` in a mount namespace whose resolv.conf points at a canary: the
    policy (bulk's own process) asks for the names pages load through the proxy;
    Chromium asks for nothing, and nobody for the names only it could have wanted."""
    if not AS_ROOT:
        pytest.fail("run as root (as CI does): a private resolv.conf needs a mount namespace")
    token = f"c{os.getpid()}"
    site.routes["/names"] = Route(body=_DNS_PAGE.format(t=token, port=site.port))
    resolv = tmp_path / "resolv.conf"
    command = (
        f"mount --bind {resolv} /etc/resolv.conf && exec "
        + " ".join([*BULK, "shot", site.url("/names"), "-o", str(tmp_path / "n.png")])
        + " --allow 127.0.0.1 --delay 2000"
    )
    with dns_canary() as canary:
        resolv.write_text(f"nameserver {canary.address}\noptions attempts:1 timeout:1\n")
        result = subprocess.run(
            ["unshare", "--mount", "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stderr
    ours = [(name, who) for name, who in canary.questions if token in name]
    assert ours, "the policy resolved nothing: is the canary deaf?"
    assert [q for q in ours if "chrom" in q[1]] == []
    assert [q for q in ours if q[0].startswith(_UNPROXIED)] == []
    bulk = os.path.realpath(sys.executable)
    assert {who for _, who in ours} <= {bulk, "?"}
    # "?": a second question (AAAA after A) from a socket closed before it was looked
    # up; the same name was asked, attributed, by bulk.
    assert {n for n, who in ours if who == "?"} <= {n for n, who in ours if who == bulk}


# -- item 12: memory ---------------------------------------------------------------------------

_HOGS = {
    # Array buffers live outside the JavaScript heap and its flag.
    "/array-buffers": "const k = []; for (;;) k.push(new Uint8Array(32 << 20).fill(1));",
    # Canvases: pixels in the renderer, not in the heap.
    "/canvases": (
        "const k = []; for (let i = 0; i < 1000; i++) { const c = document.createElement"
        "('canvas'); c.width = c.height = 4096; const x = c.getContext('2d'); "
        "x.fillStyle = '#f00'; x.fillRect(0, 0, 4096, 4096); k.push(c); }"
    ),
    # The JavaScript heap itself.
    "/js-heap": "const k = []; for (;;) k.push(new Array(1e6).fill(Math.random()));",
}
RENDERER_LIMIT = 512 * MIB
CAPTURE_LIMIT = 2048 * MIB


def _used_memory() -> int:
    info = dict(
        (line.split(":")[0], int(line.split()[1]) * 1024)
        for line in Path("/proc/meminfo").read_text().splitlines()
    )
    return info["MemTotal"] - info["MemAvailable"]


async def test_memory_hogs_fail_alone_as_page_too_large(chromium: str, site: SiteServer) -> None:
    for path, script in _HOGS.items():
        site.routes[path] = Route(
            body=f"<h1>hog</h1><script>setTimeout(() => {{ {script} }}, 0)</script>"
        )
    normal = [f"/ok{i}" for i in range(6)]
    for path in normal:
        site.routes[path] = Route(body=GREEN_PAGE)
    sandbox = SandboxConfig(renderer_memory=RENDERER_LIMIT, capture_memory=CAPTURE_LIMIT)
    results: dict[str, Screenshot | BulkError] = {}
    baseline = _used_memory()
    peak_machine = 0

    async def sample(cancel: trio.CancelScope) -> None:
        nonlocal peak_machine
        with cancel:
            while True:
                peak_machine = max(peak_machine, _used_memory() - baseline)
                await trio.sleep(0.05)

    async def one(session: Any, path: str) -> None:
        try:
            results[path] = await session.capture(site.url(path))
        except BulkError as exc:
            results[path] = exc

    async with open_pool(chromium, concurrency=4, sandbox=sandbox) as pool:
        isolation = pool.isolation
        sampler = trio.CancelScope()
        async with trio.open_nursery() as outer:
            outer.start_soon(sample, sampler)
            async with (
                pool.session(CaptureOptions(timeout=30000)) as session,
                trio.open_nursery() as nursery,
            ):
                for path in [*_HOGS, *normal]:
                    nursery.start_soon(one, session, path)
            sampler.cancel()
        assert pool.relaunches == 0  # renderers died, never the browser
        peak = pool.memory_peak()
    print(
        f"\nmemory: capture side peak {peak / MIB:.0f} MB (bound {CAPTURE_LIMIT // MIB} MB), "
        f"machine +{peak_machine / MIB:.0f} MB over {baseline / MIB:.0f} MB"
    )
    for path in normal:
        assert isinstance(results[path], Screenshot), (path, results[path])
    if isolation.memory_cgroup:
        for path in _HOGS:
            outcome = results[path]
            assert isinstance(outcome, BulkError) and outcome.code == "PAGE_TOO_LARGE", (
                path,
                outcome,
            )
        assert 100 * MIB < peak <= CAPTURE_LIMIT
    else:
        # Not root: a per-process data limit bounds them (said in a warning), and a
        # hog that did not crash is captured with what it could allocate.
        assert any("RLIMIT_DATA" in w for w in isolation.warnings)
        assert AS_ROOT is False


# -- Chromium dies with bulk's process group ---------------------------------------------------


def test_sigkill_to_bulks_process_group_leaves_no_chromium(tmp_path: Path) -> None:
    """``bulk serve`` promises one process group to signal. Playwright starts
    Chromium in a session of its own; the launcher's parent-death signal takes it
    down with bulk's group instead, helpers and crash handlers included."""
    serve = ["serve", "--port", "0", "--db", str(tmp_path / "l.db")]
    proc = subprocess.Popen(
        [*BULK, *serve, "--data-dir", str(tmp_path / "d")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        chromium: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            family = descendants(proc.pid)
            chromium = {p for p in family if alive(p) and "chrom" in _exe(p)}
            if any(process_type(p) == "renderer" for p in chromium if alive(p)):
                break
            time.sleep(0.2)
        # Crash handlers double-fork away from the tree: find them by their group.
        chromium |= {p for p in _capture_cgroup_procs(proc.pid) if alive(p)}
        assert len(chromium) >= 3, "Chromium did not start"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in chromium):
        time.sleep(0.05)
    assert [p for p in chromium if alive(p)] == []


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _capture_cgroup_procs(pid: int) -> set[int]:
    """Processes in the memory cgroups ``bulk`` process ``pid`` made (none: not root)."""
    try:
        _, parent = find_memory_cgroup()
    except MemoryBoundUnavailable:
        return set()
    out: set[int] = set()
    for procs in parent.glob(f"bulk-capture-{pid}-*/**/cgroup.procs"):
        try:
            out |= {int(p) for p in procs.read_text().split()}
        except OSError:
            continue
    return out
