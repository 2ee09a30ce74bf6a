"""Start a container from a spec: fork, namespaces, id maps, rootfs, credentials, exec.

The dance, as crun and runc do it, with Python's constraints:

    sbx (parent)            intermediate                 container (pid 1 inside)
    fork ───────────────►   unshare(NEWUSER)
    newuidmap/newgidmap ◄── "userns"
    "mapped" ────────────►  unshare(NEWNS|NEWPID|...)
                            fork ──────────────────────► setsid, hostname, lo up
    ◄──────────────────────  "pid:N", exit                mounts, pivot_root (rootfs.py)
    (subreaper: N is now our child)                       [pty master ──► sbx]
    "go" ──────────────────────────────────────────────► drop caps, setuid, no_new_privs
    ◄─ error pipe closes on exec (CLOEXEC) ─────────────  exec

`unshare(CLONE_NEWUSER)` fails in a threaded process, so nothing here may start a
thread before the fork. The parent is a child subreaper (prctl(2)) so the container
is re-parented to it when the intermediate exits, and sbx can wait for it directly.
Errors in the children travel back over a pipe as JSON and are raised in the parent,
so only the CLI prints them.

Two entry points: `run()` runs a container in the foreground on sbx's own stdio and
returns its status; `launch()` stops once the command has exec'd and hands back a
`Launched` container, whose stdio the caller chose (a container monitor passes pipes
and reads them, as conmon does; sandbox/containers/monitor.py).
"""

from __future__ import annotations

import _socket  # socket.py costs ~1.7 ms (its enums); the C module is enough
import contextlib
import errno
import marshal
import os
import signal
import stat
import sys as _sys
from typing import Any, NoReturn

from sandbox.errors import EXIT_SBX, ExecError, SbxError, SyscallError
from sandbox.runtime import caps as capmod
from sandbox.runtime import idmap, rootfs
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import Spec
from sandbox.runtime.specgen import INIT_PATH

_NS_FLAGS = {
    "mount": sc.CLONE_NEWNS,
    "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC,
    "pid": sc.CLONE_NEWPID,
    "cgroup": sc.CLONE_NEWCGROUP,
    "network": sc.CLONE_NEWNET,
}
FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT,
)


# -- errors across the fork ----------------------------------------------------------
def _encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ExecError):
        return {"kind": "exec", "argv0": exc.command, "errno": exc.errno}
    if isinstance(exc, SyscallError):
        return {"kind": "syscall", "op": exc.op, "errno": exc.errno, "path": exc.path,
                "hint": exc.hint}
    if isinstance(exc, SbxError):
        return {"kind": "sbx", "message": exc.message, "hint": exc.hint,
                "exit_code": exc.exit_code}
    if isinstance(exc, OSError):
        return {"kind": "syscall", "op": "container setup", "errno": exc.errno or errno.EIO,
                "path": exc.filename, "hint": None}
    return {"kind": "sbx", "message": f"internal error in container setup: "
            f"{type(exc).__name__}: {exc}", "hint": "this is a bug in sbx; please report it"}


def _decode_error(data: bytes) -> SbxError:
    try:
        info = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return SbxError(f"container setup failed: {data[:200]!r}")
    kind = info.get("kind")
    if kind == "exec":
        return ExecError(info.get("argv0", "?"), info["errno"])
    if kind == "syscall":
        err2 = SyscallError(info["op"], info["errno"], info.get("path"), info.get("hint"))
        err2.message = "can't set up the container: " + err2.message
        return err2
    err = SbxError(info.get("message", "container setup failed"), info.get("hint"))
    code = info.get("exit_code")
    if isinstance(code, int) and code != EXIT_SBX:
        err.exit_code = code  # e.g. 127 for exec's missing working directory
    return err


def encode_error(exc: BaseException) -> bytes:
    """An error as bytes another process can raise again with decode_error (how a
    detached container monitor reports a failed start to `sbx run -d`)."""
    return marshal.dumps(_encode_error(exc))


def decode_error(data: bytes) -> SbxError:
    return _decode_error(data)


