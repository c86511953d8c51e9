"""The program Playwright starts instead of Chromium: isolate, then exec Chromium.

Playwright launches ``executable_path`` with Chromium's argv and talks to it over
pipes on fds 3 and 4. bulk points ``executable_path`` at a two-line shell wrapper
(``_sandbox.write_wrapper``) that runs this file with the standard library only
(``python -I -S``), so nothing of bulk's virtualenv is imported by a process that is
about to become the browser. Before it ``exec``s the real Chromium with the same
argv (fds 0-4 survive the ``exec``; everything else it opened is close-on-exec), it:

1. joins the capture side's memory cgroup (``cgroup``), so the whole browser is
   bounded and its renderers can be placed in their own groups;
2. moves into a new network namespace (``netns``) whose only interface is its own
   loopback, binds the egress proxy's port there and hands the listening socket to
   bulk over a Unix socket (``SCM_RIGHTS``): bulk's proxy then serves Chromium
   inside that namespace, and no other process on the machine can reach it; a name
   Chromium would resolve itself has no resolver to go to;
3. as root: makes Playwright's temporary profile directory the browser user's, and
   drops to that user (``setgroups``/``setgid``/``setuid``, ``PR_SET_NO_NEW_PRIVS``)
   so ``chromium_sandbox=True`` works and a compromised browser owns an unprivileged
   user, not root; not root with ``userns``: the network namespace is made inside a
   new user namespace that maps bulk's own user to itself;
4. asks the kernel to SIGKILL it when its parent (Playwright's driver, in bulk's
   process group) dies (``PR_SET_PDEATHSIG``): Playwright starts Chromium in a
   session of its own, so signalling bulk's process group reaches the browser this
   way;
5. bounds the data segment of every Chromium process (``rlimit_data``) when no
   memory cgroup is available;
6. gives Chromium a small, known environment (bulk's own may hold secrets), no file
   descriptor but 0-4, and ``/`` (or its profile) as working directory.

Every step is set by the JSON file named on the command line (written by bulk);
a step that fails ends the launch with one ``bulk-launcher: ...`` line on stderr,
which Playwright includes in its launch error. ``--probe`` tries the same steps
without Chromium and prints what works, as JSON (bulk decides from it what to ask).

Linux only. This file must import nothing but the standard library.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import json
import os
import resource
import socket
import stat
import struct
import sys
import tempfile
from typing import Any, Final

_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWUSER: Final = 0x10000000
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP_LOOPBACK_RUNNING: Final = 0x1 | 0x8 | 0x40
_SIGKILL: Final = 9

#: Environment variables Chromium keeps; everything else of bulk's is dropped.
KEEP_ENV: Final = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
    "XDG_DATA_DIRS",
)
PROFILE_FLAG: Final = "--user-data-dir="


class LaunchError(Exception):
    """A step failed; the message is what the launch error says."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(err)}")


def join_cgroup(path: str) -> None:
    """Move this process into the cgroup directory ``path`` (children inherit it)."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        raise LaunchError(f"cannot join the memory cgroup {path}: {exc.strerror}") from None


def enter_network_namespace(*, userns: bool) -> None:
    """Unshare the network namespace (in a new user namespace when ``userns``), lo up."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWNET | (_CLONE_NEWUSER if userns else 0)
    _call(libc.unshare(flags), "cannot create a network namespace")
    if userns:
        # Map bulk's own user to itself: Chromium stays an ordinary user inside, so
        # its own sandbox (another user namespace, nested) works as usual.
        try:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError as exc:
            raise LaunchError(f"cannot map the user namespace: {exc.strerror}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", _IFF_UP_LOOPBACK_RUNNING)
        try:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, request)
        except OSError as exc:
            raise LaunchError(f"cannot bring up loopback: {exc.strerror}") from None


