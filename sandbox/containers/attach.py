"""Attaching to a detached container: its monitor's attach socket, and both ends of it.

A detached monitor (monitor.py) listens on a unix socket in the container's runtime
directory, as conmon does (its "attach" socket, SOCK_SEQPACKET). Each message is one
type byte and its data:

    monitor -> client   b"1" + output (stdout, or the pty)   b"2" + stderr output
    client -> monitor   b"0" + input for the container's stdin
                        b"0" alone: the client's stdin ended (the container's stdin
                        is closed, as podman's attach does; a pty gets ^D)
                        b"w" + struct winsize: the client's terminal size

The monitor relays output to every client as it logs it, and input from any client
to the container (which has a stdin only when it was created with -i). When the
container ends the monitor closes the clients' sockets, and `sbx attach` then
reports the exit code recorded in the container's state.

The path can be longer than a sockaddr_un allows (108 bytes: XDG_RUNTIME_DIR plus a
64-hex id); like conmon, both ends open the directory and use
/proc/self/fd/N/attach, which the kernel resolves without the length limit.

The client side (`attach()`): raw mode when the container has a terminal and ours is
one, window-size forwarding, and podman's detach keys (ctrl-p,ctrl-q by default)
that leave the container running. Library code: raises, never prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
from collections.abc import Callable
from typing import Any

from sandbox import paths
from sandbox.containers.store import Container, ContainerError

STDIN = b"0"
STDOUT = b"1"
STDERR = b"2"
RESIZE = b"w"
MAX_MESSAGE = 65536 + 1
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
SEND_TIMEOUT_S = 5.0  # a client that takes no output for this long is dropped


class NotAttachable(ContainerError):
    pass


# -- detach keys -----------------------------------------------------------------------
def parse_detach_keys(text: str) -> bytes:
    """podman's --detach-keys: comma-separated keys, each a single character or
    ctrl-<c> with <c> one of a-z @ [ \\ ] ^ _ (docker's term.ToBytes); "" disables."""
    out = bytearray()
    if text == "":
        return b""
    for key in text.split(","):
        low = key.lower()
        if low.startswith("ctrl-") and len(key) == 6:
            c = low[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            specials = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in specials:
                out.append(specials[c])
                continue
        elif len(key) == 1 and key.isascii():
            out.append(ord(key))
            continue
        raise ContainerError(f"invalid detach keys {text!r}: {key!r} is not a key",
                             hint="use a single character, or ctrl-<c> with <c> one of "
                             "a-z @ [ \\ ] ^ _, separated by commas: ctrl-p,ctrl-q")
    return bytes(out)


class DetachMatcher:
    """Watches input for the detach sequence. Bytes that might begin it are held back
    until it is clear that they do not (then they are passed on, as podman does)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to pass on, whether the sequence was typed)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for i in range(len(data)):
            b = data[i:i + 1]
            candidate = self.held + b
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    return bytes(out), True
                self.held = candidate
                continue
            # Not the sequence: flush what was held, and start again from this byte.
            out += self.held
            self.held = b""
            if self.keys.startswith(b):
                self.held = b
                if b == self.keys:
                    return bytes(out), True
            else:
                out += b
        return bytes(out), False


# -- the socket ------------------------------------------------------------------------
def _dir_path(cid: str) -> tuple[int, str]:
    """(an fd of the container's runtime dir, the socket's short path through it)."""
    where, name = os.path.split(paths.container_attach_socket(cid))
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd, f"/proc/self/fd/{fd}/{name}"


def listen(cid: str) -> socket.socket:
    """The monitor's listening socket (a stale one, from a monitor that was killed,
    is replaced)."""
    fd, path = _dir_path(cid)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(path)
            sock.listen(8)
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(fd)
    sock.setblocking(False)
    return sock


def connect(container: Container) -> socket.socket:
    try:
        fd, path = _dir_path(container.id)
    except FileNotFoundError:
        raise _not_attachable(container) from None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise _not_attachable(container) from None
    finally:
        os.close(fd)
    return sock


def _not_attachable(container: Container) -> NotAttachable:
    if not container.running:
        return NotAttachable(f"you can only attach to running containers: {container.name} "
                             f"is {container.status}",
                             hint=f"start it attached: sbx start -a {container.name}")
    return NotAttachable(f"container {container.name} runs in the foreground of another sbx "
                         "command, which has its input and output",
                         hint="attach works with containers started with -d or `sbx start`; "
                         "`sbx logs -f` follows this one's output")


class Hub:
    """The monitor's side: the listening socket and the attached clients."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.clients: dict[int, socket.socket] = {}

    def accept(self) -> int | None:
        try:
            conn, _addr = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        conn.setblocking(True)
        conn.settimeout(SEND_TIMEOUT_S)
        self.clients[conn.fileno()] = conn
        return conn.fileno()

    def receive(self, fd: int) -> tuple[bytes, bytes] | None:
        """One message from a client as (type, data); None when it left."""
        conn = self.clients[fd]
        try:
            msg = conn.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return b"", b""
        except OSError:
            msg = b""
        if not msg:
            self.drop(fd)
            return None
        return msg[:1], msg[1:]

    def broadcast(self, stream: bytes, data: bytes) -> None:
        kind = STDERR if stream == b"stderr" else STDOUT
        for fd, conn in list(self.clients.items()):
            try:
                for i in range(0, len(data), MAX_MESSAGE - 1):
                    conn.sendall(kind + data[i:i + MAX_MESSAGE - 1])
            except OSError:  # gone, or not reading (timeout): it misses the rest
                self.drop(fd)

    def drop(self, fd: int) -> None:
        conn = self.clients.pop(fd, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for fd in list(self.clients):
            self.drop(fd)
        self.listener.close()


# -- the client side -------------------------------------------------------------------
def attach(container: Container, *, stdin: bool = True,
           detach_keys: str = DEFAULT_DETACH_KEYS, sig_proxy: bool = True,
           send_signal: Callable[[int], Any] | None = None) -> bool:
    """Relay our stdio to the running `container` until it ends (True) or the detach
    keys are typed (False)."""
    keys = parse_detach_keys(detach_keys)
    sock = connect(container)
    tty = bool(container.config.get("tty"))
    stdin = stdin and bool(container.config.get("interactive"))
    old_attrs = None
    old_handlers: dict[int, Any] = {}
    try:
        if tty and os.isatty(0):
            import fcntl
            import termios

            def resize(*_: object) -> None:
                with contextlib.suppress(OSError):
                    size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                    sock.send(RESIZE + size)

            resize()
            old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
            if stdin:
                import tty as ttymod

                old_attrs = termios.tcgetattr(0)
                ttymod.setraw(0)
        if sig_proxy and not tty and send_signal is not None:
            # podman's --sig-proxy: our signals go to the container (non-tty only; a
            # terminal's ^C is a byte for the container's pty).
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                        signal.SIGUSR1, signal.SIGUSR2):
                old_handlers[sig] = signal.signal(sig, lambda s, _f: send_signal(s))
        return _relay(sock, stdin, DetachMatcher(keys))
    finally:
        if old_attrs is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, old_attrs)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        sock.close()