def _die(err_w: int, exc: BaseException) -> NoReturn:
    """Report an error from a child process to the parent and exit; never returns.

    After pivot_root the host's Python library is gone, so nothing here may import
    from disk: marshal is a builtin module.
    """
    code = EXIT_SBX
    try:
        code = getattr(exc, "exit_code", EXIT_SBX)
        os.write(err_w, marshal.dumps(_encode_error(exc)))
    except BaseException:  # a forked child must never unwind into sbx's own stack
        pass
    finally:
        os._exit(code)


# -- the container side --------------------------------------------------------------
def _apply_credentials(spec: Spec, sys: sc.Syscalls) -> None:
    """Drop capabilities and switch to the container user (capabilities(7))."""
    proc = spec.process
    keep = capmod.to_mask(proc.capabilities.bounding)
    for cap in range(capmod.last_cap() + 1):
        if not keep & (1 << cap):
            sys.prctl(sc.PR_CAPBSET_DROP, cap)
    try:
        with open("/proc/self/setgroups") as f:
            setgroups_allowed = f.read().strip() == "allow"
    except OSError:
        setgroups_allowed = False
    user = proc.user
    try:
        if setgroups_allowed:
            os.setgroups(user.additional_gids)
        os.setresgid(user.gid, user.gid, user.gid)
    except OSError as exc:
        raise SyscallError(f"switch to gid {user.gid}", exc.errno or errno.EINVAL, None,
                           "that group is not mapped into the container's user namespace"
                           ) from None
    if user.uid != 0:
        _give_stdio_to(user.uid, user.gid, proc.terminal)
    ambient = proc.capabilities.ambient
    if user.uid != 0 and ambient:
        sys.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise SyscallError(f"switch to uid {user.uid}", exc.errno or errno.EINVAL, None,
                           "that user is not mapped into the container's user namespace"
                           ) from None
    sys.capset(capmod.to_mask(proc.capabilities.effective),
               capmod.to_mask(proc.capabilities.permitted),
               capmod.to_mask(proc.capabilities.inheritable))
    for name in ambient:
        sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, capmod.CAPABILITIES[name])
    if proc.no_new_privileges:
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _give_stdio_to(uid: int, gid: int, terminal: bool) -> None:
    """Let a non-root container user reopen its own stdio (/dev/stdout, `tty`).

    The pipes and the pty belong to the container's root (the user on the host), so
    uid 1000 inside could not open /proc/self/fd/1 again. runc's fixStdioPermissions
    chowns them; unlike runc, sbx leaves character devices alone unless they are the
    container's own pty: chowning the user's host terminal to a subordinate id would
    lock the user out of it.
    """
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid:
            continue
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) or (
            terminal and stat.S_ISCHR(st.st_mode)
        ):
            with contextlib.suppress(OSError):
                os.fchown(fd, uid, gid)


def _find_executable(name: str, env: dict[str, str]) -> str:
    """The path execvp(3) would run for `name`, in the container's PATH; raises
    ExecError with ENOENT (127) or EACCES (126) as exec itself would report."""
    if "/" in name:
        candidates = [name]
    else:
        path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    denied = False
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        # execvp(3) remembers EACCES for an entry that exists but cannot be run (a
        # directory, a file without x) and reports it if nothing else is found.
        denied = denied or os.path.exists(candidate)
    raise ExecError(name, errno.EACCES if denied else errno.ENOENT)


def hand_over_pty_and_wait(spec: Spec, sock: _socket.socket) -> int:
    """The last step before exec, for a container's process and an exec'd one: with
    a terminal, make the pty inside (in the container's devpts) and pass its master
    to sbx; then wait for sbx's "go". Returns the pty's slave fd, or -1. The modules
    it uses must have been imported before the root changed (the callers do)."""
    slave = -1
    if spec.process.terminal:
        import socket

        from sandbox.runtime import terminal

        master, slave = terminal.open_pty_in_container()
        socket.send_fds(sock, [b"pty"], [master])  # type: ignore[arg-type]
        os.close(master)
    if sock.recv(16) != b"go":
        os._exit(EXIT_SBX)  # sbx went away before we started
    return slave


