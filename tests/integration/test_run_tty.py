"""`sbx run -t` and `-it` on a real pseudo-terminal (SbxRunner.spawn_pty).

sbx runs as the session leader of a pty the test holds the master of, as in a user's
terminal. Inside, the container has a pty of its own (/dev/pts/0 in its devpts); sbx
relays bytes, puts the outer terminal in raw mode for -i and forwards window sizes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import SbxRunner


class Pty:
    """sbx on a pty: read with a deadline, write, and reap with a deadline."""

    def __init__(self, pid: int, master: int) -> None:
        self.pid = pid
        self.master = master
        self.output = b""
        self.status: int | None = None

    def set_size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read_some(self, timeout: float) -> str:
        """Read what arrives within timeout: 'data', 'idle' or 'eof' (every slave fd
        closed, which Linux reports as EIO on the master)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return "idle"
        try:
            data = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return "eof"
            raise
        self.output += data
        return "data" if data else "eof"

    def expect(self, needle: bytes, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or self._read_some(min(left, 0.2)) == "eof":
                pytest.fail(f"{needle!r} not seen within {timeout}s; output: {self.output!r}")

    def finish(self, timeout: float = 10.0) -> int:
        """Read until sbx exits, then what it left; return its exit status."""
        deadline = time.monotonic() + timeout
        eof = False
        while time.monotonic() < deadline:
            if eof:
                time.sleep(0.02)
            else:
                eof = self._read_some(0.1) == "eof"
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                while not eof and self._read_some(0.05) == "data":
                    pass
                return os.waitstatus_to_exitcode(status)
        pytest.fail(f"sbx did not exit within {timeout}s; output: {self.output!r}")

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


@contextmanager
def pty_sbx(sbx: SbxRunner, *args: str, size: tuple[int, int] | None = None,
            env: dict[str, str] | None = None) -> Iterator[Pty]:
    pid, master = sbx.spawn_pty(*args, env=env)
    session = Pty(pid, master)
    try:
        if size:
            # sbx reads the size only after its Python has started and the container is
            # set up, tens of milliseconds after the fork; this ioctl comes first.
            session.set_size(*size)
        yield session
    finally:
        if session.status is None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(master)


def test_tty_and_window_size(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    with pty_sbx(sbx, "run", "-it", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 "tty; stty size", size=(33, 101)) as term:
        assert term.finish() == 0
    assert term.text.split() == ["/dev/pts/0", "33", "101"]


def test_t_without_i_still_has_a_terminal(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    with pty_sbx(sbx, "run", "-t", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 "test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; "
                 "test -t 2 && echo stderr-tty; echo TERM=$TERM",
                 env={"TERM": "vt100"}) as term:
        assert term.finish() == 0
    assert term.text.split() == ["stdin-tty", "stdout-tty", "stderr-tty", "TERM=vt100"]


def test_interactive_shell(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    with pty_sbx(sbx, "run", "-it", "--rootfs", str(busybox_rootfs), "sh",
                 size=(24, 80)) as term:
        term.expect(b"# ")
        term.write(b"echo hi-$((40+2))\r")
        term.expect(b"hi-42")
        term.write(b"exit 5\r")
        assert term.finish() == 5
    # The input was typed, not printed back verbatim: the shell computed it.
    assert "hi-42" in term.text


def test_ctrl_c_interrupts_the_foreground_command(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """Raw mode: ^C travels to the container's terminal, which signals its foreground
    command; sbx itself must not die of it."""
    with pty_sbx(sbx, "run", "-it", "--rootfs", str(busybox_rootfs), "sh",
                 size=(24, 80)) as term:
        term.expect(b"# ")
        term.write(b"sleep 30; echo after-sleep\r")
        time.sleep(0.3)
        start = time.monotonic()
        term.write(b"\x03")
        term.write(b"echo back-$((1+1))\r")
        term.expect(b"back-2")
        assert time.monotonic() - start < 5
        term.write(b"exit 3\r")
        assert term.finish() == 3
    # The command line is echoed; its output would be a line of its own.
    assert "after-sleep" not in [line.strip() for line in term.text.splitlines()]


def test_window_size_changes_are_forwarded(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = ("trap 'stty size' WINCH; echo ready; "
              "while :; do read -t 1 x && break; done; echo bye")
    with pty_sbx(sbx, "run", "-it", "--rootfs", str(busybox_rootfs), "sh", "-c", script,
                 size=(24, 80)) as term:
        term.expect(b"ready")
        term.set_size(50, 132)  # the kernel sends SIGWINCH to sbx, the foreground job
        term.expect(b"50 132")
        term.write(b"q\r")
        term.expect(b"bye")
        assert term.finish() == 0


def test_init_with_a_terminal(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    with pty_sbx(sbx, "run", "-it", "--init", "--rootfs", str(busybox_rootfs), "sh",
                 size=(24, 80)) as term:
        term.expect(b"# ")
        term.write(b"echo pid-$$; tty\r")
        term.expect(b"/dev/pts/0")
        term.write(b"exit 6\r")
        assert term.finish() == 6
    assert "pid-1\r" not in term.text


def test_non_root_user_owns_its_terminal(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    with pty_sbx(sbx, "run", "-it", "-u", "1000", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 "stat -c %u $(tty); echo reopened > $(tty) && echo ok",
                 size=(24, 80)) as term:
        code = term.finish()
    # Else "0" and "sh: can't create /dev/pts/0: Permission denied".
    assert term.text.split() == ["1000", "reopened", "ok"]
    assert code == 0


def test_terminal_settings_are_restored(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """-it puts the user's terminal in raw mode; it must be cooked again afterwards."""
    with pty_sbx(sbx, "run", "-it", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 "stty -a | grep -o -- '-icanon' || echo inner-cooked",
                 size=(24, 80)) as term:
        assert term.finish() == 0
        lflag = termios.tcgetattr(term.master)[3]
    assert "inner-cooked" in term.text  # the container's own pty is cooked
    assert lflag & termios.ICANON and lflag & termios.ECHO


def test_output_is_relayed_whole(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """The container exits right after writing; sbx must still drain its pty."""
    with pty_sbx(sbx, "run", "-t", "--rootfs", str(busybox_rootfs), "seq", "1", "30000",
                 size=(24, 80)) as term:
        assert term.finish() == 0
    lines = term.text.replace("\r", "").split()
    assert lines == [str(n) for n in range(1, 30001)]


def test_it_with_piped_input(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """-it with a pipe for stdin (a script feeding a shell): input goes through the
    container's pty, and the end of input reaches the shell as EOF."""
    result = sbx.run("run", "-it", "--rootfs", busybox_rootfs, "sh",
                     input="echo piped-$((1+1))\nexit 3\n", timeout=30)
    assert result.returncode == 3, result.stderr
    assert "piped-2" in result.stdout.splitlines()  # the output, not the echoed input
    ended = sbx.run("run", "-it", "--rootfs", busybox_rootfs, "sh", "-c", "cat; echo eof-seen",
                    input="some input\n", timeout=30)
    assert ended.returncode == 0, ended.stderr
    assert "eof-seen" in ended.stdout
