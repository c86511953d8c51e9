"""Chromium's isolation without Chromium: the launcher run the way Playwright runs it,
with a stand-in browser that reports what it was given; the plan; the memory cgroups
with a stand-in renderer. (tests/security/test_browser_isolation.py checks the same
with the real Chromium.)"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from bulk._exceptions import BrowserUnavailable, ValidationError
from bulk._memory import MIB, MemoryBound, MemoryBoundUnavailable
from bulk._policy import EgressPolicy
from bulk._proxy import open_egress_proxy
from bulk._sandbox import (
    DEFAULT_USER,
    Isolation,
    SandboxConfig,
    open_launch,
    plan_isolation,
)

ROOT = os.geteuid() == 0
POLICY = EgressPolicy(allow=("127.0.0.1/32",))

# Writes what it runs with into the profile directory, answers on fd 4 what it reads
# on fd 3 (Playwright's pipes), then exits.
FAKE_BROWSER = r"""#!/bin/sh
for a in "$@"; do case "$a" in --user-data-dir=*) dir="${a#--user-data-dir=}";; esac; done
out="$dir/report"
{
  echo "argv $*"
  echo "id $(id -u) $(id -g) $(id -G)"
  grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status
  echo "netns $(readlink /proc/self/ns/net)"
  echo "cgroup $(grep -E ':memory:|^0::' /proc/self/cgroup | head -1)"
  echo "data $(ulimit -d)"
  echo "fds $(ls /proc/self/fd | tr '\n' ' ')"
  env | sed 's/^/env /'
} > "$out" 2>&1
read line <&3
echo "pong $line" >&4
"""


@pytest.fixture
def fake_browser() -> Iterator[str]:
    """The stand-in, where any user can run it (``tmp_path`` is root's only)."""
    directory = tempfile.mkdtemp(prefix="bulk-fake-browser-")
    os.chmod(directory, 0o755)
    path = Path(directory) / "chromium"
    path.write_text(FAKE_BROWSER)
    path.chmod(0o755)
    yield str(path)
    shutil.rmtree(directory)


@pytest.fixture
def profile() -> Iterator[Path]:
    """A temporary profile directory like Playwright's (root's, mode 0700, in /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="playwright_chromiumdev_profile-"))
    (path / "Default").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_like_playwright(executable: str, profile: Path, *args: str) -> tuple[int, str, str]:
    """Start ``executable`` as Playwright does: Chromium's argv, pipes on fds 3 and 4."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Above 3 and 4, so the shell's redirections cannot overwrite one another.
    for name in ("to_browser_r", "from_browser_w"):
        low = locals()[name]
        high = fcntl.fcntl(low, fcntl.F_DUPFD, 20)
        os.close(low)
        if name == "to_browser_r":
            to_browser_r = high
        else:
            from_browser_w = high
    command = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
    proc = subprocess.Popen(
        ["bash", "-c", command, executable, *args, f"--user-data-dir={profile}", "--headless"],
        pass_fds=(to_browser_r, from_browser_w),
        stderr=subprocess.PIPE,
        env={**os.environ, "BULK_TEST_SECRET": "do-not-pass"},
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    os.write(to_browser_w, b"ping\n")
    os.close(to_browser_w)
    with os.fdopen(from_browser_r, "rb") as answer:
        reply = answer.read().decode()
    _, err = proc.communicate(timeout=30)
    return proc.returncode, reply, err.decode()


def report(profile: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (profile / "report").read_text().splitlines():
        key, _, value = line.replace("\t", " ").partition(" ")
        if key == "env":
            out["env:" + value.split("=", 1)[0]] = value.split("=", 1)[1]
        else:
            out[key.rstrip(":")] = value.strip()
    return out


# -- the launcher -----------------------------------------------------------------------------


async def test_the_launcher_isolates_the_browser(fake_browser: str, profile: Path) -> None:
    config = SandboxConfig()
    iso = await plan_isolation(config, fake_browser, proxied=True, slots=2)
    assert iso.private_network and iso.launcher and iso.warnings == ()
    async with (
        open_egress_proxy(POLICY, require_auth=False, listen=False) as proxy,
        open_launch(iso, fake_browser, proxy, config=config, slots=2) as launch,
    ):
        code, reply, err = await trio.to_thread.run_sync(
            run_like_playwright, launch.executable_path, profile, "--no-startup-window"
        )
        assert code == 0, err
        assert reply == "pong ping\n"  # Playwright's pipes survive the launcher
        seen = report(profile)
        with trio.fail_after(5):  # the listener Chromium would use reached the proxy
            while launch.listeners < 1:  # noqa: ASYNC110 (a counter, not an event)
                await trio.sleep(0.01)
    assert seen["argv"] == f"--no-startup-window --user-data-dir={profile} --headless"
    assert seen["netns"] != os.readlink("/proc/self/ns/net")
    assert seen["NoNewPrivs"] == "1"
    assert int(seen["CapEff"], 16) == 0 and int(seen["CapPrm"], 16) == 0
    assert "BULK_TEST_SECRET" not in str(seen) and "env:PATH" in seen
    # Only Playwright's fds (the test's own pipes, on 20+, are closed); ls adds one.
    assert seen["fds"].split()[:5] == ["0", "1", "2", "3", "4"]
    assert len(seen["fds"].split()) <= 6
    if ROOT:
        user = pwd.getpwnam(DEFAULT_USER)
        assert seen["id"] == f"{user.pw_uid} {user.pw_gid} {user.pw_gid}"
        assert seen["env:HOME"] == str(profile)
        assert os.stat(profile).st_uid == user.pw_uid
        assert os.stat(profile / "Default").st_uid == user.pw_uid
        assert launch.memory is not None
        assert str(launch.memory.launch_group).endswith(seen["cgroup"].split(":", 2)[2])
        assert not launch.memory.group.exists()  # removed when the block ended
    else:
        assert seen["id"].split()[0] == str(os.getuid())


async def test_the_launcher_refuses_a_profile_outside_the_temporary_directory(
    fake_browser: str, tmp_path: Path
) -> None:
    if not ROOT:
        pytest.fail("run as root (as CI does): only root hands a profile over")
    config = SandboxConfig()
    iso = await plan_isolation(config, fake_browser, proxied=False, slots=1)
    elsewhere = tmp_path / "profile"
    elsewhere.mkdir()
    async with open_launch(iso, fake_browser, None, config=config, slots=1) as launch:
        code, _, err = await trio.to_thread.run_sync(
            run_like_playwright, launch.executable_path, elsewhere
        )
    assert code == 126
    assert err.startswith("bulk-launcher: refusing to hand over the profile directory"), err
    assert elsewhere.stat().st_uid == 0


async def test_a_chromium_the_user_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    hidden = tmp_path / "private" / "chromium"
    hidden.parent.mkdir(mode=0o700)
    hidden.write_text(FAKE_BROWSER)
    hidden.chmod(0o755)
    if not ROOT:
        pytest.fail("run as root (as CI does): not root, Chromium runs as bulk's own user")
    with pytest.raises(BrowserUnavailable, match=r"not executable by this user.*bulk-chromium"):
        await plan_isolation(SandboxConfig(), str(hidden), proxied=True, slots=1)


# -- the plan ------------------------------------------------------------------------------------


async def test_a_missing_user_is_a_warning_or_with_require_an_error(
    fake_browser: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not ROOT:
        pytest.fail("run as root (as CI does): the user matters only to root")
    with caplog.at_level(logging.WARNING, logger="bulk.capture"):
        iso = await plan_isolation(
            SandboxConfig(user="no-such-user-here"), fake_browser, proxied=True, slots=1
        )
    assert iso.user == "nobody" and iso.sandbox
    assert any("'no-such-user-here' does not exist" in w for w in iso.warnings)
    assert "does not exist" in caplog.text
    with pytest.raises(BrowserUnavailable, match="BULK_SANDBOX=require: user"):
        await plan_isolation(
            SandboxConfig(user="no-such-user-here", mode="require"),
            fake_browser,
            proxied=True,
            slots=1,
        )
    with pytest.raises(ValidationError):
        await plan_isolation(SandboxConfig(user="root"), fake_browser, proxied=True, slots=1)


async def test_off_says_what_is_lost(fake_browser: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bulk.capture"):
        iso = await plan_isolation(SandboxConfig(mode="off"), fake_browser, proxied=True, slots=1)
    assert iso == Isolation(warnings=iso.warnings)
    assert "BULK_SANDBOX=off" in caplog.text and "open to every local process" in caplog.text


def test_sandbox_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SandboxConfig(mode="sometimes")
    with pytest.raises(ValidationError):
        SandboxConfig(renderer_memory=MIB)


# -- the memory cgroups -------------------------------------------------------------------------

# Waits for a line on stdin, then allocates (and touches) that many MB, then waits.
HOG = r"""
import sys
n = int(sys.stdin.readline())
keep = bytearray(n * 1024 * 1024)
for i in range(0, len(keep), 4096):
    keep[i] = 1
print("allocated", flush=True)
sys.stdin.readline()
"""


SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    yield
    while SPAWNED:
        proc = SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def start_in(group: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOG, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    SPAWNED.append(proc)
    (group / "cgroup.procs").write_text(str(proc.pid))
    return proc


def test_a_renderer_over_its_limit_is_killed_alone_and_counted() -> None:
    if not ROOT:
        # Not root: no memory cgroup (plan_isolation then warns and uses RLIMIT_DATA).
        with pytest.raises(MemoryBoundUnavailable):
            MemoryBound.create(256 * MIB, 1024 * MIB, slots=2)
        return
    bound = MemoryBound.create(256 * MIB, 1024 * MIB, slots=2)
    try:
        renderer = start_in(bound.launch_group, "--type=renderer")
        other = start_in(bound.launch_group, "--type=renderer")
        browser = start_in(bound.launch_group, "--type=gpu-process")
        bound.tick()
        assert {p.pid for p in (renderer, other)} <= {
            int(d.name[1:]) for d in bound.group.glob("r*")
        }
        assert bound.oom_kills() == 0
        assert renderer.stdin is not None and other.stdin is not None
        renderer.stdin.write("400\n")
        renderer.stdin.flush()
        other.stdin.write("100\n")
        other.stdin.flush()
        assert renderer.wait(30) == -signal.SIGKILL
        assert other.stdout is not None and other.stdout.readline() == "allocated\n"
        assert bound.oom_kills() == 1
        bound.tick()  # the dead renderer's group goes; its kill is still counted
        assert not (bound.group / f"r{renderer.pid}").exists()
        assert bound.oom_kills() == 1 == bound.cached_kills
        assert browser.poll() is None and other.poll() is None
        assert bound.peak() > 100 * MIB
    finally:
        bound.close()
    assert not bound.group.exists()
    for proc in (renderer, other, browser):
        assert proc.wait(5) == -signal.SIGKILL  # close() kills what is left


def test_a_tick_is_asked_for_only_when_there_is_work() -> None:
    if not ROOT:
        with pytest.raises(MemoryBoundUnavailable):
            MemoryBound.create(256 * MIB, 1024 * MIB, slots=2)
        return
    bound = MemoryBound.create(256 * MIB, 1024 * MIB, slots=2)
    try:
        # needs_tick also asks on its 5th call since a tick (the kill count's refresh).
        assert not bound.needs_tick()  # nothing there
        renderer = start_in(bound.launch_group, "--type=renderer")
        assert bound.needs_tick()  # a new process to sort
        bound.tick()
        assert (bound.group / f"r{renderer.pid}").exists()
        assert not bound.needs_tick()  # sorted, alive
        renderer.kill()
        renderer.wait(10)
        assert bound.needs_tick()  # a renderer gone: its group is to be removed
        bound.tick()
        assert not (bound.group / f"r{renderer.pid}").exists()
        assert [bound.needs_tick() for _ in range(5)] == [False, False, False, False, True]
    finally:
        bound.close()


def test_the_total_bounds_what_renderers_share() -> None:
    if not ROOT:
        with pytest.raises(MemoryBoundUnavailable):
            MemoryBound.create(300 * MIB, 400 * MIB, slots=2)
        return
    bound = MemoryBound.create(300 * MIB, 400 * MIB, slots=2)
    try:
        hogs = [start_in(bound.launch_group, "--type=renderer") for _ in range(2)]
        bound.tick()
        for hog in hogs:
            assert hog.stdin is not None
            hog.stdin.write("250\n")
            hog.stdin.flush()
        # Each is under its own 300 MB, together they are over the 400 MB total:
        # one of them is killed, the other gets its memory.
        outcomes = []
        for hog in hogs:
            assert hog.stdout is not None
            line = hog.stdout.readline()
            outcomes.append(line.strip() or f"exit {hog.wait(30)}")
        assert sorted(outcomes) == ["allocated", f"exit {-signal.SIGKILL}"]
        assert bound.oom_kills() == 1
        assert bound.peak() <= 400 * MIB
    finally:
        bound.close()


def test_the_environment_sets_the_isolation() -> None:
    from bulk._config import Settings

    assert Settings.from_env({}).sandbox == SandboxConfig()
    got = Settings.from_env(
        {
            "BULK_SANDBOX": "Require",
            "BULK_CHROMIUM_USER": "chromium-runner",
            "BULK_RENDERER_MEMORY_MB": "512",
            "BULK_CAPTURE_MEMORY_MB": "3072",
        }
    ).sandbox
    assert got == SandboxConfig(
        mode="require",
        user="chromium-runner",
        renderer_memory=512 * MIB,
        capture_memory=3072 * MIB,
    )
    for name, value in (
        ("BULK_SANDBOX", "sometimes"),
        ("BULK_RENDERER_MEMORY_MB", "64"),
        ("BULK_CAPTURE_MEMORY_MB", "lots"),
    ):
        with pytest.raises(ValidationError) as info:
            Settings.from_env({name: value})
        assert info.value.field == name


async def test_an_error_in_the_block_comes_out_as_it_is(fake_browser: str) -> None:
    class Boom(Exception):
        pass

    config = SandboxConfig()
    iso = await plan_isolation(config, fake_browser, proxied=True, slots=1)
    with pytest.raises(Boom):
        async with (
            open_egress_proxy(POLICY, require_auth=False, listen=False) as proxy,
            open_launch(iso, fake_browser, proxy, config=config, slots=1),
        ):
            raise Boom
