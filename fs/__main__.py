"""The sbx-fs command, also `python -m fs`: fuse-overlayfs's command line, a mount, and
the process that serves it.

Owns: the process — opening the layers before anything else (so that a bad path is an
error on the caller's terminal), the FUSE mount, daemonizing, signals, the trio main
loop and the unmount at exit. Imports nothing from `sandbox`.

Without -f the command forks; the child mounts and tells the parent "mounted" through
a pipe (what libfuse's fuse_daemonize does), then drops its stdio: containers/storage
runs the mount program with its stderr on a pipe and waits for that pipe to close
(exec.Cmd), so a daemon that kept it would hang podman. The parent exits 0 once the
mount is in place, or prints the child's error and exits 1. Forking comes before
pyfuse3 and trio start (no threads yet), and so does the fork of the reaper, the
helper that deletes what removals moved into the work directory (reaper.py).
SIGTERM, SIGINT and SIGHUP end the loop (pyfuse3.terminate); an unmount by
fusermount3 -u or umount(8) ends it too; either way the mount is gone when the
process exits (pyfuse3.close).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
from importlib import metadata
from typing import Any

import pyfuse3
import trio

from fs.mapping import IdMap, read_overflow_id
from fs.ops import Operations
from fs.options import USAGE, MountOptions, UsageError, parse_args
from fs.overlay import Overlay
from fs.spin import Spinner, find_fuse_fd

log = logging.getLogger("fs")


def _version() -> str:
    try:
        return metadata.version("sbx")
    except metadata.PackageNotFoundError:
        return "unknown"


def fuse_options(opts: MountOptions) -> set[str]:
    """The libfuse mount options: fuse-overlayfs's defaults (get_new_args: with
    allow_other and suid when running as root, which a user namespace's root is, so
    the container's other users reach the mount and its setuid programs work), the
    caller's, and a name for /proc/mounts."""
    out = {"default_permissions", "noatime", "fsname=sbx-fs", "subtype=sbx-fs"}
    if os.geteuid() == 0:
        out.add("allow_other")
        if "nosuid" not in opts.fuse_options:
            out.add("suid")
    out.update(o for o in opts.fuse_options if o != "rw")
    if opts.read_only or not opts.upperdir:
        out.add("ro")
    if opts.debug:
        out.add("debug")
    if "fsname=sbx-fs" in out and any(o.startswith("fsname=") and o != "fsname=sbx-fs"
                                      for o in out):
        out.discard("fsname=sbx-fs")
    return out


