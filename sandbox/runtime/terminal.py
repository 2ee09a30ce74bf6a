"""Terminals for `-t`: a pty made inside the container, relayed to the user's terminal.

As runc and crun do (`--console-socket`), the container opens /dev/ptmx in its own
devpts instance, so `tty` inside names /dev/pts/0 and the pty belongs to the container;
the master comes back to sbx over a unix socket (SCM_RIGHTS). sbx puts the user's
terminal in raw mode, copies bytes both ways and forwards window-size changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import tty
from collections.abc import Callable

from sandbox.errors import SyscallError

TIOCSPTLCK = 0x40045431  # unlockpt(3)
TIOCGPTN = 0x80045430  # ptsname(3)


def open_pty_in_container() -> tuple[int, int]:
    """Open a pty pair from the container's /dev/ptmx. Returns (master, slave)."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        num = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
        slave = os.open(f"/dev/pts/{num}", os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        raise SyscallError("open pty", exc.errno or errno.EIO, "/dev/ptmx") from None
    return master, slave


def make_controlling(slave: int) -> None:
    """Make `slave` the controlling terminal and stdio of this (session leader) process."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    try:
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def relay(master: int, interactive: bool, child_alive: Callable[[], bool]) -> None:
    """Copy stdin -> master and master -> stdout until the container's side closes."""
    stdin_fd, stdout_fd = 0, 1
    old_attrs = None
    if interactive and os.isatty(stdin_fd):
        old_attrs = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
    if os.isatty(stdin_fd):
        copy_winsize(stdin_fd, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(stdin_fd, master))
    try:
        readers = [master] + ([stdin_fd] if interactive else [])
        while True:
            try:
                ready, _, _ = select.select(readers, [], [], 1.0)
            except InterruptedError:
                continue
            if not ready and not child_alive():
                # The process is gone but something kept the slave open; drain and stop.
                _drain(master, stdout_fd)
                break
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # every slave fd closed: the end
                        break
                    raise
                if not data:
                    break
                _write_all(stdout_fd, data)
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    # stdin ended (a pipe): send the terminal's EOF character.
                    readers.remove(stdin_fd)
                    _write_all(master, b"\x04")
                else:
                    _write_all(master, data)
    finally:
        if old_attrs is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, old_attrs)
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)


def _drain(master: int, out: int) -> None:
    os.set_blocking(master, False)
    try:
        while data := os.read(master, 65536):
            _write_all(out, data)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