def _exec(spec: Spec, err_w: int) -> NoReturn:
    args = spec.process.args
    env = dict(e.split("=", 1) for e in spec.process.env if "=" in e)
    if spec.init:
        # catatonit (podman's init, bind-mounted by specgen) as pid 1 reaps zombies and
        # forwards signals. It is exec'd, not forked from sbx, so pid 1 carries none of
        # sbx's memory, environment or descriptors. It reports a failed exec only as
        # status 1, so the command is found here first, to keep 126/127.
        args = [INIT_PATH, "--", _find_executable(args[0], env), *args[1:]]
    # Close everything sbx itself inherited; only stdio and the error pipe (CLOEXEC)
    # cross into the container (podman leaks nothing without --preserve-fds).
    os.closerange(3, err_w)
    os.closerange(err_w + 1, 1 << 16)
    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across
    # exec: give the command the defaults, as CPython's subprocess does
    # (restore_signals), or `yes | head` in the container never ends on SIGPIPE.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        err = ExecError(args[0], exc.errno or errno.ENOENT)
        _die(err_w, err)
    raise AssertionError("unreachable")


def _container(spec: Spec, sock: _socket.socket, err_w: int, sys: sc.Syscalls,
               interactive: bool) -> NoReturn:
    os.setsid()
    if spec.has_namespace("uts") and spec.hostname:
        sys.sethostname(spec.hostname)
    if spec.has_namespace("network"):
        from sandbox.runtime.network import loopback_up

        loopback_up()
    # Everything the child needs from disk must be imported before pivot_root: after
    # it, the host's Python library is no longer visible.
    if spec.process.terminal:
        import array  # noqa: F401 - socket.send_fds imports it lazily
        import socket  # noqa: F401 - hand_over_pty_and_wait sends the pty with it

        from sandbox.runtime import terminal
    rootfs.setup(spec, sys)
    slave = hand_over_pty_and_wait(spec, sock)
    # "go" comes after sbx reaped the intermediate process, so sbx is our parent now
    # (it is a child subreaper): die with it from here on. Not earlier: the signal
    # would fire when the intermediate parent exits.
    sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if slave >= 0:
        terminal.make_controlling(slave)
    elif not interactive:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    try:
        os.chdir(spec.process.cwd)
    except OSError as exc:
        raise SyscallError("chdir to working directory", exc.errno or errno.ENOENT,
                           spec.process.cwd) from None
    _apply_credentials(spec, sys)
    # A credential change clears the parent-death signal (prctl(2)): set it again,
    # then make sure sbx did not die in between (getppid() is 0 across the pid
    # namespace, so ask the socket: a closed peer reads as b"").
    sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        if sock.recv(1, _socket.MSG_DONTWAIT) == b"":
            os._exit(EXIT_SBX)
    except BlockingIOError:
        pass
    os.umask(0o022)
    _exec(spec, err_w)


def _run_mount_program(argv: list[str], target: str) -> None:
    """Run a mount program (it daemonizes once mounted) and check that it mounted."""
    before = os.stat(target).st_dev
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            # As root of the namespace: under keep-id this process is the user's own
            # uid, and exec would drop the capabilities a FUSE mount needs.
            with contextlib.suppress(OSError):
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            os.execv(argv[0], argv)
        except OSError as exc:
            os.write(w, str(exc.errno or errno.ENOENT).encode())
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        failed = f.read()
    _pid, status = os.waitpid(pid, 0)
    if failed:
        raise SyscallError(f"run {argv[0]}", int(failed), None,
                           "reinstall sbx (sbx-fs comes with it)")
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or os.stat(target).st_dev == before:
        raise SbxError(f"{os.path.basename(argv[0])} could not mount the container's "
                       f"root on {target} (exit status {code})",
                       hint="its message is above; or try --storage-driver=vfs")


def reap_orphans() -> None:
    """End what the container left behind as our children (sbx is a child subreaper:
    a filesystem daemon the container started re-parents to it), and reap it."""
    me = str(os.getpid())
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == me:
            with contextlib.suppress(OSError):
                os.kill(int(name), signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(name), 0)


