"""Run a function, or a command, as root of a fresh user namespace with the user's map.

This is how sbx does work that must see real container owners on the host — unpacking
a layer whose files belong to uid 1000 inside, or removing a layer whose files belong
to subordinate ids — without touching other namespaces (`podman unshare` does the
same job for podman). The caller's library code (images, storage) runs unchanged in
the child; only this module knows about namespaces.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys as _sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from sandbox.errors import EXIT_SBX, ExecError, SbxError
from sandbox.runtime import idmap
from sandbox.runtime import syscalls as sc

T = TypeVar("T")


def _become_root(maps: idmap.MapPlan) -> None:
    with contextlib.suppress(OSError), open("/proc/self/setgroups") as f:
        if f.read().strip() == "allow":
            os.setgroups([])
    if any(m.container_id == 0 for m in maps.uid_maps) and any(
        m.container_id == 0 for m in maps.gid_maps
    ):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def _child(sock: socket.socket, sys: sc.Syscalls, maps: idmap.MapPlan, mount_ns: bool) -> None:
    sys.unshare(sc.CLONE_NEWUSER | (sc.CLONE_NEWNS if mount_ns else 0))
    sock.send(b"userns")
    if sock.recv(16) != b"mapped":
        os._exit(EXIT_SBX)
    _become_root(maps)


def _fork_mapped(maps: idmap.MapPlan, mount_ns: bool, sys: sc.Syscalls
                 ) -> tuple[int, socket.socket, socket.socket]:
    sc.libc()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _sys.stdout.flush()
    _sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        parent.close()
        return 0, parent, child
    child.close()
    try:
        if parent.recv(16) != b"userns":
            raise SbxError("can't create a user namespace",
                           hint="run `sbx system check` to see why")
        idmap.apply(pid, maps)
        parent.send(b"mapped")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        parent.close()
        raise
    return pid, parent, child


def _exit_child(code: int) -> NoReturn:
    _sys.stdout.flush()
    _sys.stderr.flush()
    os._exit(code)


def call(fn: Callable[[], T], maps: idmap.MapPlan, *, mount_ns: bool = False,
         sys: sc.Syscalls | None = None) -> T:
    """Run `fn()` as root of a new user namespace; return its (picklable) result.

    An exception raised by `fn` is raised again here, in the caller's process.
    """
    sys = sys or sc.Syscalls()
    pid, parent, child = _fork_mapped(maps, mount_ns, sys)
    if pid == 0:
        try:
            # Die with the caller: a SIGKILLed `sbx pull` must not leave an unpacker
            # holding the layer's lock.
            sys.prctl(sc.PR_SET_PDEATHSIG, 9)
            _child(child, sys, maps, mount_ns)
            payload = (True, fn())
        except BaseException as exc:  # carried to the parent, never raised here
            payload = (False, exc)
        data = _dumps(payload)
        with contextlib.suppress(OSError):
            _send_big(child, data)
        _exit_child(0)
    try:
        data = _recv_big(parent)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if not data:
        raise SbxError("the user-namespace helper process died without a result")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def _dumps(payload: tuple[bool, object]) -> bytes:
    """Pickle a result or an exception so that the parent can load it: an exception
    whose __init__ takes more than its message pickles but fails to unpickle, so
    such a one travels as an SbxError with its message and hint."""
    try:
        data = pickle.dumps(payload)
        pickle.loads(data)
        return data
    except Exception:
        ok, value = payload
        if ok:
            err = SbxError(f"the user-namespace helper returned an unpicklable {type(value)}")
        else:
            err = SbxError(getattr(value, "message", None) or str(value) or type(value).__name__,
                           getattr(value, "hint", None))
            if isinstance(value, SbxError):
                err.exit_code = value.exit_code
        return pickle.dumps((False, err))


def _send_big(sock: socket.socket, data: bytes) -> None:
    # SOCK_SEQPACKET keeps message boundaries: a length, then chunks.
    sock.send(len(data).to_bytes(8, "big"))
    for i in range(0, len(data), 60000):
        sock.send(data[i:i + 60000])


def _recv_big(sock: socket.socket) -> bytes:
    head = sock.recv(8)
    if len(head) != 8:
        return b""
    size = int.from_bytes(head, "big")
    chunks = []
    got = 0
    while got < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def run_command(args: list[str], maps: idmap.MapPlan, *, mount_ns: bool = True,
                sys: sc.Syscalls | None = None) -> int:
    """`sbx unshare CMD`: run a host command as root of the user namespace; its status."""
    sys = sys or sc.Syscalls()
    err_r, err_w = os.pipe()
    pid, parent, child = _fork_mapped(maps, mount_ns, sys)
    if pid == 0:
        os.close(err_r)
        try:
            _child(child, sys, maps, mount_ns)
            child.close()
            os.execvp(args[0], args)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(err_w, str(exc.errno or 2).encode())
        _exit_child(EXIT_SBX)
    os.close(err_w)
    parent.close()
    with os.fdopen(err_r, "rb") as f:
        failure = f.read()
    _pid, status = os.waitpid(pid, 0)
    if failure:
        raise ExecError(args[0], int(failure))
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
