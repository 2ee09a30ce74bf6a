"""The container monitor: the process that runs a container, keeps its output,
records its exit and reaps it (what conmon does for podman).

Every container runs under a monitor, one of two kinds:

- **attached** (`sbx run` without -d, `sbx start -a`): the sbx command itself. The
  container's stdout and stderr are pipes that sbx reads, writing each chunk to the
  user's terminal and to the log; its stdin is sbx's own (with -i). This keeps the
  foreground run as fast as before (no extra process, no socket) and keeps the
  container sbx's child, so Ctrl-C and the other signals sbx receives reach it as they
  always did. Unlike podman, where the container outlives a killed `podman run`, the
  container dies with its sbx (PR_SET_PDEATHSIG); the record then reads as exited
  with an unknown status (store.effective_state).
- **detached** (`sbx run -d`, `sbx start`, `sbx restart`): a process forked from the
  sbx command, in its own session (double fork and setsid, as conmon daemonizes),
  with its stdio on /dev/null and every other inherited descriptor closed. It tells
  the command over a pipe that the container runs (or why it could not start: the
  same error the foreground run raises, so `run -d` exits 125/126/127 as podman's
  does), then writes the log until the container's pipes close, records the exit,
  and removes the container when it was made with --rm. The container is the
  monitor's child (a child subreaper) and dies if the monitor is killed, so nothing
  runs unwatched.

The log is podman's k8s-file format (logs.py). Each chunk is written as it arrives,
and the exit is recorded only after both pipes reached end-of-file, so a line the
container wrote just before it exited is in the log when `sbx wait` returns.

Attaching to a detached container (`sbx attach`, `start -a` of a running one): the
detached monitor listens on an attach socket in the container's runtime directory
(conmon's), relays the output to every client as it logs it, and their input to
the container's stdin, which for a container made with -i is a pipe (or its pty)
the monitor keeps open (attach.py has the protocol). A foreground run has no
socket: its stdio is its sbx command's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
from collections.abc import Callable
from typing import Any

from sandbox import paths
from sandbox.containers import procfs
from sandbox.containers.logs import LogWriter
from sandbox.containers.store import (
    EXITED,
    RUNNING,
    Container,
    ContainerStore,
    Lock,
    NoSuchContainer,
    format_time,
    now_ns,
)
from sandbox.errors import SbxError
from sandbox.runtime import idmap, process
from sandbox.runtime.spec import Spec

STDOUT = b"stdout"
STDERR = b"stderr"


class Run:
    """One run of a container, from launch to recorded exit, in its monitor."""

    def __init__(self, store: ContainerStore, container: Container, spec: Spec,
                 maps: idmap.MapPlan) -> None:
        self.store = store
        self.container = container
        self.spec = spec
        self.maps = maps
        self.durable = not container.config.get("auto_remove", False)
        self.log: LogWriter | None = None
        self.ctr: process.Launched | None = None
        self.outputs: list[tuple[int, bytes]] = []

    def launch(self, stdin: int, interactive: bool) -> None:
        """Start the container and record it as running (hold the container's lock).
        On failure, record the error and raise it."""
        cid = self.container.id
        self.log = LogWriter(paths.container_log_file(cid))
        pipes: list[int] = []
        try:
            stdio: tuple[int, int, int] | None = None  # a terminal: the pty, made inside
            if not self.spec.process.terminal:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                pipes = [out_r, out_w, err_r, err_w]
                stdio = (stdin, out_w, err_w)
            limits = self.container.config.get("limits")
            if limits:
                from sandbox.runtime import cgroups

                wanted = cgroups.Limits(**limits)
                self.spec.linux.cgroup_path = cgroups.create(cgroups.plan(wanted), cid, wanted)
            self.ctr = process.launch(self.spec, self.maps, interactive, stdio=stdio)
        except BaseException as exc:
            for fd in pipes:
                os.close(fd)
            self.log.close()
            if self.spec.linux.cgroup_path:
                from sandbox.runtime import cgroups

                cgroups.remove(self.spec.linux.cgroup_path)
            _record_failed_start(self.store, cid, exc, self.durable)
            raise
        if pipes:
            os.close(pipes[1])
            os.close(pipes[3])
            self.outputs = [(pipes[0], STDOUT), (pipes[2], STDERR)]
        else:
            self.outputs = [(self.ctr.master, STDOUT)]
        me = os.getpid()
        try:
            self.store.update_state(
                cid, durable=self.durable, status=RUNNING, pid=self.ctr.pid,
                pid_start=procfs.start_time(self.ctr.pid) or 0, monitor_pid=me,
                monitor_start=procfs.start_time(me) or 0, boot_id=procfs.boot_id(),
                exit_code=None, oom_killed=False, error="", started_at=format_time(now_ns()),
                finished_at="")
        except BaseException:
            self.close_outputs()
            self.ctr.close()
            raise

    def pump(self, sinks: dict[bytes, int], stdin: int = -1, hub: Any = None,
             ctr_in: _Input | None = None) -> None:
        """Copy the container's output to the log, to `sinks` (stream -> fd) and to
        attached clients (`hub`) until it ends; with a terminal, also `stdin` -> the
        pty; the clients' input to `ctr_in`."""
        assert self.ctr is not None and self.log is not None
        _pump(self.ctr, self.outputs, self.log, dict(sinks),
              stdin if self.ctr.master >= 0 else -1, hub, ctr_in)

    def close_outputs(self) -> None:
        for fd, _stream in self.outputs:
            if fd != (self.ctr.master if self.ctr else -1):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.outputs = []
        if self.log is not None:
            self.log.close()

    def finish(self) -> int:
        """Reap the container, record its exit, and clean up after it; its status."""
        assert self.ctr is not None
        code = self.ctr.wait()
        self.close_outputs()
        self.ctr.close()
        cid = self.container.id
        oom = False
        if self.spec.linux.cgroup_path:
            from sandbox.runtime import cgroups

            oom = cgroups.oom_killed(self.spec.linux.cgroup_path)
            cgroups.remove(self.spec.linux.cgroup_path)
        try:
            with self.store.lock(cid):
                self.store.update_state(cid, durable=self.durable, status=EXITED,
                                        pid=0, exit_code=code, oom_killed=oom,
                                        finished_at=format_time(now_ns()))
                # Under the lock: a `restart` waiting for it writes them anew next.
                remove_runtime_files(cid)
        except NoSuchContainer:
            remove_runtime_files(cid)  # removed meanwhile (rm -f): nothing to record
        return code


def remove_runtime_files(cid: str) -> None:
    """The generated /etc files of a container that no longer runs."""
    from sandbox.runtime import etcfiles

    with contextlib.suppress(OSError, SbxError):
        etcfiles.remove(paths.container_run_dir(cid))


def _record_failed_start(store: ContainerStore, cid: str, exc: BaseException,
                         durable: bool) -> None:
    code = getattr(exc, "exit_code", 125) if isinstance(exc, SbxError) else 125
    message = exc.message if isinstance(exc, SbxError) else f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(SbxError, OSError):
        # The status stays what it was (created, or exited for a restart), as
        # docker and podman leave a container whose start failed.
        store.update_state(cid, durable=durable, exit_code=code, error=message,
                           finished_at=format_time(now_ns()))
    remove_runtime_files(cid)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


class _Input:
    """The container's stdin as attach clients feed it (a detached -i container): a
    pipe, or the pty master with -t. Writes never block the monitor: what the
    container has not read yet waits here, so a container that does not read its
    stdin cannot stop its output from being logged."""

    def __init__(self, fd: int, is_pty: bool) -> None:
        self.fd = fd
        self.is_pty = is_pty
        self.pending = bytearray()
        self.eof = False  # close the pipe once `pending` is written

    def add(self, data: bytes) -> None:
        if self.fd >= 0:
            self.pending += data

    def flush(self) -> bool:
        """Write what can be written; True while some is left."""
        while self.pending and self.fd >= 0:
            try:
                n = os.write(self.fd, self.pending)
            except BlockingIOError:
                return True
            except OSError:  # the container closed its stdin (EPIPE)
                self.pending.clear()
                break
            del self.pending[:n]
        if self.eof and not self.pending and self.fd >= 0 and not self.is_pty:
            os.close(self.fd)
            self.fd = -1
        return bool(self.pending)


def _pump(ctr: process.Launched, outputs: list[tuple[int, bytes]], log: LogWriter,
          sinks: dict[bytes, int], stdin: int, hub: Any = None,
          ctr_in: _Input | None = None) -> None:
    """Copy output to the log, `sinks` and attached clients (`hub`, an attach.Hub)
    until the container's side ends; `stdin` (a foreground run's terminal) and the
    clients' input to its pty or stdin pipe (`ctr_in`)."""
    poller = select.poll()
    streams: dict[int, bytes] = {}
    for fd, stream in outputs:
        poller.register(fd, select.POLLIN)
        streams[fd] = stream
    if stdin >= 0:
        poller.register(stdin, select.POLLIN)
    listener = -1
    if hub is not None:
        listener = hub.listener.fileno()
        poller.register(listener, select.POLLIN)
    writing = False  # ctr_in registered for POLLOUT (distinct from a pty's POLLIN)
    while streams:
        events = poller.poll(1000)
        if not events:
            if not ctr.alive():
                # pid 1 is gone but something still holds a pipe (a process that
                # left the container's pid namespace cannot exist, but a pty's slave
                # can linger): take what is there and stop.
                for fd, stream in list(streams.items()):
                    _drain(fd, stream, log, sinks, hub)
                break
            continue
        for fd, ev in events:
            if fd == listener:
                conn = hub.accept()
                if conn is not None:
                    poller.register(conn, select.POLLIN)
                continue
            if hub is not None and fd in hub.clients:
                _from_client(hub, fd, poller, ctr, ctr_in)
                continue
            if ctr_in is not None and fd == ctr_in.fd and ev & select.POLLOUT and writing:
                if not ctr_in.flush():
                    poller.unregister(fd)
                    writing = False
                continue
            if fd == stdin:
                data = b""
                with contextlib.suppress(OSError):
                    data = os.read(stdin, 65536)
                if not data:
                    poller.unregister(stdin)
                    stdin = -1
                with contextlib.suppress(OSError):
                    # stdin ended (a pipe): send the terminal's EOF character.
                    _write_all(ctr.master, data or b"\x04")
                continue
            stream = streams.get(fd)
            if stream is None:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every pty slave closed, the end
                    raise
                data = b""
            if not data:
                poller.unregister(fd)
                del streams[fd]
                continue
            _deliver(stream, data, log, sinks, hub)
        if (ctr_in is not None and ctr_in.pending and not writing and not ctr_in.is_pty
                and ctr_in.flush()):
            poller.register(ctr_in.fd, select.POLLOUT)
            writing = True
    if ctr_in is not None and ctr_in.fd >= 0 and not ctr_in.is_pty:
        with contextlib.suppress(OSError):
            os.close(ctr_in.fd)
        ctr_in.fd = -1


def _from_client(hub: Any, fd: int, poller: Any, ctr: process.Launched,
                 ctr_in: _Input | None) -> None:
    from sandbox.containers import attach

    got = hub.receive(fd)
    if got is None:
        poller.unregister(fd)
        return
    kind, data = got
    if kind == attach.RESIZE and ctr.master >= 0 and len(data) == 8:
        import fcntl
        import termios

        with contextlib.suppress(OSError):
            fcntl.ioctl(ctr.master, termios.TIOCSWINSZ, data)
    elif kind == attach.STDIN and ctr_in is not None:
        if data:
            ctr_in.add(data)
        elif ctr_in.is_pty:
            ctr_in.add(b"\x04")  # the terminal's EOF character
        else:
            ctr_in.eof = True  # podman's attach closes the container's stdin too
        if ctr_in.is_pty:
            # A terminal's input is a few keystrokes; the master is also our output
            # fd, so it stays blocking and is written at once.
            with contextlib.suppress(OSError):
                _write_all(ctr_in.fd, bytes(ctr_in.pending))
            ctr_in.pending.clear()
        else:
            ctr_in.flush()


def _deliver(stream: bytes, data: bytes, log: LogWriter, sinks: dict[bytes, int],
             hub: Any = None) -> None:
    log.write(stream, data)
    sink = sinks.get(stream)
    if sink is not None:
        try:
            _write_all(sink, data)
        except OSError:
            # The reader went away (EPIPE: `sbx run ... | head`): keep logging; the
            # container is not stopped for it (conmon does the same).
            sinks.pop(stream, None)
    if hub is not None and hub.clients:
        hub.broadcast(stream, data)


def _drain(fd: int, stream: bytes, log: LogWriter, sinks: dict[bytes, int],
           hub: Any = None) -> None:
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            _deliver(stream, data, log, sinks, hub)


# -- attached: this process is the monitor ------------------------------------------
def run_attached(store: ContainerStore, container: Container, spec: Spec,
                 maps: idmap.MapPlan, lock: Lock, *, interactive: bool) -> int:
    """Run the container in the foreground of this process: its output to our
    stdout/stderr and its log, our stdin to it with `interactive`. Releases `lock`
    once the container runs. Returns its exit status."""
    run = Run(store, container, spec, maps)
    run.launch(0, interactive)
    lock.release()
    restore: Callable[[], None] = _noop
    try:
        if spec.process.terminal:
            restore = _terminal_mode(interactive, run.ctr.master if run.ctr else -1)
        run.pump({STDOUT: 1, STDERR: 2}, stdin=0 if interactive else -1)
    except BaseException:
        if run.ctr is not None:
            run.ctr.close()  # kill and reap: nothing may run unwatched after we are gone
        run.finish()
        raise
    finally:
        restore()
    return run.finish()


def _noop() -> None:
    pass


def _terminal_mode(interactive: bool, master: int) -> Callable[[], None]:
    """Raw mode on our terminal and window-size forwarding, as runtime/terminal.py
    does for `sbx run -t`; returns what undoes it."""
    import termios
    import tty

    from sandbox.runtime import terminal

    old = None
    if interactive and os.isatty(0):
        old = termios.tcgetattr(0)
        tty.setraw(0)
    if os.isatty(0):
        terminal.copy_winsize(0, master)
        signal.signal(signal.SIGWINCH, lambda *_: terminal.copy_winsize(0, master))

    def restore() -> None:
        if old is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, old)
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)

    return restore