def _relay(sock: socket.socket, stdin: bool, matcher: DetachMatcher) -> bool:
    readers: list[Any] = [sock] + ([0] if stdin else [])
    while True:
        try:
            ready, _, _ = select.select(readers, [], [])
        except InterruptedError:
            continue
        if sock in ready:
            try:
                msg = sock.recv(MAX_MESSAGE)
            except ConnectionResetError:
                msg = b""
            if not msg:
                return True  # the monitor closed it: the container ended
            if not _write_all(2 if msg[:1] == STDERR else 1, msg[1:]):
                return False  # our reader went away (`sbx attach C | head`): detach
        if 0 in ready:
            data = os.read(0, 65536)
            detached = False
            if data:
                data, detached = matcher.feed(data)
                messages = [STDIN + data[i:i + MAX_MESSAGE - 1]
                            for i in range(0, len(data), MAX_MESSAGE - 1)]
            else:
                readers.remove(0)
                messages = [STDIN + matcher.held] if matcher.held else []
                messages.append(STDIN)  # our stdin ended
            try:
                for message in messages:
                    sock.sendall(message)
            except OSError:
                # The container ended and its monitor closed the socket while we
                # were sending: what it printed is still to be read, then the EOF.
                if 0 in readers:
                    readers.remove(0)
            if detached:
                return False


def _write_all(fd: int, data: bytes) -> bool:
    """False when the reader is gone (EPIPE)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return False
            raise
    return True


__all__ = ["DEFAULT_DETACH_KEYS", "DetachMatcher", "Hub", "NotAttachable", "attach", "connect",
           "listen", "parse_detach_keys"]