def open_overlay(opts: MountOptions) -> Overlay:
    squash_uid = opts.squash_to_uid if opts.squash_to_uid is not None else (
        0 if opts.squash_to_root else None)
    squash_gid = opts.squash_to_gid if opts.squash_to_gid is not None else (
        0 if opts.squash_to_root else None)
    uids = IdMap(opts.uidmapping, squash=squash_uid, overflow=read_overflow_id("uid"))
    gids = IdMap(opts.gidmapping, squash=squash_gid, overflow=read_overflow_id("gid"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            limit = hard
        except (ValueError, OSError):
            pass
    cache = max(64, min(4096, (limit if limit != resource.RLIM_INFINITY else 65536) // 4))
    return Overlay(
        opts.lowerdirs,
        opts.upperdir,
        opts.workdir,
        uids=uids,
        gids=gids,
        writeback=opts.writeback,
        fsync=opts.fsync,
        static_nlink=opts.static_nlink,
        xattrs=opts.xattrs,
        xattr_permissions=opts.xattr_permissions,
        cache_size=cache,
    )


class _Loop:
    """pyfuse3's main loop, with reads from /dev/fuse that block.

    pyfuse3 (internal.pxi, _session_loop) waits for each request with trio: a lock,
    then wait_readable on the FUSE fd (an epoll_ctl and an epoll_wait), then reads.
    sbx-fs's handlers never await (ops.py), so one task serves every request and that
    wait is pure overhead: measured on this host, an open or a release took 26 us a
    round trip with it and 11 us without. pyfuse3 looks its `_wait_fuse_readable` up
    in its module namespace at each call (Cython's module globals), so replacing it
    with a coroutine that returns at once makes the loop read the fd directly,
    blocking, as libfuse's own single-threaded loop (fuse_session_loop) does. The
    replacement answers False once a signal has asked to stop, which ends the loop:
    the read(2) it was blocked in returns EINTR (Python installs its handlers without
    SA_RESTART), pyfuse3 goes round again and asks. A signal that lands between that
    check and the read waits for the next request, as with libfuse's loop. An
    unmount ends the read with ENODEV, which libfuse turns into the end of the
    session.

    Before each read the replacement may poll the fd for a few tens of microseconds
    while requests come densely (spin.py, `spin=`), so that the next request needs
    no wakeup of this process.

    With `stock=True` (SBX_FS_STOCK_LOOP=1 in the environment), or a pyfuse3 without
    that function, pyfuse3's own loop runs, stopped with pyfuse3.terminate().
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, stock: bool = False) -> None:
        self.stopping = False
        self.stock = stock or not hasattr(pyfuse3, "_wait_fuse_readable")
        self._saved: dict[int, Any] = {}
        self.spinner: Spinner | None = None  # spin.py: polls before each read

    def start_spinning(self, spin_us: int) -> None:
        """Poll /dev/fuse for up to `spin_us` before each read (spin.py); after
        pyfuse3.init, which opens it."""
        if self.stock or spin_us <= 0:
            return
        if len(os.sched_getaffinity(0)) < 2:
            # One CPU to run on: a client that wants it would wait for the spin
            # (bench/fs --cpus 0: `read` 1.66x -> 1.99x fuse-overlayfs's time).
            log.debug("one CPU allowed: no spinning")
            return
        fd = find_fuse_fd()
        if fd is None:
            log.debug("no /dev/fuse descriptor found: no spinning")
            return
        self.spinner = Spinner(fd, spin_us)
        log.debug("polling /dev/fuse (fd %d) for up to %d us before each read", fd, spin_us)

    def catch_signals(self) -> None:
        """Before mounting: a signal from then on ends the loop, even one that comes
        before the loop runs (the caller may signal as soon as the mount shows)."""
        self._saved = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}

    def restore_signals(self) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved = {}

    async def _readable(self) -> bool:
        if self.spinner is not None and not self.stopping:
            self.spinner.wait(self._stopping)
        return not self.stopping

    def _stopping(self) -> bool:
        return self.stopping

    def _on_signal(self, signum: int, frame: object) -> None:
        log.debug("signal %d: unmounting", signum)
        self.stopping = True

    async def _stop_on_signal(self) -> None:
        with trio.open_signal_receiver(*self.SIGNALS) as signals:
            async for _ in signals:
                log.debug("signal received: unmounting")
                pyfuse3.terminate()
                return

    async def run(self) -> None:
        if self.stopping:
            return  # signalled before the loop started
        if self.stock:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_on_signal)
                await pyfuse3.main(min_tasks=1, max_tasks=1)
                nursery.cancel_scope.cancel()
            return
        saved = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
        pyfuse3._wait_fuse_readable = self._readable  # type: ignore[attr-defined]
        try:
            # One task (max_tasks=1): with no other reader waiting, pyfuse3 would
            # start a second one, and that one would block the first.
            await pyfuse3.main(min_tasks=1, max_tasks=1)
        finally:
            pyfuse3._wait_fuse_readable = saved  # type: ignore[attr-defined]


def _detach_stdio(keep_stderr: bool) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def serve(fs: Overlay, opts: MountOptions, ready: int | None) -> int:
    """Mount and serve until unmounted. `ready` is the pipe to the waiting parent."""
    ops = Operations(fs, timeout=opts.timeout, writeback=opts.writeback)
    loop = _Loop(stock=bool(os.environ.get("SBX_FS_STOCK_LOOP")))
    loop.catch_signals()
    try:
        pyfuse3.init(ops, opts.mountpoint, fuse_options(opts))
    except RuntimeError as exc:
        loop.restore_signals()
        msg = f"sbx-fs: cannot mount {opts.mountpoint}: {exc}\n"
        if ready is not None:
            os.write(ready, msg.encode())
        else:
            sys.stderr.write(msg)
        fs.close()
        return 1
    if loop.stock:
        loop.restore_signals()  # trio's receiver takes over once the loop runs
    loop.start_spinning(opts.spin_us)
    if fs.reaper is not None:
        fs.reaper.start()  # a fork: before trio or anything else starts a thread
    if ready is not None:
        os.write(ready, b"mounted\n")
        os.close(ready)
        _detach_stdio(keep_stderr=opts.debug)
    os.chdir("/")
    code = 0
    try:
        trio.run(loop.run)
    except BaseException:
        log.exception("the main loop failed")
        code = 1
    finally:
        loop.restore_signals()
        pyfuse3.close(unmount=True)
        fs.close()
    return code


def _daemonize(fs: Overlay, opts: MountOptions) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filesystem process: never returns into the caller's code
        code = 1
        try:
            os.close(r)
            os.setsid()
            code = serve(fs, opts, w)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(w, f"sbx-fs: {exc}\n".encode())
        finally:
            os._exit(code)
    os.close(w)
    fs.close()  # the child has its own descriptors
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    msg = b"".join(chunks)
    if msg.startswith(b"mounted\n"):
        return 0
    os.waitpid(pid, 0)
    text = msg.decode(errors="replace") or "sbx-fs: the filesystem process exited before mounting\n"
    sys.stderr.write(text)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(args)
    except UsageError as exc:
        sys.stderr.write(f"sbx-fs: {exc}\n{USAGE}")
        return 1
    if opts.show_help:
        sys.stdout.write(USAGE)
        return 0
    if opts.show_version:
        print(f"sbx-fs: version {_version()}")
        print(f"pyfuse3 version {pyfuse3.__version__}")
        return 0
    logging.basicConfig(level=logging.DEBUG if opts.debug else logging.WARNING,
                        format="sbx-fs: %(levelname)s %(name)s: %(message)s")
    for option in opts.warnings:
        sys.stderr.write(f"sbx-fs: unknown argument ignored: {option}\n")
    os.umask(0)  # modes given to the layers are exact
    try:
        fs = open_overlay(opts)
    except OSError as exc:
        sys.stderr.write(f"sbx-fs: cannot open the layers: {exc}\n")
        return 1
    if opts.foreground:
        return serve(fs, opts, None)
    return _daemonize(fs, opts)


if __name__ == "__main__":
    sys.exit(main())