# -- detached: a monitor process of its own ------------------------------------------
def start_detached(store: ContainerStore, container: Container, spec: Spec,
                   maps: idmap.MapPlan, lock: Lock,
                   after_exit: Callable[[str, int], None] | None = None) -> int:
    """Fork a monitor that starts the container and watches it after we are gone.
    Returns once the container runs (its state says so), with its host pid; raises
    the start's error. `after_exit(id, status)` runs in the monitor after the exit
    is recorded (removal for --rm)."""
    ready_r, ready_w = os.pipe()
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(ready_r)
            os.setsid()  # out of the caller's session: no terminal signals reach us
            if os.fork() != 0:
                os._exit(0)  # the monitor is not a session leader: it can never
                # acquire a controlling terminal (the classic double fork)
            _monitor_main(store, container, spec, maps, lock, ready_w, after_exit)
        except BaseException:  # never unwind into the sbx command's stack
            code = 125
        finally:
            os._exit(code)
    os.close(ready_w)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    chunks = []
    while chunk := os.read(ready_r, 65536):
        chunks.append(chunk)
    os.close(ready_r)
    message = b"".join(chunks)
    if message.startswith(b"ok "):
        return int(message[3:])
    if not message:
        raise SbxError("the container's monitor died before the container started",
                       hint="run it in the foreground (without -d) to see why")
    raise process.decode_error(message)


