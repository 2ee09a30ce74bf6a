"""The wait for the next FUSE request: a short, adaptive busy-poll before sleeping.

Owns: what the main loop does between two requests (__main__.py's _Loop calls wait()
before each blocking read of /dev/fuse). Imports nothing from `sandbox`.

Why: a FUSE request is a round trip between the client and this process, and on a
virtual machine whose idle vCPUs halt (this host: cpuidle-haltpoll with
guest_halt_poll_ns=0) waking a sleeping server on another vCPU is an interrupt into
a halted vCPU, several times dearer than the request itself: a stat() answered from
the other vCPU took ~82 us against ~7 us on the same one (bench/fs's `--cpus`
discussion, docs/fs.md "Speed"). Where the scheduler leaves client and server is
luck that lasts a whole workload. While requests come densely, the server therefore
keeps polling the FUSE descriptor for up to `spin_us` after a reply instead of going
to sleep at once: the next request is then read without any wakeup. The same stat()
from the other vCPU took ~22 us with a 50 us window. This is what the kernel does
for other latency-bound waits (NAPI busy polling, SO_BUSY_POLL; io_uring's SQPOLL;
the guest-side haltpoll idle driver), done here because the host turned the last
one off.

The cost is CPU time while a client is busy with the filesystem, so the window is
used only while it pays: after a poll that found a request, or after a cycle shorter
than two windows. A client that pauses longer than that costs one wasted window,
then none until it comes back. The loop yields the CPU at each turn, so a client on
the same CPU is not held up. `spin=0` turns it off, and so does a process allowed
on one CPU only (__main__.py): there a spin can only hold the client up.
"""

from __future__ import annotations

import logging
import os
import select
import time

log = logging.getLogger(__name__)

DEFAULT_SPIN_US = 50


def find_fuse_fd() -> int | None:
    """This process's /dev/fuse descriptor (pyfuse3 does not expose libfuse's)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                return int(name)
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return None


class Spinner:
    """Polls descriptor `fd` for up to `spin_us` before the caller's blocking read."""

    def __init__(self, fd: int, spin_us: int) -> None:
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self.window_ns = spin_us * 1000
        self._hit = False
        self._last = 0  # perf_counter_ns() when the previous wait() returned
        self.spins = self.hits = 0  # for tests and debugging

    def wait(self, stopping: object = None) -> None:
        """Return when a request is waiting, when the window has passed, or at once
        when spinning does not pay now (see the module's docstring). `stopping`, if
        given, is a callable that ends the spin early when it returns true."""
        poll = self._poll.poll
        now = time.perf_counter_ns()
        window = self.window_ns
        dense = self._hit or now - self._last < 2 * window
        if not window:
            return
        if poll(0):
            self._hit = True
        elif dense:
            self.spins += 1
            deadline = now + window
            self._hit = False
            while True:
                os.sched_yield()  # a runnable client on this CPU goes first
                if poll(0):
                    self._hit = True
                    self.hits += 1
                    break
                if time.perf_counter_ns() >= deadline or (stopping is not None
                                                          and stopping()):
                    break
        else:
            self._hit = False
        self._last = time.perf_counter_ns()