def _intermediate(spec: Spec, sock: _socket.socket, err_w: int, sys: sc.Syscalls,
                  interactive: bool, stdio: tuple[int, int, int] | None) -> NoReturn:
    if stdio is not None:
        # The container's stdin, stdout and stderr; the originals close at exec.
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)
    sys.unshare(sc.CLONE_NEWUSER)
    sock.send(b"userns")
    if sock.recv(16) != b"mapped":
        os._exit(EXIT_SBX)
    flags = 0
    for ns in spec.linux.namespaces:
        flags |= _NS_FLAGS.get(ns, 0)
    if spec.root.mount_program:
        # A mount namespace of its own for the filesystem daemon, outside the
        # container's pid namespace (podman runs fuse-overlayfs the same way). The
        # container then gets a further mount namespace: pivot_root moves the root
        # of every process in its namespace (pivot_root(2)), and the daemon must
        # keep the host's view of the layers.
        sys.unshare(sc.CLONE_NEWNS)
        sys.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)
        _run_mount_program(spec.root.mount_program, spec.root.path)
    sys.unshare(flags)
    pid = os.fork()
    if pid == 0:
        try:
            _container(spec, sock, err_w, sys, interactive)
        except BaseException as exc:  # must never return into sbx
            _die(err_w, exc)
    sock.send(b"pid:%d" % pid)
    os._exit(0)


# -- the sbx side --------------------------------------------------------------------
class _Forwarder:
    """Forwards sbx's signals to the container, holding early ones until it can take
    them.

    Before the container has exec'd, and under --init until catatonit has blocked its
    signals for its signalfd, the container's pid 1 has default actions, and the
    kernel drops signals to a pid namespace's init that it does not handle. A Ctrl-C
    in that window must not be lost: it is queued and sent once the init takes it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ready = False
        self.queue: list[int] = []
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.ready:
            self.queue.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def __enter__(self) -> _Forwarder:
        self.old = {sig: signal.signal(sig, self._handle) for sig in FORWARDED_SIGNALS}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    def start(self, init: bool) -> None:
        """The command has exec'd: send what was held, then forward as they come."""
        if self.queue and init:
            _wait_until_blocked(self.pid, self.queue, timeout=1.0)
        self.ready = True
        while self.queue:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.queue.pop(0))