def _detach_stdio(keep: set[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    # Everything else the sbx command inherited (a shell's extra descriptors, the
    # caller's pipes) would be held open for the container's whole life.
    last = 3
    for fd in sorted(keep):
        os.closerange(last, fd)
        last = fd + 1
    os.closerange(last, 1 << 16)


def _monitor_main(store: ContainerStore, container: Container, spec: Spec,
                  maps: idmap.MapPlan, lock: Lock, ready_w: int,
                  after_exit: Callable[[str, int], None] | None) -> None:
    os.chdir("/")
    _detach_stdio({ready_w, lock.fd})
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    run = Run(store, container, spec, maps)
    # The attach socket listens before the container starts, so an `sbx attach` right
    # after `run -d` returns finds it (connections wait in the backlog until pump).
    hub = None
    with contextlib.suppress(OSError):
        from sandbox.containers import attach

        hub = attach.Hub(attach.listen(container.id))
    # -i: the container's stdin is a pipe the monitor holds open for attach clients
    # (`run -d -i`, podman's and docker's "keep STDIN open"); else /dev/null.
    interactive = bool(container.config.get("interactive"))
    in_r = in_w = -1
    if interactive and not spec.process.terminal:
        in_r, in_w = os.pipe()
        os.set_blocking(in_w, False)
    try:
        run.launch(in_r if in_r >= 0 else 0, interactive=interactive)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(ready_w, process.encode_error(exc))
        if hub is not None:
            hub.close()
        return
    finally:
        lock.release()  # our copy; the sbx command drops its own when it reads "ok"
        if in_r >= 0:
            os.close(in_r)
    assert run.ctr is not None
    with contextlib.suppress(OSError):
        os.write(ready_w, b"ok %d" % run.ctr.pid)
    os.close(ready_w)
    ctr_in = None
    if in_w >= 0:
        ctr_in = _Input(in_w, is_pty=False)
    elif interactive and run.ctr.master >= 0:
        ctr_in = _Input(run.ctr.master, is_pty=True)
    code = 125
    try:
        run.pump({}, hub=hub, ctr_in=ctr_in)
    finally:
        if hub is not None:
            hub.close()  # the clients see the end; the socket file goes with the
            # runtime directory (remove_runtime_files)
        if ctr_in is not None and ctr_in.fd >= 0 and not ctr_in.is_pty:
            os.close(ctr_in.fd)
        code = run.finish()
    if after_exit is not None:
        try:
            after_exit(container.id, code)
        except BaseException as exc:  # nobody to tell but the record
            with contextlib.suppress(SbxError, OSError), store.lock(container.id):
                store.update_state(container.id, error=f"after exit: {exc}")


def describe(container: Container) -> dict[str, Any]:
    """The monitor's side of `inspect` (for part B's exec: pid 1's host pid and its
    start time identify the namespaces to join)."""
    st = container.raw_state
    return {"MonitorPid": st.get("monitor_pid", 0), "MonitorStart": st.get("monitor_start", 0),
            "PidStart": st.get("pid_start", 0), "BootId": st.get("boot_id", "")}


__all__ = ["Run", "describe", "run_attached", "start_detached"]
