"""Deferred removal: entries taken out of the upper layer are moved into the work
directory at once and deleted there later, by a background thread.

Owns: the thread that finishes removals — unlinking files, removing directory trees
and closing directory descriptors of removed directories in the work directory —
and draining it at unmount. Imports nothing from `sandbox`.

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

The thread only runs while the main loop waits for requests with the GIL released
(__main__._Loop polls the FUSE descriptor); pyfuse3's own read of /dev/fuse holds
the GIL. Without a started thread (the overlay driven directly, as in unit tests,
or pyfuse3's stock loop), put() removes at once. The work directory is emptied at
every mount (overlay.py), so a process killed with removals pending leaves nothing
that lasts; close() finishes them before the process exits.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import stat
import threading

log = logging.getLogger(__name__)

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGCHLD, signal.SIGPIPE}


class Reaper:
    """Removes entries of the work directory `workfd`, in a thread once started."""

    def __init__(self, workfd: int) -> None:
        self.workfd = workfd
        self._queue: collections.deque[bytes | int] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Run removals in a background thread from now on."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="sbx-fs-reaper",
                                            daemon=True)
            # Signals go to the main thread, whose poll they interrupt (a new thread
            # starts with its creator's signal mask).
            old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                self._thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def put(self, item: bytes | int) -> None:
        """Remove NAME (bytes) from the work directory, or close the descriptor
        (int) of a removed directory: in the thread if it runs, else now."""
        if self._thread is None:
            self._remove(item)
            return
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread and finish every pending removal."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify()
            thread.join()
        while self._queue:
            self._remove(self._queue.popleft())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
            self._remove(item)

    def _remove(self, item: bytes | int) -> None:
        if isinstance(item, int):
            with contextlib.suppress(OSError):
                os.close(item)
            return
        try:
            st = os.stat(item, dir_fd=self.workfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(item, dir_fd=self.workfd)
            else:
                os.unlink(item, dir_fd=self.workfd)
        except FileNotFoundError:
            pass
        except OSError as exc:  # left for the work directory's cleanup at next mount
            log.warning("cannot remove %r from the work directory: %s", item, exc)