def _wait_until_blocked(pid: int, sigs: list[int], timeout: float) -> None:
    """Wait (briefly) until `pid` blocks `sigs`, as catatonit does for its signalfd."""
    import time

    want = 0
    for sig in sigs:
        want |= 1 << (sig - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                blocked = next((int(line.split()[1], 16) for line in f
                                if line.startswith("SigBlk:")), 0)
        except OSError:
            return
        if blocked & want == want:
            return
        time.sleep(0.001)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class Launched:
    """A container whose command has exec'd: its pid 1 is this process's child.

    Signals this process receives are forwarded to it (as sbx's own, below) until
    `close()`. `wait()` reaps it and gives its status as a shell would; `close()`
    kills and reaps it if it is still there, and must always be called.
    """

    def __init__(self, pid: int, master: int, forwarder: _Forwarder, sock: _socket.socket,
                 err_r: int) -> None:
        self.pid = pid
        self.master = master  # the pty master with a terminal, else -1
        self.has_daemons = False  # a mount program's daemon to end with the container
        self._forwarder = forwarder
        self._sock = sock
        self._err_r = err_r
        self._status: int | None = None
        self._closed = False

    def alive(self) -> bool:
        """True while pid 1 has not exited (its status is left for wait())."""
        return self._status is None and _alive(self.pid)

    def wait(self) -> int:
        """Reap pid 1; its exit status, or 128+N when signal N killed it."""
        if self._status is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)  # EINTR is retried (PEP 475)
            except ChildProcessError:
                status = 0xFF00  # reaped elsewhere: the status is lost (255)
            code = os.waitstatus_to_exitcode(status)
            self._status = 128 - code if code < 0 else code
        return self._status

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._status is None:
            _kill_and_reap(self.pid)
            self._status = 128 + signal.SIGKILL
        if self.has_daemons:
            reap_orphans()
        self._let_go()

    def release(self) -> None:
        """Let the process go on without us (`exec -d`): close our ends of the pipes
        and stop forwarding signals, but neither kill nor reap it."""
        if self._closed:
            return
        self._closed = True
        self._let_go()

    def _let_go(self) -> None:
        """Stop forwarding signals and close our ends of the socket, pipe and pty."""
        self._forwarder.__exit__(None, None, None)
        self._sock.close()
        os.close(self._err_r)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def launch(spec: Spec, maps: idmap.MapPlan, interactive: bool = False,
           stdio: tuple[int, int, int] | None = None,
           sys: sc.Syscalls | None = None) -> Launched:
    """Start the container and return once its command has exec'd.

    `stdio`: the descriptors to give it as 0, 1 and 2 (default: this process's own).
    Without `interactive` its stdin is /dev/null whatever `stdio` says. Raises the
    children's error (ExecError for 126/127) when setup or exec failed, with nothing
    left running.
    """
    sys = sys or sc.Syscalls()
    sc.libc()  # load libc before forking, once
    # SOCK_SEQPACKET keeps message boundaries; the fds are O_CLOEXEC.
    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0)
    err_r, err_w = os.pipe()  # both O_CLOEXEC (PEP 446)
    sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _sys.stdout.flush()
    _sys.stderr.flush()
    pid1 = os.fork()
    if pid1 == 0:
        parent_sock.close()
        os.close(err_r)
        try:
            _intermediate(spec, child_sock, err_w, sys, interactive, stdio)
        except BaseException as exc:  # must never return into sbx
            _die(err_w, exc)
        finally:
            os._exit(EXIT_SBX)
    child_sock.close()
    os.close(err_w)
    intermediate = pid1  # 0 once reaped
    container = 0  # 0 once reaped or handed over
    master = -1
    forwarder: _Forwarder | None = None
    try:
        if parent_sock.recv(64) != b"userns":
            os.waitpid(pid1, 0)
            intermediate = 0
            raise _decode_error(_read_all(err_r))
        try:
            idmap.apply(pid1, maps)
            if spec.linux.cgroup_path:
                # Before it makes its cgroup namespace, so that the container's
                # cgroup is the namespace's root (runtime/cgroups.py).
                from sandbox.runtime import cgroups

                cgroups.add_process(spec.linux.cgroup_path, pid1)
        finally:
            parent_sock.send(b"mapped")
        msg = parent_sock.recv(64)
        os.waitpid(pid1, 0)
        intermediate = 0
        if not msg.startswith(b"pid:"):
            raise _decode_error(_read_all(err_r))
        container = int(msg[4:])
        if spec.process.terminal:
            import socket

            from sandbox.runtime import terminal

            _data, fds, _flags, _addr = socket.recv_fds(parent_sock, 16, 1)  # type: ignore[arg-type]
            if not fds:
                raise _decode_error(_read_all(err_r))
            master = fds[0]
            if os.isatty(0):
                terminal.copy_winsize(0, master)
        parent_sock.send(b"go")
        forwarder = _Forwarder(container).__enter__()
        failure = _read_all(err_r)  # EOF when exec succeeded (CLOEXEC)
        if failure:
            os.waitpid(container, 0)
            container = 0
            raise _decode_error(failure)
        forwarder.start(spec.init)
        launched = Launched(container, master, forwarder, parent_sock, err_r)
        launched.has_daemons = bool(spec.root.mount_program)
        container = 0
        return launched
    except BaseException:
        # On any failure (an error, Ctrl-C during setup) nothing may be left running;
        # the container's pid namespace takes its other processes with it.
        for pid in (container, intermediate):
            if pid:
                _kill_and_reap(pid)
        if spec.root.mount_program:
            reap_orphans()  # a filesystem daemon that mounted the root
        if forwarder is not None:
            forwarder.__exit__(None, None, None)
        parent_sock.close()
        os.close(err_r)
        if master >= 0:
            os.close(master)
        raise


def run(spec: Spec, maps: idmap.MapPlan, interactive: bool = False,
        sys: sc.Syscalls | None = None) -> int:
    """Run the container in the foreground; return its exit status as a shell would."""
    with launch(spec, maps, interactive, sys=sys) as ctr:
        if ctr.master >= 0:
            from sandbox.runtime import terminal

            terminal.relay(ctr.master, interactive, ctr.alive)
        return ctr.wait()


def _alive(pid: int) -> bool:
    """True while `pid` has not exited; leaves its status for waitpid (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False
