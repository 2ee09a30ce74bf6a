"""Run one more process in a running container: join its namespaces, then fork and exec.

What `runc exec` and nsenter(1) do, in sbx's shape. The namespaces are taken from the
container's pid 1 (`/proc/PID/ns/*`), all opened before the first setns(2) (after the
mount namespace is joined, the host's /proc is no longer there to open them from),
and joined **user namespace first**: the others belong to the container's user
namespace, and setns(2) into them needs CAP_SYS_ADMIN *there*. The user who made the
container owns that user namespace, so joining it gives this process every
capability in it (user_namespaces(7)), and with them the right to join the rest, in
nsenter's order: cgroup, ipc, uts, net, pid, mnt. runc's nsexec.c says the same
("the user namespace must be joined first, so that we have the privileges to join
the others"); joining the mount namespace last sets our root to the container's.

    sbx exec (host)            intermediate                  the process
    open /proc/PID/ns/* ────►  setns user, cgroup, ipc,
                               uts, net, pid, mnt
                               resolve -u in /etc/passwd
                               fork ───────────────────────► (in the pid namespace)
    ◄────────────────────────  "pid:N", exit                  setsid, [pty ──► sbx]
    (subreaper: N is our child)
    "go" ──────────────────────────────────────────────────► caps, setuid, no_new_privs,
    ◄── error pipe closes on exec (O_CLOEXEC) ─────────────── exec

setns(CLONE_NEWPID) only moves the caller's future children, so the process is
forked after it (pid_namespaces(7)); like the container, it becomes sbx's own child
through the subreaper and dies with sbx (PR_SET_PDEATHSIG) unless it is detached.
Nothing here may import from disk after the mount namespace is joined: everything
is imported first, and errors cross back marshalled (process.py's rule).

Never imports the registry, the image store or the container records.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import signal
import sys as _sys
from typing import NoReturn

from sandbox.errors import EXIT_SBX, SbxError, SyscallError
from sandbox.runtime import process
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import Capabilities, Spec, User
from sandbox.runtime.users import ExecUser, lookup_with

# spec namespace name -> (/proc/PID/ns entry, setns flag), in the order they are
# joined (nsenter(1)'s: user first, mount last).
JOIN_ORDER: tuple[tuple[str, str, int], ...] = (
    ("user", "user", sc.CLONE_NEWUSER),
    ("cgroup", "cgroup", sc.CLONE_NEWCGROUP),
    ("ipc", "ipc", sc.CLONE_NEWIPC),
    ("uts", "uts", sc.CLONE_NEWUTS),
    ("network", "net", sc.CLONE_NEWNET),
    ("pid", "pid", sc.CLONE_NEWPID),
    ("mount", "mnt", sc.CLONE_NEWNS),
)


class ProcessGone(SbxError):
    """The container's pid 1 is not the process it was (it exited, or the pid was
    reused) by the time its namespaces were opened."""


class WorkdirError(SbxError):
    """The working directory does not exist in the container (podman exits 127, as
    for a missing command; 126 for other reasons)."""

    def __init__(self, path: str, err: int) -> None:
        self.exit_code = 127 if err == errno.ENOENT else 126
        super().__init__(f"can't chdir to working directory {path}: {os.strerror(err)}",
                         hint="give an existing directory with -w")


def join_plan(namespaces: list[str]) -> list[tuple[str, int]]:
    """The /proc/PID/ns entries to join for a container with `namespaces` (a spec's
    list), with their setns flags, in the order they must be joined. Pure."""
    return [(entry, flag) for name, entry, flag in JOIN_ORDER if name in namespaces]


def open_namespaces(pid: int, plan: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """Open /proc/PID/ns/* for each entry of `plan`: [(fd, flag)]. The caller checks
    afterwards that `pid` is still the process it means (its start time): an fd
    opened from a pid that was reused would name a stranger's namespaces."""
    fds: list[tuple[int, int]] = []
    try:
        for entry, flag in plan:
            path = f"/proc/{pid}/ns/{entry}"
            try:
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            except FileNotFoundError:
                raise ProcessGone(f"process {pid} is gone") from None
            except OSError as exc:
                raise SyscallError("open namespace", exc.errno or errno.EIO, path,
                                   "only the user who started the container can join it"
                                   ) from None
    except BaseException:
        close_all(fds)
        raise
    return fds


def close_all(fds: list[tuple[int, int]]) -> None:
    for fd, _flag in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- the children --------------------------------------------------------------------
def _join(fds: list[tuple[int, int]], sys: sc.Syscalls) -> None:
    for fd, flag in fds:
        try:
            sys.setns(fd, flag)
        except SyscallError as exc:
            name = next((e for e, _entry, f in JOIN_ORDER if f == flag), hex(flag))
            exc.message = f"can't join the container's {name} namespace: {exc.message}"
            raise
        os.close(fd)


def _process(spec: Spec, sock: _socket.socket, err_w: int, sys: sc.Syscalls,
             interactive: bool, detach: bool) -> NoReturn:
    """The exec'd process, in every namespace of the container."""
    os.setsid()
    slave = process.hand_over_pty_and_wait(spec, sock)
    if not detach:
        # sbx is our parent now (the subreaper took us when the intermediate exited).
        sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if slave >= 0:
        from sandbox.runtime import terminal  # imported by _intermediate already

        terminal.make_controlling(slave)
    elif detach:
        # `exec -d` (podman: the session's output goes nowhere when detached).
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    elif not interactive:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    try:
        os.chdir(spec.process.cwd)
    except OSError as exc:
        raise WorkdirError(spec.process.cwd, exc.errno or errno.ENOENT) from None
    process._apply_credentials(spec, sys)
    if not detach:
        # The credential change cleared it (prctl(2)): set it again, then check that
        # sbx did not die in between (its end of the socket reads as closed).
        sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            if sock.recv(1, _socket.MSG_DONTWAIT) == b"":
                os._exit(EXIT_SBX)
        except BlockingIOError:
            pass
    os.umask(0o022)
    process._exec(spec, err_w)


def _intermediate(spec: Spec, fds: list[tuple[int, int]], user_spec: str | None,
                  set_home: bool, sock: _socket.socket, err_w: int, sys: sc.Syscalls,
                  interactive: bool, detach: bool, cgroup: str = "") -> NoReturn:
    # Import now what the children need: after the mount namespace is joined, the
    # host's Python library is out of sight.
    import array  # noqa: F401 - socket.send_fds imports it lazily
    import socket  # noqa: F401

    from sandbox.runtime import terminal  # noqa: F401

    if cgroup:
        # Into the container's cgroup before anything is forked, so that its limits
        # hold the exec'd command too (podman runs exec sessions in the container's
        # cgroup); "0" is "this process" (cgroup-v2.rst, cgroup.procs).
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")
    _join(fds, sys)
    if user_spec is not None:
        # -u is resolved against the container's files as they are now, read from
        # inside (the root is the container's since the mount namespace was joined):
        # a symlinked /etc/passwd resolves in the container, never on the host.
        apply_user(spec, lookup_with(_read_in_container, user_spec), set_home)
    pid = os.fork()
    if pid == 0:
        try:
            _process(spec, sock, err_w, sys, interactive, detach)
        except BaseException as exc:  # must never return into sbx
            process._die(err_w, exc)
    sock.send(b"pid:%d" % pid)
    os._exit(0)


def _read_in_container(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def apply_user(spec: Spec, user: ExecUser, set_home: bool) -> None:
    """Make `spec`'s process run as `user`: its ids, its groups, with `set_home` HOME
    from its passwd entry (podman exec -u does the same unless -e sets HOME), and the
    capabilities a user of that kind gets. Pure."""
    uid = user.uid
    proc = spec.process
    proc.user = User(uid, user.gid, list(user.additional_gids), user.name)
    if set_home:
        proc.env = [e for e in proc.env if not e.startswith("HOME=")] + [
            f"HOME={user.home or '/'}"]
    caps = proc.capabilities
    if uid == 0:
        proc.capabilities = Capabilities(bounding=list(caps.bounding),
                                         effective=list(caps.bounding),
                                         permitted=list(caps.bounding))
    else:
        # podman's rule (specgen.capabilities_for): a non-root user keeps only what
        # was added for it, which the container's process holds as ambient.
        added = [c for c in caps.ambient if c in caps.bounding]
        proc.capabilities = Capabilities(bounding=list(caps.bounding), effective=added,
                                         permitted=added, inheritable=added,
                                         ambient=added)


# -- the sbx side --------------------------------------------------------------------
def enter(spec: Spec, fds: list[tuple[int, int]], *, user_spec: str | None = None,
          set_home: bool = True, interactive: bool = False, detach: bool = False,
          cgroup: str = "", sys: sc.Syscalls | None = None) -> process.Launched:
    """Start `spec.process` in the namespaces `fds` (open_namespaces, in join order)
    and return once it has exec'd, as this process's child (process.Launched: wait(),
    close(), the pty master). The fds are closed. With `detach` the process keeps
    running when we exit and its stdio is /dev/null. Raises the children's error
    (ExecError 126/127, WorkdirError, an unknown -u user) with nothing left running.
    `user_spec` (-u) is resolved in the container; `set_home`: HOME follows it.
    """
    sys = sys or sc.Syscalls()
    sc.libc()
    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0)
    err_r, err_w = os.pipe()
    sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _sys.stdout.flush()
    _sys.stderr.flush()
    try:
        pid1 = os.fork()
    except BaseException:
        close_all(fds)
        raise
    if pid1 == 0:
        parent_sock.close()
        os.close(err_r)
        try:
            _intermediate(spec, fds, user_spec, set_home, child_sock, err_w, sys,
                          interactive, detach, cgroup)
        except BaseException as exc:  # must never return into sbx
            process._die(err_w, exc)
        finally:
            os._exit(EXIT_SBX)
    close_all(fds)
    child_sock.close()
    os.close(err_w)
    intermediate = pid1
    child = 0
    master = -1
    forwarder: process._Forwarder | None = None
    try:
        msg = parent_sock.recv(64)
        os.waitpid(pid1, 0)
        intermediate = 0
        if not msg.startswith(b"pid:"):
            raise process.decode_error(process._read_all(err_r))
        child = int(msg[4:])
        if spec.process.terminal:
            import socket

            from sandbox.runtime import terminal

            _data, recv, _flags, _addr = socket.recv_fds(parent_sock, 16, 1)  # type: ignore[arg-type]
            if not recv:
                raise process.decode_error(process._read_all(err_r))
            master = recv[0]
            if os.isatty(0):
                terminal.copy_winsize(0, master)
        parent_sock.send(b"go")
        forwarder = process._Forwarder(child).__enter__()
        failure = process._read_all(err_r)  # EOF when exec succeeded (CLOEXEC)
        if failure:
            os.waitpid(child, 0)
            child = 0
            raise process.decode_error(failure)
        forwarder.start(False)
        launched = process.Launched(child, master, forwarder, parent_sock, err_r)
        child = 0
        return launched
    except BaseException:
        for pid in (child, intermediate):
            if pid:
                process._kill_and_reap(pid)
        if forwarder is not None:
            forwarder.__exit__(None, None, None)
        parent_sock.close()
        os.close(err_r)
        if master >= 0:
            os.close(master)
        raise


__all__ = ["JOIN_ORDER", "ProcessGone", "WorkdirError", "apply_user", "close_all", "enter",
           "join_plan", "open_namespaces"]
