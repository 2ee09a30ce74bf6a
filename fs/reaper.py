"""Deferred removal: entries taken out of the upper layer are moved into the work
directory at once and deleted there later, by a helper process.

Owns: the helper process that finishes removals — unlinking files and removing
directory trees in the work directory — and draining it at unmount. Imports nothing
from `sandbox`.

Why: on ext4 (the benchmark host: `discard`, virtio) unlink(2) of a file with data
blocks takes 80-250 us, almost all of it blocked in the filesystem freeing the
blocks, against ~4 us for an empty file and ~6 us for a rename(2) within the same
filesystem; so does the last close of a removed directory. A FUSE request that waits
for that makes `rm -rf` slow. fuse-overlayfs does the same (main.c, hide_node:
renameat2 of the node into its workdir with RENAME_WHITEOUT, unlinkat when the node
is freed), and the kernel's overlayfs moves entries through its work directory for
whiteouts too (ovl_cleanup_and_whiteout). What the merged tree shows is settled when
the rename returns: the name is gone from the upper layer (and a whiteout is in its
place where needed); only the freeing of blocks comes later, so statfs may show the
space a moment after the removal.

A process, not a thread: a thread needs the GIL around each of its system calls,
and the GIL and wakeups it then trades with the main loop cost more than the
unlinks saved, worst on a busy host (pthread_cond_signal and sem_post in perf;
`rm -rf` went from 0.9 s to 2.1 s). The helper is forked before the main loop
starts (no threads yet), keeps only the work directory and its end of a pipe, and
reads NUL-separated names from the pipe; a full pipe makes put() wait, which is
the backpressure. It ignores the signals that stop the filesystem and exits when
the pipe closes — at unmount, when close() waits for it, or when the filesystem
process dies. The work directory is emptied at every mount (overlay.py), so what a
killed helper leaves does not last. Without a started helper (the overlay driven
directly, as in unit tests), put() removes at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import stat
import time

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
BATCH_WAIT = 0.05  # seconds the helper rests between reads of its pipe (_serve)


class Reaper:
    """Removes entries of the work directory `workfd`, in a helper once started."""

    def __init__(self, workfd: int) -> None:
        self.workfd = workfd
        self._pid = 0
        self._pipe = -1

    @property
    def started(self) -> bool:
        return self._pid > 0

    def start(self) -> None:
        """Fork the helper; from now on put() hands names to it. Call it before any
        thread starts."""
        if self._pid:
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the helper: never returns into the caller's code
            code = 1
            try:
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
                # No stdio: containers/storage waits for the mount program's stderr
                # pipe to close (__main__.py), and this process may outlive it.
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                keep = sorted((r, self.workfd))
                os.closerange(3, keep[0])
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
                _serve(self.workfd, r)
                code = 0
            finally:
                os._exit(code)
        os.close(r)
        self._pid, self._pipe = pid, w

    def put(self, name: bytes) -> None:
        """Remove NAME (a file, or a directory tree) from the work directory: by the
        helper if it runs, else now."""
        if self._pipe < 0:
            remove(self.workfd, name)
            return
        try:
            os.write(self._pipe, name + b"\0")  # atomic: a name is < PIPE_BUF
        except BrokenPipeError:  # the helper died: left for the next mount's cleanup
            log.warning("the reaper process is gone; %r stays in the work directory", name)

    def close(self) -> None:
        """Let the helper finish every pending removal, and wait for it."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
        if self._pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0


def _serve(workfd: int, rfd: int) -> None:
    """The helper's loop: remove each name read, until the pipe closes. It rests
    BATCH_WAIT between reads, so that a stream of removals wakes it a few times a
    second, not once a name: a wakeup of an idle CPU is what costs on a VM, and the
    request loop pays for each one it causes."""
    pending = b""
    while True:
        try:
            chunk = os.read(rfd, 1 << 20)
        except InterruptedError:
            continue
        if not chunk:
            return
        *names, pending = (pending + chunk).split(b"\0")
        for name in names:
            remove(workfd, name)
        time.sleep(BATCH_WAIT)


def remove(workfd: int, name: bytes) -> None:
    """Remove NAME from the directory `workfd`: a file, or a directory and what is
    in it, never following a symlink."""
    try:
        st = os.stat(name, dir_fd=workfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=workfd)
        else:
            os.unlink(name, dir_fd=workfd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # left for the work directory's cleanup at mount
            log.warning("cannot remove %r from the work directory: %s", name, exc)