def hand_over_listener(port: int, control: str) -> None:
    """Listen on 127.0.0.1:``port`` here and send the socket to bulk at ``control``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(512)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
            channel.connect(control)
            fds = array.array("i", [listener.fileno()])
            channel.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError as exc:
        raise LaunchError(f"cannot hand the proxy's listener to bulk: {exc}") from None
    finally:
        listener.close()


def _profile_dir(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith(PROFILE_FLAG):
            return arg[len(PROFILE_FLAG) :]
    return None


def give_profile(path: str, uid: int, gid: int) -> None:
    """Make Playwright's temporary profile directory (and what is in it) the user's.

    Only a real directory directly in the temporary directory, owned by us, is
    touched: the flag comes from Playwright, but a mistake must not chown ``/etc``.
    """
    real = os.path.realpath(path)
    info = os.lstat(path)
    if (
        os.path.dirname(real) != os.path.realpath(tempfile.gettempdir())
        or not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
    ):
        raise LaunchError(f"refusing to hand over the profile directory {path}")
    for root, dirs, files in os.walk(real):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
    os.chown(real, uid, gid)


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no groups, no capabilities, no way back."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise LaunchError(f"cannot switch to uid {uid}: {exc.strerror}") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise LaunchError(f"still not uid {uid} after setuid")
    try:
        os.setuid(0)
    except OSError:
        pass
    else:  # pragma: no cover (the kernel forbids it)
        raise LaunchError("could switch back to root after dropping privileges")


def no_new_privileges() -> None:
    """Nothing this process execs can gain privileges (setuid files, file caps)."""
    _call(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (must follow any setuid)."""
    _call(_libc().prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    if os.getppid() == 1:  # the parent died before the call: nobody will wait for us
        raise LaunchError("Playwright's driver is gone")


def limit_data(limit: int) -> None:
    """Bound the data segment (private writable memory) of this and every child."""
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def can_sandbox() -> str:
    """Whether an unprivileged process here can make the namespaces Chromium's
    sandbox needs: ``""`` if so, else why not (tried in a child process)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is not collected)
        code = 0
        try:
            libc = _libc()
            if libc.unshare(_CLONE_NEWUSER) != 0:
                code = 1
            elif libc.unshare(_CLONE_NEWNET) != 0:
                code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return ""
    if code == 1:
        return "user namespaces are not available to unprivileged users"
    return "user namespaces are restricted (no namespaces can be made inside one)"


def chromium_env(home: str | None) -> dict[str, str]:
    """The environment Chromium runs with."""
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV or k.startswith("LC_")}
    if home is not None:
        # The temporary profile: fontconfig's and NSS's per-user files land there
        # and go when Playwright removes it.
        env["HOME"] = home
        env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
        env["XDG_CACHE_HOME"] = os.path.join(home, ".cache")
    elif "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


def launch(config: dict[str, Any], argv: list[str]) -> None:
    """Apply ``config`` to this process, then exec Chromium with ``argv``."""
    if config.get("cgroup"):
        join_cgroup(config["cgroup"])
    if config.get("netns"):
        enter_network_namespace(userns=bool(config.get("userns")))
        hand_over_listener(int(config["port"]), config["control"])
    home = None
    user = config.get("user")
    if user is not None:
        uid, gid = int(user["uid"]), int(user["gid"])
        profile = _profile_dir(argv)
        if profile is not None:
            give_profile(profile, uid, gid)
            home = os.path.realpath(profile)
        drop_to(uid, gid)
    if config.get("rlimit_data"):
        limit_data(int(config["rlimit_data"]))
    executable = config["chromium"]
    if not os.access(executable, os.X_OK):
        who = f"user {user['name']}" if user is not None else "this user"
        raise LaunchError(
            f"{executable} is not executable by {who} (install Chromium where every "
            "user can read it, or set BULK_CHROMIUM)"
        )
    args = list(argv)
    if config.get("no_sandbox"):
        args.append("--no-sandbox")
    no_new_privileges()
    die_with_parent()
    os.chdir(home or "/")  # not bulk's working directory
    # Only Playwright's stdio and pipes (fds 0-4) go to Chromium, nothing else that
    # the driver or bulk may have let through.
    os.closerange(5, os.sysconf("SC_OPEN_MAX"))
    os.execve(executable, [executable, *args], chromium_env(home))


def probe(config: dict[str, Any]) -> dict[str, str]:
    """Try ``config``'s steps without Chromium; each key is ``""`` or why it failed.

    Keys: ``netns``, ``user``, ``executable``, ``sandbox`` (namespaces for
    Chromium's own sandbox, as the user Chromium will run as).
    """
    out: dict[str, str] = {}
    if config.get("netns"):
        try:
            enter_network_namespace(userns=bool(config.get("userns")))
            with socket.socket() as s:
                s.bind(("127.0.0.1", int(config.get("port") or 0)))
            out["netns"] = ""
        except LaunchError as exc:
            out["netns"] = str(exc)
    user = config.get("user")
    if user is not None:
        try:
            drop_to(int(user["uid"]), int(user["gid"]))
            out["user"] = ""
        except LaunchError as exc:
            out["user"] = str(exc)
            return out
    executable = config.get("chromium") or ""
    out["executable"] = (
        "" if os.access(executable, os.X_OK) else f"{executable} is not executable by this user"
    )
    out["sandbox"] = can_sandbox()
    return out


def main(argv: list[str]) -> int:
    """``LAUNCHER CONFIG.json CHROMIUM-ARGS...`` or ``LAUNCHER --probe CONFIG.json``."""
    try:
        if argv[:1] == ["--probe"]:
            with open(argv[1]) as f:
                print(json.dumps(probe(json.load(f))))
            return 0
        with open(argv[0]) as f:
            config = json.load(f)
        launch(config, argv[1:])
    except LaunchError as exc:
        print(f"bulk-launcher: {exc}", file=sys.stderr)
        return 126
    except (OSError, ValueError, KeyError, IndexError) as exc:
        print(f"bulk-launcher: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover (launch execs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
